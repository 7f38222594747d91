//! `disk-full`: the SQLite data directory on a small filesystem of its own (a loop-mounted ext4
//! image by default, or tmpfs), filled by a filler file under the mixed load. Writes must be
//! refused with a JSON 503 (not a 500, not a hang) while reads go on being served; once the
//! filler is deleted writes must succeed again without a restart; afterwards `audit verify` and
//! `PRAGMA integrity_check` must pass and nothing acknowledged may be missing, also after a
//! restart.

use crate::Filesystem;
use crate::http::Target;
use crate::kill::describe;
use crate::load::LoadConfig;
use crate::process::Countersign;
use crate::report::Report;
use crate::rig::{Probe, Rig, time_until};
use anyhow::{Context, Result, bail};
use sqlx::Connection as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `disk-full` was asked to do.
pub struct DiskFullPlan {
    pub fs: Filesystem,
    pub size_mb: u64,
    pub full: Duration,
    pub load: LoadConfig,
    pub webhook_wait: Duration,
}

const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
const WRITES: [&str; 5] = ["create function call", "create human contact", "decide", "race decide", "escalate"];
const READS: [&str; 3] = ["get", "long-poll", "healthz"];

pub async fn run(bin: PathBuf, work: PathBuf, plan: &DiskFullPlan) -> Result<Report> {
    let mut mount = Mount::create(&work, plan.fs, plan.size_mb)?;
    let outcome = with_mount(bin, work, plan, &mount).await;
    // The servers are gone (stopped, or killed on drop); the unmount retries while they exit.
    let unmounted = mount.unmount();
    let mut report = outcome?;
    if let Err(err) = unmounted {
        report.fail(format!("unmounting {}: {err:#}", mount.dir.display()));
        report.conclude();
    }
    Ok(report)
}

async fn with_mount(bin: PathBuf, work: PathBuf, plan: &DiskFullPlan, mount: &Mount) -> Result<Report> {
    let config_home = work.join("config");
    std::fs::create_dir_all(&config_home)?;
    let data = mount.dir.join("data");
    let countersign = Countersign { bin, store: vec!["--data-dir".into(), data.clone().into()], config_home };
    let fs = match plan.fs {
        Filesystem::Ext4 => format!("sqlite on a {} MiB loop-mounted ext4 image (mkfs.ext4 -m 0)", plan.size_mb),
        Filesystem::Tmpfs => format!("sqlite on a {} MiB tmpfs", plan.size_mb),
    };
    let report = Report {
        scenario: "disk-full".into(),
        backend: fs,
        started: chrono::Utc::now().to_rfc3339(),
        ..Default::default()
    };
    let mut rig = Rig::new(work, countersign, report).await?;
    if let Err(err) = scenario(&mut rig, plan, mount, &data).await {
        rig.report.fail(format!("the run stopped early: {err:#}"));
    }
    let _ = std::fs::remove_file(mount.dir.join("filler"));
    Ok(rig.finish())
}

async fn scenario(rig: &mut Rig, plan: &DiskFullPlan, mount: &Mount, data: &Path) -> Result<()> {
    let log = rig.work.join("server-A.log");
    let mut server = rig.countersign.serve("A", &log, &[]).await?;
    let pid = server.pid();
    let targets = vec![Target { base: server.base() }];
    let stats = rig.stats().clone();
    let api = rig.load.api.clone();
    let every = Duration::from_millis(250);
    let probes = vec![
        Probe::start(api.clone(), stats.clone(), targets[0].clone(), "/healthz", "healthz", every),
        Probe::start(api.clone(), stats.clone(), targets[0].clone(), "/readyz", "readyz", every),
    ];
    let creates_ok = |phase: &str| {
        stats.answered(phase, "create function call", "2") + stats.answered(phase, "create human contact", "2")
    };

    stats.set_phase("1 before");
    let running = rig.load.start(&targets, &plan.load);
    tokio::time::sleep(Duration::from_secs(4)).await;

    let filler = mount.dir.join("filler");
    let (written, free_after) = {
        let filler = filler.clone();
        let dir = mount.dir.clone();
        tokio::task::spawn_blocking(move || fill(&filler, &dir)).await??
    };
    eprintln!("disk full: filler of {} MiB written, {free_after} bytes free", written >> 20);
    stats.set_phase("2 disk full");
    rig.report.figure("filler file", format!("{} MiB; free space left: {free_after} bytes", written >> 20));
    let db_bytes = dir_bytes(data);
    tokio::time::sleep(plan.full).await;

    std::fs::remove_file(&filler).context("deleting the filler")?;
    eprintln!("space freed");
    stats.set_phase("3 space back");
    let recovered = time_until(RECOVERY_LIMIT, || creates_ok("3 space back") > 0).await;
    rig.report.figure(
        "space back: first acknowledged create after",
        recovered.map_or_else(|| format!("not within {RECOVERY_LIMIT:?}"), |d| describe(&[d])),
    );
    if recovered.is_none() {
        rig.report.fail(format!("no create was acknowledged within {RECOVERY_LIMIT:?} of space coming back"));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    running.stop(Duration::from_secs(25)).await;
    for probe in probes {
        probe.stop().await;
    }
    stats.set_phase("4 checks");

    match server.check_alive() {
        Ok(()) => rig.report.figure("Countersign recovered without a restart", format!("yes (same process {pid:?})")),
        Err(err) => {
            rig.report.figure("Countersign recovered without a restart", "NO: it exited");
            bail!("the server exited: {err:#}");
        }
    }
    rig.report.figure("data directory size when the disk filled", format!("{} KiB", db_bytes >> 10));
    judge_full_phase(rig);

    rig.check(&targets, "after space came back").await;
    eprintln!("waiting for webhooks (at most {:?}) ...", plan.webhook_wait);
    rig.wait_for_webhooks(&targets, plan.webhook_wait).await;
    rig.count_audit_log().await?;
    let (lines, first) = crate::process::warnings(&log, 6);
    if let Err(err) = server.stop().await {
        rig.report.fail(format!("the server did not stop cleanly: {err:#}"));
    }
    rig.audit_verify("with the server stopped").await?;
    let integrity = integrity_check(&data.join("countersign.db")).await;
    match &integrity {
        Ok(text) if text == "ok" => rig.report.figure("PRAGMA integrity_check", "ok"),
        Ok(text) => {
            rig.report.figure("PRAGMA integrity_check", text);
            rig.report.fail(format!("PRAGMA integrity_check: {text}"));
        }
        Err(err) => rig.report.fail(format!("PRAGMA integrity_check could not run: {err:#}")),
    }
    let server = rig.countersign.serve("A", &log, &[]).await.context("restarting after the checks")?;
    let targets = vec![Target { base: server.base() }];
    rig.check(&targets, "after a restart").await;
    if let Err(err) = server.stop().await {
        rig.report.fail(format!("the restarted server did not stop cleanly: {err:#}"));
    }
    rig.report.figure("server log WARN/ERROR lines (before the restart)", lines);
    for (i, line) in first.into_iter().enumerate() {
        rig.report.figure(&format!("server log line {}", i + 1), line);
    }
    Ok(())
}

/// Writes sent while the disk was full: some must have been refused (else the disk never filled
/// for the server), every refusal a prompt JSON 503 (a `503 request_timeout` after the server's
/// 30 s deadline is a hang), and reads all served.
fn judge_full_phase(rig: &mut Rig) {
    let phase = "2 disk full";
    let answers = rig.stats().snapshot();
    let ops = answers.get(phase).cloned().unwrap_or_default();
    let (mut ok, mut refused_503, mut bad) = (0, 0, Vec::new());
    for op in WRITES {
        for (label, n) in ops.get(op).map(|c| c.answers.clone()).unwrap_or_default() {
            if label.starts_with('2') || label.starts_with("409") {
                ok += n;
            } else if label.starts_with("503 ") && !label.contains("not JSON") && !label.contains("request_timeout") {
                refused_503 += n;
            } else {
                bad.push(format!("{op}: {label} ×{n}"));
            }
        }
    }
    let mut reads_ok = 0;
    let mut reads_bad = Vec::new();
    for op in READS {
        for (label, n) in ops.get(op).map(|c| c.answers.clone()).unwrap_or_default() {
            if label.starts_with('2') {
                reads_ok += n;
            } else {
                reads_bad.push(format!("{op}: {label} ×{n}"));
            }
        }
    }
    rig.report.figure("disk full: writes answered 2xx/409 (before the disk ran out)", ok);
    rig.report.figure("disk full: writes refused with a JSON 503", refused_503);
    rig.report.figure("disk full: reads served (GET, long-poll, /healthz)", reads_ok);
    if refused_503 == 0 && bad.is_empty() {
        rig.report.fail("disk full: no write was refused: the disk never filled up for the server");
    }
    if !bad.is_empty() {
        rig.report.fail(format!(
            "disk full: writes answered otherwise than a prompt JSON 503 (request_timeout: held for the server's 30 s deadline): {}",
            bad.join("; ")
        ));
    }
    if !reads_bad.is_empty() {
        rig.report.fail(format!("disk full: reads failed: {}", reads_bad.join("; ")));
    }
}

/// Writes zeros to `filler` until the filesystem refuses (1 MiB at a time, then 4 KiB), and
/// syncs; returns the bytes written and the space left.
fn fill(filler: &Path, dir: &Path) -> Result<(u64, u64)> {
    let mut file = std::fs::File::create(filler)?;
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 512] {
        let zeros = vec![0u8; chunk];
        loop {
            match file.write_all(&zeros) {
                Ok(()) => written += chunk as u64,
                Err(err) if err.raw_os_error() == Some(28) => break,
                Err(err) => return Err(err).context("writing the filler"),
            }
        }
    }
    let _ = file.sync_all();
    Ok((written, free_bytes(dir)))
}

fn free_bytes(dir: &Path) -> u64 {
    let out = std::process::Command::new("df").args(["-B1", "--output=avail"]).arg(dir).output();
    out.ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// `PRAGMA integrity_check` on the (stopped) server's database: `ok`, or what it found.
async fn integrity_check(db: &Path) -> Result<String> {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(db).read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    let rows: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check").fetch_all(&mut conn).await?;
    conn.close().await?;
    Ok(rows.into_iter().map(|(r,)| r).collect::<Vec<_>>().join("; "))
}

/// The small filesystem: mounted on `WORK/mnt`, unmounted by [`Mount::unmount`] (or on drop).
pub struct Mount {
    pub dir: PathBuf,
    image: Option<PathBuf>,
    mounted: bool,
}

impl Mount {
    fn create(work: &Path, fs: Filesystem, size_mb: u64) -> Result<Self> {
        let dir = work.join("mnt");
        std::fs::create_dir_all(&dir)?;
        let image = match fs {
            Filesystem::Ext4 => {
                let image = work.join("disk.img");
                std::fs::File::create(&image)?.set_len(size_mb << 20)?;
                sh("mkfs.ext4", &["-q", "-F", "-m", "0", &image.display().to_string()])?;
                sh("mount", &["-o", "loop", &image.display().to_string(), &dir.display().to_string()])?;
                Some(image)
            }
            Filesystem::Tmpfs => {
                sh("mount", &["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs", &dir.display().to_string()])?;
                None
            }
        };
        eprintln!("mounted {} ({:?}, {size_mb} MiB)", dir.display(), fs);
        Ok(Self { dir, image, mounted: true })
    }

    /// Unmounts (retrying while the server's files close) and deletes the image.
    fn unmount(&mut self) -> Result<()> {
        if !self.mounted {
            return Ok(());
        }
        let dir = self.dir.display().to_string();
        let mut last = None;
        for _ in 0..50 {
            match sh("umount", &[&dir]) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(err) => last = Some(err),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(err) = last {
            sh("umount", &["-l", &dir])?;
            eprintln!("note: lazily unmounted {dir} after: {err:#}");
        }
        self.mounted = false;
        if let Some(image) = self.image.take() {
            std::fs::remove_file(&image)?;
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}

fn sh(program: &str, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
