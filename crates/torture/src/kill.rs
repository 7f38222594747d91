//! `kill`: cycles of SIGKILL under the mixed load. Each cycle runs the load for a random
//! 0.3-2 s, SIGKILLs the server (on PostgreSQL: instance A, B or both, two instances sharing one
//! database), stops the load, restarts what was killed on the same store, reads every request
//! back and compares it with the ledger, and runs `audit verify`. At the end: the wait for every
//! decided request's webhook, the audit log's count of decisions, and a clean SIGTERM stop.

use crate::http::Target;
use crate::load::LoadConfig;
use crate::postgres::Database;
use crate::process::{Countersign, Server};
use crate::report::Report;
use crate::rig::Rig;
use anyhow::Result;
use rand::Rng;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What `kill` was asked to do.
pub struct KillPlan {
    pub cycles: u32,
    pub min_load: Duration,
    pub max_load: Duration,
    pub load: LoadConfig,
    pub webhook_wait: Duration,
    /// Read back every request after every `check_every`-th restart (and always after the last).
    pub check_every: u32,
}

/// Runs the cycles on SQLite (a data directory under `work`) or on a fresh database of
/// `admin_url` with two instances; returns the report (failures inside).
pub async fn run(
    bin: PathBuf,
    work: PathBuf,
    admin_url: Option<&str>,
    plan: &KillPlan,
    keep_db: bool,
) -> Result<Report> {
    let config_home = work.join("config");
    std::fs::create_dir_all(&config_home)?;
    let (store, database, instances, backend) = match admin_url {
        None => (vec!["--data-dir".into(), work.join("data").into()], None, 1, "sqlite"),
        Some(admin) => {
            let name = format!("torture_kill_{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
            let db = Database::create(admin, &name).await?;
            eprintln!("created database {name}");
            (vec!["--database-url".into(), db.url.clone().into()], Some(db), 2, "postgres, two instances")
        }
    };
    let countersign = Countersign { bin, store, config_home };
    let report = Report {
        scenario: "kill".into(),
        backend: backend.into(),
        started: chrono::Utc::now().to_rfc3339(),
        ..Default::default()
    };
    let mut rig = Rig::new(work.clone(), countersign, report).await?;
    let outcome = cycles(&mut rig, instances, plan).await;
    if let Err(err) = &outcome {
        rig.report.fail(format!("the run stopped early: {err:#}"));
    }
    let mut report = rig.finish();
    if let Some(db) = database {
        if report.failures.is_empty() && !keep_db {
            db.drop_database().await?;
        } else {
            report.figure("database kept", &db.name);
        }
    }
    Ok(report)
}

async fn cycles(rig: &mut Rig, instances: usize, plan: &KillPlan) -> Result<()> {
    let names = ["A", "B"];
    let work = rig.work.clone();
    let log = |i: usize| work.join(format!("server-{}.log", names[i]));
    let mut servers: Vec<Option<Server>> = Vec::new();
    for (i, name) in names.iter().enumerate().take(instances) {
        servers.push(Some(rig.countersign.serve(name, &log(i), &[]).await?));
    }
    let mut restarts: Vec<Duration> = Vec::new();
    let mut loads: Vec<Duration> = Vec::new();
    let mut readbacks: Vec<Duration> = Vec::new();
    let mut kills_per_instance = [0u32; 2];
    let mut rng = rand::rng();
    rig.stats().set_phase("load");
    for cycle in 1..=plan.cycles {
        rig.load.cycle.store(cycle, Ordering::Relaxed);
        let targets: Vec<Target> = servers.iter().flatten().map(|s| Target { base: s.base() }).collect();
        let running = rig.load.start(&targets, &plan.load);
        let load_for = rng.random_range(plan.min_load..=plan.max_load);
        tokio::time::sleep(load_for).await;
        loads.push(load_for);
        let victims: Vec<usize> = if instances == 1 {
            vec![0]
        } else {
            match rng.random_range(0..3) {
                0 => vec![0],
                1 => vec![1],
                _ => vec![0, 1],
            }
        };
        for &v in &victims {
            let mut server = servers[v].take().expect("every instance runs between cycles");
            server.check_alive()?;
            server.kill().await?;
            kills_per_instance[v] += 1;
        }
        running.stop(Duration::from_secs(15)).await;
        for &v in &victims {
            let started = Instant::now();
            let server = match rig.countersign.serve(names[v], &log(v), &[]).await {
                Ok(server) => server,
                Err(err) => {
                    rig.report.fail(format!("cycle {cycle}: instance {} did not restart: {err:#}", names[v]));
                    anyhow::bail!("instance {} did not restart after SIGKILL (cycle {cycle})", names[v]);
                }
            };
            restarts.push(started.elapsed());
            servers[v] = Some(server);
        }
        for server in servers.iter_mut().flatten() {
            server.check_alive()?;
        }
        let targets: Vec<Target> = servers.iter().flatten().map(|s| Target { base: s.base() }).collect();
        let last = cycle == plan.cycles;
        let pending = rig.load.ledger.lock().unwrap().pending_len();
        let mut line = format!(
            "cycle {cycle}/{}: killed {} after {:.2} s, restarted in {:.2} s, {pending} pending",
            plan.cycles,
            victims.iter().map(|&v| names[v]).collect::<Vec<_>>().join("+"),
            load_for.as_secs_f64(),
            restarts.last().map_or(0.0, Duration::as_secs_f64)
        );
        if cycle % plan.check_every.max(1) == 0 || last {
            let (readback, tally) = rig.check(&targets, &format!("cycle {cycle}")).await;
            readbacks.push(readback.took);
            let verified = rig.audit_verify(&format!("cycle {cycle}")).await?;
            line += &format!(
                "; creates acked {} lost {}, decisions acked {} lost {}, double {}; read-back {:.1} s; audit verify {}",
                tally.creates_acked,
                tally.creates_lost + tally.creates_changed,
                tally.decisions_acked,
                tally.decisions_lost,
                tally.double_decisions + tally.phantom_decisions,
                readback.took.as_secs_f64(),
                if verified { "ok" } else { "FAILED" }
            );
        }
        eprintln!("{line}");
    }
    let targets: Vec<Target> = servers.iter().flatten().map(|s| Target { base: s.base() }).collect();
    eprintln!("waiting for webhooks (at most {:?}) ...", plan.webhook_wait);
    rig.wait_for_webhooks(&targets, plan.webhook_wait).await;
    rig.count_audit_log().await?;
    // After the wait, PostgreSQL's sealer has caught up: verify once more with everything sealed.
    rig.audit_verify("at the end").await?;
    let (count, first) = warnings_of(rig, instances);
    for server in servers.into_iter().flatten() {
        let name = server.name.clone();
        if let Err(err) = server.stop().await {
            rig.report.fail(format!("instance {name} did not stop cleanly at the end: {err:#}"));
        }
    }
    rig.report.cycles = plan.cycles;
    rig.report.figure("load per cycle", describe(&loads));
    rig.report.figure("restart (spawn to listening) after SIGKILL", describe(&restarts));
    rig.report.figure("read-back of every request", describe(&readbacks));
    if instances > 1 {
        rig.report.figure("kills per instance", format!("A {}, B {}", kills_per_instance[0], kills_per_instance[1]));
    }
    rig.report.figure("server log WARN/ERROR lines", count);
    for (i, line) in first.iter().enumerate() {
        rig.report.figure(&format!("server log line {}", i + 1), line);
    }
    Ok(())
}

fn warnings_of(rig: &Rig, instances: usize) -> (usize, Vec<String>) {
    let mut count = 0;
    let mut first = Vec::new();
    for name in ["A", "B"].iter().take(instances) {
        let (n, lines) = crate::process::warnings(&rig.work.join(format!("server-{name}.log")), 5);
        count += n;
        first.extend(lines.into_iter().map(|l| format!("[{name}] {l}")));
    }
    first.truncate(8);
    (count, first)
}

/// `min / p50 / max` of durations, in seconds.
pub fn describe(samples: &[Duration]) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64();
    format!("min {:.2} s, p50 {:.2} s, max {:.2} s ({} samples)", at(0.0), at(0.5), at(1.0), sorted.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_summarised() {
        let s: Vec<Duration> = [3, 1, 2].iter().map(|&n| Duration::from_secs(n)).collect();
        assert_eq!(describe(&s), "min 1.00 s, p50 2.00 s, max 3.00 s (3 samples)");
        assert_eq!(describe(&[]), "-");
    }
}
