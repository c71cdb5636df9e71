//! The systemd seam: a small trait, its D-Bus implementation (zbus) and a recording fake for tests.
//!
//! cloudinit never shells out to `systemctl`; every action goes to org.freedesktop.systemd1.Manager (and the
//! hostname to org.freedesktop.hostname1).

use std::sync::Mutex;

use async_trait::async_trait;

/// Errors from systemd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A D-Bus call failed.
    #[error("systemd {method}{}: {source}", unit.as_deref().map(|u| format!(" {u}")).unwrap_or_default())]
    Dbus {
        /// The method called.
        method: &'static str,
        /// The unit it was about, if any.
        unit: Option<String>,
        /// What D-Bus said.
        #[source]
        source: zbus::Error,
    },
    /// The unit is neither loaded nor found on disk.
    #[error("unit {0} not found")]
    NoSuchUnit(String),
    /// Anything the fake was told to fail.
    #[error("systemd {0}")]
    Other(String),
}

/// The D-Bus error systemd answers for a unit it cannot find.
const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";

/// A unit command from `coreos.units[].command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitCommand {
    /// StartUnit
    Start,
    /// StopUnit
    Stop,
    /// RestartUnit
    Restart,
    /// ReloadUnit
    Reload,
    /// TryRestartUnit
    TryRestart,
    /// ReloadOrRestartUnit
    ReloadOrRestart,
    /// ReloadOrTryRestartUnit
    ReloadOrTryRestart,
}

impl UnitCommand {
    /// Parses the cloud-config spelling.
    pub fn parse(text: &str) -> Option<UnitCommand> {
        Some(match text {
            "start" => UnitCommand::Start,
            "stop" => UnitCommand::Stop,
            "restart" => UnitCommand::Restart,
            "reload" => UnitCommand::Reload,
            "try-restart" => UnitCommand::TryRestart,
            "reload-or-restart" => UnitCommand::ReloadOrRestart,
            "reload-or-try-restart" => UnitCommand::ReloadOrTryRestart,
            _ => return None,
        })
    }

    /// The cloud-config spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            UnitCommand::Start => "start",
            UnitCommand::Stop => "stop",
            UnitCommand::Restart => "restart",
            UnitCommand::Reload => "reload",
            UnitCommand::TryRestart => "try-restart",
            UnitCommand::ReloadOrRestart => "reload-or-restart",
            UnitCommand::ReloadOrTryRestart => "reload-or-try-restart",
        }
    }
}

/// What cloudinit asks of systemd.
#[async_trait]
pub trait Systemd: Send + Sync {
    /// Manager.Reload (daemon-reload).
    async fn reload(&self) -> Result<(), Error>;
    /// Start/Stop/Restart/... a unit with mode "replace".
    async fn unit_command(&self, unit: &str, command: UnitCommand) -> Result<(), Error>;
    /// Manager.EnableUnitFiles.
    async fn enable_unit_files(
        &self,
        units: &[String],
        runtime: bool,
        force: bool,
    ) -> Result<(), Error>;
    /// Manager.MaskUnitFiles.
    async fn mask_unit_files(
        &self,
        units: &[String],
        runtime: bool,
        force: bool,
    ) -> Result<(), Error>;
    /// Manager.UnmaskUnitFiles.
    async fn unmask_unit_files(&self, units: &[String], runtime: bool) -> Result<(), Error>;
    /// Manager.StartTransientUnit running `argv` as a oneshot service.
    async fn start_transient(&self, unit: &str, argv: &[String]) -> Result<(), Error>;
    /// hostname1.SetStaticHostname and SetHostname.
    async fn set_hostname(&self, hostname: &str) -> Result<(), Error>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn reload(&self) -> zbus::Result<()>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<zbus::OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<zbus::OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<zbus::OwnedObjectPath>;
    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<zbus::OwnedObjectPath>;
    fn try_restart_unit(&self, name: &str, mode: &str) -> zbus::Result<zbus::OwnedObjectPath>;
    fn reload_or_restart_unit(&self, name: &str, mode: &str)
    -> zbus::Result<zbus::OwnedObjectPath>;
    fn reload_or_try_restart_unit(
        &self,
        name: &str,
        mode: &str,
    ) -> zbus::Result<zbus::OwnedObjectPath>;
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;
    fn mask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn unmask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    #[allow(clippy::type_complexity)]
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, zbus::Variant<'_>)],
        aux: &[(&str, Vec<(&str, zbus::Variant<'_>)>)],
    ) -> zbus::Result<zbus::OwnedObjectPath>;
}

#[zbus::proxy(
    interface = "org.freedesktop.hostname1",
    default_service = "org.freedesktop.hostname1",
    default_path = "/org/freedesktop/hostname1"
)]
trait Hostname {
    fn set_static_hostname(&self, hostname: &str, interactive: bool) -> zbus::Result<()>;
    fn set_hostname(&self, hostname: &str, interactive: bool) -> zbus::Result<()>;
}

/// The real systemd, over the system bus.
pub struct DbusSystemd {
    connection: zbus::Connection,
}

impl DbusSystemd {
    /// Connects to the system bus.
    pub async fn connect() -> Result<DbusSystemd, Error> {
        let connection = zbus::Connection::system()
            .await
            .map_err(|source| Error::Dbus {
                method: "connect",
                unit: None,
                source,
            })?;
        Ok(DbusSystemd { connection })
    }

    async fn manager(&self) -> Result<ManagerProxy<'_>, Error> {
        ManagerProxy::new(&self.connection)
            .await
            .map_err(|source| Error::Dbus {
                method: "proxy",
                unit: None,
                source,
            })
    }
}

/// Whether systemd answered NoSuchUnit; the error may arrive as a method error or through the error traits.
fn is_no_such_unit(e: &zbus::Error) -> bool {
    tracing::debug!("unit command error: {e:?}");
    match e {
        zbus::Error::MethodError(name, _, _) => name.as_str() == NO_SUCH_UNIT,
        other => other.to_string().starts_with(NO_SUCH_UNIT),
    }
}

fn dbus(method: &'static str, unit: Option<&str>) -> impl FnOnce(zbus::Error) -> Error {
    let unit = unit.map(str::to_string);
    move |source| Error::Dbus {
        method,
        unit,
        source,
    }
}

#[async_trait]
impl Systemd for DbusSystemd {
    async fn reload(&self) -> Result<(), Error> {
        self.manager()
            .await?
            .reload()
            .await
            .map_err(dbus("Reload", None))
    }

    async fn unit_command(&self, unit: &str, command: UnitCommand) -> Result<(), Error> {
        let m = self.manager().await?;
        let mode = "replace";
        let result = match command {
            UnitCommand::Start => m.start_unit(unit, mode).await,
            UnitCommand::Stop => m.stop_unit(unit, mode).await,
            UnitCommand::Restart => m.restart_unit(unit, mode).await,
            UnitCommand::Reload => m.reload_unit(unit, mode).await,
            UnitCommand::TryRestart => m.try_restart_unit(unit, mode).await,
            UnitCommand::ReloadOrRestart => m.reload_or_restart_unit(unit, mode).await,
            UnitCommand::ReloadOrTryRestart => m.reload_or_try_restart_unit(unit, mode).await,
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_no_such_unit(&e) => Err(Error::NoSuchUnit(unit.to_string())),
            Err(e) => Err(dbus(command.as_str(), Some(unit))(e)),
        }
    }

    async fn enable_unit_files(
        &self,
        units: &[String],
        runtime: bool,
        force: bool,
    ) -> Result<(), Error> {
        let names: Vec<&str> = units.iter().map(String::as_str).collect();
        let first = units.first().map(String::as_str);
        self.manager()
            .await?
            .enable_unit_files(&names, runtime, force)
            .await
            .map(|_| ())
            .map_err(dbus("EnableUnitFiles", first))
    }

    async fn mask_unit_files(
        &self,
        units: &[String],
        runtime: bool,
        force: bool,
    ) -> Result<(), Error> {
        let names: Vec<&str> = units.iter().map(String::as_str).collect();
        let first = units.first().map(String::as_str);
        self.manager()
            .await?
            .mask_unit_files(&names, runtime, force)
            .await
            .map(|_| ())
            .map_err(dbus("MaskUnitFiles", first))
    }

    async fn unmask_unit_files(&self, units: &[String], runtime: bool) -> Result<(), Error> {
        let names: Vec<&str> = units.iter().map(String::as_str).collect();
        let first = units.first().map(String::as_str);
        self.manager()
            .await?
            .unmask_unit_files(&names, runtime)
            .await
            .map(|_| ())
            .map_err(dbus("UnmaskUnitFiles", first))
    }

    async fn start_transient(&self, unit: &str, argv: &[String]) -> Result<(), Error> {
        let path = argv.first().cloned().unwrap_or_default();
        let exec: Vec<(String, Vec<String>, bool)> = vec![(path, argv.to_vec(), false)];
        let properties = [
            ("Type", zbus::Variant::from("oneshot")),
            ("RemainAfterExit", zbus::Variant::from(true)),
            ("ExecStart", zbus::Variant::from(exec)),
        ];
        self.manager()
            .await?
            .start_transient_unit(unit, "replace", &properties, &[])
            .await
            .map(|_| ())
            .map_err(dbus("StartTransientUnit", Some(unit)))
    }

    async fn set_hostname(&self, hostname: &str) -> Result<(), Error> {
        let proxy = HostnameProxy::new(&self.connection)
            .await
            .map_err(dbus("hostname1", None))?;
        proxy
            .set_static_hostname(hostname, false)
            .await
            .map_err(dbus("SetStaticHostname", None))?;
        proxy
            .set_hostname(hostname, false)
            .await
            .map_err(dbus("SetHostname", None))
    }
}

/// One call the [`Recording`] fake saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// reload
    Reload,
    /// a unit command
    Command(String, UnitCommand),
    /// EnableUnitFiles(units, runtime)
    Enable(Vec<String>, bool),
    /// MaskUnitFiles(units, runtime)
    Mask(Vec<String>, bool),
    /// UnmaskUnitFiles(units, runtime)
    Unmask(Vec<String>, bool),
    /// StartTransientUnit(unit, argv)
    Transient(String, Vec<String>),
    /// set the hostname
    Hostname(String),
}

/// A fake that records every call in order; for tests of apply against a temp root.
#[derive(Debug, Default)]
pub struct Recording {
    calls: Mutex<Vec<Call>>,
    /// Units whose commands fail, to test error handling.
    pub failing_units: Vec<String>,
    /// Units that do not exist (commands answer `NoSuchUnit`).
    pub missing_units: Vec<String>,
}

impl Recording {
    /// A fake on which `units` do not exist.
    pub fn with_missing_units(units: &[&str]) -> Recording {
        Recording {
            missing_units: units.iter().map(|u| u.to_string()).collect(),
            ..Default::default()
        }
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn record(&self, call: Call) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }
}

#[async_trait]
impl Systemd for Recording {
    async fn reload(&self) -> Result<(), Error> {
        self.record(Call::Reload);
        Ok(())
    }

    async fn unit_command(&self, unit: &str, command: UnitCommand) -> Result<(), Error> {
        self.record(Call::Command(unit.to_string(), command));
        if self.missing_units.iter().any(|u| u == unit) {
            return Err(Error::NoSuchUnit(unit.to_string()));
        }
        if self.failing_units.iter().any(|u| u == unit) {
            return Err(Error::Other(format!("{} {unit}: failed", command.as_str())));
        }
        Ok(())
    }

    async fn enable_unit_files(
        &self,
        units: &[String],
        runtime: bool,
        _force: bool,
    ) -> Result<(), Error> {
        self.record(Call::Enable(units.to_vec(), runtime));
        Ok(())
    }

    async fn mask_unit_files(
        &self,
        units: &[String],
        runtime: bool,
        _force: bool,
    ) -> Result<(), Error> {
        self.record(Call::Mask(units.to_vec(), runtime));
        Ok(())
    }

    async fn unmask_unit_files(&self, units: &[String], runtime: bool) -> Result<(), Error> {
        self.record(Call::Unmask(units.to_vec(), runtime));
        Ok(())
    }

    async fn start_transient(&self, unit: &str, argv: &[String]) -> Result<(), Error> {
        self.record(Call::Transient(unit.to_string(), argv.to_vec()));
        Ok(())
    }

    async fn set_hostname(&self, hostname: &str) -> Result<(), Error> {
        self.record(Call::Hostname(hostname.to_string()));
        Ok(())
    }
}
