//! Hosts in network namespaces: reachability, partitions, processes.

use integration::{Network, Spawn};
use std::time::Duration;

fn pings(from: &integration::Host, to: &integration::Host) -> bool {
    let out = from
        .exec("ping", &["-c", "1", "-W", "1", &to.addr().to_string()])
        .expect("running ping");
    out.status.success()
}

#[test]
fn two_hosts_ping_each_other_and_a_partition_stops_it() {
    let net = Network::new().unwrap();
    let a = net.add_host("a").unwrap();
    let b = net.add_host("b").unwrap();
    assert_ne!(a.addr(), b.addr());
    assert!(pings(&a, &b), "a cannot reach b");
    assert!(pings(&b, &a), "b cannot reach a");

    a.partition().unwrap();
    assert!(!pings(&a, &b), "a reaches b through a cut link");
    assert!(!pings(&b, &a), "b reaches a through a cut link");

    a.heal().unwrap();
    assert!(pings(&a, &b), "a cannot reach b after healing");
}

#[test]
fn blocking_two_hosts_leaves_the_others_connected() {
    let net = Network::new().unwrap();
    let a = net.add_host("a").unwrap();
    let b = net.add_host("b").unwrap();
    let c = net.add_host("c").unwrap();
    net.block(&a, &b).unwrap();
    assert!(!pings(&a, &b), "blocked pair still connected");
    assert!(!pings(&b, &a), "blocked pair still connected");
    assert!(pings(&a, &c) && pings(&b, &c), "blocking a-b cut c off");
    net.unblock(&a, &b).unwrap();
    assert!(pings(&a, &b), "unblocked pair not reconnected");
}

#[test]
fn hosts_of_different_networks_are_isolated() {
    let one = Network::new().unwrap();
    let two = Network::new().unwrap();
    let a = one.add_host("a").unwrap();
    let b = two.add_host("b").unwrap();
    // Same subnet, same address: each network is its own world.
    assert_eq!(a.addr(), b.addr());
    let other = two.add_host("c").unwrap();
    assert!(!pings(&a, &other), "a host reached another network");
}

#[test]
fn a_process_in_a_host_is_captured_killed_and_restarted() {
    let net = Network::new().unwrap();
    let a = net.add_host("a").unwrap();
    // The process prints its network: proof it runs inside the host.
    let script = "ip -4 -br addr show dev eth0; echo started; exec sleep 600";
    let mut p = a.spawn(Spawn::new("sh").args(["-c", script])).unwrap();
    p.wait_for_output("started", Duration::from_secs(10))
        .unwrap();
    assert!(
        p.stdout().contains(&a.addr().to_string()),
        "stdout: {}",
        p.stdout()
    );

    let first = p.pid();
    let status = p.kill9().unwrap();
    assert!(!status.success());
    p.restart().unwrap();
    assert_ne!(p.pid(), first);
    integration::poll_until(
        "a second start",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || (p.stdout().matches("started").count() == 2).then_some(()),
    )
    .unwrap();
}

#[test]
fn a_closure_entered_into_a_host_opens_sockets_there() {
    let net = Network::new().unwrap();
    let a = net.add_host("a").unwrap();
    let b = net.add_host("b").unwrap();
    let addr = b.addr();
    let listener = b
        .enter(|| std::net::TcpListener::bind((addr, 0)))
        .unwrap()
        .expect("binding in b");
    let port = listener.local_addr().unwrap().port();
    let stream = a
        .enter(|| std::net::TcpStream::connect((addr, port)))
        .unwrap();
    assert!(stream.is_ok(), "a cannot connect to b: {stream:?}");
    // The test's own namespace has no route to the hosts.
    assert!(
        std::net::TcpStream::connect_timeout(&(addr, port).into(), Duration::from_millis(300))
            .is_err()
    );
}

#[test]
fn a_thread_spawned_into_a_host_serves_other_hosts() {
    let net = Network::new().unwrap();
    let a = net.add_host("a").unwrap();
    let b = net.add_host("b").unwrap();
    let addr = b.addr();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    // The thread binds b's address itself: only possible inside b.
    let server = b
        .spawn_thread(move || {
            use std::io::Write;
            let listener = std::net::TcpListener::bind((addr, 0)).unwrap();
            port_tx.send(listener.local_addr().unwrap().port()).unwrap();
            let (mut conn, peer) = listener.accept().unwrap();
            conn.write_all(b"hello").unwrap();
            peer
        })
        .unwrap();
    let port = port_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let received = a
        .enter(|| {
            use std::io::Read;
            let mut conn = std::net::TcpStream::connect((addr, port)).unwrap();
            let mut text = String::new();
            conn.read_to_string(&mut text).unwrap();
            text
        })
        .unwrap();
    assert_eq!(received, "hello");
    let peer = server.join().unwrap().unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::V4(a.addr()));
}
