//! The update-engine integration tests: GPT images built with sgdisk, payloads,
//! full update cycles against a local update-server, and D-Bus on a private
//! dbus-daemon.

mod common;
mod dbus;
mod flow;
mod gpt;
mod loopdev;
mod payload;
