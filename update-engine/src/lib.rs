//! update_engine: A/B partition OS updates over Omaha, the GPT slot logic of
//! the boot loader, the `CrAU` payload format, an Omaha update server, and
//! the `com.coreos.update1` D-Bus service.

pub mod client;
pub mod config;
pub mod daemon;
pub mod dbus;
pub mod engine;
pub mod gpt;
pub mod omaha;
pub mod payload;
pub mod prefs;
pub mod schedule;
pub mod server;
pub mod status;
