//! Webhook targets: `webhook::forbidden_name` and `webhook::forbidden_ip` (on the address read
//! from the text, on the input's first bytes as raw IPv4 and IPv6 addresses), and a URL parsed
//! with `url::Url::parse` and checked as `services/webhooks.rs::validate` and `refusal` check it
//! (scheme, host, then the host as an IP address or a name). `webhook::parse_events` and
//! `Format::parse` read the endpoint's other fields.
#![no_main]

use countersign_core::webhook::{self, Format};
use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fuzz_target!(|data: &[u8]| {
    if let Ok(bytes) = <[u8; 4]>::try_from(data.get(..4).unwrap_or_default()) {
        let _ = webhook::forbidden_ip(IpAddr::V4(Ipv4Addr::from(bytes)));
    }
    if let Ok(bytes) = <[u8; 16]>::try_from(data.get(..16).unwrap_or_default()) {
        let _ = webhook::forbidden_ip(IpAddr::V6(Ipv6Addr::from(bytes)));
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = webhook::forbidden_name(text);
    let _ = webhook::parse_events(text);
    let _ = Format::parse(text);
    if let Ok(ip) = text.parse::<IpAddr>() {
        let _ = webhook::forbidden_ip(ip);
    }
    let Ok(url) = url::Url::parse(text) else { return };
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return;
    }
    let Some(host) = url.host_str() else { return };
    let ip = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    };
    match ip {
        Some(ip) => drop(webhook::forbidden_ip(ip)),
        None => drop(webhook::forbidden_name(host)),
    }
    let _ = url.to_string();
});
