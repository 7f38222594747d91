//! Faces: how clients and people reach the server. The HumanLayer API (`api`), the web inbox
//! (`web`) and the terminal's JSON API (`terminal`); each mounts its own router.

pub mod api;
pub mod terminal;
pub mod web;
