//! Records the git commit the binary is built from, for `countersign --version`, `/healthz` and
//! the `countersign_build_info` metric. A build outside a git checkout (a source tarball, a
//! container build without `.git`) takes it from `COUNTERSIGN_BUILD_COMMIT`, else says `unknown`.
//!
//! Only this crate (the binary's) reruns it, so a new commit recompiles one small crate.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo::rerun-if-env-changed=COUNTERSIGN_BUILD_COMMIT");
    let commit = match std::env::var("COUNTERSIGN_BUILD_COMMIT") {
        Ok(given) if !given.trim().is_empty() => given.trim().to_owned(),
        _ => {
            // Rebuild when HEAD moves: HEAD itself (a checkout) and the files a branch's tip lives in.
            if let Some(dir) = git(&["rev-parse", "--git-dir"]).map(PathBuf::from) {
                for file in ["HEAD", "packed-refs"] {
                    println!("cargo::rerun-if-changed={}", dir.join(file).display());
                }
                if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    println!("cargo::rerun-if-changed={}", dir.join(branch).display());
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo::rustc-env=COUNTERSIGN_BUILD_COMMIT={commit}");
}
