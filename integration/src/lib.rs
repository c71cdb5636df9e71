//! The multi-host test harness: hosts in network namespaces and machines running real systemd.
