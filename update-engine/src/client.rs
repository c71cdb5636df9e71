//! `update_engine_client`'s commands over D-Bus, with the original's output
//! and exit codes.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures::StreamExt;

use crate::dbus::client::ManagerProxy;
use crate::dbus::{Bus, StatusTuple};
use crate::status::UpdateStatus;

/// How often `-update` polls GetStatus (the original's 5 s).
pub const UPDATE_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("d-bus: {0}")]
    Dbus(#[from] zbus::Error),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// The `-status` text.
pub fn format_status(s: &StatusTuple) -> String {
    format!(
        "LAST_CHECKED_TIME={}\nPROGRESS={:.6}\nCURRENT_OP={}\nNEW_VERSION={}\nNEW_SIZE={}\n",
        s.0, s.1, s.2, s.3, s.4
    )
}

/// The `-watch_for_updates` lines for one signal.
pub fn format_signal(s: &StatusTuple) -> String {
    format!(
        "Got status update:\n  last_checked_time: {}\n  progress: {}\n  current_operation: {}\n  new_version: {}\n  new_size: {}\n",
        s.0, s.1, s.2, s.3, s.4
    )
}

async fn proxy(bus: &Bus) -> Result<ManagerProxy<'static>, ClientError> {
    let conn = bus.connect().await?;
    Ok(ManagerProxy::new(&conn).await?)
}

/// `-status`: prints the status, exit 0.
pub async fn status(bus: &Bus, out: &mut impl Write) -> Result<i32, ClientError> {
    let p = proxy(bus).await?;
    let s = p.get_status().await?;
    out.write_all(format_status(&s).as_bytes())?;
    Ok(0)
}

/// `-check_for_update`: asks for a check and returns.
pub async fn check_for_update(bus: &Bus, out: &mut impl Write) -> Result<i32, ClientError> {
    let p = proxy(bus).await?;
    writeln!(out, "Initiating update check and install.")?;
    p.attempt_update().await?;
    Ok(0)
}

/// `-reset_status`.
pub async fn reset_status(bus: &Bus, out: &mut impl Write) -> Result<i32, ClientError> {
    let p = proxy(bus).await?;
    p.reset_status().await?;
    writeln!(out, "Status reset to UPDATE_STATUS_IDLE.")?;
    Ok(0)
}

/// `-update`: checks, then polls until NEED_REBOOT (exit 0) or IDLE (exit 1).
pub async fn update(bus: &Bus, poll: Duration, out: &mut impl Write) -> Result<i32, ClientError> {
    let p = proxy(bus).await?;
    writeln!(out, "Initiating update check and install.")?;
    p.attempt_update().await?;
    writeln!(out, "Waiting for update to complete.")?;
    let mut signals = p.receive_status_update().await?;
    let bar = std::io::stdout().is_terminal();
    loop {
        let s = p.get_status().await?;
        if bar {
            // A progress bar on a terminal only: redirected output stays plain.
            let filled = (s.1.clamp(0.0, 1.0) * 40.0) as usize;
            write!(
                out,
                "\r[{}{}] {:3.0}% {:<40}",
                "#".repeat(filled),
                " ".repeat(40 - filled),
                s.1 * 100.0,
                s.2
            )?;
            out.flush()?;
        }
        let done = matches!(
            UpdateStatus::parse(&s.2),
            Some(UpdateStatus::UpdatedNeedReboot | UpdateStatus::Idle)
        );
        if bar && done {
            writeln!(out)?;
        }
        match UpdateStatus::parse(&s.2) {
            Some(UpdateStatus::UpdatedNeedReboot) => {
                writeln!(out, "Update succeeded -- reboot needed.")?;
                return Ok(0);
            }
            Some(UpdateStatus::Idle) => {
                writeln!(out, "Update failed.")?;
                return Ok(1);
            }
            _ => {}
        }
        // Wake on the next signal or after the poll interval, whichever first.
        let _ = tokio::time::timeout(poll, signals.next()).await;
    }
}

/// `-watch_for_updates`: prints every StatusUpdate signal until the bus
/// goes away.
pub async fn watch(bus: &Bus, out: &mut impl Write) -> Result<i32, ClientError> {
    let p = proxy(bus).await?;
    let mut signals = p.receive_status_update().await?;
    while let Some(sig) = signals.next().await {
        let a = sig.args()?;
        let t = (
            *a.last_checked_time(),
            *a.progress(),
            a.current_operation().clone(),
            a.new_version().clone(),
            *a.new_size(),
        );
        out.write_all(format_signal(&t).as_bytes())?;
        out.flush()?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_matches_the_original() {
        let s = (
            12,
            0.5,
            "UPDATE_STATUS_DOWNLOADING".to_string(),
            "2.0.0".to_string(),
            1024,
        );
        assert_eq!(
            format_status(&s),
            "LAST_CHECKED_TIME=12\nPROGRESS=0.500000\nCURRENT_OP=UPDATE_STATUS_DOWNLOADING\nNEW_VERSION=2.0.0\nNEW_SIZE=1024\n"
        );
    }
}
