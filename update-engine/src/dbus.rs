//! The `com.coreos.update1` D-Bus service: `AttemptUpdate`, `ResetStatus`,
//! `GetStatus` and the `StatusUpdate(x d s s x)` signal, served from an
//! [`EngineHandle`], plus the client proxy `update_engine_client` uses.

use tokio_util::sync::CancellationToken;
use zbus::object_server::SignalEmitter;

use crate::engine::EngineHandle;
use crate::status::StatusInfo;

/// The well-known bus name.
pub const BUS_NAME: &str = "com.coreos.update1";
/// The object path.
pub const OBJECT_PATH: &str = "/com/coreos/update1";
/// The interface name.
pub const INTERFACE: &str = "com.coreos.update1.Manager";

/// Which bus to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bus {
    /// The system bus (`DBUS_SYSTEM_BUS_ADDRESS` or the default socket).
    System,
    /// An explicit address such as `unix:path=/run/dbus/system_bus_socket`.
    Address(String),
}

impl Bus {
    fn builder(&self) -> zbus::connection::Builder<'static> {
        match self {
            Bus::System => zbus::connection::Builder::system(),
            Bus::Address(a) => zbus::connection::Builder::address(a.as_str()),
        }
    }

    /// A client connection.
    pub async fn connect(&self) -> zbus::Result<zbus::Connection> {
        self.builder().build().await
    }
}

/// The `GetStatus` / `StatusUpdate` body.
pub type StatusTuple = (i64, f64, String, String, i64);

/// The status as its D-Bus tuple.
pub fn to_tuple(s: &StatusInfo) -> StatusTuple {
    (
        s.last_checked_time,
        s.progress,
        s.current_operation.as_str().to_owned(),
        s.new_version.clone(),
        s.new_size,
    )
}

/// The served object.
pub struct Manager {
    engine: EngineHandle,
}

#[zbus::interface(name = "com.coreos.update1.Manager")]
impl Manager {
    /// Starts an update check unless one is under way.
    async fn attempt_update(&self) {
        self.engine.attempt_update().await;
    }

    /// Returns to IDLE after an update (the GPT flip stays).
    async fn reset_status(&self) {
        self.engine.reset_status().await;
    }

    #[zbus(out_args(
        "last_checked_time",
        "progress",
        "current_operation",
        "new_version",
        "new_size"
    ))]
    async fn get_status(&self) -> StatusTuple {
        to_tuple(&self.engine.status())
    }

    #[zbus(signal)]
    async fn status_update(
        emitter: &SignalEmitter<'_>,
        last_checked_time: i64,
        progress: f64,
        current_operation: &str,
        new_version: &str,
        new_size: i64,
    ) -> zbus::Result<()>;
}

/// Registers the service on `bus`, then relays every engine status change
/// as a `StatusUpdate` signal until `shutdown`.
pub async fn serve(
    engine: EngineHandle,
    bus: Bus,
    shutdown: CancellationToken,
) -> zbus::Result<()> {
    let mut changes = engine.subscribe();
    let conn = bus
        .builder()
        .serve_at(OBJECT_PATH, Manager { engine })
        .name(BUS_NAME)
        .build()
        .await?;
    tracing::info!("serving {BUS_NAME} on D-Bus");
    let emitter = SignalEmitter::new(&conn, OBJECT_PATH)?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            change = changes.recv() => match change {
                Ok(s) => {
                    Manager::status_update(
                        &emitter,
                        s.last_checked_time,
                        s.progress,
                        s.current_operation.as_str(),
                        &s.new_version,
                        s.new_size,
                    )
                    .await?;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("{n} status updates were not signalled");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

/// The client side of the interface.
pub mod client {
    /// `com.coreos.update1.Manager` as seen by clients.
    #[zbus::proxy(
        interface = "com.coreos.update1.Manager",
        default_service = "com.coreos.update1",
        default_path = "/com/coreos/update1"
    )]
    pub trait Manager {
        fn attempt_update(&self) -> zbus::Result<()>;
        fn reset_status(&self) -> zbus::Result<()>;
        fn get_status(&self) -> zbus::Result<(i64, f64, String, String, i64)>;
        #[zbus(signal)]
        fn status_update(
            &self,
            last_checked_time: i64,
            progress: f64,
            current_operation: String,
            new_version: String,
            new_size: i64,
        ) -> zbus::Result<()>;
    }
}
