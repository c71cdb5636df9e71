//! Hosts in network namespaces, joined by a bridge in a private switch
//! namespace.
//!
//! Each [`Network`] is fully isolated (its own switch namespace), so every
//! network uses the same subnet, 10.99.0.0/24: host `i` (from 1) is
//! 10.99.0.`i`. Nothing is routed to or from the machine's own namespaces.

use crate::names;
use crate::netns::NetNs;
use crate::process::{Process, Spawn};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

const KIND: &str = "ih";
/// The subnet every network uses (networks are isolated from each other).
const SUBNET_PREFIX: [u8; 3] = [10, 99, 0];
/// A MAC address no host has: neighbour entries pointing at it make the
/// kernel send a peer's packets nowhere, which is a silent drop.
const NOWHERE_MAC: &str = "02:00:00:00:de:ad";

/// A bridge that hosts are plugged into.
#[derive(Debug)]
pub struct Network {
    switch: Arc<NetNs>,
    prefix: String,
    next_host: AtomicU8,
}

/// One host: a network namespace with one interface, `eth0`, on a [`Network`].
#[derive(Debug)]
pub struct Host {
    ns: Arc<NetNs>,
    switch: Arc<NetNs>,
    /// The host's cable: the veth end in the switch namespace.
    port: String,
    label: String,
    addr: Ipv4Addr,
}

impl Network {
    /// Creates an empty network (a switch namespace with a bridge).
    pub fn new() -> anyhow::Result<Network> {
        NetNs::reap_stale(KIND);
        let prefix = names::unique(KIND);
        let switch = NetNs::create(&format!("{prefix}sw"))?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        Ok(Network {
            switch: Arc::new(switch),
            prefix,
            next_host: AtomicU8::new(1),
        })
    }

    /// Adds a host called `label` (used in messages only) with the next address.
    pub fn add_host(&self, label: &str) -> anyhow::Result<Host> {
        let index = self.next_host.fetch_add(1, Ordering::Relaxed);
        anyhow::ensure!(
            (1..=250).contains(&index),
            "a network holds at most 250 hosts"
        );
        let ns = NetNs::create(&format!("{}h{index}", self.prefix))?;
        let port = format!("p{index}");
        self.switch.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])?;
        self.switch
            .ip(&["link", "set", &port, "master", "br0", "up"])?;
        let [a, b, c] = SUBNET_PREFIX;
        let addr = Ipv4Addr::new(a, b, c, index);
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        Ok(Host {
            ns: Arc::new(ns),
            switch: Arc::clone(&self.switch),
            port,
            label: label.to_owned(),
            addr,
        })
    }

    /// Silently drops all traffic between `a` and `b`, both ways, while the
    /// rest of the network still reaches both.
    pub fn block(&self, a: &Host, b: &Host) -> anyhow::Result<()> {
        a.neighbour_nowhere(b.addr)?;
        b.neighbour_nowhere(a.addr)
    }

    /// Undoes [`Network::block`].
    pub fn unblock(&self, a: &Host, b: &Host) -> anyhow::Result<()> {
        a.forget_neighbour(b.addr)?;
        b.forget_neighbour(a.addr)
    }
}

impl Host {
    /// The host's IPv4 address on its network.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The label the host was created with.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The host's network namespace.
    pub fn netns(&self) -> &NetNs {
        &self.ns
    }

    pub(crate) fn netns_arc(&self) -> Arc<NetNs> {
        Arc::clone(&self.ns)
    }

    /// Starts a process inside this host.
    pub fn spawn(&self, spec: Spawn) -> anyhow::Result<Process> {
        Process::start(spec.in_netns(Arc::clone(&self.ns)))
    }

    /// Runs a command inside this host to completion and returns its output.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut full = vec!["netns", "exec", self.ns.name(), program];
        full.extend_from_slice(args);
        Ok(std::process::Command::new("ip").args(&full).output()?)
    }

    /// Runs `f` on a thread inside this host's network namespace.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> anyhow::Result<R> {
        self.ns.enter(f)
    }

    /// Starts a thread inside this host's network namespace (see
    /// [`NetNs::spawn_thread`]), e.g. for an in-process test server.
    pub fn spawn_thread<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<R>>> {
        self.ns.spawn_thread(f)
    }

    /// Cuts the host's cable: it reaches no one and no one reaches it.
    pub fn partition(&self) -> anyhow::Result<()> {
        self.switch
            .ip(&["link", "set", &self.port, "down"])
            .map(drop)
    }

    /// Plugs the cable back in after [`Host::partition`].
    pub fn heal(&self) -> anyhow::Result<()> {
        self.switch.ip(&["link", "set", &self.port, "up"]).map(drop)
    }

    fn neighbour_nowhere(&self, peer: Ipv4Addr) -> anyhow::Result<()> {
        let peer = peer.to_string();
        self.ns
            .ip(&[
                "neigh",
                "replace",
                &peer,
                "lladdr",
                NOWHERE_MAC,
                "nud",
                "permanent",
                "dev",
                "eth0",
            ])
            .map(drop)
    }

    fn forget_neighbour(&self, peer: Ipv4Addr) -> anyhow::Result<()> {
        let peer = peer.to_string();
        // Deleting the entry lets ARP find the real peer again.
        self.ns
            .ip(&["neigh", "del", &peer, "dev", "eth0"])
            .map(drop)
    }
}
