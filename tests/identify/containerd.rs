//! `scan --identify` against containerd's gRPC API over TCP (`[grpc] tcp_address`), started
//! by the test with everything throwaway: its root, state, sockets and `opt` directory in the
//! test's directory, and a TCP address of the test's own; stopped by its pid.
//!
//! On TCP containerd serves only the services of plugins that ask for it: the CRI plugin,
//! when its `disable_tcp_service` is false (not containerd's own `Version` service, which
//! answers `unknown service` there). The probe plan's gRPC probe is the CRI
//! `RuntimeService/Version` call, whose answer names the runtime and its version.

use std::net::SocketAddr;
use std::process::Command;

use super::{assert_identity, backends, daemon_ip, identify, start};
use crate::daemon_util::{
    assert_none_left, free_port, package_version, processes_naming, programs, root_for,
};
use crate::util::TempDir;

#[test]
fn containerd_grpc_over_tcp_names_its_version() {
    let Some([containerd]) = programs("containerd", ["containerd"]) else {
        return;
    };
    if !root_for("containerd") {
        return;
    }
    let ip = daemon_ip("identify::containerd");
    let dir = TempDir::new("identify-containerd");
    let d = dir.path();
    let addr = SocketAddr::new(ip, free_port(ip));
    // Plain TCP (no TLS); the snapshotters that need devices or other file systems off, the
    // debug and metrics endpoints off.
    let config = dir.write(
        "config.toml",
        &format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.snapshotter.v1.aufs\", \
             \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.devmapper\", \
             \"io.containerd.snapshotter.v1.zfs\"]\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n  tcp_address = \"{addr}\"\n\
             [ttrpc]\n  address = \"{d}/containerd.ttrpc.sock\"\n\
             [debug]\n  address = \"\"\n\
             [metrics]\n  address = \"\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = false\n",
            d = d.display()
        ),
    );
    let mut cmd = Command::new(&containerd);
    cmd.arg("--config").arg(&config);
    let daemon = start("containerd", cmd, d, addr);
    let truth = package_version(&containerd);
    for backend in backends(ip) {
        // The null probe and every other probe get only containerd's SETTINGS frame (any
        // HTTP/2 server's first, sent on accept), which names nothing; the gRPC probe, last
        // in the plan, gets the CRI VersionResponse (`containerd`, `1.6.20~ds1`).
        let r = identify(addr, backend);
        assert_identity(&r, "grpc", Some("containerd"), Some(&truth));
        assert_eq!(
            r.str("cpe"),
            Some(format!("cpe:/a:linuxfoundation:containerd:{truth}").as_str()),
            "{r:?}"
        );
    }
    assert!(
        !processes_naming(&config).is_empty(),
        "containerd is not running\n{}",
        daemon.log_text()
    );
    // SIGTERM stops containerd; no process of it (nor a shim: no container ran) is left.
    drop(daemon);
    assert_none_left(d, "containerd");
}
