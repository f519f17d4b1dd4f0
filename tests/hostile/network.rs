//! Network attacks: a step has its own network namespace with only `lo`, so nothing on the
//! host's loopback, interfaces or the internet is reachable, and it cannot build interfaces.

use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::time::Duration;

use crate::support::{Hostile, unique_marker};

/// A host TCP listener the step will try to reach; asserts afterwards that nothing arrived.
fn listener(addr: &str) -> TcpListener {
    let listener = TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

#[track_caller]
fn assert_nothing_arrived(listener: &TcpListener) {
    std::thread::sleep(Duration::from_millis(50));
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a connection reached the host listener: {other:?}"),
    }
}

#[test]
fn step_cannot_connect_to_a_host_loopback_tcp_listener() {
    let host = listener("127.0.0.1:0");
    let port = host.local_addr().unwrap().port();
    let v = Hostile::new().attack(&format!("tcp 127.0.0.1 {port}"));
    v.assert_denied(&format!("tcp: ECONNREFUSED connect 127.0.0.1 port {port}"));
    assert_nothing_arrived(&host);
}

#[test]
fn step_cannot_send_to_a_host_loopback_udp_socket() {
    let host = UdpSocket::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port();
    let v = Hostile::new().attack(&format!("udp 127.0.0.1 {port}"));
    // The datagram went to the step's own lo, where nothing listens: ICMP port unreachable.
    v.assert_denied(&format!(
        "udp: ECONNREFUSED recv from 127.0.0.1 port {port}"
    ));
    let mut buf = [0u8; 64];
    match host.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a datagram reached the host socket: {other:?}"),
    }
}

#[test]
fn step_cannot_connect_to_a_host_ipv6_loopback_listener() {
    let host = listener("[::1]:0");
    let port = host.local_addr().unwrap().port();
    let v = Hostile::new().attack(&format!("tcp ::1 {port}"));
    v.assert_denied(&format!("tcp: ECONNREFUSED connect ::1 port {port}"));
    assert_nothing_arrived(&host);
}

#[test]
fn step_has_no_ipv6_route_out() {
    let v = Hostile::new().attack("tcp 2001:4860:4860::8888 443");
    v.assert_denied("tcp: ENETUNREACH connect 2001:4860:4860::8888");
}

#[test]
fn step_cannot_reach_a_listener_on_a_host_interface_address() {
    // The host's own address on its outward interface (no packet is sent to learn it).
    let probe = UdpSocket::bind("0.0.0.0:0").unwrap();
    probe.connect("192.0.2.1:9").unwrap();
    let ip = probe.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "the host has no outward address");
    let host = listener(&format!("{ip}:0"));
    let port = host.local_addr().unwrap().port();
    let v = Hostile::new().attack(&format!("tcp {ip} {port}"));
    v.assert_denied(&format!("tcp: ENETUNREACH connect {ip} port {port}"));
    assert_nothing_arrived(&host);
}

#[test]
fn step_has_no_resolver_configured() {
    let v = Hostile::new().attack("dns");
    v.assert_denied("dns: ENOENT /etc/resolv.conf");
}

#[test]
fn step_cannot_query_a_public_dns_server() {
    let v = Hostile::new().attack("dns 8.8.8.8");
    v.assert_denied("dns: ENETUNREACH connect 8.8.8.8 port 53");
}

#[test]
fn step_cannot_query_the_hosts_own_resolver() {
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let server = resolv
        .lines()
        .find_map(|l| l.strip_prefix("nameserver "))
        .map(str::trim)
        .unwrap_or("127.0.0.53")
        .to_owned();
    let v = Hostile::new().attack(&format!("dns {server}"));
    // A loopback resolver is the step's own (empty) lo; any other address has no route.
    let ip: std::net::IpAddr = server.parse().unwrap();
    if ip.is_loopback() {
        v.assert_denied(&format!("dns: ECONNREFUSED recv from {server} port 53"));
    } else {
        v.assert_denied(&format!("dns: ENETUNREACH connect {server} port 53"));
    }
}

#[test]
fn step_cannot_open_raw_sockets() {
    let v = Hostile::new().attack("raw");
    v.assert_denied("raw: EPERM AF_INET SOCK_RAW, EPERM AF_INET6 SOCK_RAW");
}

#[test]
fn step_cannot_open_packet_sockets() {
    let v = Hostile::new().attack("packet");
    v.assert_denied("packet: EPERM AF_PACKET SOCK_RAW, EPERM AF_PACKET SOCK_DGRAM");
}

#[test]
fn step_cannot_create_a_dummy_interface_over_netlink() {
    let v = Hostile::new().attack("netlink-newlink dummy");
    v.assert_denied("netlink-newlink: EPERM RTM_NEWLINK dummy");
}

#[test]
fn step_cannot_create_a_veth_pair_over_netlink() {
    let v = Hostile::new().attack("netlink-newlink veth");
    v.assert_denied("netlink-newlink: EPERM RTM_NEWLINK veth");
}

#[test]
fn step_cannot_connect_to_a_host_abstract_unix_socket() {
    let name = unique_marker("abstract");
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let host = UnixListener::bind_addr(&addr).unwrap();
    host.set_nonblocking(true).unwrap();
    let v = Hostile::new().attack(&format!("unix-abstract {name}"));
    // Abstract names belong to the network namespace: the step's has none of the host's.
    v.assert_denied(&format!("unix-abstract: ECONNREFUSED connect @{name}"));
    match host.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a connection reached the host socket: {other:?}"),
    }
}

#[test]
fn step_cannot_connect_to_a_host_unix_socket_by_path() {
    let h = Hostile::new();
    let path = h.env.path("host.sock");
    let host = UnixListener::bind(&path).unwrap();
    host.set_nonblocking(true).unwrap();
    let v = h.attack(&format!("unix-path {}", path.display()));
    v.assert_denied(&format!("unix-path: ENOENT connect {}", path.display()));
    match host.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a connection reached the host socket: {other:?}"),
    }
}
