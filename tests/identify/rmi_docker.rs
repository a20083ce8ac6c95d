//! `scan --identify` against Java RMI (OpenJDK's `rmiregistry`) and the Docker Engine API
//! (`dockerd`), each started by the test on a free port and stopped by its pid.
//!
//! rmiregistry answers only its own `JRMI` header and closes on everything else, so it also
//! shows that the plan reaches the JRMI probe on an unhinted port with the default
//! `--max-probes`. dockerd runs with everything private and throwaway: its data, exec root,
//! pid file and unix socket in the test's directory, no iptables, bridge or IP forwarding,
//! its own managed containerd, and a mount namespace of its own in which `/run` and
//! `/etc/docker` are the test's (so a system containerd's socket is not seen, and nothing is
//! written to the system's directories).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;

use super::{assert_identity, backends, daemon_ip, identify, identify_within, start};
use crate::daemon_util::{
    assert_none_left, free_port, package_version, processes_naming, programs, root_for,
};
use crate::util::TempDir;

/// A port free on every address: rmiregistry listens on the wildcard address.
fn free_wildcard_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))
        .unwrap_or_else(|e| panic!("cannot bind a port on 0.0.0.0: {e}"));
    l.local_addr().expect("local address").port()
}

#[test]
fn rmiregistry_is_java_rmi_within_the_default_budget() {
    let Some([rmiregistry]) = programs("rmiregistry (openjdk-17-jre-headless)", ["rmiregistry"])
    else {
        return;
    };
    let dir = TempDir::new("identify-rmi");
    // rmiregistry has no option for its address: it listens on the wildcard address, so
    // the port is one free there, and the test's own address reaches it.
    let ip = daemon_ip("identify::rmiregistry");
    let addr = SocketAddr::new(ip, free_wildcard_port());
    let mut cmd = Command::new(&rmiregistry);
    cmd.args(["-J-Xmx32m", "-J-XX:+UseSerialGC"])
        .arg(addr.port().to_string());
    let _d = start("rmiregistry", cmd, dir.path(), addr);
    for backend in backends(ip) {
        // It closes on every probe but its own without a byte; the ProtocolAck to `JRMI`
        // names it and carries no version.
        let r = identify(addr, backend);
        assert_identity(&r, "java-rmi", Some("Java RMI"), None);
        let r = identify_within(addr, backend, None);
        assert_identity(&r, "java-rmi", Some("Java RMI"), None);
    }
}

#[test]
fn dockerd_names_its_version() {
    let Some([dockerd, _containerd, _runc, unshare]) =
        programs("docker.io", ["dockerd", "containerd", "runc", "unshare"])
    else {
        return;
    };
    if !root_for("dockerd") {
        return;
    }
    let ip = daemon_ip("identify::dockerd");
    let dir = TempDir::new("identify-dockerd");
    let d = dir.path();
    let addr = SocketAddr::new(ip, free_port(ip));
    for sub in ["data", "exec", "run", "etc"] {
        std::fs::create_dir(d.join(sub)).expect("mkdir");
    }
    let config = dir.write("daemon.json", "{}\n");
    // dockerd uses a system containerd when `/run/containerd/containerd.sock` exists, and
    // keeps its key in `/etc/docker` and plugins in `/run/docker`: in its own mount
    // namespace those are the test's directories, so its managed containerd is its own.
    let script = format!(
        "mount --bind '{run}' /run && \
         if [ -d /etc/docker ]; then mount --bind '{etc}' /etc/docker; fi && exec \"$@\"",
        run = d.join("run").display(),
        etc = d.join("etc").display()
    );
    let mut cmd = Command::new(&unshare);
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ])
    .arg(&dockerd)
    .arg("-H")
    .arg(format!("tcp://{addr}"))
    .arg("-H")
    .arg(format!("unix://{}/docker.sock", d.display()))
    .arg("--config-file")
    .arg(&config)
    .arg("--data-root")
    .arg(d.join("data"))
    .arg("--exec-root")
    .arg(d.join("exec"))
    .arg("--pidfile")
    .arg(d.join("docker.pid"))
    .args([
        "--iptables=false",
        "--ip6tables=false",
        "--ip-forward=false",
    ])
    .args(["--ip-masq=false", "--bridge=none", "--userland-proxy=false"]);
    let daemon = start("dockerd", cmd, d, addr);
    let truth = package_version(&dockerd);
    for backend in backends(ip) {
        // `GET /` gets a JSON 404 that names Docker but not its version; the plan follows it
        // up with `GET /version`, whose Server and Api-Version headers tell both.
        let r = identify(addr, backend);
        assert_identity(&r, "docker", Some("Docker"), Some(&truth));
        assert_eq!(
            r.str("cpe"),
            Some(format!("cpe:/a:docker:engine:{truth}").as_str()),
            "{r:?}"
        );
        assert!(
            r.str("protocol_version")
                .is_some_and(|v| v.starts_with("1.") && v.len() > 2),
            "API version, {r:?}"
        );
    }
    // dockerd runs a containerd of its own, configured under its exec root (not a system
    // one); SIGTERM stops dockerd, which stops that containerd: nothing of theirs is left.
    let managed = processes_naming(&d.join("exec").join("containerd"));
    assert!(
        !managed.is_empty(),
        "no containerd of dockerd's own\n{}",
        daemon.log_text()
    );
    drop(daemon);
    assert_none_left(d, "dockerd");
}
