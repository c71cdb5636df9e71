//! deploy: the local cluster bring-up (`coreos-up`) and, beside this crate's
//! sources, the install layout of the units and configs (`systemd/`,
//! `dbus-1/`, `cloud-config/`).

pub mod up;
