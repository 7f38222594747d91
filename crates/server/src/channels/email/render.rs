//! Rendering an agent's Jinja2 email template within bounds. A template is code from the agent, so
//! every render is bounded:
//!
//! - **fuel** (minijinja's instruction budget): loops and recursion end with "ran out of fuel";
//! - **output**: the template renders into a writer that refuses to grow past the limit;
//! - **time**: the render is abandoned after the timeout;
//! - **memory**: one instruction can build a huge value without spending fuel (`"x" * 50000000`,
//!   a `namespace` string doubled in a loop, `join` over a repeated list), so, with a
//!   [`TemplateRenderer`] given a program (the `countersign` binary itself, which `countersign
//!   serve` passes), the render runs in a child process of that program started with
//!   [`CHILD_ARG`]. The child caps its own address space (`RLIMIT_AS`, Linux) and CPU time before
//!   it reads the template, so an allocation past the cap ends the child, never the server, and a
//!   render past the timeout is killed rather than left running. Without a program (an embedded
//!   server, most tests), the render runs on a blocking thread with fuel, output and time bounds
//!   only.
//!
//! A template that fails any bound fails the same way every time: the failure is permanent.

use crate::limits::Limits;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

/// The first argument that makes the `countersign` binary render one template and exit (see
/// [`child_main_if_asked`]); followed by the memory cap in bytes and the CPU limit in seconds.
pub const CHILD_ARG: &str = "__countersign-render-email-template";

/// Templates rendered at once (each may use up to the memory cap).
const RENDER_SLOTS: usize = 2;

/// The bounds of one render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateLimits {
    /// minijinja fuel (about one per instruction).
    pub fuel: u64,
    /// Largest output, in bytes.
    pub max_output_bytes: usize,
    /// Largest address space of the child process beyond what it uses at start (child only).
    pub max_memory_bytes: u64,
    /// Milliseconds before the render is abandoned.
    pub timeout_ms: u64,
}

impl From<&Limits> for TemplateLimits {
    fn from(l: &Limits) -> Self {
        Self {
            fuel: l.template_fuel,
            max_output_bytes: l.template_max_output_bytes,
            max_memory_bytes: l.template_max_memory_bytes,
            timeout_ms: l.template_timeout_ms,
        }
    }
}

/// Why a template was not rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    pub reason: String,
    /// The same template would fail the same way again (not worth a retry).
    pub permanent: bool,
}

impl RenderError {
    fn permanent(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), permanent: true }
    }
}

/// A rendered template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub html: String,
    /// The child process's peak resident memory, when it ran in one (Linux).
    pub peak_rss_bytes: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Job {
    template: String,
    context: Value,
    limits: TemplateLimits,
}

#[derive(Serialize, Deserialize)]
struct Reply {
    html: Option<String>,
    error: Option<String>,
    peak_rss_bytes: Option<u64>,
}

/// Renders templates, a few at a time, in child processes of `program` (or on blocking threads).
pub struct TemplateRenderer {
    program: Option<PathBuf>,
    limits: TemplateLimits,
    slots: Semaphore,
}

impl TemplateRenderer {
    /// A renderer; `program` is the `countersign` binary (which handles [`CHILD_ARG`]).
    pub fn new(program: Option<PathBuf>, limits: TemplateLimits) -> Self {
        Self { program, limits, slots: Semaphore::new(RENDER_SLOTS) }
    }

    /// Renders `template` with `context` (HTML auto-escaping) within the limits.
    pub async fn render(&self, template: &str, context: &Value) -> Result<Rendered, RenderError> {
        let _slot = self.slots.acquire().await.expect("the render semaphore is never closed");
        let job = Job { template: template.to_owned(), context: context.clone(), limits: self.limits };
        match &self.program {
            Some(program) => in_child(program, job).await,
            None => on_thread(job).await,
        }
    }
}

fn timed_out(limits: &TemplateLimits) -> RenderError {
    RenderError::permanent(format!("template timed out (it may take {} ms)", limits.timeout_ms))
}

fn over_memory(limits: &TemplateLimits) -> RenderError {
    RenderError::permanent(format!("template needs more than {} bytes of memory", limits.max_memory_bytes))
}

async fn on_thread(job: Job) -> Result<Rendered, RenderError> {
    let limits = job.limits;
    // A render past the timeout is abandoned; its thread runs on until its fuel is spent.
    let task = tokio::task::spawn_blocking(move || render_bounded(&job.template, &job.context, &job.limits));
    match tokio::time::timeout(Duration::from_millis(limits.timeout_ms), task).await {
        Err(_) => Err(timed_out(&limits)),
        Ok(Err(_)) => Err(RenderError::permanent("the template renderer panicked")),
        Ok(Ok(result)) => result.map(|html| Rendered { html, peak_rss_bytes: None }).map_err(RenderError::permanent),
    }
}

async fn in_child(program: &PathBuf, job: Job) -> Result<Rendered, RenderError> {
    let limits = job.limits;
    let cpu_secs = limits.timeout_ms.div_ceil(1000) + 1;
    let mut child = tokio::process::Command::new(program)
        .arg(CHILD_ARG)
        .arg(limits.max_memory_bytes.to_string())
        .arg(cpu_secs.to_string())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RenderError {
            reason: format!("cannot start the template renderer {}: {e}", program.display()),
            permanent: false,
        })?;
    let job = serde_json::to_vec(&job).expect("a job serializes");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let run = async move {
        // A child that died early shows in its exit status; the write error adds nothing.
        let _ = stdin.write_all(&job).await;
        drop(stdin);
        child.wait_with_output().await
    };
    // Dropping `run` on timeout drops the child, which kills it.
    let output = match tokio::time::timeout(Duration::from_millis(limits.timeout_ms), run).await {
        Err(_) => return Err(timed_out(&limits)),
        Ok(Err(e)) => {
            return Err(RenderError { reason: format!("the template renderer failed: {e}"), permanent: false });
        }
        Ok(Ok(output)) => output,
    };
    if output.status.success()
        && let Ok(reply) = serde_json::from_slice::<Reply>(&output.stdout)
    {
        return match (reply.html, reply.error) {
            (Some(html), None) => Ok(Rendered { html, peak_rss_bytes: reply.peak_rss_bytes }),
            (_, Some(error)) => Err(RenderError::permanent(error)),
            (None, None) => Err(RenderError::permanent("the template renderer answered nothing")),
        };
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("memory allocation of") {
        return Err(over_memory(&limits));
    }
    if stderr.contains("overflowed its stack") {
        return Err(RenderError::permanent("template recursed too deeply"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        // SIGXCPU: the CPU limit (a backstop for the timeout); SIGKILL: the kernel ended it.
        if matches!(output.status.signal(), Some(24 | 9)) {
            return Err(timed_out(&limits));
        }
    }
    let detail: String = stderr.trim().chars().take(300).collect();
    Err(RenderError::permanent(format!("the template renderer failed ({}): {detail}", output.status)))
}

/// Renders `template` with `context` within the fuel and output limits (no memory or time bound:
/// see [`TemplateRenderer`]); the error is the reason.
pub fn render_bounded(template: &str, context: &Value, limits: &TemplateLimits) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.set_fuel(Some(limits.fuel));
    let compiled = env.template_from_str(template).map_err(|e| format!("the email template does not parse: {e}"))?;
    let mut out = BoundedWriter { buf: Vec::new(), max: limits.max_output_bytes, over: false };
    match compiled.render_captured_to(context, &mut out) {
        Ok(_) => String::from_utf8(out.buf).map_err(|_| "the email template rendered invalid UTF-8".to_owned()),
        Err(_) if out.over => Err(format!("template output over {} bytes", limits.max_output_bytes)),
        Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => {
            Err(format!("template ran out of fuel (it may spend {})", limits.fuel))
        }
        Err(e) => Err(format!("the email template failed to render: {e}")),
    }
}

/// Collects output up to `max` bytes; a write past it fails (and stops the render).
struct BoundedWriter {
    buf: Vec<u8>,
    max: usize,
    over: bool,
}

impl std::io::Write for BoundedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.max {
            self.over = true;
            return Err(std::io::Error::other("the template output limit is reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// For the binary's `main`, first thing: when this process was started with [`CHILD_ARG`],
/// renders the template job on stdin, prints the reply on stdout and returns the exit code;
/// otherwise `None`.
pub fn child_main_if_asked() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(CHILD_ARG)) {
        return None;
    }
    let number = |a: Option<std::ffi::OsString>| a.and_then(|a| a.to_str()?.parse::<u64>().ok());
    let (Some(max_memory), Some(cpu_secs)) = (number(args.next()), number(args.next())) else {
        eprintln!("usage: countersign {CHILD_ARG} MAX_MEMORY_BYTES CPU_SECONDS < job.json");
        return Some(ExitCode::from(2));
    };
    if let Err(e) = cap_self(max_memory, cpu_secs) {
        eprintln!("cannot limit the template renderer: {e}");
        return Some(ExitCode::from(3));
    }
    let mut input = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut input) {
        eprintln!("cannot read the template job: {e}");
        return Some(ExitCode::from(3));
    }
    let reply = match serde_json::from_slice::<Job>(&input) {
        Ok(job) => {
            drop(input);
            match render_bounded(&job.template, &job.context, &job.limits) {
                Ok(html) => Reply { html: Some(html), error: None, peak_rss_bytes: None },
                Err(error) => Reply { html: None, error: Some(error), peak_rss_bytes: None },
            }
        }
        Err(e) => Reply {
            html: None,
            error: Some(format!("the template's variables cannot be read: {e}")),
            peak_rss_bytes: None,
        },
    };
    let reply = Reply { peak_rss_bytes: proc_status_kib("VmHWM:").map(|k| k * 1024), ..reply };
    let mut stdout = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut stdout, &reply).is_ok() && std::io::Write::flush(&mut stdout).is_ok();
    Some(if written { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

/// A field of `/proc/self/status`, in KiB.
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// Caps this process: address space (what it maps now plus `max_memory`), CPU seconds, and no
/// core dumps (an aborted render would otherwise write one).
#[cfg(target_os = "linux")]
fn cap_self(max_memory: u64, cpu_secs: u64) -> Result<(), String> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let now = proc_status_kib("VmSize:").ok_or("cannot read VmSize from /proc/self/status")? * 1024;
    let cap = |resource, soft: u64, hard: u64| {
        setrlimit(resource, Rlimit { current: Some(soft), maximum: Some(hard) })
            .map_err(|e| format!("setrlimit {resource:?}: {e}"))
    };
    cap(Resource::Core, 0, 0)?;
    cap(Resource::Cpu, cpu_secs, cpu_secs + 1)?;
    let address_space = now.saturating_add(max_memory);
    cap(Resource::As, address_space, address_space)
}

/// Elsewhere the child has the timeout (it is killed) but no memory cap.
#[cfg(not(target_os = "linux"))]
fn cap_self(_max_memory: u64, _cpu_secs: u64) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> TemplateLimits {
        TemplateLimits { fuel: 200_000, max_output_bytes: 1024, max_memory_bytes: 1 << 27, timeout_ms: 2000 }
    }

    #[test]
    fn fuel_and_output_bound_a_render() {
        let ok = render_bounded("<b>{{ name }}</b>", &json!({"name": "<Ada>"}), &limits());
        assert_eq!(ok.as_deref(), Ok("<b>&lt;Ada&gt;</b>"));
        let looping = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let err = render_bounded(looping, &json!({}), &limits()).unwrap_err();
        assert!(err.starts_with("template ran out of fuel"), "{err}");
        let err = render_bounded("{{ 'x' * 2000 }}", &json!({}), &limits()).unwrap_err();
        assert_eq!(err, "template output over 1024 bytes");
        let at_limit = render_bounded("{{ 'x' * 1024 }}", &json!({}), &limits()).unwrap();
        assert_eq!(at_limit.len(), 1024);
        let err = render_bounded("{% if %}", &json!({}), &limits()).unwrap_err();
        assert!(err.starts_with("the email template does not parse"), "{err}");
    }
}
