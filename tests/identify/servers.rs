//! `scan --identify` against servers that name themselves once asked: FTP, web servers and
//! proxies, CUPS, NATS, PgBouncer, OpenLDAP, Prosody, Kamailio (SIP) and RabbitMQ (AMQP).
//! Each starts its own daemon with a throwaway configuration on a free port of its own
//! `127.a.b.1` (no port hint helps), and checks service, product and version on both
//! backends, the version against the installed package.

use std::net::SocketAddr;
use std::process::Command;

use super::{assert_identity, backends, daemon_ip, identify, open_to_all, start};
use crate::daemon_util::{chown_to, free_port, package_version, programs, root_for};
use crate::util::TempDir;

#[test]
fn vsftpd_greeting_names_its_version() {
    let Some([vsftpd]) = programs("vsftpd", ["vsftpd"]) else {
        return;
    };
    if !root_for("vsftpd") {
        return;
    }
    let ip = daemon_ip("identify::vsftpd");
    let dir = TempDir::new("identify-vsftpd");
    let addr = SocketAddr::new(ip, free_port(ip));
    // vsftpd refuses to start without its (empty, root-owned) chroot directory.
    std::fs::create_dir_all("/var/run/vsftpd/empty").expect("create vsftpd's empty dir");
    let conf = dir.write(
        "vsftpd.conf",
        &format!(
            "listen=YES\nlisten_ipv6=NO\nlisten_address={ip}\nlisten_port={}\nbackground=NO\n\
             anonymous_enable=NO\nlocal_enable=YES\npam_service_name=porthawk-none\n\
             secure_chroot_dir=/var/run/vsftpd/empty\nseccomp_sandbox=NO\n",
            addr.port()
        ),
    );
    let mut cmd = Command::new(&vsftpd);
    cmd.arg(&conf);
    let _d = start("vsftpd", cmd, dir.path(), addr);
    let truth = package_version(&vsftpd);
    for backend in backends(ip) {
        assert_identity(
            &identify(addr, backend),
            "ftp",
            Some("vsFTPd"),
            Some(&truth),
        );
    }
}

#[test]
fn lighttpd_names_its_version() {
    let Some([lighttpd]) = programs("lighttpd", ["lighttpd"]) else {
        return;
    };
    let ip = daemon_ip("identify::lighttpd");
    let dir = TempDir::new("identify-lighttpd");
    let addr = SocketAddr::new(ip, free_port(ip));
    let conf = dir.write(
        "lighttpd.conf",
        &format!(
            "server.document-root = \"{}\"\nserver.bind = \"{ip}\"\nserver.port = {}\n",
            dir.path().display(),
            addr.port()
        ),
    );
    let mut cmd = Command::new(&lighttpd);
    cmd.arg("-D").arg("-f").arg(&conf);
    let _d = start("lighttpd", cmd, dir.path(), addr);
    let truth = package_version(&lighttpd);
    for backend in backends(ip) {
        let r = identify(addr, backend);
        assert_identity(&r, "http", Some("lighttpd"), Some(&truth));
        assert_eq!(
            r.str("cpe"),
            Some(format!("cpe:/a:lighttpd:lighttpd:{truth}").as_str())
        );
    }
}

#[test]
fn apache_httpd_names_its_version() {
    let Some([apache2]) = programs("apache2", ["apache2"]) else {
        return;
    };
    if !root_for("apache2") {
        return;
    }
    let ip = daemon_ip("identify::apache2");
    let dir = TempDir::new("identify-apache2");
    let addr = SocketAddr::new(ip, free_port(ip));
    let d = dir.path().display();
    let m = "/usr/lib/apache2/modules";
    let conf = dir.write(
        "apache2.conf",
        &format!(
            "ServerRoot {d}\nLoadModule mpm_event_module {m}/mod_mpm_event.so\n\
             LoadModule authz_core_module {m}/mod_authz_core.so\nListen {addr}\n\
             ServerName localhost\nPidFile {d}/apache.pid\nErrorLog {d}/error.log\n\
             Mutex file:{d} default\nDocumentRoot {d}\nUser www-data\nGroup www-data\n"
        ),
    );
    open_to_all(dir.path(), &conf);
    let mut cmd = Command::new(&apache2);
    cmd.arg("-DFOREGROUND").arg("-f").arg(&conf);
    let _d = start("apache2", cmd, dir.path(), addr);
    let truth = package_version(&apache2);
    for backend in backends(ip) {
        assert_identity(
            &identify(addr, backend),
            "http",
            Some("Apache"),
            Some(&truth),
        );
    }
}

#[test]
fn squid_is_an_http_proxy_with_its_version() {
    let Some([squid]) = programs("squid", ["squid"]) else {
        return;
    };
    if !root_for("squid") {
        return;
    }
    let ip = daemon_ip("identify::squid");
    let dir = TempDir::new("identify-squid");
    let addr = SocketAddr::new(ip, free_port(ip));
    let d = dir.path().display();
    // Squid drops to its own user, which writes the log and the pid file.
    chown_to(dir.path(), "proxy");
    let conf = dir.write(
        "squid.conf",
        &format!(
            "http_port {addr}\npid_filename {d}/squid.pid\ncache_log {d}/cache.log\n\
             access_log none\ncache deny all\ncoredump_dir {d}\n\
             http_access allow localhost\nhttp_access deny all\n"
        ),
    );
    open_to_all(dir.path(), &conf);
    let mut cmd = Command::new(&squid);
    cmd.arg("-N").arg("-f").arg(&conf);
    let _d = start("squid", cmd, dir.path(), addr);
    let truth = package_version(&squid);
    for backend in backends(ip) {
        assert_identity(
            &identify(addr, backend),
            "http-proxy",
            Some("Squid"),
            Some(&truth),
        );
    }
}

#[test]
fn haproxy_is_an_http_proxy() {
    let Some([haproxy]) = programs("haproxy", ["haproxy"]) else {
        return;
    };
    let ip = daemon_ip("identify::haproxy");
    let dir = TempDir::new("identify-haproxy");
    let addr = SocketAddr::new(ip, free_port(ip));
    // A frontend without servers: HAProxy answers with its own 503, which names no version.
    let conf = dir.write(
        "haproxy.cfg",
        &format!(
            "defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  \
             timeout server 5s\nfrontend web\n  bind {addr}\n  default_backend none\n\
             backend none\n"
        ),
    );
    let mut cmd = Command::new(&haproxy);
    cmd.arg("-db").arg("-f").arg(&conf);
    let _d = start("haproxy", cmd, dir.path(), addr);
    for backend in backends(ip) {
        assert_identity(
            &identify(addr, backend),
            "http-proxy",
            Some("HAProxy"),
            None,
        );
    }
}

#[test]
fn cups_is_ipp_with_its_version() {
    let Some([cupsd]) = programs("cups-daemon", ["cupsd"]) else {
        return;
    };
    if !root_for("cupsd") {
        return;
    }
    let ip = daemon_ip("identify::cupsd");
    let dir = TempDir::new("identify-cupsd");
    let addr = SocketAddr::new(ip, free_port(ip));
    let d = dir.path().display();
    for sub in ["spool", "cache", "state", "log"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("cups dir");
    }
    let conf = dir.write(
        "cupsd.conf",
        &format!("Listen {addr}\nLogLevel warn\nWebInterface no\n"),
    );
    let files = dir.write(
        "cups-files.conf",
        &format!(
            "ServerRoot {d}\nRequestRoot {d}/spool\nCacheDir {d}/cache\nStateDir {d}/state\n\
             ErrorLog {d}/log/error_log\nAccessLog {d}/log/access_log\n\
             PageLog {d}/log/page_log\nTempDir {d}/spool\n"
        ),
    );
    let mut cmd = Command::new(&cupsd);
    cmd.arg("-f").arg("-c").arg(&conf).arg("-s").arg(&files);
    let _d = start("cupsd", cmd, dir.path(), addr);
    let truth = package_version(&cupsd);
    for backend in backends(ip) {
        let r = identify(addr, backend);
        // CUPS's Server header names the major and minor version only (`CUPS/2.4`).
        let version = r.str("version").unwrap_or_default().to_string();
        assert!(
            !version.is_empty() && truth.starts_with(&format!("{version}.")),
            "{truth}: {r:?}"
        );
        assert_identity(&r, "ipp", Some("CUPS"), Some(&version));
    }
}

#[test]
fn nats_server_names_its_version() {
    let Some([nats]) = programs("nats-server", ["nats-server"]) else {
        return;
    };
    let ip = daemon_ip("identify::nats");
    let dir = TempDir::new("identify-nats");
    let addr = SocketAddr::new(ip, free_port(ip));
    let mut cmd = Command::new(&nats);
    cmd.args(["-a", &ip.to_string(), "-p", &addr.port().to_string()]);
    let _d = start("nats-server", cmd, dir.path(), addr);
    let truth = package_version(&nats);
    for backend in backends(ip) {
        assert_identity(&identify(addr, backend), "nats", Some("NATS"), Some(&truth));
    }
}

#[test]
fn pgbouncer_is_told_from_postgresql() {
    let Some([pgbouncer, setpriv]) = programs("pgbouncer", ["pgbouncer", "setpriv"]) else {
        return;
    };
    if !root_for("pgbouncer") {
        return;
    }
    let ip = daemon_ip("identify::pgbouncer");
    let dir = TempDir::new("identify-pgbouncer");
    let addr = SocketAddr::new(ip, free_port(ip));
    let d = dir.path().display();
    let conf = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\nx = host=127.0.0.1 port=1\n[pgbouncer]\nlisten_addr = {ip}\n\
             listen_port = {}\nauth_type = any\nunix_socket_dir =\n\
             logfile = {d}/pgbouncer-own.log\npidfile = {d}/pgbouncer.pid\n",
            addr.port()
        ),
    );
    open_to_all(dir.path(), &conf);
    chown_to(dir.path(), "nobody");
    // PgBouncer refuses to run as root.
    let mut cmd = Command::new(setpriv);
    cmd.args([
        "--reuid",
        "nobody",
        "--regid",
        "nogroup",
        "--clear-groups",
        "--",
    ])
    .arg(&pgbouncer)
    .arg(&conf);
    let _d = start("pgbouncer", cmd, dir.path(), addr);
    for backend in backends(ip) {
        assert_identity(
            &identify(addr, backend),
            "postgresql",
            Some("PgBouncer"),
            None,
        );
    }
}

#[test]
fn slapd_is_openldap() {
    let Some([slapd]) = programs("slapd", ["slapd"]) else {
        return;
    };
    let ip = daemon_ip("identify::slapd");
    let dir = TempDir::new("identify-slapd");
    let addr = SocketAddr::new(ip, free_port(ip));
    let d = dir.path().display();
    let conf = dir.write(
        "slapd.conf",
        &format!(
            "include /etc/ldap/schema/core.schema\npidfile {d}/slapd.pid\nargsfile {d}/slapd.args\n"
        ),
    );
    let mut cmd = Command::new(&slapd);
    cmd.args(["-d", "0", "-f"])
        .arg(&conf)
        .arg("-h")
        .arg(format!("ldap://{addr}/"));
    let _d = start("slapd", cmd, dir.path(), addr);
    for backend in backends(ip) {
        // The root DSE names OpenLDAP, not its version.
        assert_identity(&identify(addr, backend), "ldap", Some("OpenLDAP"), None);
    }
}

#[test]
fn prosody_is_xmpp() {
    let Some([prosody]) = programs("prosody", ["prosody"]) else {
        return;
    };
    let ip = daemon_ip("identify::prosody");
    let dir = TempDir::new("identify-prosody");
    let addr = SocketAddr::new(ip, free_port(ip));
    let d = dir.path().display();
    std::fs::create_dir_all(dir.path().join("data")).expect("prosody data");
    let conf = dir.write(
        "prosody.cfg.lua",
        &format!(
            "run_as_root = true\ndaemonize = false\npidfile = \"{d}/prosody.pid\"\n\
             data_path = \"{d}/data\"\nmodules_enabled = {{ \"saslauth\", \"disco\" }}\n\
             modules_disabled = {{ \"s2s\" }}\nc2s_ports = {{ {port} }}\n\
             c2s_interfaces = {{ \"{ip}\" }}\ns2s_ports = {{ }}\nhttp_ports = {{ }}\n\
             https_ports = {{ }}\nc2s_direct_tls_ports = {{ }}\n\
             c2s_require_encryption = false\n\
             log = {{ {{ levels = {{ min = \"warn\" }}, to = \"console\" }} }}\n\
             VirtualHost \"chat.identify.test\"\n",
            port = addr.port()
        ),
    );
    let mut cmd = Command::new(&prosody);
    cmd.arg("--config").arg(&conf);
    let _d = start("prosody", cmd, dir.path(), addr);
    for backend in backends(ip) {
        // Prosody answers any probe with a stream header and an error; it names no product.
        assert_identity(&identify(addr, backend), "xmpp", None, None);
    }
}

#[test]
fn kamailio_answers_sip_options_with_its_version() {
    let Some([kamailio]) = programs("kamailio", ["kamailio"]) else {
        return;
    };
    let modules = [
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/kamailio/modules",
    ]
    .into_iter()
    .find(|m| std::path::Path::new(m).join("sl.so").is_file());
    let Some(modules) = modules else {
        crate::daemon_util::skip("kamailio (its sl module)");
        return;
    };
    let ip = daemon_ip("identify::kamailio");
    let dir = TempDir::new("identify-kamailio");
    let addr = SocketAddr::new(ip, free_port(ip));
    let conf = dir.write(
        "kamailio.cfg",
        &format!(
            "#!KAMAILIO\nlisten=tcp:{addr}\ndisable_tcp=no\nchildren=1\ntcp_children=1\n\
             log_stderror=yes\nmpath=\"{modules}/\"\nloadmodule \"sl.so\"\n\
             request_route {{\n  sl_send_reply(\"200\", \"OK\");\n}}\n"
        ),
    );
    let mut cmd = Command::new(&kamailio);
    cmd.args(["-DD", "-E", "-f"])
        .arg(&conf)
        .arg("-P")
        .arg(dir.path().join("kamailio.pid"))
        .arg("-Y")
        .arg(dir.path());
    let _d = start("kamailio", cmd, dir.path(), addr);
    let truth = package_version(&kamailio);
    for backend in backends(ip) {
        assert_identity(
            &identify(addr, backend),
            "sip",
            Some("kamailio"),
            Some(&truth),
        );
    }
}

#[test]
fn rabbitmq_names_itself_in_connection_start() {
    let Some([_, epmd, setpriv]) =
        programs("rabbitmq-server", ["rabbitmq-server", "epmd", "setpriv"])
    else {
        return;
    };
    // The broker's own start script: /usr/sbin/rabbitmq-server runs it as a child (which a
    // stop signal would orphan), this one stops the broker on SIGTERM.
    let rabbitmq = std::path::PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server");
    if !root_for("rabbitmq-server") {
        return;
    }
    let ip = daemon_ip("identify::rabbitmq");
    let dir = TempDir::new("identify-rabbitmq");
    let addr = SocketAddr::new(ip, free_port(ip));
    let epmd_addr = SocketAddr::new(ip, free_port(ip));
    let dist = free_port(ip);
    open_to_all(dir.path(), &dir.write("rabbitmq.conf", ""));
    chown_to(dir.path(), "rabbitmq");
    // Erlang's port mapper in the foreground on a port of the test's own (rabbitmq-server
    // would start one as a daemon on 4369 that outlives the test).
    let mut cmd = Command::new(&epmd);
    cmd.args([
        "-address",
        &ip.to_string(),
        "-port",
        &epmd_addr.port().to_string(),
    ]);
    let _epmd = start("epmd", cmd, dir.path(), epmd_addr);
    let d = dir.path().display();
    let mut cmd = Command::new(setpriv);
    cmd.args([
        "--reuid",
        "rabbitmq",
        "--regid",
        "rabbitmq",
        "--init-groups",
        "--",
    ])
    .arg(&rabbitmq)
    .env("HOME", dir.path())
    .env("RABBITMQ_NODENAME", format!("phk{}@localhost", addr.port()))
    .env("RABBITMQ_NODE_IP_ADDRESS", ip.to_string())
    .env("RABBITMQ_NODE_PORT", addr.port().to_string())
    .env("RABBITMQ_DIST_PORT", dist.to_string())
    .env("ERL_EPMD_ADDRESS", ip.to_string())
    .env("ERL_EPMD_PORT", epmd_addr.port().to_string())
    .env("RABBITMQ_MNESIA_BASE", format!("{d}/mnesia"))
    .env("RABBITMQ_LOG_BASE", format!("{d}/log"))
    .env("RABBITMQ_CONFIG_FILE", format!("{d}/rabbitmq"))
    .env("RABBITMQ_ENABLED_PLUGINS_FILE", format!("{d}/plugins"))
    .env("RABBITMQ_PID_FILE", format!("{d}/pid"));
    let _d = start("rabbitmq", cmd, dir.path(), addr);
    let truth = package_version(&rabbitmq);
    for backend in backends(ip) {
        // RabbitMQ answers the HTTP probe with the protocol header it speaks; the plan
        // follows up with the AMQP probe, whose Connection.Start names the broker.
        let r = identify(addr, backend);
        assert_identity(&r, "amqp", Some("RabbitMQ"), Some(&truth));
        assert_eq!(r.str("protocol_version"), Some("0-9-1"), "{r:?}");
    }
}
