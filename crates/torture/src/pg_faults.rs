//! `pg-faults`: the mixed load against Countersign on PostgreSQL while PostgreSQL is (a) stopped
//! with `pg_ctl stop -m fast` and started again, then (b) paused, its postmaster and every child
//! SIGSTOPped, and SIGCONTed after a while. Answers are counted per phase (`/readyz` probed every
//! 250 ms beside the load); Countersign must answer 503 while the database is gone, come back by
//! itself (same process) and have lost nothing it acknowledged.

use crate::http::{Stats, Target};
use crate::kill::describe;
use crate::load::LoadConfig;
use crate::postgres::{self, Cluster, Database};
use crate::process::{Countersign, Server};
use crate::report::Report;
use crate::rig::{Probe, Rig};
use anyhow::Result;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What `pg-faults` was asked to do.
pub struct PgFaultsPlan {
    pub admin_url: String,
    pub cluster: Cluster,
    pub instances: usize,
    pub down: Duration,
    pub pause: Duration,
    pub load: LoadConfig,
    pub webhook_wait: Duration,
    pub keep_db: bool,
}

/// Requests may wait on a stalled store longer than on a live one: the give-up time is past the
/// server's own 30 s request deadline, so a hang is the server's, not ours.
pub fn slow_tolerant(mut load: LoadConfig) -> LoadConfig {
    load.timeout = Duration::from_secs(45);
    load
}

/// How long Countersign gets to serve writes again once PostgreSQL is back.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
/// Operations that write.
const WRITES: [&str; 5] = ["create function call", "create human contact", "decide", "race decide", "escalate"];

pub async fn run(bin: PathBuf, work: PathBuf, plan: &PgFaultsPlan) -> Result<Report> {
    let config_home = work.join("config");
    std::fs::create_dir_all(&config_home)?;
    let name = format!("torture_pgfaults_{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    let db = Database::create(&plan.admin_url, &name).await?;
    eprintln!("created database {name}");
    let countersign = Countersign { bin, store: vec!["--database-url".into(), db.url.clone().into()], config_home };
    let report = Report {
        scenario: "pg-faults".into(),
        backend: format!("postgres, {} instance(s)", plan.instances),
        started: chrono::Utc::now().to_rfc3339(),
        ..Default::default()
    };
    let mut rig = Rig::new(work, countersign, report).await?;
    let outcome = scenario(&mut rig, plan).await;
    // Whatever happened, leave the cluster running.
    if let Ok(pids) = plan.cluster.processes() {
        let _ = postgres::signal(&pids, "CONT");
    }
    if !plan.cluster.data_dir.join("postmaster.pid").exists() {
        let _ = plan.cluster.start();
    }
    if let Err(err) = &outcome {
        rig.report.fail(format!("the run stopped early: {err:#}"));
    }
    let mut report = rig.finish();
    if report.failures.is_empty() && !plan.keep_db {
        db.drop_database().await?;
    } else {
        report.figure("database kept", &db.name);
    }
    Ok(report)
}

async fn scenario(rig: &mut Rig, plan: &PgFaultsPlan) -> Result<()> {
    let names = ["A", "B"];
    let mut servers: Vec<Server> = Vec::new();
    for name in names.iter().take(plan.instances) {
        servers.push(rig.countersign.serve(name, &rig.work.join(format!("server-{name}.log")), &[]).await?);
    }
    let pids: Vec<Option<u32>> = servers.iter().map(Server::pid).collect();
    let targets: Vec<Target> = servers.iter().map(|s| Target { base: s.base() }).collect();
    let stats = rig.stats().clone();
    let probes: Vec<Probe> = targets
        .iter()
        .map(|t| {
            Probe::start(
                rig.load.api.clone(),
                stats.clone(),
                t.clone(),
                "/readyz",
                "readyz",
                Duration::from_millis(250),
            )
        })
        .collect();
    stats.set_phase("1 before");
    let running = rig.load.start(&targets, &plan.load);
    tokio::time::sleep(Duration::from_secs(4)).await;

    eprintln!("stopping PostgreSQL (pg_ctl stop -m fast) for {:?} ...", plan.down);
    stats.set_phase("2 pg stopped");
    blocking(|c: &Cluster| c.stop(), &plan.cluster).await?;
    tokio::time::sleep(plan.down).await;
    eprintln!("starting PostgreSQL ...");
    blocking(|c: &Cluster| c.start(), &plan.cluster).await?;
    stats.set_phase("3 after the restart");
    let (recovered, ready) = recovery(&stats, "3 after the restart").await;
    note_recovery(rig, "PostgreSQL restarted (pg_ctl start returned)", recovered, ready);
    tokio::time::sleep(Duration::from_secs(4)).await;

    let pg_pids = plan.cluster.processes()?;
    eprintln!("pausing PostgreSQL (SIGSTOP to {} processes) for {:?} ...", pg_pids.len(), plan.pause);
    stats.set_phase("4 pg paused");
    postgres::signal(&pg_pids, "STOP")?;
    tokio::time::sleep(plan.pause).await;
    postgres::signal(&pg_pids, "CONT")?;
    eprintln!("resumed PostgreSQL (SIGCONT)");
    stats.set_phase("5 after the pause");
    let (recovered, ready) = recovery(&stats, "5 after the pause").await;
    note_recovery(rig, "PostgreSQL resumed (SIGCONT)", recovered, ready);
    tokio::time::sleep(Duration::from_secs(5)).await;

    running.stop(Duration::from_secs(50)).await;
    for probe in probes {
        probe.stop().await;
    }
    stats.set_phase("6 checks");

    let mut restarted = false;
    for (server, pid) in servers.iter_mut().zip(&pids) {
        if let Err(err) = server.check_alive() {
            rig.report.fail(format!("{err:#}"));
            restarted = true;
        } else if server.pid() != *pid {
            restarted = true;
        }
    }
    rig.report.figure(
        "Countersign recovered without a restart",
        if restarted { "NO (a process exited)".to_owned() } else { format!("yes (same processes {pids:?})") },
    );

    judge_down_phase(rig, "2 pg stopped");
    judge_down_phase(rig, "4 pg paused");

    rig.check(&targets, "after the faults").await;
    eprintln!("waiting for webhooks (at most {:?}) ...", plan.webhook_wait);
    rig.wait_for_webhooks(&targets, plan.webhook_wait).await;
    rig.count_audit_log().await?;
    rig.audit_verify("after the faults").await?;
    let mut lines = 0;
    for (i, name) in names.iter().take(plan.instances).enumerate() {
        let (n, first) = crate::process::warnings(&rig.work.join(format!("server-{name}.log")), 4);
        lines += n;
        for (j, line) in first.into_iter().enumerate() {
            rig.report.figure(&format!("server {name} log line {}", i * 4 + j + 1), line);
        }
    }
    rig.report.figure("server log WARN/ERROR lines", lines);
    for server in servers {
        let name = server.name.clone();
        if let Err(err) = server.stop().await {
            rig.report.fail(format!("instance {name} did not stop cleanly: {err:#}"));
        }
    }
    Ok(())
}

/// From now: how long until a create sent in `phase` is acknowledged, and until a `/readyz`
/// sent in it answers 200 (checked every 50 ms).
async fn recovery(stats: &Stats, phase: &str) -> (Option<Duration>, Option<Duration>) {
    let started = Instant::now();
    let (mut creates, mut ready) = (None, None);
    while started.elapsed() < RECOVERY_LIMIT && (creates.is_none() || ready.is_none()) {
        let acked =
            stats.answered(phase, "create function call", "2") + stats.answered(phase, "create human contact", "2");
        if creates.is_none() && acked > 0 {
            creates = Some(started.elapsed());
        }
        if ready.is_none() && stats.answered(phase, "readyz", "200") > 0 {
            ready = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (creates, ready)
}

fn note_recovery(rig: &mut Rig, what: &str, creates: Option<Duration>, ready: Option<Duration>) {
    let show = |d: Option<Duration>| d.map_or_else(|| format!("not within {RECOVERY_LIMIT:?}"), |d| describe(&[d]));
    rig.report.figure(&format!("{what}: first acknowledged create after"), show(creates));
    rig.report.figure(&format!("{what}: first /readyz 200 after"), show(ready));
    if creates.is_none() {
        rig.report.fail(format!("{what}: Countersign acknowledged no create within {RECOVERY_LIMIT:?}"));
    }
}

/// While the database was gone: writes sent must have been refused with a JSON 503 (never a
/// 500, never a hang: a `503 request_timeout` is the server's 30 s deadline, so it counts as
/// one), or have succeeded, and `/readyz` must have said 503.
fn judge_down_phase(rig: &mut Rig, phase: &str) {
    let answers = rig.stats().snapshot();
    let Some(ops) = answers.get(phase) else {
        rig.report.fail(format!("{phase}: no request was answered at all"));
        return;
    };
    let mut refused_503 = 0;
    let mut bad: Vec<String> = Vec::new();
    for op in WRITES {
        for (label, n) in ops.get(op).map(|c| c.answers.clone()).unwrap_or_default() {
            if label.starts_with("503 ") && !label.contains("not JSON") && !label.contains("request_timeout") {
                refused_503 += n;
            } else if label.starts_with('5') || label.contains("timeout") || label.contains("not JSON") {
                bad.push(format!("{op}: {label} ×{n}"));
            }
        }
    }
    let readyz_503 = rig.stats().answered(phase, "readyz", "503");
    rig.report.figure(&format!("{phase}: writes refused with a JSON 503"), refused_503);
    rig.report.figure(&format!("{phase}: /readyz answered 503"), readyz_503);
    if refused_503 == 0 {
        rig.report.fail(format!("{phase}: no write was refused with a 503"));
    }
    if readyz_503 == 0 {
        rig.report.fail(format!("{phase}: /readyz never answered 503"));
    }
    if !bad.is_empty() {
        rig.report.fail(format!("{phase}: writes answered otherwise than 2xx/409/JSON 503: {}", bad.join("; ")));
    }
}

/// Runs a blocking cluster operation off the async threads.
async fn blocking(f: fn(&Cluster) -> Result<()>, cluster: &Cluster) -> Result<()> {
    let cluster = Cluster { data_dir: cluster.data_dir.clone(), bin_dir: cluster.bin_dir.clone() };
    tokio::task::spawn_blocking(move || f(&cluster)).await?
}
