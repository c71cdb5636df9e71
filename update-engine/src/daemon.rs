//! The `update_engine` daemon: the engine plus its D-Bus service, stopped by
//! one cancellation token (D-Bus first, then the engine).

use tokio_util::sync::CancellationToken;

use crate::dbus::{self, Bus};
use crate::engine::{self, EngineSettings, UpdateError};

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("starting the engine: {0}")]
    Engine(#[from] UpdateError),
    #[error("d-bus service: {0}")]
    Dbus(#[from] zbus::Error),
}

/// Runs until `shutdown` is cancelled or the D-Bus service fails.
pub async fn run(
    settings: EngineSettings,
    bus: Bus,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let engine_stop = shutdown.child_token();
    let (handle, task) = engine::spawn(settings, engine_stop.clone())?;
    let res = dbus::serve(handle, bus, shutdown.clone()).await;
    engine_stop.cancel();
    let _ = task.await;
    Ok(res?)
}

/// gflags accepts `-flag` as well as `--flag`: rewrite single-dash long
/// flags so clap sees `--flag`.
pub fn gflags_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            if i > 0 && a.len() > 2 && a.starts_with('-') && !a.starts_with("--") {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_flags_become_long() {
        let args = gflags_args(["prog", "-status", "--update", "-v", "x"].map(String::from));
        assert_eq!(args, ["prog", "--status", "--update", "-v", "x"]);
    }
}
