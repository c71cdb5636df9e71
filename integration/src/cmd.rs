//! Running the system tools the harness drives (`ip`, `nsenter`, ...), with
//! their stderr in the error when they fail.

use anyhow::Context;
use std::process::Command;

/// Runs `program args...` to completion; fails with its stderr unless it exits 0.
pub(crate) fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        anyhow::bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Like [`run`], for clean-up paths: failures are logged, not returned.
pub(crate) fn run_quiet(program: &str, args: &[&str]) {
    if let Err(e) = run(program, args) {
        tracing::debug!("clean-up step failed: {e:#}");
    }
}
