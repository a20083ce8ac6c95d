//! `scan --identify` against the remote-desktop and file-sharing daemons of Debian's packages:
//! Samba (SMB2), xrdp (RDP), TigerVNC's Xvnc (RFB and X11), and inetutils' telnetd. Each
//! starts its own with a throwaway configuration on free ports (so no port hint helps) and
//! checks what both backends name.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;

use super::{assert_identity, backends, daemon_ip, identify, start};
use crate::daemon_util::{free_port, programs, root_for};
use crate::util::TempDir;

#[test]
fn samba_answers_smb2_negotiate() {
    let Some([smbd, setsid]) = programs("samba", ["smbd", "setsid"]) else {
        return;
    };
    if !root_for("smbd") {
        return;
    }
    // Samba binds the addresses of the machine's interfaces: 127.0.0.1, not the rest of
    // 127.0.0.0/8.
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let dir = TempDir::new("identify-smbd");
    let addr = SocketAddr::new(ip, free_port(ip));
    let d = dir.path().display();
    for sub in ["lock", "state", "cache", "private", "pid", "ncalrpc"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("samba dir");
    }
    let conf = dir.write(
        "smb.conf",
        &format!(
            "[global]\nsmb ports = {}\ninterfaces = {ip}\nbind interfaces only = yes\n\
             lock directory = {d}/lock\nstate directory = {d}/state\n\
             cache directory = {d}/cache\nprivate dir = {d}/private\npid directory = {d}/pid\n\
             ncalrpc dir = {d}/ncalrpc\nlog file = {d}/log.smbd\ndisable netbios = yes\n\
             server role = standalone server\n",
            addr.port()
        ),
    );
    // In a session of its own: smbd signals its whole process group when it stops, which
    // would otherwise be the test's.
    let mut cmd = Command::new(setsid);
    cmd.arg(&smbd)
        .args(["--foreground", "--no-process-group", "-s"])
        .arg(&conf);
    let _d = start("smbd", cmd, dir.path(), addr);
    for backend in backends(ip) {
        let r = identify(addr, backend);
        // SMB2 carries the dialect, not Samba's version.
        assert_identity(&r, "microsoft-ds", Some("Samba"), None);
        assert!(
            r.str("protocol_version")
                .is_some_and(|v| v.starts_with('2') || v.starts_with('3')),
            "{r:?}"
        );
    }
}

#[test]
fn xrdp_answers_the_x224_connection_request() {
    let Some([xrdp]) = programs("xrdp", ["xrdp"]) else {
        return;
    };
    if !root_for("xrdp") {
        return;
    }
    let ip = daemon_ip("identify::xrdp");
    let dir = TempDir::new("identify-xrdp");
    let addr = SocketAddr::new(ip, free_port(ip));
    // The packaged configuration (and the keys its post-install made), on the test's port.
    let packaged = std::fs::read_to_string("/etc/xrdp/xrdp.ini").expect("read /etc/xrdp/xrdp.ini");
    let ini: String = packaged
        .lines()
        .map(|l| {
            if l == "port=3389" {
                format!("port=tcp://{addr}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let conf = dir.write("xrdp.ini", &ini);
    std::fs::create_dir_all("/run/xrdp/sockdir").expect("create xrdp's socket dir");
    let mut cmd = Command::new(&xrdp);
    cmd.arg("--nodaemon").arg("--config").arg(&conf);
    let _d = start("xrdp", cmd, dir.path(), addr);
    for backend in backends(ip) {
        // The connection confirm does not tell xrdp from Windows: no product.
        let r = identify(addr, backend);
        assert_identity(&r, "ms-wbt-server", None, None);
        assert_eq!(r.str("info"), Some("security: TLS"), "{r:?}");
    }
}

#[test]
fn xvnc_speaks_rfb_and_x11() {
    let Some([xvnc]) = programs("tigervnc-standalone-server", ["Xvnc"]) else {
        return;
    };
    let ip = daemon_ip("identify::xvnc");
    let dir = TempDir::new("identify-xvnc");
    let rfb = SocketAddr::new(ip, free_port(ip));
    // The X11 port is 6000 + the display number and listens on every address: a port free
    // on the wildcard address, above 6100 so that no port hint of the probe plan names it.
    let x11_port = (0..50)
        .filter_map(|_| {
            let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
            l.local_addr().ok().map(|a| a.port())
        })
        .find(|&p| p > 6100 && !std::path::Path::new(&format!("/tmp/.X{}-lock", p - 6000)).exists())
        .expect("a free port for the X display");
    let display = format!(":{}", x11_port - 6000);
    let x11 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), x11_port);
    let mut cmd = Command::new(&xvnc);
    cmd.arg(&display)
        .args([
            "-rfbport",
            &rfb.port().to_string(),
            "-interface",
            &ip.to_string(),
        ])
        .args(["-SecurityTypes", "None", "-listen", "tcp", "-ac"]);
    let mut d = start("Xvnc", cmd, dir.path(), rfb);
    d.wait_listening(&[x11]);
    for backend in backends(ip) {
        let r = identify(rfb, backend);
        assert_identity(&r, "vnc", None, None);
        assert_eq!(r.str("protocol_version"), Some("3.8"), "{r:?}");
        // The X server names its vendor and its release; Xvnc is built from the X.Org
        // server's source, whose version is not a Debian package's here.
        let r = identify(x11, backend);
        assert_eq!(r.str("service"), Some("X11"), "{r:?}");
        assert_eq!(r.str("product"), Some("The X.Org Foundation"), "{r:?}");
        assert!(
            r.str("version").is_some_and(
                |v| v.split('.').count() >= 3 && v.split('.').all(|n| n.parse::<u32>().is_ok())
            ),
            "{r:?}"
        );
    }
}

#[test]
fn telnetd_negotiates_options() {
    let Some([telnetd, activate]) =
        programs("inetutils-telnetd", ["telnetd", "systemd-socket-activate"])
    else {
        return;
    };
    let ip = daemon_ip("identify::telnetd");
    let dir = TempDir::new("identify-telnetd");
    let addr = SocketAddr::new(ip, free_port(ip));
    // telnetd runs from inetd: systemd-socket-activate plays inetd, one telnetd per
    // connection with the socket as its standard input.
    let mut cmd = Command::new(&activate);
    cmd.args(["--inetd", "-a", "-l", &addr.to_string()])
        .arg(&telnetd);
    let _d = start("telnetd", cmd, dir.path(), addr);
    for backend in backends(ip) {
        assert_identity(&identify(addr, backend), "telnet", None, None);
    }
}
