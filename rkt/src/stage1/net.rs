//! Pod networking. `--net=none`: a private network namespace with only `lo`. `--net=host`: the
//! host's namespace. `--net=default` (or another network named in `/etc/rkt/net.d/*.conf`): a
//! veth pair from the pod's `eth0` to a host bridge, an address from the network's pool
//! (allocations persisted under `<dir>/net/<network>/`, released at gc), a default route via the
//! bridge, and masquerading for outbound traffic. A network of `"type": "flannel"` takes its
//! subnet and MTU from flannel's `/run/flannel/subnet.env`, so pods on different machines reach
//! each other through the overlay.
//!
//! Host-side links are made with iproute2 (`ip`) and masquerading with `iptables`, behind the
//! `HostNet` seam; the pod side is configured from inside the pod with ioctls.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result, from_json};
use crate::lock::{self, LockMode};

/// Default network settings, as rkt's built-in `default` network.
pub const DEFAULT_SUBNET: &str = "172.16.28.0/24";
/// The host bridge of the default network.
pub const DEFAULT_BRIDGE: &str = "rkt0";
/// Where network configurations live.
pub const NET_CONF_DIR: &str = "/etc/rkt/net.d";
/// Where flannel writes the machine's subnet.
pub const FLANNEL_SUBNET_FILE: &str = "/run/flannel/subnet.env";

/// The network modes `--net` accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetMode {
    Host,
    None,
    /// A named network (`default` or one from net.d).
    Named(String),
}

impl NetMode {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "host" => Ok(Self::Host),
            "none" => Ok(Self::None),
            "" => Ok(Self::Named("default".into())),
            n if n.contains(',') || n.contains(':') => Err(Error::NotImplemented(format!(
                "--net={n}: several networks or network arguments per pod"
            ))),
            n if n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Ok(Self::Named(n.into()))
            }
            n => Err(Error::Usage(format!("--net={n}: invalid network name"))),
        }
    }
}

/// A network configuration file (CNI-like).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub name: String,
    /// `bridge` or `flannel`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub bridge: Option<String>,
    #[serde(default)]
    pub ip_masq: Option<bool>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub ipam: Option<Ipam>,
    /// For flannel networks (default /run/flannel/subnet.env).
    #[serde(default)]
    pub subnet_file: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ipam {
    pub subnet: String,
    #[serde(default)]
    pub gateway: Option<String>,
}

/// A network resolved to concrete values (stored in the pod manifest).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    pub name: String,
    pub bridge: String,
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub ip_masq: bool,
    pub mtu: u32,
    /// Whether the pod gets a default route through the bridge (`default-restricted`: no).
    #[serde(default = "yes")]
    pub default_route: bool,
}

fn yes() -> bool {
    true
}

/// A pod's address on a network (`<pod>/net/info.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub net_name: String,
    pub if_name: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub host_if: String,
    pub mtu: u32,
    #[serde(default = "yes")]
    pub default_route: bool,
}

fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let bad = || Error::Usage(format!("invalid IPv4 CIDR {s:?}"));
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let prefix: u8 = p.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&prefix) {
        return Err(bad());
    }
    Ok((addr, prefix))
}

fn mask(prefix: u8) -> u32 {
    u32::MAX << (32 - prefix as u32)
}

/// Parses flannel's subnet.env (`FLANNEL_SUBNET=10.1.15.1/24`, `FLANNEL_MTU=1472`, `FLANNEL_IPMASQ=true`).
pub fn parse_subnet_env(text: &str) -> Result<(Ipv4Addr, u8, u32, bool)> {
    let get = |k: &str| {
        text.lines()
            .filter_map(|l| l.trim().split_once('='))
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.trim().to_string())
    };
    let subnet = get("FLANNEL_SUBNET")
        .ok_or_else(|| Error::Usage("subnet.env has no FLANNEL_SUBNET".into()))?;
    let (gw, prefix) = parse_cidr(&subnet)?;
    let mtu = get("FLANNEL_MTU")
        .and_then(|m| m.parse().ok())
        .unwrap_or(1500);
    let flannel_masq = get("FLANNEL_IPMASQ").is_some_and(|v| v == "true");
    Ok((gw, prefix, mtu, flannel_masq))
}

impl NetConf {
    /// The built-in default network.
    pub fn builtin_default() -> Self {
        Self {
            name: "default".into(),
            kind: "bridge".into(),
            bridge: Some(DEFAULT_BRIDGE.into()),
            ip_masq: Some(true),
            mtu: None,
            ipam: Some(Ipam {
                subnet: DEFAULT_SUBNET.into(),
                gateway: None,
            }),
            subnet_file: None,
        }
    }

    /// Resolves the configuration into concrete addresses.
    pub fn resolve(&self) -> Result<Network> {
        match self.kind.as_str() {
            "bridge" => {
                let ipam = self.ipam.as_ref().ok_or_else(|| {
                    Error::Usage(format!("network {}: ipam.subnet is required", self.name))
                })?;
                let (addr, prefix) = parse_cidr(&ipam.subnet)?;
                let subnet = Ipv4Addr::from(u32::from(addr) & mask(prefix));
                let gateway = match &ipam.gateway {
                    Some(g) => g.parse().map_err(|_| {
                        Error::Usage(format!("network {}: bad gateway {g:?}", self.name))
                    })?,
                    None => Ipv4Addr::from(u32::from(subnet) + 1),
                };
                Ok(Network {
                    name: self.name.clone(),
                    bridge: self
                        .bridge
                        .clone()
                        .unwrap_or_else(|| format!("rkt-{}", self.name)),
                    subnet,
                    prefix,
                    gateway,
                    ip_masq: self.ip_masq.unwrap_or(true),
                    mtu: self.mtu.unwrap_or(1500),
                    default_route: true,
                })
            }
            "flannel" => {
                let file = self
                    .subnet_file
                    .clone()
                    .unwrap_or_else(|| FLANNEL_SUBNET_FILE.into());
                let text = fs::read_to_string(&file).ctx("reading flannel subnet file", &file)?;
                let (gw, prefix, mtu, flannel_masq) = parse_subnet_env(&text)?;
                Ok(Network {
                    name: self.name.clone(),
                    bridge: self.bridge.clone().unwrap_or_else(|| "rkt-flannel0".into()),
                    subnet: Ipv4Addr::from(u32::from(gw) & mask(prefix)),
                    prefix,
                    gateway: gw,
                    // flannel masquerades itself when started with --ip-masq.
                    ip_masq: self.ip_masq.unwrap_or(!flannel_masq),
                    mtu: self.mtu.unwrap_or(mtu),
                    default_route: true,
                })
            }
            other => Err(Error::NotImplemented(format!(
                "network {}: plugin type {other:?} (bridge and flannel are supported)",
                self.name
            ))),
        }
    }
}

/// Finds network `name` in `conf_dir` (`*.conf`, JSON, by their `name`); `default` falls back
/// to the built-in network.
pub fn load(conf_dir: &Path, name: &str) -> Result<Network> {
    if let Ok(entries) = fs::read_dir(conf_dir) {
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        files.sort();
        for f in files {
            let bytes = fs::read(&f).ctx("reading network config", &f)?;
            let conf: NetConf = from_json(&bytes, &f.display().to_string())?;
            if conf.name == name {
                return conf.resolve();
            }
        }
    }
    if name == "default" {
        return NetConf::builtin_default().resolve();
    }
    if name == "default-restricted" {
        // The default network without a default route or masquerading: pods reach the host and
        // each other only.
        let mut n = NetConf::builtin_default().resolve()?;
        n.name = "default-restricted".into();
        n.bridge = "rkt1".into();
        n.subnet = Ipv4Addr::new(172, 17, 28, 0);
        n.gateway = Ipv4Addr::new(172, 17, 28, 1);
        n.ip_masq = false;
        n.default_route = false;
        return Ok(n);
    }
    Err(Error::Usage(format!(
        "network {name:?} not found in {}",
        conf_dir.display()
    )))
}

/// The persisted address pool of a network under `<dir>/net/<name>/`: one file per address,
/// holding the owning pod's uuid.
pub struct Pool {
    dir: PathBuf,
}

impl Pool {
    pub fn open(rkt_dir: &Path, network: &str) -> Result<Self> {
        let dir = rkt_dir.join("net").join(network);
        fs::create_dir_all(&dir).ctx("creating", &dir)?;
        Ok(Self { dir })
    }

    /// Allocates the lowest free address for `uuid`.
    pub fn allocate(&self, net: &Network, uuid: &str) -> Result<Ipv4Addr> {
        let _l = lock::lock(&self.dir.join("lock"), LockMode::Exclusive)?;
        let first = u32::from(net.subnet) + 1;
        let last = u32::from(net.subnet) | !mask(net.prefix);
        for n in first..last {
            let ip = Ipv4Addr::from(n);
            if ip == net.gateway {
                continue;
            }
            let f = self.dir.join(ip.to_string());
            if !f.exists() {
                fs::write(&f, uuid).ctx("recording address", &f)?;
                return Ok(ip);
            }
        }
        Err(Error::Stage1(format!(
            "network {}: no free address",
            net.name
        )))
    }

    /// Releases every address `uuid` holds.
    pub fn release(&self, uuid: &str) -> Result<usize> {
        let _l = lock::lock(&self.dir.join("lock"), LockMode::Exclusive)?;
        let mut n = 0;
        for e in fs::read_dir(&self.dir).ctx("listing", &self.dir)?.flatten() {
            if e.file_name() == "lock" {
                continue;
            }
            if fs::read_to_string(e.path()).is_ok_and(|s| s.trim() == uuid) {
                fs::remove_file(e.path()).ctx("releasing address", e.path())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Releases a pod's addresses in every network (gc).
pub fn release_all(rkt_dir: &Path, uuid: &str) {
    if let Ok(entries) = fs::read_dir(rkt_dir.join("net")) {
        for e in entries.flatten() {
            if let Some(name) = e.file_name().to_str()
                && let Ok(pool) = Pool::open(rkt_dir, name)
            {
                let _ = pool.release(uuid);
            }
        }
    }
}

/// Host-side network operations (the seam over iproute2 and iptables).
pub trait HostNet {
    /// Creates the bridge with the gateway address if it does not exist.
    fn ensure_bridge(&self, net: &Network) -> Result<()>;
    /// Creates a veth pair: `host_if` on the bridge, its peer `eth0` in the netns of `pid`.
    fn add_veth(&self, net: &Network, host_if: &str, pid: i32) -> Result<()>;
    /// Enables forwarding and masquerading of the subnet's outbound traffic.
    fn masquerade(&self, net: &Network) -> Result<()>;
}

/// The real implementation, with `ip` and `iptables`.
pub struct IpRoute2;

fn run(cmd: &mut Command) -> Result<std::process::Output> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().ctx("running", shown.clone())?;
    if !out.status.success() {
        return Err(Error::Stage1(format!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

impl HostNet for IpRoute2 {
    fn ensure_bridge(&self, net: &Network) -> Result<()> {
        let exists = Command::new("ip")
            .args(["link", "show", "dev", &net.bridge])
            .output()
            .ctx("running", "ip link show")?
            .status
            .success();
        if !exists {
            // Concurrent pods may race to create it; EEXIST is fine.
            let _ = Command::new("ip")
                .args(["link", "add", "name", &net.bridge, "type", "bridge"])
                .output();
        }
        let cidr = format!("{}/{}", net.gateway, net.prefix);
        let addrs = run(Command::new("ip").args(["-4", "-o", "addr", "show", "dev", &net.bridge]))?;
        if !String::from_utf8_lossy(&addrs.stdout).contains(&format!(" {cidr} ")) {
            let _ = Command::new("ip")
                .args(["addr", "add", &cidr, "dev", &net.bridge])
                .output();
        }
        run(Command::new("ip").args([
            "link",
            "set",
            "dev",
            &net.bridge,
            "mtu",
            &net.mtu.to_string(),
            "up",
        ]))?;
        Ok(())
    }

    fn add_veth(&self, net: &Network, host_if: &str, pid: i32) -> Result<()> {
        let mtu = net.mtu.to_string();
        run(Command::new("ip").args([
            "link",
            "add",
            "name",
            host_if,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "mtu",
            &mtu,
            "netns",
            &pid.to_string(),
        ]))?;
        run(Command::new("ip").args(["link", "set", "dev", host_if, "master", &net.bridge, "up"]))?;
        Ok(())
    }

    fn masquerade(&self, net: &Network) -> Result<()> {
        fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .ctx("enabling", "/proc/sys/net/ipv4/ip_forward")?;
        let subnet = format!("{}/{}", net.subnet, net.prefix);
        let rule = [
            "POSTROUTING",
            "-s",
            &subnet,
            "!",
            "-d",
            &subnet,
            "-j",
            "MASQUERADE",
            "-m",
            "comment",
            "--comment",
            "rkt",
        ];
        let present = Command::new("iptables")
            .args(["-w", "-t", "nat", "-C"])
            .args(rule)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !present {
            run(Command::new("iptables")
                .args(["-w", "-t", "nat", "-A"])
                .args(rule))?;
        }
        Ok(())
    }
}

/// Sets up the host side for a pod whose init (already in its own netns) has host pid `pid`.
pub fn attach(
    host: &dyn HostNet,
    rkt_dir: &Path,
    net: &Network,
    uuid: &str,
    pid: i32,
) -> Result<Attachment> {
    let ip = Pool::open(rkt_dir, &net.name)?.allocate(net, uuid)?;
    let host_if = format!("veth{}", &uuid.replace('-', "")[..8]);
    host.ensure_bridge(net)?;
    host.add_veth(net, &host_if, pid)?;
    if net.ip_masq {
        host.masquerade(net)?;
    }
    Ok(Attachment {
        net_name: net.name.clone(),
        if_name: "eth0".into(),
        ip,
        prefix: net.prefix,
        gateway: net.gateway,
        host_if,
        mtu: net.mtu,
        default_route: net.default_route,
    })
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in name.bytes().take(libc::IFNAMSIZ - 1).enumerate() {
        ifr.ifr_name[i] = b as libc::c_char;
    }
    ifr
}

fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; this is how the ioctls take addresses.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

struct Sock(i32);

impl Drop for Sock {
    fn drop(&mut self) {
        // SAFETY: closing a socket we opened.
        unsafe { libc::close(self.0) };
    }
}

fn sock() -> Result<Sock> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::Stage1(format!(
            "socket: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(Sock(fd))
}

fn ioctl(s: &Sock, req: libc::c_ulong, arg: *mut libc::c_void, what: &str) -> Result<()> {
    // SAFETY: `arg` points to the struct the request expects (ifreq or rtentry).
    if unsafe { libc::ioctl(s.0, req as _, arg) } < 0 {
        return Err(Error::Stage1(format!(
            "{what}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

fn link_up(s: &Sock, name: &str) -> Result<()> {
    let mut ifr = ifreq(name);
    ioctl(
        s,
        libc::SIOCGIFFLAGS,
        &mut ifr as *mut _ as *mut _,
        "SIOCGIFFLAGS",
    )?;
    // SAFETY: the union member set by SIOCGIFFLAGS.
    unsafe { ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(
        s,
        libc::SIOCSIFFLAGS,
        &mut ifr as *mut _ as *mut _,
        "SIOCSIFFLAGS",
    )
}

/// Brings `lo` up in the current network namespace.
pub fn loopback_up() -> Result<()> {
    link_up(&sock()?, "lo")
}

/// `struct rtentry` from <net/route.h> (the libc crate has it only for musl and uclibc).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// Configures the pod's `eth0` from inside its namespace: address, up, default route.
pub fn configure_pod_side(a: &Attachment) -> Result<()> {
    let s = sock()?;
    let mut ifr = ifreq(&a.if_name);
    ifr.ifr_ifru.ifru_addr = sockaddr_in(a.ip);
    ioctl(
        &s,
        libc::SIOCSIFADDR,
        &mut ifr as *mut _ as *mut _,
        "SIOCSIFADDR",
    )?;
    let mut ifr = ifreq(&a.if_name);
    ifr.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask(a.prefix)));
    ioctl(
        &s,
        libc::SIOCSIFNETMASK,
        &mut ifr as *mut _ as *mut _,
        "SIOCSIFNETMASK",
    )?;
    link_up(&s, &a.if_name)?;
    if !a.default_route {
        return Ok(());
    }
    // SAFETY: RtEntry is plain old data; all-zero is valid.
    let mut rt: RtEntry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr_in(a.gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    ioctl(
        &s,
        libc::SIOCADDRT,
        &mut rt as *mut _ as *mut _,
        "adding the default route",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_network_and_flannel_subnet_env() {
        let n = NetConf::builtin_default().resolve().unwrap();
        assert_eq!(
            (n.subnet, n.prefix, n.gateway),
            (
                "172.16.28.0".parse().unwrap(),
                24,
                "172.16.28.1".parse().unwrap()
            )
        );
        let (gw, prefix, mtu, masq) =
            parse_subnet_env("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.15.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n")
                .unwrap();
        assert_eq!(
            (gw, prefix, mtu, masq),
            ("10.1.15.1".parse().unwrap(), 24, 1472, true)
        );
        assert!(parse_subnet_env("FLANNEL_MTU=1\n").is_err());
        assert!(matches!(
            NetMode::parse("a,b"),
            Err(Error::NotImplemented(_))
        ));
        assert_eq!(NetMode::parse("host").unwrap(), NetMode::Host);
    }

    #[test]
    fn flannel_conf_resolves_from_its_subnet_file() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("subnet.env");
        fs::write(
            &env,
            "FLANNEL_SUBNET=10.5.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("10-flannel.conf"),
            format!(
                r#"{{"name":"flannel","type":"flannel","subnetFile":"{}"}}"#,
                env.display()
            ),
        )
        .unwrap();
        let n = load(dir.path(), "flannel").unwrap();
        assert_eq!(n.subnet, "10.5.3.0".parse::<Ipv4Addr>().unwrap());
        assert_eq!(n.gateway, "10.5.3.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!((n.mtu, n.ip_masq), (1450, true));
        assert!(load(dir.path(), "nope").is_err());
        assert_eq!(load(dir.path(), "default").unwrap().bridge, DEFAULT_BRIDGE);
    }

    #[test]
    fn pool_allocates_persists_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let mut net = NetConf::builtin_default().resolve().unwrap();
        net.prefix = 29; // 8 addresses: .1 gateway, .2-.6 usable, .7 broadcast
        let pool = Pool::open(dir.path(), "default").unwrap();
        let a = pool.allocate(&net, "pod-a").unwrap();
        let b = pool.allocate(&net, "pod-b").unwrap();
        assert_eq!(a.to_string(), "172.16.28.2");
        assert_eq!(b.to_string(), "172.16.28.3");
        for u in ["c", "d", "e"] {
            pool.allocate(&net, u).unwrap();
        }
        assert!(pool.allocate(&net, "f").is_err(), "pool exhausted");
        assert_eq!(
            Pool::open(dir.path(), "default")
                .unwrap()
                .release("pod-a")
                .unwrap(),
            1
        );
        assert_eq!(pool.allocate(&net, "g").unwrap(), a);
    }
}
