//! `scan --identify` against web servers and HTTP APIs that name themselves in their answer
//! to `GET /` (or to `GET /version`, which follows it): Caddy, the Prometheus node exporter
//! and etcd; against OpenVPN's TCP server and ZooKeeper, which answer only their own first
//! messages; and against leafnode (NNTP). Like the other identify tests, each starts its own
//! daemon with a throwaway configuration on a free port of its own `127.a.b.1` and checks
//! service, product and version on both backends.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use super::{assert_identity, backends, daemon_ip, identify, start};
use crate::daemon_util::{free_port, package_version, programs, root_for, setup};
use crate::util::{require_that, TempDir};

#[test]
fn caddy_names_itself() {
    let Some([caddy]) = programs("caddy", ["caddy"]) else {
        return;
    };
    let ip = daemon_ip("identify::caddy");
    let dir = TempDir::new("identify-caddy");
    let addr = SocketAddr::new(ip, free_port(ip));
    // No admin endpoint, no automatic HTTPS, and the site bound to the test's address only
    // (Caddy listens on the wildcard address otherwise).
    let conf = dir.write(
        "Caddyfile",
        &format!(
            "{{\n\tadmin off\n\tauto_https off\n}}\n\n\
             http://{addr} {{\n\tbind {ip}\n\trespond \"porthawk\"\n}}\n"
        ),
    );
    let mut cmd = Command::new(&caddy);
    cmd.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&conf)
        // Caddy keeps its state under $XDG_DATA_HOME and $XDG_CONFIG_HOME: the test's own.
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"));
    let _d = start("caddy", cmd, dir.path(), addr);
    for backend in backends(ip) {
        // Caddy's Server header is the bare name: no version to report.
        let r = identify(addr, backend);
        assert_identity(&r, "http", Some("Caddy"), None);
        assert_eq!(r.str("cpe"), Some("cpe:/a:caddyserver:caddy"), "{r:?}");
    }
}

#[test]
fn node_exporter_is_a_prometheus_exporter() {
    let Some([exporter]) = programs("prometheus-node-exporter", ["prometheus-node-exporter"])
    else {
        return;
    };
    let ip = daemon_ip("identify::node-exporter");
    let dir = TempDir::new("identify-node-exporter");
    let addr = SocketAddr::new(ip, free_port(ip));
    let mut cmd = Command::new(&exporter);
    cmd.arg(format!("--web.listen-address={addr}"))
        // Only the cheap collectors: the scan reads the landing page, never /metrics.
        .arg("--collector.disable-defaults")
        .arg("--collector.time");
    let _d = start("prometheus-node-exporter", cmd, dir.path(), addr);
    for backend in backends(ip) {
        // The landing page names the exporter and links to /metrics; it carries no version.
        let r = identify(addr, backend);
        assert_identity(&r, "http", Some("Prometheus exporter"), None);
        assert_eq!(r.str("info"), Some("Node Exporter"), "{r:?}");
    }
}

#[test]
fn etcd_names_its_version() {
    let Some([etcd]) = programs("etcd-server", ["etcd"]) else {
        return;
    };
    let ip = daemon_ip("identify::etcd");
    let dir = TempDir::new("identify-etcd");
    let addr = SocketAddr::new(ip, free_port(ip));
    let peer = SocketAddr::new(ip, free_port(ip));
    let mut cmd = Command::new(&etcd);
    cmd.arg("--name")
        .arg("porthawk")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg(format!("--listen-client-urls=http://{addr}"))
        .arg(format!("--advertise-client-urls=http://{addr}"))
        .arg(format!("--listen-peer-urls=http://{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
        .arg(format!("--initial-cluster=porthawk=http://{peer}"));
    let _d = start("etcd", cmd, dir.path(), addr);
    let truth = package_version(&etcd);
    for backend in backends(ip) {
        // `GET /` gets a bare 404 whose CORS headers name etcd; the plan follows it up with
        // `GET /version`, whose JSON names the server's version.
        let r = identify(addr, backend);
        assert_identity(&r, "http", Some("etcd"), Some(&truth));
        assert_eq!(
            r.str("cpe"),
            Some(format!("cpe:/a:etcd:etcd:{truth}").as_str())
        );
    }
}

#[test]
fn openvpn_tcp_server_answers_a_hard_reset() {
    let Some([openvpn, openssl]) = programs("openvpn", ["openvpn", "openssl"]) else {
        return;
    };
    // A multi-client server needs a tun device (left down, without addresses or routes);
    // a point-to-point one takes one connection at a time and pauses between them.
    if !root_for("openvpn")
        || !require_that(
            "openvpn",
            Path::new("/dev/net/tun").exists(),
            "needs /dev/net/tun for its server mode",
        )
    {
        return;
    }
    let ip = daemon_ip("identify::openvpn");
    let dir = TempDir::new("identify-openvpn");
    let addr = SocketAddr::new(ip, free_port(ip));
    // A throwaway self-signed certificate, its own CA.
    let (key, cert) = (dir.path().join("server.key"), dir.path().join("server.crt"));
    let mut req = Command::new(&openssl);
    req.args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=porthawk-test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert);
    setup("openssl req", req);
    let mut cmd = Command::new(&openvpn);
    cmd.args(["--mode", "server", "--tls-server", "--proto", "tcp-server"])
        .args([
            "--local",
            &ip.to_string(),
            "--lport",
            &addr.port().to_string(),
        ])
        .args(["--dev", "tun", "--topology", "subnet"])
        .args(["--ifconfig", "10.251.0.1", "255.255.255.0"])
        .args(["--ifconfig-noexec", "--route-noexec", "--dh", "none"])
        .arg("--ca")
        .arg(&cert)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key);
    let _d = start("openvpn", cmd, dir.path(), addr);
    for backend in backends(ip) {
        // Silent, it hangs up on the HTTP probe and the others; its own
        // P_CONTROL_HARD_RESET_CLIENT_V2 gets the server's reset, which names no version.
        let r = identify(addr, backend);
        assert_identity(&r, "openvpn", None, None);
    }
}

#[test]
fn zookeeper_names_its_version() {
    let Some([java]) = programs("zookeeperd", ["java"]) else {
        return;
    };
    let jar = Path::new("/usr/share/java/zookeeper.jar");
    if !require_that(
        "zookeeperd",
        jar.is_file(),
        "needs /usr/share/java/zookeeper.jar",
    ) {
        return;
    }
    let ip = daemon_ip("identify::zookeeper");
    let dir = TempDir::new("identify-zookeeper");
    let addr = SocketAddr::new(ip, free_port(ip));
    // Standalone, `srvr` allowed, no admin web server (it would take port 8080).
    let conf = dir.write(
        "zoo.cfg",
        &format!(
            "tickTime=2000\ndataDir={}\nclientPort={}\nclientPortAddress={ip}\n\
             4lw.commands.whitelist=srvr\nadmin.enableServer=false\n",
            dir.path().join("data").display(),
            addr.port()
        ),
    );
    let mut cmd = Command::new(&java);
    cmd.arg("-Xmx64m")
        .arg("-cp")
        .arg(jar)
        .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
        .arg(&conf);
    let _d = start("zookeeper", cmd, dir.path(), addr);
    let truth = package_version(jar);
    for backend in backends(ip) {
        // Silent, it hangs up on every probe but its own four-letter `srvr`.
        let r = identify(addr, backend);
        assert_identity(&r, "zookeeper", Some("Zookeeper"), Some(&truth));
        assert_eq!(
            r.str("cpe"),
            Some(format!("cpe:/a:apache:zookeeper:{truth}").as_str())
        );
    }
}

#[test]
fn leafnode_names_its_version() {
    let Some([leafnode, activate, unshare]) = programs(
        "leafnode",
        ["leafnode", "systemd-socket-activate", "unshare"],
    ) else {
        return;
    };
    if !root_for("leafnode") {
        return;
    }
    let ip = daemon_ip("identify::leafnode");
    let dir = TempDir::new("identify-leafnode");
    let addr = SocketAddr::new(ip, free_port(ip));
    // leafnode reads only /etc/news/leafnode/config: each connection's leafnode runs in a
    // mount namespace of its own where the test's directory is mounted over that one. It
    // insists on a unique fully-qualified name (not example.org, .test or .invalid).
    let conf_dir = dir.path().join("leafnode");
    std::fs::create_dir(&conf_dir).expect("mkdir");
    std::fs::write(
        conf_dir.join("config"),
        "server = news.porthawk.internal\nexpire = 20\nhostname = news.porthawk.internal\n",
    )
    .expect("write leafnode config");
    let script = format!(
        "mount --bind '{}' /etc/news/leafnode && exec '{}'",
        conf_dir.display(),
        leafnode.display()
    );
    // Run from inetd: systemd-socket-activate plays inetd, one leafnode per connection.
    let mut cmd = Command::new(&activate);
    cmd.args(["--inetd", "-a", "-l", &addr.to_string()])
        .arg(&unshare)
        .args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let _d = start("leafnode", cmd, dir.path(), addr);
    let truth = package_version(&leafnode);
    for backend in backends(ip) {
        let r = identify(addr, backend);
        assert_identity(&r, "nntp", Some("Leafnode"), Some(&truth));
        assert_eq!(
            r.str("cpe"),
            Some(format!("cpe:/a:leafnode:leafnode:{truth}").as_str())
        );
    }
}
