//! Pod garbage collection: mark exited pods (`run` → `exited-garbage`), expire prepared ones, and
//! sweep garbage past its grace period under an exclusive lock (so a pod being used is never removed).

use std::time::Duration;

use super::{Pod, PodState, Pods};
use crate::error::{Error, Result};
use crate::lock::{self, LockMode};
use crate::timefmt::now_ns;

/// gc settings (defaults as in rkt: `--grace-period=30m`, `--expire-prepared=24h`).
#[derive(Clone, Debug)]
pub struct GcOptions {
    pub grace_period: Duration,
    pub expire_prepared: Duration,
    pub mark_only: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(30 * 60),
            expire_prepared: Duration::from_secs(24 * 3600),
            mark_only: false,
        }
    }
}

/// Runs one gc pass; returns the messages to print.
pub fn gc(pods: &Pods, opts: &GcOptions) -> Result<Vec<String>> {
    let mut msgs = Vec::new();
    let now = now_ns();
    for mut pod in pods.all()? {
        match pod.state {
            PodState::Exited => {
                pods.rename(&mut pod, "exited-garbage", PodState::ExitedGarbage)?;
                msgs.push(format!("Moving pod {:?} to garbage", pod.uuid));
            }
            PodState::AbortedPrepare => {
                pods.rename(&mut pod, "garbage", PodState::Garbage)?;
                msgs.push(format!("Moving failed prepare {:?} to garbage", pod.uuid));
            }
            PodState::Prepared => {
                let created = pod.created().unwrap_or(0);
                // Locked means run-prepared is taking it right now.
                if now - created > opts.expire_prepared.as_nanos() as i64
                    && let Some(_lock) = lock::try_lock(&pod.dir, LockMode::Exclusive)?
                {
                    pods.rename(&mut pod, "garbage", PodState::Garbage)?;
                    msgs.push(format!(
                        "Moving expired prepared pod {:?} to garbage",
                        pod.uuid
                    ));
                }
            }
            _ => {}
        }
    }
    if opts.mark_only {
        return Ok(msgs);
    }
    // After the marking renames above, so that a grace period of 0 sweeps what was just marked.
    let now = now_ns();
    for pod in pods.all()? {
        let due = match pod.state {
            PodState::ExitedGarbage => {
                now - pod.gc_marked().unwrap_or(now) >= opts.grace_period.as_nanos() as i64
            }
            PodState::Garbage => true,
            _ => false,
        };
        if due && sweep(&pod)? {
            msgs.push(format!("Garbage collecting pod {:?}", pod.uuid));
        }
    }
    Ok(msgs)
}

/// Deletes a garbage pod if nobody holds it; returns whether it was deleted.
pub fn sweep(pod: &Pod) -> Result<bool> {
    let Some(_lock) = lock::try_lock(&pod.dir, LockMode::Exclusive)? else {
        return Ok(false);
    };
    crate::stage1::cgroup::cleanup_recorded(&pod.dir);
    crate::stage1::net::release_all(&pod.rkt_dir(), &pod.uuid);
    crate::image::unpack::remove_tree(&pod.dir)?;
    Ok(true)
}

/// `rkt rm`: removes one pod now, whatever its (non-running) state.
pub fn remove(pods: &Pods, mut pod: Pod) -> Result<()> {
    match pod.state {
        PodState::Exited => pods.rename(&mut pod, "exited-garbage", PodState::ExitedGarbage)?,
        PodState::Prepared | PodState::AbortedPrepare | PodState::Embryo => {
            pods.rename(&mut pod, "garbage", PodState::Garbage)?
        }
        PodState::ExitedGarbage | PodState::Garbage => {}
        s => {
            return Err(Error::PodState {
                uuid: pod.uuid.clone(),
                state: s.as_str().to_string(),
                why: "cannot remove it".into(),
            });
        }
    }
    if !sweep(&pod)? {
        return Err(Error::PodState {
            uuid: pod.uuid.clone(),
            state: pod.state.as_str().to_string(),
            why: "it is locked by another process".into(),
        });
    }
    Ok(())
}
