//! The figures of one run, printed as text or JSON, and the verdict: the run fails when anything
//! acknowledged was lost, decided twice, or a scenario's own expectation was not met.

use crate::eventlog::EventLogTally;
use crate::http::OpCounts;
use crate::ledger::Tally;
use crate::receiver::WebhookTally;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Problems kept for the report (all are counted).
const KEEP_PROBLEMS: usize = 40;

/// Everything one run measured.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub backend: String,
    /// RFC 3339, when the run started.
    pub started: String,
    pub seconds: f64,
    pub work_dir: String,
    pub cycles: u32,
    /// Read-backs of every request compared with the ledger.
    pub checks: u32,
    pub checks_failed: u32,
    /// The last read-back's comparison.
    pub tally: Tally,
    pub webhooks: Option<WebhookTally>,
    pub webhook_bad_signatures: u64,
    pub webhook_unreadable: u64,
    /// Last decision acknowledged → every expected webhook arrived (or the wait gave up).
    pub webhook_wait_seconds: f64,
    pub audit_verify_runs: u32,
    pub audit_verify_failures: u32,
    pub audit_verify_last: String,
    pub event_log: Option<EventLogTally>,
    /// Scenario figures in the order they were noted (`restart time p50`, `503s while down`, ...).
    pub figures: Vec<(String, String)>,
    /// Phase → operation → answers.
    pub answers: BTreeMap<String, BTreeMap<String, OpCounts>>,
    pub problems: Vec<String>,
    pub problems_total: u64,
    /// Why the run fails (empty: it passed).
    pub failures: Vec<String>,
    pub passed: bool,
}

impl Report {
    pub fn figure(&mut self, name: &str, value: impl ToString) {
        self.figures.push((name.to_owned(), value.to_string()));
    }

    pub fn fail(&mut self, why: impl Into<String>) {
        let why = why.into();
        eprintln!("FAILURE: {why}");
        self.failures.push(why);
    }

    pub fn problems(&mut self, found: Vec<String>) {
        self.problems_total += found.len() as u64;
        for p in found {
            if self.problems.len() < KEEP_PROBLEMS {
                self.problems.push(p);
            }
        }
    }

    /// Sets `passed` from the failures noted so far.
    pub fn conclude(&mut self) {
        self.passed = self.failures.is_empty();
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let t = &self.tally;
        let _ = writeln!(
            out,
            "countersign-torture {} ({}): started {}, {:.0} s, {} cycles, {} read-backs ({} failed)",
            self.scenario, self.backend, self.started, self.seconds, self.cycles, self.checks, self.checks_failed
        );
        let _ = writeln!(out, "  work dir (server logs, data): {}", self.work_dir);
        let _ = writeln!(
            out,
            "  acknowledged creates    {:>7}  found {:>7}  lost {} (changed {}); unanswered creates: {} stored, {} not; refused yet stored: {}",
            t.creates_acked,
            t.creates_found,
            t.creates_lost,
            t.creates_changed,
            t.creates_unanswered_stored,
            t.creates_unanswered_absent,
            t.creates_refused_but_stored
        );
        let _ = writeln!(
            out,
            "  acknowledged decisions  {:>7}  found {:>7}  lost {}; double decisions {} (phantom {}); refused with 409: {}; unanswered: {} stored, {} not; refused yet stored: {}",
            t.decisions_acked,
            t.decisions_found,
            t.decisions_lost,
            t.double_decisions,
            t.phantom_decisions,
            t.decisions_conflict_refused,
            t.decisions_unanswered_stored,
            t.decisions_unanswered_absent,
            t.decisions_refused_but_stored
        );
        let _ = writeln!(
            out,
            "  decisions served by a read  {:>7}  lost later {}; reads answering 404 for an acknowledged create: {}",
            t.observed_decisions, t.observed_lost, t.reads_missing_acked
        );
        let _ = writeln!(
            out,
            "  acknowledged escalations {:>6}  found {:>7}  lost {}; unreadable requests: {}",
            t.escalations_acked, t.escalations_found, t.escalations_lost, t.unreadable
        );
        if let Some(w) = &self.webhooks {
            let _ = writeln!(
                out,
                "  webhooks: expected {}  arrived {}  duplicates {} (same webhook-id {})  missing {}  contradicting {}  unexpected {}; bad signatures {}, unreadable {}; waited {:.1} s",
                w.expected,
                w.arrived,
                w.duplicates,
                w.duplicates_same_id,
                w.missing,
                w.contradicting,
                w.unexpected,
                self.webhook_bad_signatures,
                self.webhook_unreadable,
                self.webhook_wait_seconds
            );
        }
        let _ = writeln!(
            out,
            "  audit verify: {} runs, {} failed; last: {}",
            self.audit_verify_runs,
            self.audit_verify_failures,
            one_line(&self.audit_verify_last, 300)
        );
        if let Some(e) = &self.event_log {
            let _ = writeln!(
                out,
                "  audit log: {} events ({} created, {} decided); requests decided twice {}, created twice {}",
                e.events, e.created_events, e.decided_events, e.requests_decided_twice, e.requests_created_twice
            );
        }
        for (name, value) in &self.figures {
            let _ = writeln!(out, "  {name}: {value}");
        }
        let _ = writeln!(out, "  answers by phase and operation:");
        for (phase, ops) in &self.answers {
            let _ = writeln!(out, "    [{phase}]");
            for (op, counts) in ops {
                let answers: Vec<String> = counts.answers.iter().map(|(l, n)| format!("{l} ×{n}")).collect();
                let _ = writeln!(out, "      {op:<22} {}  (slowest {} ms)", answers.join(", "), counts.max_ms);
            }
        }
        if self.problems_total > 0 {
            let _ = writeln!(out, "  problems (first {} of {}):", self.problems.len(), self.problems_total);
            for p in &self.problems {
                let _ = writeln!(out, "    - {p}");
            }
        }
        if self.passed {
            let _ = writeln!(out, "RESULT: PASS");
        } else {
            let _ = writeln!(out, "RESULT: FAIL");
            for f in &self.failures {
                let _ = writeln!(out, "  - {f}");
            }
        }
        out
    }
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max { format!("{}…", flat.chars().take(max).collect::<String>()) } else { flat }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_passes_only_without_failures() {
        let mut report = Report::default();
        report.conclude();
        assert!(report.passed);
        assert!(report.to_text().contains("RESULT: PASS"));
        report.fail("1 acknowledged create lost");
        report.conclude();
        assert!(!report.passed);
        assert!(report.to_text().contains("- 1 acknowledged create lost"));
    }

    #[test]
    fn problems_are_all_counted_and_the_first_kept() {
        let mut report = Report::default();
        report.problems((0..100).map(|i| format!("p{i}")).collect());
        assert_eq!((report.problems_total, report.problems.len()), (100, KEEP_PROBLEMS));
        assert_eq!(report.problems[0], "p0");
    }
}
