//! What the fuzz targets run, shared with the stable test that replays their corpora
//! (`crates/core/tests/corpus.rs`), and the sample replies that tests and benchmarks use.
//!
//! Each `*_target` function takes arbitrary bytes, drives one parser or state machine of this
//! crate with them, and checks its invariants. It panics when an invariant breaks: that is what
//! the fuzzer looks for. Not a stable API.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::UnixTime;
use rustls::time_provider::TimeProvider;
use std::time::Duration;

use crate::{
    decode_frame, encode_frame, identify, parse_certificate, parse_escapes, presets, printable,
    tls_client_config, ConnectEvent, Conversation, Dialog, DialogStep, JobId, PortState, Preset,
    PresetStep, ProbeRecord, ProbeSpec, ResultBatch, Step, BANNER_LIMIT, FRAME_HEADER_LEN,
    IDENTITY_FIELD_LIMIT,
};
use crate::{ldap_reply, Wire, WireVerdict};
use crate::{parse_duration, parse_target_list, AddrRange, HostSetBuilder, PortSet, TargetToken};

/// A real first reply of a service, and what [`identify`] must make of it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// A short name, also the name of its seed file in `fuzz/corpus/identify/`.
    pub name: &'static str,
    /// The bytes the service sent.
    pub reply: &'static [u8],
    /// The expected service; `None` for replies that must not be identified.
    pub service: Option<&'static str>,
    /// The expected product.
    pub product: Option<&'static str>,
    /// The expected version.
    pub version: Option<&'static str>,
    /// The expected protocol version.
    pub protocol_version: Option<&'static str>,
}

const fn sample(
    name: &'static str,
    reply: &'static [u8],
    service: &'static str,
    product: Option<&'static str>,
    version: Option<&'static str>,
) -> Sample {
    Sample {
        name,
        reply,
        service: Some(service),
        product,
        version,
        protocol_version: None,
    }
}

/// A sample whose reply also names the protocol's version.
const fn with_protocol(s: Sample, protocol_version: &'static str) -> Sample {
    Sample {
        protocol_version: Some(protocol_version),
        ..s
    }
}

/// Real banners and probe answers, mostly of Debian bookworm packages, one per line; the
/// identification tests, the `identify` seed corpus and the identification benchmark use them.
pub const SAMPLES: &[Sample] = &[
    sample(
        "openssh-9.2",
        b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
        "ssh",
        Some("OpenSSH"),
        Some("9.2p1"),
    ),
    sample(
        "dropbear-2022.83",
        b"SSH-2.0-dropbear_2022.83\r\n",
        "ssh",
        Some("dropbear"),
        Some("2022.83"),
    ),
    sample(
        "postfix",
        b"220 mx.example.org ESMTP Postfix (Debian/GNU)\r\n",
        "smtp",
        Some("Postfix"),
        None,
    ),
    sample(
        "exim-4.96",
        b"220 mail.example.org ESMTP Exim 4.96 Mon, 15 Jan 2024 10:00:00 +0000\r\n",
        "smtp",
        Some("Exim"),
        Some("4.96"),
    ),
    sample(
        "sendmail-8.17",
        b"220 mail.example.org ESMTP Sendmail 8.17.1.9/8.17.1.9/Debian-2; Mon, 15 Jan 2024 \
          10:00:00 GMT; (No UCE/UBE) logging access from: localhost(OK)-localhost [127.0.0.1]\r\n",
        "smtp",
        Some("Sendmail"),
        Some("8.17.1.9"),
    ),
    sample(
        "smtp-rejected",
        b"554 5.7.1 <unknown[192.0.2.7]>: Client host rejected: Access denied\r\n",
        "smtp",
        None,
        None,
    ),
    sample(
        "dovecot-pop3",
        b"+OK Dovecot (Debian) ready.\r\n",
        "pop3",
        Some("Dovecot"),
        None,
    ),
    sample(
        "dovecot-imap",
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS \
          AUTH=PLAIN] Dovecot (Debian) ready.\r\n",
        "imap",
        Some("Dovecot"),
        None,
    ),
    sample(
        "cyrus-imap-3.6",
        b"* OK [CAPABILITY IMAP4rev1 LITERAL+ ID ENABLE STARTTLS AUTH=PLAIN SASL-IR] \
          mail.example.org Cyrus IMAP 3.6.1-Debian-3.6.1-4 server ready\r\n",
        "imap",
        Some("Cyrus"),
        Some("3.6.1"),
    ),
    sample(
        "vsftpd-3.0.3",
        b"220 (vsFTPd 3.0.3)\r\n",
        "ftp",
        Some("vsFTPd"),
        Some("3.0.3"),
    ),
    sample(
        "proftpd-1.3.8",
        b"220 ProFTPD Server (Debian) [::ffff:127.0.0.1]\r\n",
        "ftp",
        Some("ProFTPD"),
        None,
    ),
    sample(
        "pure-ftpd",
        b"220---------- Welcome to Pure-FTPd [privsep] [TLS] ----------\r\n\
          220-You are user number 1 of 50 allowed.\r\n\
          220-Local time is now 10:00. Server port: 21.\r\n\
          220 You will be disconnected after 15 minutes of inactivity.\r\n",
        "ftp",
        Some("Pure-FTPd"),
        None,
    ),
    sample(
        "nginx-1.22.1",
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 15 Jan 2024 10:00:00 GMT\r\n\
          Content-Type: text/html\r\nContent-Length: 615\r\n\
          Last-Modified: Mon, 15 Jan 2024 09:00:00 GMT\r\nConnection: close\r\n\
          ETag: \"65a4f3e0-267\"\r\nAccept-Ranges: bytes\r\n\r\n<!DOCTYPE html>\n<html>\n",
        "http",
        Some("nginx"),
        Some("1.22.1"),
    ),
    sample(
        "apache-2.4.62",
        b"HTTP/1.1 200 OK\r\nDate: Mon, 15 Jan 2024 10:00:00 GMT\r\n\
          Server: Apache/2.4.62 (Debian)\r\nLast-Modified: Mon, 15 Jan 2024 09:00:00 GMT\r\n\
          Content-Length: 10701\r\nConnection: close\r\nContent-Type: text/html\r\n\r\n",
        "http",
        Some("Apache"),
        Some("2.4.62"),
    ),
    sample(
        "lighttpd-1.4.69",
        b"HTTP/1.0 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 341\r\n\
          Connection: close\r\nDate: Mon, 15 Jan 2024 10:00:00 GMT\r\n\
          server: lighttpd/1.4.69\r\n\r\n",
        "http",
        Some("lighttpd"),
        Some("1.4.69"),
    ),
    sample(
        "caddy-2.6.2",
        b"HTTP/1.0 200 OK\r\nServer: Caddy\r\nDate: Mon, 30 Nov 2026 23:08:14 GMT\r\n\
          Content-Length: 0\r\n\r\n",
        "http",
        Some("Caddy"),
        None,
    ),
    sample(
        "node-exporter-1.5.0",
        b"HTTP/1.0 200 OK\r\nDate: Mon, 30 Nov 2026 23:08:15 GMT\r\nContent-Length: 150\r\n\
          Content-Type: text/html; charset=utf-8\r\n\r\n<html>\n\t\t\t\
          <head><title>Node Exporter</title></head>\n\t\t\t<body>\n\t\t\t\
          <h1>Node Exporter</h1>\n\t\t\t<p><a href=\"/metrics\">Metrics</a></p>\n\t\t\t\
          </body>\n\t\t\t</html>",
        "http",
        Some("Prometheus exporter"),
        None,
    ),
    sample(
        "etcd-3.4.23-root",
        b"HTTP/1.0 404 Not Found\r\n\
          Access-Control-Allow-Headers: accept, content-type, authorization\r\n\
          Access-Control-Allow-Methods: POST, GET, OPTIONS, PUT, DELETE\r\n\
          Access-Control-Allow-Origin: *\r\nContent-Type: text/plain; charset=utf-8\r\n\
          X-Content-Type-Options: nosniff\r\nDate: Mon, 30 Nov 2026 23:08:15 GMT\r\n\
          Content-Length: 19\r\n\r\n404 page not found\n",
        "http",
        Some("etcd"),
        None,
    ),
    sample(
        "etcd-3.4.23-version",
        b"HTTP/1.0 200 OK\r\n\
          Access-Control-Allow-Headers: accept, content-type, authorization\r\n\
          Access-Control-Allow-Methods: POST, GET, OPTIONS, PUT, DELETE\r\n\
          Access-Control-Allow-Origin: *\r\nContent-Type: application/json\r\n\
          Date: Mon, 30 Nov 2026 23:08:16 GMT\r\nContent-Length: 45\r\n\r\n\
          {\"etcdserver\":\"3.4.23\",\"etcdcluster\":\"3.4.0\"}",
        "http",
        Some("etcd"),
        Some("3.4.23"),
    ),
    sample(
        "http-no-server",
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        "http",
        None,
        None,
    ),
    sample(
        "tls-server-hello",
        b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03\x5f\x1c\x9e\x03\xa4\x4b\x2c\x11",
        "tls",
        None,
        None,
    ),
    // nginx's plain answer on a TLS port: a sign of TLS (the plan goes inside).
    sample(
        "nginx-1.22-plain-to-https",
        b"HTTP/1.1 400 Bad Request\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 01:30:00 GMT\r\n\
          Content-Type: text/html\r\nContent-Length: 255\r\nConnection: close\r\n\r\n\
          <html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n\
          <body>\r\n<center><h1>400 Bad Request</h1></center>\r\n\
          <center>The plain HTTP request was sent to HTTPS port</center>\r\n\
          <hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n",
        "http",
        Some("nginx"),
        Some("1.22.1"),
    ),
    sample(
        "tls-alert",
        b"\x15\x03\x01\x00\x02\x02\x46",
        "tls",
        None,
        None,
    ),
    sample(
        "redis-7.0-get",
        b"-ERR wrong number of arguments for 'get' command\r\n",
        "redis",
        Some("Redis"),
        None,
    ),
    sample(
        "redis-noauth",
        b"-NOAUTH Authentication required.\r\n",
        "redis",
        Some("Redis"),
        None,
    ),
    sample("redis-pong", b"+PONG\r\n", "redis", Some("Redis"), None),
    sample(
        "redis-7.0.15-info",
        b"$3921\r\n# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n\
          redis_git_dirty:0\r\nredis_build_id:c4e6a5a7b6f4a6e1\r\nredis_mode:standalone\r\n",
        "redis",
        Some("Redis"),
        Some("7.0.15"),
    ),
    sample(
        "mariadb-10.11.6",
        b"c\0\0\0\n5.5.5-10.11.6-MariaDB-0+deb12u1\0\x1f\0\0\0K>w7|<6k\0\xfe\xf7-\x02\0\xff\
          \x81\x15\0\0\0\0\0\0\x1d\0\0\0Zr9$Pq~;I|x0\0mysql_native_password\0",
        "mysql",
        Some("MariaDB"),
        Some("10.11.6"),
    ),
    sample(
        "mysql-8.0.36",
        b"J\0\0\0\n8.0.36\0\x08\0\0\0\x1bR\x0cx;a\x01\x17\0\xff\xff\xff\x02\0\xff\xdf\x15\0\0\0\
          \0\0\0\0\0\0\0Fn9|\x05+j\x7f\x11sX\x03\0caching_sha2_password\0",
        "mysql",
        Some("MySQL"),
        Some("8.0.36"),
    ),
    sample(
        "mariadb-host-blocked",
        b"D\0\0\0\xffj\x04Host '192.0.2.7' is not allowed to connect to this MariaDB server",
        "mysql",
        Some("MariaDB"),
        None,
    ),
    sample(
        "postgres-15-bad-protocol",
        b"E\0\0\0\x89SFATAL\0VFATAL\0C0A000\0Munsupported frontend protocol 1234.5679: \
          server supports 3.0 to 3.0\0Fpostmaster.c\0L2139\0RProcessStartupPacket\0\0",
        "postgresql",
        Some("PostgreSQL"),
        None,
    ),
    sample(
        "postgres-no-ssl",
        b"N",
        "postgresql",
        Some("PostgreSQL"),
        None,
    ),
    sample(
        "memcached-get",
        b"ERROR\r\nERROR\r\n",
        "memcached",
        Some("memcached"),
        None,
    ),
    sample(
        "memcached-1.6.18-version",
        b"VERSION 1.6.18\r\n",
        "memcached",
        Some("memcached"),
        Some("1.6.18"),
    ),
    sample(
        "nats-2.9.20",
        b"INFO {\"server_id\":\"NCUKL6WQPZ7EXAMPLE4M3QH2SQ7JBUOZ4Q5TXL7KJ3WJGW2JNKFQ\",\
          \"server_name\":\"nats-1\",\"version\":\"2.9.20\",\"proto\":1,\"git_commit\":\"\",\
          \"go\":\"go1.19.8\",\"host\":\"0.0.0.0\",\"port\":4222,\"headers\":true,\
          \"max_payload\":1048576,\"client_id\":5,\"client_ip\":\"127.0.0.1\"} \r\n",
        "nats",
        Some("NATS"),
        Some("2.9.20"),
    ),
    sample(
        "mongodb-http",
        b"HTTP/1.0 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\
          Content-Length: 85\r\n\r\nIt looks like you are trying to access MongoDB over HTTP \
          on the native driver port.\r\n",
        "mongodb",
        Some("MongoDB"),
        None,
    ),
    sample(
        "mongodb-op-msg",
        b":\0\0\0\x11\0\0\0\x01\0\0\0\xdd\x07\0\0\0\0\0\0\0%\0\0\0\x02version\0\
          \x07\0\0\x006.0.13\0\x01ok\0\0\0\0\0\0\0\xf0?\0",
        "mongodb",
        Some("MongoDB"),
        Some("6.0.13"),
    ),
    sample("mosquitto-connack", b"\x20\x02\x00\x00", "mqtt", None, None),
    with_protocol(
        sample("vnc-3.8", b"RFB 003.008\n", "vnc", None, None),
        "3.8",
    ),
    with_protocol(
        sample(
            "rabbitmq-bad-header",
            b"AMQP\x00\x00\x09\x01",
            "amqp",
            None,
            None,
        ),
        "0-9-1",
    ),
    sample(
        "inetutils-telnetd",
        b"\xff\xfd\x18\xff\xfd\x20\xff\xfd\x23\xff\xfd\x27",
        "telnet",
        None,
        None,
    ),
    sample(
        "rdp-connection-confirm",
        b"\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x02\x00\x00\x00",
        "ms-wbt-server",
        None,
        None,
    ),
    sample(
        "ldap-notice-of-disconnection",
        b"\x30\x0c\x02\x01\x00\x78\x07\x0a\x01\x02\x04\x00\x04\x00",
        "ldap",
        None,
        None,
    ),
    sample(
        "asterisk-sip",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1\r\n\
          Server: Asterisk PBX 20.5.0\r\nContent-Length: 0\r\n\r\n",
        "sip",
        Some("Asterisk PBX"),
        Some("20.5.0"),
    ),
    sample(
        "prosody-xmpp",
        b"<?xml version='1.0'?><stream:stream xmlns:db='jabber:server:dialback' \
          xmlns:stream='http://etherx.jabber.org/streams' version='1.0' from='example.org' \
          id='a1b2' xmlns='jabber:client'>",
        "xmpp",
        None,
        None,
    ),
    sample(
        "inn-2.7",
        b"200 news.example.org InterNetNews NNRP server INN 2.7.1 ready (posting ok)\r\n",
        "nntp",
        Some("INN"),
        Some("2.7.1"),
    ),
    sample(
        "leafnode-1.12.0",
        b"200 Leafnode NNTP Daemon, version 1.12.0 running at localhost \
          (my fqdn: news.porthawk.internal)\r\n",
        "nntp",
        Some("Leafnode"),
        Some("1.12.0"),
    ),
    // Captured here from Debian bookworm daemons started on loopback (issue 12).
    with_protocol(
        sample(
            "rsyncd-3.2.7",
            b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n",
            "rsync",
            None,
            None,
        ),
        "32.0",
    ),
    with_protocol(
        sample(
            "svnserve-1.14",
            b"( success ( 2 2 ( ) ( edit-pipeline svndiff1 accepts-svndiff2 absent-entries \
              commit-revprops depth log-revprops atomic-revprops partial-replay inherited-props \
              ephemeral-txnprops file-revs-reverse list ) ) ) ",
            "svn",
            Some("Subversion"),
            None,
        ),
        "2",
    ),
    sample(
        "ngircd-26.1-http",
        b"ERROR :\"Oops, HTTP request received? This is IRC!\"\r\n",
        "irc",
        None,
        None,
    ),
    sample(
        "ngircd-26.1-welcome",
        b":irc.porthawk.test 001 porthawk :Welcome to the Internet Relay Network \
          porthawk!~porthawk@127.0.0.1\r\n:irc.porthawk.test 002 porthawk :Your host is \
          irc.porthawk.test, running version ngircd-26.1 (x86_64/pc/linux-gnu)\r\n",
        "irc",
        Some("ngIRCd"),
        Some("26.1"),
    ),
    sample(
        "git-daemon-2.47.3",
        b"00f20000000000000000000000000000000000000000 capabilities^{}\x00multi_ack thin-pack \
          side-band side-band-64k ofs-delta shallow deepen-since deepen-not deepen-relative \
          no-progress include-tag multi_ack_detailed object-format=sha1 agent=git/2.47.3\n0000",
        "git",
        Some("git"),
        Some("2.47.3"),
    ),
    sample(
        "git-daemon-err",
        b"003bERR access denied or repository not exported: /nope.git",
        "git",
        None,
        None,
    ),
    sample(
        "bind-9.18-version",
        b"\x00Qph\x84\x00\x00\x01\x00\x01\x00\x01\x00\x00\x07version\x04bind\x00\x00\x10\x00\x03\
          \xc0\x0c\x00\x10\x00\x03\x00\x00\x00\x00\x00\x19\x189.18.49-1~deb12u3-Debian\
          \xc0\x0c\x00\x02\x00\x03\x00\x00\x00\x00\x00\x02\xc0\x0c",
        "domain",
        Some("ISC BIND"),
        Some("9.18.49"),
    ),
    sample(
        "squid-5.7",
        b"HTTP/1.1 400 Bad Request\r\nServer: squid/5.7\r\nMime-Version: 1.0\r\n\
          Content-Type: text/html;charset=utf-8\r\nX-Squid-Error: ERR_INVALID_URL 0\r\n\
          Via: 1.1 vm (squid/5.7)\r\nConnection: close\r\n\r\n<!DOCTYPE html>",
        "http-proxy",
        Some("Squid"),
        Some("5.7"),
    ),
    sample(
        "tinyproxy-1.11.1",
        b"HTTP/1.0 400 Bad Request\r\nServer: tinyproxy/1.11.1\r\nContent-Type: text/html\r\n\
          Connection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n",
        "http-proxy",
        Some("tinyproxy"),
        Some("1.11.1"),
    ),
    sample(
        "haproxy-2.6-bad-request",
        b"HTTP/1.1 400 Bad request\r\nContent-length: 90\r\nCache-Control: no-cache\r\n\
          Connection: close\r\nContent-Type: text/html\r\n\r\n<html><body><h1>400 Bad request\
          </h1>\nYour browser sent an invalid request.\n</body></html>\n",
        "http-proxy",
        Some("HAProxy"),
        None,
    ),
    sample(
        "pgbouncer-1.18-partial",
        b"E\x00\x00\x00=SFATAL\x00C08P01\x00Mclient sent partial pkt in startup phase\x00\x00",
        "postgresql",
        Some("PgBouncer"),
        None,
    ),
    sample(
        "nats-2.9.10",
        b"INFO {\"server_id\":\"NAAAJSAZPPZMIA3KO4HFGW7QYC4N3ZYSV2UIG7NQI4GFGDS45GIY4244\",\
          \"version\":\"2.9.10\",\"proto\":1,\"go\":\"go1.19.8\",\"host\":\"127.0.0.1\"} \r\n",
        "nats",
        Some("NATS"),
        Some("2.9.10"),
    ),
    // Written from the protocol specifications (no such daemon here).
    with_protocol(
        sample(
            "amqp-connection-start",
            b"\x01\x00\x00\x00\x00\x00c\x00\x0a\x00\x0a\x00\x09\x00\x00\x00G\x07productS\x00\x00\
              \x00\x08RabbitMQ\x07versionS\x00\x00\x00\x063.10.8\x08platformS\x00\x00\x00\x11\
              Erlang/OTP 25.2.3\x00\x00\x00\x05PLAIN\x00\x00\x00\x05en_US\xce",
            "amqp",
            Some("RabbitMQ"),
            Some("3.10.8"),
        ),
        "0-9-1",
    ),
    with_protocol(
        sample(
            "samba-smb2-negotiate",
            b"\x00\x00\x00\xe0\xfeSMB@\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00\x00\
              \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
              \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
              \x00\x00\x00\x00\x00A\x00\x01\x00\x02\x03\x00\x00samba-server-gd!/\x00\x00\x00\
              \x00\x00\x80\x00\x00\x00\x80\x00\x00\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\
              \x00\x00\x00\x00\x00\x00\x00\x00\x80\x00`\x00\x00\x00\x00\x00`^\x06\x06+\x06\x01\
              \x05\x05\x02\xa0T0R\xa0$0\x22\x06\x09*\x86H\x82\xf7\x12\x01\x02\x02\x06\x09*\x86\
              H\x86\xf7\x12\x01\x02\x02\x06\x0a+\x06\x01\x04\x01\x827\x02\x02\x0a\xa3*0(\xa0&\
              \x1b$not_defined_in_RFC4178@please_ignore",
            "microsoft-ds",
            Some("Samba"),
            None,
        ),
        "3.0.2",
    ),
    with_protocol(
        sample(
            "x11-refused",
            b"\x00\x15\x0b\x00\x00\x00\x06\x00No protocol specified\x0a\x00\x00",
            "X11",
            None,
            None,
        ),
        "11.0",
    ),
    // containerd 1.6.20's `[grpc] tcp_address` (with the CRI plugin's `disable_tcp_service =
    // false`): SETTINGS, SETTINGS ack, WINDOW_UPDATE, PING, then the answer to the CRI
    // `RuntimeService/Version` probe (HEADERS, DATA, trailers).
    sample(
        "containerd-1.6.20-cri-version",
        b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x05\x00\x00@\x00\x00\x00\x00\x04\x01\x00\x00\
          \x00\x00\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x08\x06\x00\x00\
          \x00\x00\x00\x02\x04\x10\x10\x09\x0e\x07\x07\x00\x00\x0e\x01\x04\x00\x00\x00\x01\x88_\
          \x8b\x1du\xd0b\x0d&=LMed\x00\x00(\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00#\x0a\x050.1.0\
          \x12\x0acontainerd\x1a\x0a1.6.20~ds1\x22\x02v1\x00\x00\x18\x01\x05\x00\x00\x00\x01@\x88\
          \x9a\xca\xc8\xb2\x124\xda\x8f\x010@\x89\x9a\xca\xc8\xb5%B\x071\x7f\x00",
        "grpc",
        Some("containerd"),
        Some("1.6.20"),
    ),
    // The same server when the call names a service it does not serve on TCP: a
    // trailers-only answer (`grpc-status: 12`, Huffman-coded), still gRPC.
    sample(
        "containerd-1.6.20-unknown-service",
        b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x05\x00\x00@\x00\x00\x00\x00\x04\x01\x00\x00\
          \x00\x00\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x08\x06\x00\x00\
          \x00\x00\x00\x02\x04\x10\x10\x09\x0e\x07\x07\x00\x00M\x01\x05\x00\x00\x00\x01\x88_\x8b\
          \x1du\xd0b\x0d&=LMed@\x88\x9a\xca\xc8\xb2\x124\xda\x8f\x0212@\x89\x9a\xca\xc8\xb5%B\x071\
          \x7f\xa6\xb6\xae\xb5\x1f\xc5J \xb6w1\x0a\xa1\x0fRFj\x8bd\x8b\xa0\xb6w1\x0a\x85\xfb\x96\
          \xc4\x18\xf5/\xdc+\xf1-\x881\xea",
        "grpc",
        None,
        None,
    ),
    sample(
        "zookeeper-3.8-srvr",
        b"Zookeeper version: 3.8.0-5a02a05eddb59aee6ac762f7ea82e92a68eb9c0f, built on \
          2022-02-25 08:49 UTC\nLatency min/avg/max: 0/0.0/0\nMode: standalone\n",
        "zookeeper",
        Some("Zookeeper"),
        Some("3.8.0"),
    ),
    sample(
        "zookeeper-3.8.0-debian-srvr",
        b"Zookeeper version: 3.8.0-${mvngit.commit.id}, built on 2024-12-29 17:54 UTC\n\
          Latency min/avg/max: 0/0.0/0\nReceived: 1\nSent: 0\nConnections: 1\nOutstanding: 0\n\
          Zxid: 0x0\nMode: standalone\nNode count: 5\n",
        "zookeeper",
        Some("Zookeeper"),
        Some("3.8.0"),
    ),
    sample(
        "kamailio-5.6.3-sip",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP localhost;branch=z9hG4bK-porthawk;received=127.0.0.1\r\n\
          From: <sip:porthawk@localhost>;tag=porthawk\r\n\
          To: <sip:porthawk@localhost>;tag=9a4266b5e82ed130bb1ac0c806c2213c.a6700000\r\n\
          Call-ID: porthawk@localhost\r\nCSeq: 1 OPTIONS\r\n\
          Server: kamailio (5.6.3 (x86_64/linux))\r\nContent-Length: 0\r\n\r\n",
        "sip",
        Some("kamailio"),
        Some("5.6.3"),
    ),
    sample(
        "vlc-3.0.24-rtsp",
        b"RTSP/1.0 200 OK\r\nServer: VLC/3.0.24\r\nContent-Length: 0\r\nCseq: 1\r\n\
          Public: DESCRIBE,SETUP,TEARDOWN,PLAY,PAUSE,GET_PARAMETER\r\n\r\n",
        "rtsp",
        Some("VLC rtspd"),
        Some("3.0.24"),
    ),
    sample(
        "vlc-3.0.24-http-not-found",
        b"HTTP/1.0 404 Not found\r\nContent-Length: 312\r\nContent-Type: text/html\r\n\r\n\
          <?xml version=\"1.0\" encoding=\"ascii\" ?>\n<!DOCTYPE html PUBLIC \
          \"-//W3C//DTD XHTML 1.0 Strict//EN\" \
          \"http://www.w3.org/TR/xhtml10/DTD/xhtml10strict.dtd\">\n<html lang=\"en\">\n\
          <head>\n<title>Not found</title>\n</head>\n<body>\n<h1>404 Not found (/)</h1>\n\
          <hr />\n<a href=\"http://www.videolan.org\">VideoLAN</a>\n</body>\n</html>\n",
        "http",
        Some("VLC"),
        None,
    ),
    sample(
        "ffmpeg-5.1-rtsp-listen",
        b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: Lavf59.27.100\r\n\
          Public: ANNOUNCE, PAUSE, SETUP, TEARDOWN, RECORD\r\n\r\n",
        "rtsp",
        Some("FFmpeg libavformat"),
        Some("59.27.100"),
    ),
    with_protocol(
        sample(
            "xvnc-x11-accepted",
            b"\x01\x00\x0b\x00\x00\x00U\x09\x8e\xa5\xb8\x00\x00\x00 \x00\xff\xff\x1f\x00\
              \x00\x01\x00\x00\x14\x00\xff\xff\x01\x06\x00\x00  \x08\xff\x00\x00\x00\x00\
              The X.Org Foundation\x01\x01 \x00",
            "X11",
            Some("The X.Org Foundation"),
            Some("21.1.6"),
        ),
        "11.0",
    ),
    with_protocol(
        sample(
            "xvnc-x11-accepted-header",
            b"\x01\x00\x0b\x00\x00\x00U\x09",
            "X11",
            None,
            None,
        ),
        "11.0",
    ),
    sample(
        "xrdp-0.9-connection-confirm",
        b"\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x01\x08\x00\x01\x00\x00\x00",
        "ms-wbt-server",
        None,
        None,
    ),
    sample(
        "xrdp-0.9-disconnect",
        b"\x03\x00\x00\x09\x02\xf0\x80\x21\x80",
        "ms-wbt-server",
        Some("xrdp"),
        None,
    ),
    sample(
        "vsftpd-oops",
        b"500 OOPS: vsftpd: both local and anonymous access disabled!\r\n",
        "ftp",
        Some("vsFTPd"),
        None,
    ),
    sample(
        "cups-2.4-bad-request",
        b"HTTP/1.0 400 Bad Request\r\nContent-Language: en\r\nContent-Length: 346\r\n\
          Content-Type: text/html; charset=utf-8\r\nDate: Mon, 30 Nov 2026 21:45:26 GMT\r\n\
          Accept-Encoding: gzip, deflate, identity\r\nServer: CUPS/2.4 IPP/2.1\r\n\
          X-Frame-Options: DENY\r\nContent-Security-Policy: frame-ancestors 'none'\r\n\r\n",
        "ipp",
        Some("CUPS"),
        Some("2.4"),
    ),
    sample(
        "haproxy-2.6-no-server",
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 107\r\ncache-control: no-cache\r\n\
          content-type: text/html\r\nconnection: close\r\n\r\n\
          <html><body><h1>503 Service Unavailable</h1>\n\
          No server is available to handle this request.\n</body></html>\n",
        "http-proxy",
        Some("HAProxy"),
        None,
    ),
    sample(
        "openjdk-17-rmiregistry-ack",
        b"N\x00\x09127.0.0.1\x00\x00\xc8\x9c",
        "java-rmi",
        Some("Java RMI"),
        None,
    ),
    sample(
        "docker-20.10-root",
        b"HTTP/1.0 404 Not Found\r\nContent-Type: application/json\r\n\
          Date: Tue, 01 Dec 2026 00:33:54 GMT\r\nContent-Length: 29\r\n\r\n\
          {\"message\":\"page not found\"}\n",
        "docker",
        Some("Docker"),
        None,
    ),
    with_protocol(
        sample(
            "docker-20.10-version",
            b"HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n\
              Docker-Experimental: false\r\nOstype: linux\r\nServer: Docker/20.10.24+dfsg1 (linux)\r\n\
              Date: Tue, 01 Dec 2026 00:33:54 GMT\r\nContent-Length: 792\r\n\r\n\
              {\"Platform\":{\"Name\":\"\"},\"Components\":[{\"Name\":\"Engine\",\
              \"Version\":\"20.10.24+dfsg1\",\"Details\":{\"ApiVersion\":\"1.41\",\"Arch\":\"amd64\",\
              \"BuildTime\":\"2026-05-07T21:09:36.000000000+00:00\",\"Experimental\":\"false\",\
              \"GitCommit\":\"5d6db84\",\"GoVersion\":\"go1.19.8\",\"KernelVersion\":\"6.18.44-fc-v669\",\
              \"MinAPIVersion\":\"1.12\",\"Os\":\"linux\"}},{\"Name\":\"containerd\",\
              \"Version\":\"1.6.20~ds1\",\"Details\":{\"GitCommit\":\"1.6.20~ds1-1+deb12u3\"}},\
              {\"Name\":\"runc\",\"Version\":\"1.1.5+ds1\",\"Details\":{\"GitCommit\":\"1.1.5+ds1-1+deb12u1\"}},\
              {\"Name\":\"docker-init\",\"Version\":\"0.19.0\",\"Details\":{\"GitCommit\":\"\"}}],\
              \"Version\":\"20.10.24+dfsg1\",\"ApiVersion\":\"1.41\",\"MinAPIVersion\":\"1.12\",\
              \"GitCommit\":\"5d6db84\",\"GoVersion\":\"go1.19.8\",\"Os\":\"linux\",\"Arch\":\"amd64\",\
              \"KernelVersion\":\"6.18.44-fc-v669\",\"BuildTime\":\"2026-05-07T21:09:36.000000000+00:00\"}\n",
            "docker",
            Some("Docker"),
            Some("20.10.24"),
        ),
        "1.41",
    ),
    // The Kubernetes API server (kube-apiserver 1.28, Go's net/http): its answer to a plain
    // request on its TLS port; inside TLS, the `Status` of the authorization filter to an
    // anonymous `GET /` (k8s.io/apiserver's responsewriters, compact JSON), and `/version`
    // (`WriteRawJSON`: `json.MarshalIndent` of k8s.io/apimachinery's `version.Info`).
    sample(
        "kubernetes-1.28-plain-http",
        b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        "http",
        None,
        None,
    ),
    sample(
        "kubernetes-1.28-forbidden",
        b"HTTP/1.0 403 Forbidden\r\nAudit-Id: 5b0f2a8e-3c8d-4a61-9f57-2d8e1f0b6c3a\r\n\
          Cache-Control: no-cache, private\r\nContent-Type: application/json\r\n\
          X-Content-Type-Options: nosniff\r\n\
          X-Kubernetes-Pf-Flowschema-Uid: 0d3f3f57-6b1c-4e0a-a3c4-8f1f5e2b7c10\r\n\
          X-Kubernetes-Pf-Prioritylevel-Uid: 6a9b3c1d-2e4f-4a5b-8c7d-9e0f1a2b3c4d\r\n\
          Date: Tue, 01 Dec 2026 01:20:00 GMT\r\nContent-Length: 217\r\n\r\n\
          {\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\
          \"message\":\"forbidden: User \\\"system:anonymous\\\" cannot get path \\\"/\\\"\",\
          \"reason\":\"Forbidden\",\"details\":{},\"code\":403}\n",
        "http",
        Some("Kubernetes"),
        None,
    ),
    sample(
        "kubernetes-1.28-unauthorized",
        b"HTTP/1.0 401 Unauthorized\r\nAudit-Id: 9c1e7a52-0b4d-4f3e-8a6c-1d2e3f4a5b6c\r\n\
          Cache-Control: no-cache, private\r\nContent-Type: application/json\r\n\
          Date: Tue, 01 Dec 2026 01:20:00 GMT\r\nContent-Length: 129\r\n\r\n\
          {\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\
          \"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n",
        "http",
        Some("Kubernetes"),
        None,
    ),
    sample(
        "kubernetes-1.28.2-version",
        b"HTTP/1.0 200 OK\r\nAudit-Id: 3f2b1c0d-9e8f-4a7b-b6c5-d4e3f2a1b0c9\r\n\
          Cache-Control: no-cache, private\r\nContent-Type: application/json\r\n\
          Date: Tue, 01 Dec 2026 01:20:00 GMT\r\nContent-Length: 263\r\n\r\n\
          {\n  \"major\": \"1\",\n  \"minor\": \"28\",\n  \"gitVersion\": \"v1.28.2\",\n  \
          \"gitCommit\": \"89a4ea3e1e4ddd7f7572286090359983e0387b2f\",\n  \
          \"gitTreeState\": \"clean\",\n  \"buildDate\": \"2023-09-13T09:29:07Z\",\n  \
          \"goVersion\": \"go1.20.8\",\n  \"compiler\": \"gc\",\n  \
          \"platform\": \"linux/amd64\"\n}",
        "http",
        Some("Kubernetes"),
        Some("1.28.2"),
    ),
    // containerd's banner (sent on accept) and all it says to the HTTP probe: its SETTINGS
    // frame, then it waits for the rest of a client preface. Any HTTP/2 server's first
    // frame; not gRPC, nor named.
    Sample {
        name: "containerd-settings-only",
        reply: b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x05\x00\x00@\x00",
        service: None,
        product: None,
        version: None,
        protocol_version: None,
    },
    Sample {
        name: "unknown-greeting",
        reply: b"Welcome to the machine\r\n",
        service: None,
        product: None,
        version: None,
        protocol_version: None,
    },
];

/// Identifies arbitrary bytes and checks what the identity may contain.
pub fn identify_target(data: &[u8]) {
    let Some(id) = identify(data) else {
        return;
    };
    assert!(!id.service.is_empty());
    for text in [&id.product, &id.version].into_iter().flatten() {
        assert!(
            !text.is_empty() && text.len() <= IDENTITY_FIELD_LIMIT,
            "{id:?}"
        );
        assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "{id:?}");
    }
}

/// Runs a preset's dialog against a peer scripted by `data` and checks that the conversation
/// ends, within a bound of turns, with a consistent verdict.
///
/// The first byte picks the preset. Then each turn reads a control byte: its low four bits
/// advance the clock by that many 50 ms; its high four bits pick the peer's move: a timeout,
/// a reset, a close, or (for a read) a chunk of the following bytes whose length is the next
/// byte, (for a send) a partial or complete send. When `data` runs out the peer goes silent.
pub fn dialog_target(data: &[u8]) {
    run_dialog(data);
}

/// What [`run_dialog`] played: the dialog's name, the verdict (matched, reason), and what
/// identification makes of the banner kept.
type Played = (
    &'static str,
    Option<bool>,
    Option<String>,
    Option<crate::Identity>,
);

/// [`dialog_target`], returning what it played.
fn run_dialog(data: &[u8]) -> Option<Played> {
    let (&pick, mut rest) = data.split_first()?;
    let plan = (IDENTIFY_PICK..USER_DIALOG_PICK).contains(&pick);
    let (name, dialog, max_reply, jail) = if plan {
        let dialogs = identify_dialogs();
        let dialog = &dialogs[usize::from(pick - IDENTIFY_PICK) % dialogs.len()];
        ("identify-plan", dialog, crate::READ_LIMIT, false)
    } else if pick >= USER_DIALOG_PICK {
        let users = compiled_user_dialogs();
        let (name, spec) = &users[usize::from(pick - USER_DIALOG_PICK) % users.len()];
        let dialog = spec.dialog.as_ref()?;
        (*name, dialog, spec.max_reply, spec.jail)
    } else {
        let all = compiled_presets();
        let (preset, dialog) = &all[usize::from(pick) % all.len()];
        (preset.name, dialog, crate::READ_LIMIT, false)
    };
    // A TLS handshake counts as an expectation: the `tls` preset passes or fails on it.
    let expects = dialog.expects() || dialog.steps.contains(&DialogStep::StartTls);
    let steps = dialog.steps.len();
    let spec = ProbeSpec {
        dialog: Some(Arc::clone(dialog)),
        tls_config: Some(tls_config()),
        read_timeout: Duration::from_secs(2),
        dialog_timeout: Duration::from_secs(5),
        max_reply,
        jail,
        ..ProbeSpec::default()
    };
    let connected = ConnectEvent::Connected {
        local: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000),
        peer: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 25),
    };
    let mut c = Conversation::default();
    let mut step = c.on_connect(&spec, connected);
    let mut elapsed = Duration::ZERO;
    // Every turn consumes input, or (once the input is gone) times out a step.
    let max_turns = data.len() + 2 * steps + 4;
    let mut turns = 0;
    loop {
        turns += 1;
        assert!(turns <= max_turns, "conversation did not end: {step:?}");
        let ctl = match rest.split_first() {
            Some((&ctl, tail)) => {
                rest = tail;
                ctl
            }
            None => 0,
        };
        elapsed += Duration::from_millis(u64::from(ctl & 0x0f) * 50);
        step = match step {
            Step::Done { state, errno } => {
                assert_eq!((state, errno), (PortState::Open, None));
                break;
            }
            Step::Reconnect => {
                // Only a probe plan asks for another connection, for its next probe; the
                // script says how that connect goes.
                assert!(plan, "reconnect after a handshake");
                elapsed = Duration::ZERO;
                let local = match connected {
                    ConnectEvent::Connected { local, .. } => local,
                    _ => unreachable!(),
                };
                let event = match ctl >> 4 {
                    0 => ConnectEvent::Failed(crate::errno::consts::ECONNREFUSED),
                    1 => ConnectEvent::TimedOut,
                    2 => ConnectEvent::Connected { local, peer: local },
                    _ => connected,
                };
                c.on_connect(&spec, event)
            }
            Step::Send { timeout } => {
                assert!(!timeout.is_zero() && timeout <= spec.read_timeout);
                let pending = c.pending_send().len();
                assert!(pending > 0, "asked to send nothing");
                match ctl >> 4 {
                    0 => c.on_timeout(&spec, elapsed),
                    1 => c.on_io_error(104),
                    2 => c.on_sent(&spec, 1, elapsed),
                    _ => c.on_sent(&spec, pending, elapsed),
                }
            }
            Step::Recv { timeout } => {
                assert!(!timeout.is_zero() && timeout <= spec.read_timeout);
                match ctl >> 4 {
                    0 => c.on_timeout(&spec, elapsed),
                    1 => c.on_io_error(104),
                    2 => c.on_recv(&spec, b"", elapsed),
                    _ => {
                        let (&len, tail) = rest.split_first().unwrap_or((&0, &[]));
                        let n = usize::from(len).max(1).min(tail.len());
                        let (chunk, tail) = tail.split_at(n);
                        rest = tail;
                        c.on_recv(&spec, chunk, elapsed)
                    }
                }
            }
        };
    }
    if let Some(banner) = c.banner() {
        assert!(!banner.is_empty() && banner.len() <= BANNER_LIMIT);
        identify_target(banner);
    }
    match c.matched() {
        None => assert!(!expects),
        Some(true) => assert!(expects && c.reason().is_none()),
        Some(false) => assert!(expects && c.reason().is_some()),
    }
    if let Some(reason) = c.reason() {
        assert!(reason.starts_with("step "), "{reason}");
        assert!(reason.len() < 1024, "unbounded reason: {reason}");
        if jail {
            assert!(
                !reason.contains("got '"),
                "jailed reason quotes the peer: {reason}"
            );
        }
    }
    if let Some(DialogStep::Identify { max_probes }) = dialog.steps.first() {
        assert!(c.probes_sent() <= *max_probes);
    }
    assert!(c.captures().len() <= crate::MAX_CAPTURES);
    assert!(c.captures().iter().all(|k| k.len() <= crate::CAPTURE_LIMIT));
    assert!(!c.mismatched() || c.reason().is_some());
    Some((
        name,
        c.matched(),
        c.reason().map(str::to_string),
        c.banner().and_then(identify),
    ))
}

/// A first byte at or above this picks one of [`compiled_user_dialogs`] instead of a preset.
const USER_DIALOG_PICK: u8 = 0xc0;

/// A first byte from this up to [`USER_DIALOG_PICK`] picks one of [`identify_dialogs`].
const IDENTIFY_PICK: u8 = 0xb0;

/// The dialogs of `--identify`: the probe plan with budgets of 0 to 30 probes (the low four
/// bits of the first byte, times two).
fn identify_dialogs() -> &'static [Arc<Dialog>] {
    static DIALOGS: OnceLock<Vec<Arc<Dialog>>> = OnceLock::new();
    DIALOGS.get_or_init(|| {
        (0..16u8)
            .map(|i| Arc::new(Dialog::identify(i * 2)))
            .collect()
    })
}

/// Inputs for [`dialog_target`] that play the probe plan of `--identify` on an unhinted port
/// (25: no probe names it) against real services: a silent one, ngIRCd (its `ERROR` to the
/// HTTP probe, then the follow-up IRC probe's welcome), and memcached (it closes on HTTP, says
/// `ERROR` to the Redis probe, and its version to its own).
pub fn identify_dialog_seeds() -> Vec<(String, Vec<u8>)> {
    const TIMEOUT: u8 = 0x00;
    const CLOSE: u8 = 0x20;
    const RESET: u8 = 0x10;
    const CONNECTED: u8 = 0x31;
    const PROCEED: u8 = 0x31;
    let read = |data: &mut Vec<u8>, reply: &[u8]| {
        for chunk in reply.chunks(255) {
            data.push(PROCEED);
            data.push(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
            data.extend_from_slice(chunk);
        }
    };
    let budget = |probes: u8| IDENTIFY_PICK + probes / 2;
    // Null probe, then each probe: sent, unanswered, a new connection for the next.
    let mut silent = vec![budget(4), TIMEOUT];
    for _ in 0..4 {
        silent.extend_from_slice(&[PROCEED, TIMEOUT, CONNECTED]);
    }
    let mut ngircd = vec![budget(20), TIMEOUT, PROCEED];
    read(&mut ngircd, sample_reply("ngircd-26.1-http"));
    ngircd.extend_from_slice(&[CONNECTED, PROCEED]);
    read(&mut ngircd, sample_reply("ngircd-26.1-welcome"));
    let mut memcached = vec![budget(20), TIMEOUT, PROCEED, CLOSE, CONNECTED, PROCEED];
    read(&mut memcached, b"ERROR\r\nERROR\r\nERROR\r\n");
    memcached.extend_from_slice(&[CONNECTED, PROCEED]);
    read(&mut memcached, sample_reply("memcached-1.6.18-version"));
    // A TLS server: nginx's complaint to plain HTTP, then the plan's handshake on a new
    // connection, answered by an alert (the branch ends); and an OpenSSL server that closes
    // on HTTP and answers the ClientHello probe, then resets the handshake's connection.
    let mut nginx_tls = vec![budget(4), TIMEOUT, PROCEED];
    read(&mut nginx_tls, sample_reply("nginx-1.22-plain-to-https"));
    nginx_tls.extend_from_slice(&[CONNECTED, PROCEED]);
    read(&mut nginx_tls, b"\x15\x03\x03\x00\x02\x02\x28");
    let mut openssl = vec![budget(4), TIMEOUT, PROCEED, CLOSE, CONNECTED, PROCEED];
    read(&mut openssl, sample_reply("tls-server-hello"));
    openssl.extend_from_slice(&[CONNECTED, PROCEED, RESET]);
    vec![
        ("identify-plan-nginx-tls".to_string(), nginx_tls),
        ("identify-plan-openssl-tls".to_string(), openssl),
        ("identify-plan-silent".to_string(), silent),
        ("identify-plan-ngircd".to_string(), ngircd),
        ("identify-plan-memcached".to_string(), memcached),
    ]
}

/// Dialogs as users write them (steps with captures, `--expect-all`, `--quit`, steps after a
/// STARTTLS preset, a small `--max-reply`, `--jail`), built through [`crate::ProbeOptions`]
/// once, with the spec fields they set.
fn compiled_user_dialogs() -> &'static [(&'static str, ProbeSpec)] {
    use crate::{ProbeOptions, ProbeStep};
    static COMPILED: OnceLock<Vec<(&'static str, ProbeSpec)>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let send = |s: &str| ProbeStep::Send(s.into());
        let expect = |s: &str| ProbeStep::Expect(s.into());
        let dialogs = [
            (
                "steps-captures",
                ProbeOptions {
                    steps: vec![
                        expect(r"^220 (\S+) (E?SMTP)"),
                        send(r"EHLO ${1}\r\n"),
                        expect(r"^250[ -]SIZE (\d+)$"),
                        expect(r"^250 (.*)$"),
                        send(r"MAIL FROM:<${2}@${1}> SIZE=${3}\r\n"),
                        expect("^250 "),
                    ],
                    expect_all: true,
                    quit: Some(r"QUIT\r\n".into()),
                    ..Default::default()
                },
            ),
            (
                "starttls-steps",
                ProbeOptions {
                    preset: Some("smtp-starttls".into()),
                    steps: vec![send(r"EHLO porthawk\r\n"), expect(r"^250 (\S+)")],
                    quit: Some(r"QUIT\r\n".into()),
                    ..Default::default()
                },
            ),
            (
                "jail-small-reply",
                ProbeOptions {
                    steps: vec![send(r"HELP\r\n"), expect(r"^214 (.*)$")],
                    max_reply: Some(64),
                    jail: true,
                    ..Default::default()
                },
            ),
        ];
        dialogs
            .into_iter()
            .map(|(name, options)| {
                let second = Duration::from_secs(1);
                match options.spec(second, 1, second, second, Arc::new(FixedTime)) {
                    Ok(spec) => (name, spec),
                    Err(e) => panic!("user dialog {name} does not build: {e}"),
                }
            })
            .collect()
    })
}

/// Inputs for [`dialog_target`] that play the user dialogs with a good server.
pub fn user_dialog_seeds() -> Vec<(String, Vec<u8>)> {
    const PROCEED: u8 = 0x31;
    let read = |data: &mut Vec<u8>, reply: &[u8]| {
        for chunk in reply.chunks(255) {
            data.push(PROCEED);
            data.push(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
            data.extend_from_slice(chunk);
        }
    };
    let ehlo: &[u8] = b"250-mx.example.org\r\n250-SIZE 10240000\r\n250 CHUNKING\r\n";
    let mut captures = vec![USER_DIALOG_PICK];
    read(&mut captures, sample_reply("exim-4.96"));
    captures.push(PROCEED);
    read(&mut captures, ehlo);
    captures.push(PROCEED);
    read(&mut captures, b"250 OK\r\n");
    captures.push(PROCEED);
    let mut jail = vec![USER_DIALOG_PICK + 2, PROCEED];
    read(
        &mut jail,
        b"214-This is a long help text, longer than the reply limit of this dialog.\r\n",
    );
    vec![
        ("steps-captures".to_string(), captures),
        ("jail-small-reply".to_string(), jail),
    ]
}

/// A clock stopped at a fixed instant (2023-11-14), for TLS handshakes in the fuzz targets:
/// the core reads no clock, and a fixed one keeps runs reproducible.
#[derive(Debug)]
struct FixedTime;

impl TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(
            FIXED_NOW as u64,
        )))
    }
}

/// The instant of [`FixedTime`], in seconds since the epoch.
const FIXED_NOW: i64 = 1_700_000_000;

/// The TLS client configuration of the dialog target, built once.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(
        CONFIG.get_or_init(|| match tls_client_config(Arc::new(FixedTime)) {
            Ok(config) => config,
            Err(e) => panic!("the TLS client configuration does not build: {e}"),
        }),
    )
}

/// Every preset with its dialog, compiled once: compiling regexes for each input would make
/// the fuzzer a hundred times slower.
fn compiled_presets() -> &'static [(&'static Preset, Arc<Dialog>)] {
    static COMPILED: OnceLock<Vec<(&'static Preset, Arc<Dialog>)>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        presets()
            .iter()
            .map(|p| match p.dialog() {
                Ok(d) => (p, Arc::new(d.with_tls(p.tls))),
                Err(e) => panic!("preset {} does not build: {e}", p.name),
            })
            .collect()
    })
}

/// Reads arbitrary bytes as a DER certificate, as the TLS code does with the certificate a
/// server presents; what it reads must be usable.
pub fn cert_target(data: &[u8]) {
    if let Ok(info) = parse_certificate(data) {
        let _ = info.days_left(FIXED_NOW);
        let _ = info.self_signed();
    }
}

/// Reads arbitrary bytes with the parsers of [`Wire`] replies (LDAP's BER, XMPP's tags), as
/// the ldap and xmpp presets read what a server says: no panic; a pair (good, bad) never
/// both match; and a verdict, once reached, stays when more bytes come.
pub fn wire_target(data: &[u8]) {
    let pairs = [
        (Wire::LdapSuccess, Wire::LdapFailure),
        (Wire::XmppStartTlsOffered, Wire::XmppNoStartTls),
        (Wire::XmppProceed, Wire::XmppRefused),
    ];
    for (good, bad) in pairs {
        assert!(
            !(good.is_match(data) && bad.is_match(data)),
            "{good:?} and {bad:?} both match"
        );
        let whole = good.judge(data);
        assert_eq!(bad.judge(data), whole);
        for cut in [data.len() / 2, data.len().saturating_sub(1)] {
            let part = good.judge(&data[..cut]);
            if part != WireVerdict::More {
                assert_eq!(part, whole, "{good:?}: the verdict on {cut} bytes changed");
            }
        }
    }
    let _ = ldap_reply(data);
}

/// Seeds of the `wire` target: real replies, and broken ones.
pub const WIRE_SEEDS: &[&[u8]] = &[
    LDAP_STARTTLS_SUCCESS,
    // protocolError (2), as a server without StartTLS support answers.
    b"\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x02\x04\x00\x04\x00",
    // A notice of disconnection (message 0, unavailable).
    b"\x30\x84\x00\x00\x00\x2c\x02\x01\x00\x78\x84\x00\x00\x00\x23\x0a\x01\x34\x04\x00\
      \x04\x00\x8a\x161.3.6.1.4.1.1466.20036",
    b"\x30\x80\x02\x01\x01",
    b"\x30\x85\x01\x02\x03\x04\x05",
    XMPP_FEATURES,
    XMPP_PROCEED,
    b"<?xml version='1.0'?><stream:stream from='x' version='1.0'><stream:features>\
      <mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism>\
      </mechanisms></stream:features>",
    b"<stream:stream><stream:error><host-unknown \
      xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>",
    b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>",
    b"<!-- x --><a b='>'><c/></a><stream:features/>",
];

/// Decodes arbitrary text as `--send` escapes, and renders arbitrary bytes with
/// [`printable`]: the rendering is ASCII, respects its cap, and decodes back to the bytes.
pub fn escapes_target(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(bytes) = parse_escapes(text) {
            assert!(bytes.len() <= text.len());
        }
    }
    let shown = printable(data, usize::MAX);
    assert!(shown.is_ascii());
    assert_eq!(parse_escapes(&shown).as_deref(), Ok(data), "{shown}");
    let cap = data.first().map_or(0, |&b| usize::from(b));
    let cut = printable(data, cap);
    assert!(cut.len() <= cap + 3, "{cut}");
}

/// Decodes arbitrary bytes as a result frame (a frame that decodes re-encodes to an equal
/// batch), and round-trips a batch built from the bytes through the frame format.
pub fn frame_target(data: &[u8]) {
    if let Ok((batch, used)) = decode_frame(data) {
        assert!((FRAME_HEADER_LEN..=data.len()).contains(&used));
        round_trip(&batch);
    }
    round_trip(&batch_from_bytes(data));
}

fn round_trip(batch: &ResultBatch) {
    let mut buf = Vec::new();
    encode_frame(batch, &mut buf);
    match decode_frame(&buf) {
        Ok((again, used)) => {
            assert_eq!(&again, batch);
            assert_eq!(used, buf.len());
        }
        Err(e) => panic!("a frame this build encoded does not decode: {e}"),
    }
}

/// Reads fixed-size values off the front of a byte slice, with zeros once it runs out.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn byte(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }

    fn slice(&mut self, max: usize) -> &[u8] {
        let n = usize::from(self.byte()).min(max).min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
}

/// A batch whose every field comes from `data`.
pub fn batch_from_bytes(data: &[u8]) -> ResultBatch {
    let mut c = Cursor(data);
    let job = JobId(u64::from_le_bytes(c.bytes()));
    let shard = u16::from_le_bytes(c.bytes());
    let flags = c.byte();
    let mut records = Vec::new();
    while !c.0.is_empty() && records.len() < 64 {
        let kind = c.byte();
        let ip = if kind & 1 == 0 {
            IpAddr::V4(Ipv4Addr::from(c.bytes::<4>()))
        } else {
            IpAddr::V6(Ipv6Addr::from(c.bytes::<16>()))
        };
        let mut r = ProbeRecord::new(
            ip,
            u16::from_le_bytes(c.bytes()),
            PortState::ALL[usize::from(kind >> 1) % PortState::ALL.len()],
            u32::from_le_bytes(c.bytes()),
            c.byte(),
        );
        if kind & 0x10 != 0 {
            r.errno = Some(i32::from_le_bytes(c.bytes()));
        }
        if kind & 0x20 != 0 {
            r.banner = Some(c.slice(BANNER_LIMIT).to_vec());
        }
        if kind & 0x40 != 0 {
            r.matched = Some(kind & 0x08 != 0);
        }
        if kind & 0x80 != 0 {
            r.reason = Some(String::from_utf8_lossy(c.slice(255)).into_owned());
        }
        records.push(r);
    }
    ResultBatch {
        job,
        shard,
        records,
        shard_done: flags & 1 != 0,
        job_done: flags & 2 != 0,
        cancelled: flags & 4 != 0,
    }
}

/// Frames to seed the `frame` corpus with: an empty batch, and batches of typical records.
pub fn sample_frames() -> Vec<Vec<u8>> {
    let ip = |s: &str| {
        s.parse::<IpAddr>()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    };
    let mut open = ProbeRecord::new(ip("10.0.0.7"), 25, PortState::Open, 412, 1);
    open.banner = Some(b"220 mx.example.org ESMTP Postfix (Debian/GNU)\r\n".to_vec());
    open.matched = Some(true);
    let mut failed = ProbeRecord::new(ip("fd00::7"), 6379, PortState::Open, 90, 1);
    failed.banner = Some(b"-DENIED Redis is running in protected mode\r\n".to_vec());
    failed.matched = Some(false);
    failed.reason = Some("step 2: got '-DENIED Redis is running in protected mode\\r\\n', which matches reject ^-(ERR|DENIED|LOADING|MISCONF|WRONGPASS)".into());
    let mut unreachable = ProbeRecord::new(ip("192.0.2.1"), 443, PortState::Unreachable, 3000, 2);
    unreachable.errno = Some(113);
    let batches = [
        ResultBatch {
            job: JobId(1),
            shard: 0,
            records: Vec::new(),
            shard_done: true,
            job_done: true,
            cancelled: false,
        },
        ResultBatch {
            job: JobId(42),
            shard: 3,
            records: vec![
                open,
                failed,
                unreachable,
                ProbeRecord::new(ip("10.0.0.8"), 22, PortState::Closed, 150, 1),
                ProbeRecord::new(ip("10.0.0.9"), 80, PortState::Filtered, 0, 2),
            ],
            shard_done: false,
            job_done: false,
            cancelled: false,
        },
    ];
    batches
        .iter()
        .map(|b| {
            let mut buf = Vec::new();
            encode_frame(b, &mut buf);
            buf
        })
        .collect()
}

/// The reply of the sample called `name` (empty if there is none).
pub(crate) fn sample_reply(name: &str) -> &'static [u8] {
    SAMPLES
        .iter()
        .find(|s| s.name == name)
        .map_or(&[], |s| s.reply)
}

/// What a good server of each preset says, read by read, for the `dialog` seed corpus.
fn good_replies(preset: &str) -> Vec<&'static [u8]> {
    const EHLO: &[u8] = b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n\
        250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 CHUNKING\r\n";
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
        Content-Type: text/html\r\nContent-Length: 615\r\nConnection: close\r\n\r\n";
    match preset {
        "smtp" | "smtps" => vec![sample_reply("postfix"), EHLO],
        "smtp-starttls" | "submission" => vec![
            sample_reply("exim-4.96"),
            EHLO,
            b"220 2.0.0 Ready to start TLS\r\n",
        ],
        "pop3" | "pop3s" => vec![sample_reply("dovecot-pop3")],
        "pop3-starttls" => vec![
            sample_reply("dovecot-pop3"),
            b"+OK Begin TLS negotiation now.\r\n",
        ],
        "imap" | "imaps" => vec![sample_reply("dovecot-imap")],
        "imap-starttls" => vec![
            sample_reply("dovecot-imap"),
            b"a1 OK Begin TLS negotiation now.\r\n",
        ],
        "ftp" => vec![sample_reply("pure-ftpd")],
        "ssh" => vec![sample_reply("openssh-9.2")],
        "http" | "https" => vec![HEAD],
        "redis" => vec![b"+PONG\r\n"],
        "memcached" => vec![sample_reply("memcached-1.6.18-version")],
        "mysql" => vec![sample_reply("mariadb-10.11.6")],
        "postgres" => vec![b"S"],
        "nats" => vec![sample_reply("nats-2.9.20")],
        "mqtt" => vec![sample_reply("mosquitto-connack")],
        "amqp" => vec![b"\x01\x00\x00\x00\x00\x01\xf6\x00\x0a\x00\x0a\x00\x09"],
        "vnc" => vec![sample_reply("vnc-3.8")],
        "identify" => vec![sample_reply("nginx-1.22.1")],
        "nntp" | "nntps" => vec![NNTP_GREETING],
        "irc" | "ircs" => vec![IRC_NOTICE],
        "ldap" => vec![LDAP_STARTTLS_SUCCESS],
        "xmpp" => vec![XMPP_FEATURES, XMPP_PROCEED],
        _ => Vec::new(),
    }
}

/// INN's greeting.
const NNTP_GREETING: &[u8] =
    b"200 news.example.com InterNetNews NNRP server INN 2.7.1 ready (posting ok)\r\n";
/// What ircd-hybrid, InspIRCd and ngIRCd say before registration is done.
const IRC_NOTICE: &[u8] = b":irc.example.net NOTICE * :*** Looking up your hostname...\r\n";
/// OpenLDAP's answer to StartTLS: success, with the responseName.
pub const LDAP_STARTTLS_SUCCESS: &[u8] = b"\x30\x24\x02\x01\x01\x78\x1f\x0a\x01\x00\x04\x00\
    \x04\x00\x8a\x161.3.6.1.4.1.1466.20037";
/// Prosody's stream header and features, STARTTLS required.
pub const XMPP_FEATURES: &[u8] = b"<?xml version='1.0'?><stream:stream \
    xmlns:stream='http://etherx.jabber.org/streams' from='example.com' version='1.0' \
    xmlns='jabber:client'><stream:features><starttls \
    xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>";
/// The go-ahead for TLS.
pub const XMPP_PROCEED: &[u8] = b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";

/// Inputs for [`dialog_target`] that play each preset's dialog with a good server (replies
/// cut into reads of at most 255 bytes), named after the preset.
pub fn dialog_seeds() -> Vec<(String, Vec<u8>)> {
    // Control bytes of the script `dialog_target` reads: a timeout, and "go on" (the read or
    // send completes) 50 ms later.
    const TIMEOUT: u8 = 0x00;
    const PROCEED: u8 = 0x31;
    presets()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut data = vec![u8::try_from(i).unwrap_or(u8::MAX)];
            let mut replies = good_replies(p.name).into_iter();
            let mut silent = false;
            for step in p.steps {
                match step {
                    PresetStep::Send(_) | PresetStep::SendXmppHeader => data.push(PROCEED),
                    PresetStep::SendIfSilent(_) if silent => data.push(PROCEED),
                    PresetStep::SendIfSilent(_) => {}
                    PresetStep::Banner if p.name == "identify" && !silent => {
                        // Play a server that waits for the client, to exercise the probe.
                        silent = true;
                        data.push(TIMEOUT);
                    }
                    PresetStep::Banner
                    | PresetStep::Expect { .. }
                    | PresetStep::ExpectWire { .. } => {
                        let reply = replies.next().unwrap_or_default();
                        for chunk in reply.chunks(255) {
                            data.push(PROCEED);
                            data.push(u8::try_from(chunk.len()).unwrap_or(u8::MAX));
                            data.extend_from_slice(chunk);
                        }
                    }
                }
            }
            (p.name.to_string(), data)
        })
        .collect()
}

/// Inputs for [`escapes_target`]: `--send` strings users write, bad escapes, binary bytes.
pub const ESCAPE_SEEDS: &[&[u8]] = &[
    b"EHLO porthawk\\r\\n",
    b"PING\\r\\n",
    b"a\\tb",
    b"\\x00\\xff\\x7F",
    b"back\\\\slash",
    b"nul\\0",
    b"h\xc3\xa9llo",
    b"a\\q",
    b"\\x4",
    b"\\xzz",
    b"end\\",
    b"\\\xc3\xa9",
    b"\x00\x01\xff\r\n\t\\",
];

// ---------------------------------------------------------------------------------------------
// Parsers reachable from a request: port lists, targets, durations.

/// Seeds of the `ports` target.
pub const PORTS_SEEDS: &[&str] = &[
    "22,80,443",
    "8000-8100",
    "all",
    "-",
    "-1024,60000-",
    " 22 , 22 ,, 21 ",
    "63-65,127-129,64",
    "0",
    "65536",
    "90-80",
    "1-2-3",
    "-5-",
    "http",
    "-,-,-,-,-,-,-,-",
    "1,2,3,4,5,6,7,8,9,10",
];

/// Parses arbitrary text as a port list and compares the set with a reference that collects
/// the elements as ranges and merges them at the end; a set renders back to itself.
pub fn ports_target(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = PortSet::parse(text);
    match (&parsed, reference_ports(text)) {
        (Ok(set), Some(want)) => assert_eq!(set.as_slice(), &want[..], "{text:?}"),
        (Err(e), None) => assert!(e.to_string().len() < 200, "{e}"),
        (got, want) => panic!("{text:?}: parser {got:?}, reference {want:?}"),
    }
    if let Ok(set) = parsed {
        let ports = set.as_slice();
        assert!(ports.first().is_some_and(|&p| p > 0));
        assert!(ports.windows(2).all(|w| w[0] < w[1]));
        // Rendered as runs (`1-3,7`), the set parses back to itself.
        let mut shown: Vec<String> = Vec::new();
        let mut run_start = 0;
        for (i, &p) in ports.iter().enumerate() {
            if i + 1 == ports.len() || ports[i + 1] != p + 1 {
                shown.push(match ports[run_start] {
                    first if first == p => p.to_string(),
                    first => format!("{first}-{p}"),
                });
                run_start = i + 1;
            }
        }
        assert_eq!(PortSet::parse(&shown.join(",")).as_ref(), Ok(&set));
        let mut rest = set.clone();
        rest.remove(&set);
        assert!(rest.is_empty());
    }
}

/// The port list as a plain reading of the syntax would have it, or `None` if it is invalid.
fn reference_ports(text: &str) -> Option<Vec<u16>> {
    if text.split(',').count() > crate::MAX_PORT_ELEMENTS {
        return None;
    }
    let port = |s: &str| -> Option<u16> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u32>()
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .map(|p| p as u16)
    };
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let range = match part {
            "all" | "-" => (1, u16::MAX),
            _ => match part.split_once('-') {
                Some((a, b)) => {
                    let a = if a.trim().is_empty() { 1 } else { port(a)? };
                    let b = if b.trim().is_empty() {
                        u16::MAX
                    } else {
                        port(b)?
                    };
                    (a <= b).then_some((a, b))?
                }
                None => {
                    let p = port(part)?;
                    (p, p)
                }
            },
        };
        ranges.push(range);
    }
    ranges.sort_unstable();
    let mut out: Vec<u16> = Vec::new();
    for (a, b) in ranges {
        let from = match out.last() {
            Some(&last) if last >= b => continue,
            Some(&last) if last >= a => last + 1,
            _ => a,
        };
        out.extend(from..=b);
    }
    (!out.is_empty()).then_some(out)
}

/// Seeds of the `targets` target: one target per line, `!` before an exclusion.
pub const TARGET_SEEDS: &[&str] = &[
    "10.0.0.1\n10.0.0.0/30\n!10.0.0.2\n",
    "10.0.0.1-10.0.0.20\n10.0.0.5-9\n!10.0.0.3-10.0.0.6\n!10.0.0.15/31\n",
    "fd00::/120\n::1\n[::2]\n!fd00::10-fd00::1f\n",
    "host.example\n# a comment\n192.0.2.0/24 198.51.100.7\n!192.0.2.128/25\n",
    "10.0.0.0/8\n",
    "1.2.3.4/33\n",
    "10.0.0.9-10.0.0.1\n",
    "::/0\n",
    "!10.0.0.0/8\n10.1.2.3\n",
];

/// Parses arbitrary text as target and exclusion lines (the parse step only: host names are
/// not resolved) and checks the built host set against a plain range subtraction.
pub fn targets_target(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut builder = HostSetBuilder::default();
    let mut include: Vec<(bool, u128, u128)> = Vec::new();
    let mut exclude: Vec<(bool, u128, u128)> = Vec::new();
    for line in text.lines().take(512) {
        let (excluded, line) = match line.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let tokens = match parse_target_list(line) {
            Ok(tokens) => tokens,
            Err(e) => {
                assert!(e.to_string().contains("line 1"), "{e}");
                continue;
            }
        };
        for token in tokens {
            let TargetToken::Range(range) = token else {
                continue;
            };
            assert!(!range.is_empty() && range.len() <= 1 << 40);
            let key = range_key(&range);
            if excluded {
                builder.exclude(range);
                exclude.push(key);
            } else {
                builder.include(range);
                include.push(key);
            }
        }
    }
    let set = builder.build();
    let want = subtract(&include, &exclude);
    let got: Vec<(bool, u128, u128)> = set.ranges().map(|r| range_key(&r)).collect();
    assert_eq!(merge_adjacent(&got), merge_adjacent(&want));
    assert_eq!(
        set.len(),
        want.iter().map(|&(_, a, b)| b - a + 1).sum::<u128>()
    );
    if !set.is_empty() {
        for i in [0, set.len() / 2, set.len() - 1] {
            let (ip, _) = set
                .get(i)
                .unwrap_or_else(|| panic!("index {i} of {}", set.len()));
            assert!(set.contains(ip));
        }
    }
    assert!(set.get(set.len()).is_none());
    // first_outside: None exactly where the reference covers the whole range; otherwise an
    // address of the range that the set does not hold.
    let merged = merge_adjacent(&want);
    let mut probe_ranges: Vec<AddrRange> = set.ranges().take(16).collect();
    probe_ranges.extend(builder_ranges(text).into_iter().take(16));
    for r in probe_ranges {
        let (v6, a, b) = range_key(&r);
        let covered = merged
            .iter()
            .any(|&(wv6, wa, wb)| wv6 == v6 && wa <= a && wb >= b);
        match set.first_outside(r) {
            None => assert!(covered, "{r} reported covered"),
            Some(ip) => {
                assert!(!covered, "{r} reported not covered at {ip}");
                assert!(r.contains(ip) && !set.contains(ip), "{r}: {ip}");
            }
        }
    }
}

/// Every address range that the lines of `text` name, included or excluded.
fn builder_ranges(text: &str) -> Vec<AddrRange> {
    text.lines()
        .take(512)
        .filter_map(|line| parse_target_list(line.trim_start_matches('!')).ok())
        .flatten()
        .filter_map(|t| match t {
            TargetToken::Range(r) => Some(r),
            TargetToken::Host(_) => None,
        })
        .collect()
}

fn ip_key(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (true, u128::from(v6)),
    }
}

fn range_key(range: &AddrRange) -> (bool, u128, u128) {
    let (v6, first) = ip_key(range.first());
    let (_, last) = ip_key(range.last());
    (v6, first, last)
}

/// `include` minus `exclude`, the plain way: every exclusion against every piece.
fn subtract(
    include: &[(bool, u128, u128)],
    exclude: &[(bool, u128, u128)],
) -> Vec<(bool, u128, u128)> {
    let mut pieces = merge_adjacent(include);
    for &(v6, a, b) in exclude {
        let mut next = Vec::with_capacity(pieces.len() + 1);
        for (pv6, pa, pb) in pieces {
            if pv6 != v6 || b < pa || a > pb {
                next.push((pv6, pa, pb));
                continue;
            }
            if a > pa {
                next.push((pv6, pa, a - 1));
            }
            if b < pb {
                next.push((pv6, b + 1, pb));
            }
        }
        pieces = next;
    }
    pieces
}

/// Sorted, with overlapping and adjacent ranges merged.
fn merge_adjacent(ranges: &[(bool, u128, u128)]) -> Vec<(bool, u128, u128)> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(bool, u128, u128)> = Vec::with_capacity(sorted.len());
    for (v6, a, b) in sorted {
        match out.last_mut() {
            Some(last) if last.0 == v6 && a <= last.2.saturating_add(1) => last.2 = last.2.max(b),
            _ => out.push((v6, a, b)),
        }
    }
    out
}

/// Seeds of the `duration` target.
pub const DURATION_SEEDS: &[&str] = &[
    "500ms",
    "2s",
    "1.5s",
    "3",
    "10m",
    "1h",
    "1d",
    "250us",
    "250µs",
    " 10ms ",
    "",
    "soon",
    "1..2s",
    "-1s",
    "1e999s",
    "99999999999999999999h",
    "0.0000001us",
];

/// Parses arbitrary text as a duration: a value is finite and at most 10^9 s, an error names
/// the text.
pub fn duration_target(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_duration(text) {
        Ok(d) => {
            assert!(d.as_secs_f64() <= 1e9, "{text:?}: {d:?}");
            // The same length in microseconds reads back (to within the float's rounding).
            let again = parse_duration(&format!("{}us", d.as_micros()))
                .unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(
                again.as_micros().abs_diff(d.as_micros()) <= 1,
                "{text:?}: {again:?}"
            );
        }
        Err(e) => assert!(e.contains(&format!("'{text}'")), "{e}"),
    }
}

/// Fuzz target `fleet_wire`: the fleet messages and header values a peer sends
/// (`crate::fleet`). Every decoder sees the whole input; whatever decodes must survive
/// encode → decode unchanged, a spec that decodes either rebuilds a space of exactly `total`
/// positions or says why not, and a header value that parses prints back to itself.
pub fn fleet_wire_target(data: &[u8]) {
    use crate::{
        parse_results_subject, parse_u32_header, parse_work_subject, AgentStatus, Attempt,
        EndReason, FleetJob, LastFrame, SpecRef, SweepSpec, WireMessage, WorkItem,
    };
    fn again<T: WireMessage + PartialEq + std::fmt::Debug>(value: &T) {
        assert_eq!(T::decode(&value.encode()).as_ref(), Ok(value));
    }
    if let Ok(spec) = SweepSpec::decode(data) {
        again(&spec);
        if let Ok(space) = spec.space() {
            assert_eq!(space.len(), spec.total);
        }
    }
    if let Ok(item) = WorkItem::decode(data) {
        again(&item);
        assert!(item.start < item.end);
        if let SpecRef::Inline(spec) = &item.spec {
            assert!(item.positions(spec.total).is_ok());
        }
    }
    if let Ok(status) = AgentStatus::decode(data) {
        again(&status);
    }
    if let Ok(request) = crate::RemedyRequest::decode(data) {
        again(&request);
        assert!(crate::is_action_name(&request.action));
    }
    if let Ok(result) = crate::RemedyResult::decode(data) {
        again(&result);
    }
    let text = String::from_utf8_lossy(data);
    for line in text.lines().take(64) {
        if let Ok(a) = line.parse::<Attempt>() {
            assert_eq!(a.to_string(), line);
        }
        if let Ok(l) = line.parse::<LastFrame>() {
            assert_eq!(l.to_string(), line);
        }
        if let Ok(e) = line.parse::<EndReason>() {
            assert_eq!(e.to_string(), line);
        }
        if let Ok(j) = line.parse::<FleetJob>() {
            assert_eq!(j.to_string(), line);
        }
        if let Ok(n) = parse_u32_header("frame", line) {
            assert_eq!(n.to_string(), line);
        }
        if let Ok((agent, job)) = parse_results_subject(line) {
            assert_eq!(crate::results_subject(&agent, job), line);
        }
        if let Ok((pool, job)) = parse_work_subject(line) {
            assert_eq!(crate::work_subject(&pool, job), line);
        }
    }
}

/// Seeds of the `fleet_wire` corpus: one message of each type and the header values of
/// a finished and of an ended attempt.
pub fn fleet_wire_seeds() -> Vec<(String, Vec<u8>)> {
    use crate::{
        AgentStatus, Attempt, FleetJob, FleetName, ProbeOptions, RunningSlice, SpecRef, SweepProbe,
        SweepSpec, WireMessage, WorkItem,
    };
    let ip = |s: &str| {
        s.parse::<IpAddr>()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    };
    let probe = SweepProbe::new(
        &ProbeOptions {
            preset: Some("smtp".into()),
            ..ProbeOptions::default()
        },
        Duration::from_secs(1),
        2,
        Duration::from_secs(2),
        Duration::from_secs(5),
    );
    let spec = SweepSpec {
        total: 258 * 3,
        seed: 7,
        hosts: vec![
            (ip("10.0.0.0"), ip("10.0.0.255")),
            (ip("fd00::1"), ip("fd00::2")),
        ],
        ports: vec![(22, 22), (80, 81)],
        probe,
    };
    let item = |spec| WorkItem {
        job: FleetJob::Sweep(42),
        slice: 1,
        start: 256,
        end: 512,
        spec,
        deadline_ms: None,
        rate: Some(1000),
        epoch: 0,
    };
    let mut monitor = item(SpecRef::Inline(Box::new(spec.clone())));
    monitor.job = FleetJob::Monitor(3);
    monitor.deadline_ms = Some(1_790_000_000_000);
    let pools = ["eu", "dc-2"]
        .iter()
        .filter_map(|p| FleetName::new("pool", p).ok())
        .collect();
    let status = AgentStatus {
        version: "0.1.0".into(),
        pools,
        backend: "io_uring".into(),
        shards: 2,
        inflight: 4096,
        probes_per_s: 20_000,
        running: vec![RunningSlice {
            job: FleetJob::Sweep(42),
            slice: 1,
            attempt: Attempt {
                work_seq: 9,
                delivered: 2,
            },
        }],
        addresses: vec![ip("192.0.2.10"), ip("2001:db8::10")],
        names: vec!["probe-eu-1".into()],
    };
    let remedy_request = crate::RemedyRequest {
        id: 0x00c0_ffee_0000_0001_0000_0000_0000_002a,
        action: "restart-nginx".into(),
        expires_ms: 1_790_000_000_000,
        dry_run: false,
        context: crate::IncidentContext {
            monitor: Some("web".into()),
            targets: vec!["192.0.2.10:80".into()],
            state: "down".into(),
            reason: Some("connection refused".into()),
        },
    };
    let remedy_ran = crate::RemedyResult {
        id: remedy_request.id,
        outcome: crate::RemedyOutcome::Ran {
            status: crate::RanStatus::Ok,
            exit_code: Some(0),
            detail: None,
            duration_ms: 1200,
            argv: vec!["systemctl".into(), "restart".into(), "nginx".into()],
            stdout: "restarted\n".into(),
            stderr: String::new(),
        },
    };
    let remedy_refused = crate::RemedyResult {
        id: 7,
        outcome: crate::RemedyOutcome::Refused {
            reason: "replayed request".into(),
        },
    };
    vec![
        ("spec".into(), spec.encode()),
        ("sweep-item".into(), item(SpecRef::Ref(5)).encode()),
        ("monitor-item".into(), monitor.encode()),
        ("status".into(), status.encode()),
        ("action-request".into(), remedy_request.encode()),
        ("action-ran".into(), remedy_ran.encode()),
        ("action-refused".into(), remedy_refused.encode()),
        (
            "headers".into(),
            b"s42\n1\n9.2\n0\n3/10240\nporthawk.v1.results.eu-1.s42\n".to_vec(),
        ),
        (
            "end-headers".into(),
            b"m3\nexpired\ncancelled\nerror:no such preset\nporthawk.v1.work.eu.m3\n".to_vec(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_dialog_seeds_play_their_dialogs() {
        let seeds = user_dialog_seeds();
        let (played, matched, reason, _) = run_dialog(&seeds[0].1).unwrap();
        assert_eq!(
            (played, matched, reason),
            ("steps-captures", Some(true), None)
        );
        let (played, matched, reason, _) = run_dialog(&seeds[1].1).unwrap();
        assert_eq!((played, matched), ("jail-small-reply", Some(false)));
        assert_eq!(
            reason.as_deref(),
            Some(
                "step 2: got 64 bytes, wanted ^214 (.*)$ \
                 (stopped at the reply limit of 64 bytes)"
            )
        );
    }

    #[test]
    fn dialog_seeds_play_a_good_server() {
        let seeds = dialog_seeds();
        assert_eq!(seeds.len(), presets().len());
        for (name, data) in seeds {
            let (played, matched, reason, _) = run_dialog(&data).unwrap();
            assert_eq!(played, name);
            if crate::preset(&name).unwrap().tls != crate::TlsMode::None {
                // The scripted server does not speak TLS: the handshake fails, and says so.
                assert_ne!(matched, Some(true), "{name}");
                assert!(
                    reason.as_deref().unwrap_or("").contains("TLS"),
                    "{name}: {reason:?}"
                );
                continue;
            }
            assert!(matched != Some(false), "{name}: {reason:?}");
            assert_eq!(reason, None, "{name}");
        }
    }

    #[test]
    fn identify_seeds_play_the_probe_plan() {
        let got: Vec<_> = identify_dialog_seeds()
            .into_iter()
            .map(|(name, data)| {
                let (played, matched, reason, id) = run_dialog(&data).unwrap();
                assert_eq!(
                    (played, matched, reason),
                    ("identify-plan", None, None),
                    "{name}"
                );
                let id = id.map(|i| (i.service, i.product, i.version));
                (name, id)
            })
            .collect();
        let text = |s: &str| Some(s.to_string());
        assert_eq!(
            got,
            [
                (
                    "identify-plan-nginx-tls".to_string(),
                    Some(("http", text("nginx"), text("1.22.1")))
                ),
                (
                    "identify-plan-openssl-tls".to_string(),
                    Some(("tls", None, None))
                ),
                ("identify-plan-silent".to_string(), None),
                (
                    "identify-plan-ngircd".to_string(),
                    Some(("irc", text("ngIRCd"), text("26.1")))
                ),
                (
                    "identify-plan-memcached".to_string(),
                    Some(("memcached", text("memcached"), text("1.6.18")))
                ),
            ]
        );
    }

    #[test]
    fn sample_frames_and_escape_seeds_pass_their_targets() {
        for frame in sample_frames() {
            frame_target(&frame);
            assert!(decode_frame(&frame).is_ok());
        }
        for seed in ESCAPE_SEEDS {
            escapes_target(seed);
        }
        for s in SAMPLES {
            identify_target(s.reply);
        }
    }
}
