//! The harness's self-tests: hosts talk and can be cut apart, processes are
//! captured, killed and restarted, machines boot real systemd.

mod cloudinit;
mod coreos_up;
mod deploy;
mod hosts;
mod machines;
