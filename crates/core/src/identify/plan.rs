//! The probe plan for ports that stay silent: which protocol's first message to send, in
//! which order. One table, [`SERVICE_PROBES`], holds every probe with the ports it is most
//! likely on and its rarity; [`probe_order`] turns it into the order for one port.

/// One protocol probe: the first message of a protocol, which a server of that protocol
/// answers in a way [`super::identify`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceProbe {
    /// A short name (`http`, `memcached`, `x224`), for reports and tests.
    pub name: &'static str,
    /// The service (as [`super::Identity::service`] names it) whose own first message this
    /// is: a reply recognised as this service without its version is followed up with it.
    pub service: &'static str,
    /// The bytes sent.
    pub bytes: &'static [u8],
    /// Ports the service usually listens on: there this probe goes first.
    pub ports: &'static [u16],
    /// How rarely this probe identifies a service on a port outside its hints, from 1
    /// (often: HTTP answers on all sorts of ports) to 9 (almost never). Probes are tried in
    /// this order after the hinted ones.
    pub rarity: u8,
}

/// An LDAP search of the root DSE (message 1, base "", scope base, `(objectClass=*)`, all
/// user attributes): every LDAP server answers it, most name themselves in it.
const LDAP_ROOT_DSE: &[u8] = b"\x30\x25\x02\x01\x01\x63\x20\x04\x00\x0a\x01\x00\x0a\x01\x00\
    \x02\x01\x00\x02\x01\x00\x01\x01\x00\x87\x0bobjectClass\x30\x00";

/// A DNS query over TCP for `version.bind` TXT in class CHAOS (id `ph`).
const DNS_VERSION_BIND: &[u8] = b"\x00\x1e\x70\x68\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\
    \x07version\x04bind\x00\x00\x10\x00\x03";

/// An SMB2 NEGOTIATE request in a NetBIOS session frame, offering dialects 2.0.2 to 3.0.2.
const SMB2_NEGOTIATE: &[u8] = b"\x00\x00\x00l\xfeSMB\x40\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x24\x00\x04\x00\x01\x00\x00\x00\x00\x00\x00\x00porthawk\x2dclient\x21\x00\x00\x00\x00\x00\x00\x00\x00\x02\x02\x10\x02\x00\x03\x02\x03";

/// An X.224 connection request with an RDP negotiation request for TLS and CredSSP.
const RDP_CONNECTION_REQUEST: &[u8] =
    b"\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00";

/// An MQTT 3.1.1 CONNECT (clean session, keep-alive 60 s, client id `phk1`).
const MQTT_CONNECT: &[u8] = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04phk1";

/// A MongoDB OP_MSG `{buildInfo: 1, $db: "admin"}`, which answers with the version.
const MONGODB_BUILDINFO: &[u8] =
    b"\x38\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00\
    \x00\x00\x00\x00\x00\
    \x23\x00\x00\x00\x10buildInfo\x00\x01\x00\x00\x00\x02$db\x00\x06\x00\x00\x00admin\x00\x00";

/// A TDS PRELOGIN with the VERSION and ENCRYPTION (not supported) options.
const TDS_PRELOGIN: &[u8] = b"\x12\x01\x00\x1a\x00\x00\x01\x00\
    \x00\x00\x0b\x00\x06\x01\x00\x11\x00\x01\xff\x00\x00\x00\x00\x00\x00\x02";

/// A Kafka ApiVersions v0 request, correlation id `phk1` (which the answer repeats).
const KAFKA_API_VERSIONS: &[u8] = b"\x00\x00\x00\x0e\x00\x12\x00\x00phk1\x00\x04phk1";

/// An X11 connection setup, little-endian, protocol 11.0, no authorisation.
const X11_SETUP: &[u8] = b"\x6c\x00\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00";

/// An OpenVPN P_CONTROL_HARD_RESET_CLIENT_V2 over TCP (session id `porthawk`, no acks).
const OPENVPN_RESET: &[u8] = b"\x00\x0e\x38porthawk\x00\x00\x00\x00\x00";

const SIP_OPTIONS: &[u8] = b"OPTIONS sip:porthawk@localhost SIP/2.0\r\n\
    Via: SIP/2.0/TCP localhost;branch=z9hG4bK-porthawk\r\nMax-Forwards: 70\r\n\
    From: <sip:porthawk@localhost>;tag=porthawk\r\nTo: <sip:porthawk@localhost>\r\n\
    Call-ID: porthawk@localhost\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

/// A TLS 1.2 ClientHello (no SNI: a fixed probe names no host) offering the common ECDHE
/// AES-GCM and ChaCha20 suites, plus TLS 1.3's for servers that read them: any TLS server
/// answers it with a ServerHello or an alert, both TLS records that [`super::identify`]
/// names `tls`; the plan then makes a real handshake on a new connection.
const TLS_CLIENT_HELLO: &[u8] = b"\x16\x03\x01\x00\x7a\x01\x00\x00\x76\x03\x03\
    porthawk identify: TLS probe 001\x00\
    \x00\x1e\xc0\x2b\xc0\x2f\xc0\x2c\xc0\x30\xcc\xa9\xcc\xa8\xc0\x13\xc0\x14\x00\x9c\x00\x9d\
    \x00\x2f\x00\x35\x13\x01\x13\x02\x13\x03\x01\x00\
    \x00\x2f\
    \x00\x0a\x00\x08\x00\x06\x00\x1d\x00\x17\x00\x18\
    \x00\x0b\x00\x02\x01\x00\
    \x00\x0d\x00\x14\x00\x12\x04\x03\x08\x04\x04\x01\x05\x03\x08\x05\x05\x01\x08\x06\x06\x01\x02\x01\
    \xff\x01\x00\x01\x00";

/// A gRPC call of the Container Runtime Interface's `RuntimeService/Version` over cleartext
/// HTTP/2 (h2c, prior knowledge): the client preface, an empty SETTINGS frame, a HEADERS
/// frame on stream 1 (END_HEADERS; HPACK with static-table indexes and literals without
/// indexing, no Huffman: `:method POST`, `:scheme http`, `:path`, `:authority localhost`,
/// `content-type application/grpc`, `te trailers`) and a DATA frame ending the stream with an
/// empty gRPC message. containerd's `[grpc] tcp_address` serves only the CRI plugin's
/// services (not containerd's own `Version`), and answers this with the runtime's name and
/// version.
const GRPC_CRI_VERSION: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\
    \x00\x00\x00\x04\x00\x00\x00\x00\x00\
    \x00\x00\x51\x01\x04\x00\x00\x00\x01\
    \x83\x86\x04\x22/runtime.v1.RuntimeService/Version\x01\x09localhost\
    \x0f\x10\x10application/grpc\x00\x02te\x08trailers\
    \x00\x00\x05\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00";

/// Every protocol probe, in order of rarity. The one table of port hints.
pub const SERVICE_PROBES: &[ServiceProbe] = &[
    ServiceProbe {
        name: "http",
        service: "http",
        bytes: b"GET / HTTP/1.0\r\n\r\n",
        // Not 443 nor 8443: there the TLS probe goes first, and HTTP inside TLS.
        ports: &[
            80, 81, 591, 631, 2375, 2379, 3000, 3128, 5000, 5601, 8000, 8008, 8080, 8081, 8088,
            8888, 9090, 9100, 9200, 9300,
        ],
        rarity: 1,
    },
    // TLS wraps every sort of service on every sort of port: second everywhere (a TLS
    // server says nothing to the null probe, and OpenSSL's close on the HTTP probe without an
    // alert). Its answer makes the plan go on inside TLS (see `ProbePlan::enter_tls`).
    ServiceProbe {
        name: "tls",
        service: "tls",
        bytes: TLS_CLIENT_HELLO,
        ports: &[
            443, 465, 563, 636, 853, 989, 990, 992, 993, 995, 2376, 5061, 5986, 6443, 6514, 8443,
            9443,
        ],
        rarity: 1,
    },
    ServiceProbe {
        name: "redis",
        service: "redis",
        bytes: b"*1\r\n$4\r\nINFO\r\n",
        ports: &[6379, 6380, 26379],
        rarity: 3,
    },
    ServiceProbe {
        name: "memcached",
        service: "memcached",
        bytes: b"version\r\n",
        ports: &[11211],
        rarity: 3,
    },
    // Java RMI servers are common on ports no table names: an object exported on port 0
    // (the default of `UnicastRemoteObject`, JMX's RMI connector) gets an ephemeral one. So
    // the probe comes early, within the default budget on any port; it is seven bytes that
    // other services close on or ignore.
    ServiceProbe {
        name: "java-rmi",
        service: "java-rmi",
        bytes: b"JRMI\x00\x02\x4b",
        ports: &[1099, 1098],
        rarity: 3,
    },
    ServiceProbe {
        name: "x224",
        service: "ms-wbt-server",
        bytes: RDP_CONNECTION_REQUEST,
        ports: &[3389],
        rarity: 4,
    },
    ServiceProbe {
        name: "smb2",
        service: "microsoft-ds",
        bytes: SMB2_NEGOTIATE,
        ports: &[139, 445],
        rarity: 4,
    },
    ServiceProbe {
        name: "mqtt",
        service: "mqtt",
        bytes: MQTT_CONNECT,
        ports: &[1883],
        rarity: 5,
    },
    ServiceProbe {
        name: "ldap",
        service: "ldap",
        bytes: LDAP_ROOT_DSE,
        ports: &[389, 3268],
        rarity: 5,
    },
    ServiceProbe {
        name: "dns",
        service: "domain",
        bytes: DNS_VERSION_BIND,
        ports: &[53],
        rarity: 5,
    },
    ServiceProbe {
        name: "amqp",
        service: "amqp",
        bytes: b"AMQP\x00\x00\x09\x01",
        ports: &[5672],
        rarity: 5,
    },
    ServiceProbe {
        name: "mongodb",
        service: "mongodb",
        bytes: MONGODB_BUILDINFO,
        ports: &[27017, 27018],
        rarity: 6,
    },
    ServiceProbe {
        name: "tds",
        service: "ms-sql-s",
        bytes: TDS_PRELOGIN,
        ports: &[1433],
        rarity: 6,
    },
    ServiceProbe {
        name: "kafka",
        service: "kafka",
        bytes: KAFKA_API_VERSIONS,
        ports: &[9092],
        rarity: 6,
    },
    ServiceProbe {
        name: "git",
        service: "git",
        bytes: b"0025git-upload-pack /\x00host=localhost\x00",
        ports: &[9418],
        rarity: 6,
    },
    ServiceProbe {
        name: "irc",
        service: "irc",
        bytes: b"NICK porthawk\r\nUSER porthawk 0 * :porthawk\r\n",
        ports: &[6667, 6668, 6669, 6697],
        rarity: 6,
    },
    ServiceProbe {
        name: "zookeeper",
        service: "zookeeper",
        bytes: b"srvr",
        ports: &[2181],
        rarity: 7,
    },
    ServiceProbe {
        name: "sip",
        service: "sip",
        bytes: SIP_OPTIONS,
        ports: &[5060],
        rarity: 7,
    },
    ServiceProbe {
        name: "rtsp",
        service: "rtsp",
        bytes: b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        ports: &[554, 8554],
        rarity: 7,
    },
    ServiceProbe {
        name: "x11",
        service: "X11",
        bytes: X11_SETUP,
        ports: &[6000, 6001, 6002, 6003],
        rarity: 8,
    },
    ServiceProbe {
        name: "openvpn",
        service: "openvpn",
        bytes: OPENVPN_RESET,
        ports: &[1194],
        rarity: 8,
    },
    ServiceProbe {
        name: "etcd",
        service: "http",
        bytes: b"GET /version HTTP/1.0\r\n\r\n",
        ports: &[2379, 4001],
        rarity: 9,
    },
    ServiceProbe {
        name: "docker",
        service: "docker",
        bytes: b"GET /version HTTP/1.0\r\n\r\n",
        ports: &[2375, 2376],
        rarity: 9,
    },
    // The Kubernetes API server's version, which it shows to anyone (the
    // `system:public-info-viewer` role); the follow-up when `GET /` inside TLS gets the API's
    // JSON `Status` (401 or 403).
    ServiceProbe {
        name: "kubernetes",
        service: "http",
        bytes: b"GET /version HTTP/1.0\r\n\r\n",
        ports: &[6443],
        rarity: 9,
    },
    // containerd has no standard port for its gRPC API over TCP (nor has the CRI): the probe
    // is hinted nowhere and comes last.
    ServiceProbe {
        name: "containerd",
        service: "grpc",
        bytes: GRPC_CRI_VERSION,
        ports: &[],
        rarity: 9,
    },
];

/// The probes for `port`, in the order to try them: those whose hints name the port, then
/// the others, each group by rarity (the table's order).
pub fn probe_order(port: u16) -> impl Iterator<Item = &'static ServiceProbe> {
    let hinted = SERVICE_PROBES
        .iter()
        .filter(move |p| p.ports.contains(&port));
    let rest = SERVICE_PROBES
        .iter()
        .filter(move |p| !p.ports.contains(&port));
    hinted.chain(rest)
}

/// The probes for `port` inside a TLS session the plan made itself: HTTP first (HTTPS is
/// most of what TLS carries), then the order of [`probe_order`]; never the TLS probe.
fn probe_order_in_tls(port: u16) -> impl Iterator<Item = &'static ServiceProbe> {
    let http = SERVICE_PROBES.iter().filter(|p| p.name == "http");
    http.chain(probe_order(port).filter(|p| p.name != "http"))
        .filter(|p| p.name != "tls")
}

/// Where a [`ProbePlan`] stands with TLS.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum PlanTls {
    /// Plain connections; a reply showing TLS makes the plan go inside
    /// ([`ReplyVerdict::Tls`]).
    #[default]
    Plain,
    /// Inside the TLS session the dialog made before the plan (`--identify --tls`): the
    /// order of [`probe_order`] without the TLS probe.
    Given,
    /// Inside TLS sessions the plan makes itself, after a reply showed TLS: HTTP first.
    Entered,
}

/// The `n`th probe (from 0) for `port`.
pub fn nth_probe(port: u16, n: usize) -> Option<&'static ServiceProbe> {
    probe_order(port).nth(n)
}

/// Where one port's probe plan is: the probes sent, and whether a reply named the service.
///
/// The plan sends the probes of [`probe_order`] until a reply is recognised. A reply that
/// names the service but not its version, to a probe not of that service (ngIRCd's `ERROR`
/// line, memcached's `ERROR` or RabbitMQ's protocol header in answer to the HTTP probe), is
/// followed up with that service's own probe, once: its answer usually names the software
/// and version. The caller keeps the budget (`--max-probes`, the dialog timeout).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProbePlan {
    /// The probed port, which orders the probes.
    port: u16,
    /// Protocol probes sent so far.
    sent: u8,
    /// Bit `i`: `SERVICE_PROBES[i]` was sent.
    tried: u64,
    /// A reply named the service: only its follow-up probe (if any) remains.
    recognised: bool,
    /// The index in [`SERVICE_PROBES`] of the follow-up probe.
    follow: Option<u8>,
    /// Plain, or inside TLS.
    tls: PlanTls,
    /// The probe sent last, if any.
    last_sent: Option<&'static ServiceProbe>,
}

/// What a [`ProbePlan`] makes of the reply read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyVerdict {
    /// Nothing known: try the next probe.
    Unknown,
    /// Recognised, but likely to say more if read on (an IRC welcome whose `002` line with
    /// the software's version has not arrived yet): read more, unless the read is the last.
    ReadMore,
    /// Recognised: this reply is the banner. `follow_up`: the service's own probe is still
    /// to be sent, since the reply did not name the version.
    Recognised {
        /// Whether the plan has a follow-up probe to send.
        follow_up: bool,
    },
    /// The reply shows a TLS server (a TLS record, or an HTTP server's complaint about a
    /// plain request on its TLS port): the plan goes on inside TLS, on a new connection,
    /// if the caller can make the handshake ([`ProbePlan::enter_tls`]); else it is spent and
    /// this reply is the banner.
    Tls,
}

impl ProbePlan {
    /// The plan for `port`, before any probe.
    pub fn new(port: u16) -> ProbePlan {
        ProbePlan {
            port,
            ..ProbePlan::default()
        }
    }

    /// Protocol probes sent so far.
    pub fn sent(&self) -> u8 {
        self.sent
    }

    /// Plain, or inside TLS.
    pub fn tls(&self) -> PlanTls {
        self.tls
    }

    /// Goes inside TLS after [`ReplyVerdict::Tls`]: the handshake counts as a probe, and
    /// every protocol probe may be sent again (through TLS), HTTP first.
    pub fn enter_tls(&mut self) {
        self.sent = self.sent.saturating_add(1);
        self.tried = 1 << index_of_name("tls");
        self.recognised = false;
        self.follow = None;
        self.tls = PlanTls::Entered;
    }

    /// The dialog made a TLS handshake before the plan (`--identify --tls`): the TLS probe
    /// is not sent, nor a reply taken as a sign of TLS; the order is unchanged.
    pub fn given_tls(&mut self) {
        self.tried |= 1 << index_of_name("tls");
        self.tls = PlanTls::Given;
    }

    fn tried(&self, i: usize) -> bool {
        self.tried & (1 << i) != 0
    }

    /// The probe to send next (whatever the budget), or `None` when the plan is spent: every
    /// probe tried, or a reply recognised and its follow-up (if any) sent.
    pub fn next(&self) -> Option<&'static ServiceProbe> {
        if self.recognised {
            return self
                .follow
                .map(usize::from)
                .filter(|&i| !self.tried(i))
                .and_then(|i| SERVICE_PROBES.get(i));
        }
        if self.tls == PlanTls::Entered {
            return probe_order_in_tls(self.port).find(|p| !self.tried(index_of(p)));
        }
        probe_order(self.port).find(|p| !self.tried(index_of(p)))
    }

    /// Records that `probe` (from [`ProbePlan::next`]) was sent.
    pub fn mark_sent(&mut self, probe: &ServiceProbe) {
        self.sent = self.sent.saturating_add(1);
        self.tried |= 1 << index_of(probe);
        self.last_sent = SERVICE_PROBES.get(index_of(probe));
    }

    /// Judges the reply read so far on the current connection. `last`: no more bytes will
    /// come (the read timed out or the peer closed), so a recognised reply is taken as it is.
    pub fn judge(&mut self, reply: &[u8], last: bool) -> ReplyVerdict {
        // An HTTP/2 answer to the gRPC probe comes in frames, the one naming the server last:
        // while stream 1 is open, read on.
        let grpc = self.last_sent.is_some_and(|p| p.name == "containerd");
        if grpc && !last && super::binary::http2_pending(reply) {
            return ReplyVerdict::ReadMore;
        }
        let Some(id) = super::identify(reply) else {
            return ReplyVerdict::Unknown;
        };
        if self.tls == PlanTls::Plain && super::shows_tls(reply, &id) {
            self.recognised = true;
            self.follow = None;
            return ReplyVerdict::Tls;
        }
        if !last && super::wants_more(reply, &id) {
            return ReplyVerdict::ReadMore;
        }
        self.recognised = true;
        self.follow = None;
        if id.version.is_none() {
            self.follow = follow_up_for(&id)
                .filter(|&i| !self.tried(i))
                .and_then(|i| u8::try_from(i).ok());
        }
        ReplyVerdict::Recognised {
            follow_up: self.follow.is_some(),
        }
    }
}

/// Products that another protocol's probe tells their version, with that probe: VLC's web
/// server answers `GET /` with a page that names VideoLAN only, and RTSP's OPTIONS (on its
/// RTSP and HTTP ports alike) with `Server: VLC/3.0.24`.
const PRODUCT_FOLLOW_UPS: &[(&str, &str)] = &[("VLC", "rtsp")];

/// The index in [`SERVICE_PROBES`] of the probe that may tell the version `id` lacks: the
/// probe named after its product (`etcd`: `GET /version`) when that one is still to be
/// sent, the one [`PRODUCT_FOLLOW_UPS`] names for it, or else the service's own probe (the
/// first of that service in the table).
fn follow_up_for(id: &super::Identity) -> Option<usize> {
    let of_service = |p: &ServiceProbe| p.service == id.service;
    let product = id.product.as_deref().unwrap_or_default();
    SERVICE_PROBES
        .iter()
        .position(|p| of_service(p) && !product.is_empty() && p.name.eq_ignore_ascii_case(product))
        .or_else(|| {
            let &(_, probe) = PRODUCT_FOLLOW_UPS.iter().find(|(p, _)| *p == product)?;
            SERVICE_PROBES.iter().position(|p| p.name == probe)
        })
        .or_else(|| SERVICE_PROBES.iter().position(of_service))
}

/// The index of `probe` in [`SERVICE_PROBES`] (by name: each name is there once).
fn index_of(probe: &ServiceProbe) -> usize {
    index_of_name(probe.name)
}

/// The index of the probe called `name` in [`SERVICE_PROBES`].
fn index_of_name(name: &str) -> usize {
    SERVICE_PROBES
        .iter()
        .position(|p| p.name == name)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hinted_probes_go_first_and_every_probe_is_tried_once() {
        let names = |port| probe_order(port).map(|p| p.name).collect::<Vec<_>>();
        assert_eq!(names(11211)[..2], ["memcached", "http"]);
        assert_eq!(names(3389)[0], "x224");
        assert_eq!(names(53)[..2], ["dns", "http"]);
        assert_eq!(names(12345)[0], "http");
        for port in [1, 53, 445, 9418, 65535] {
            let mut all = names(port);
            assert_eq!(all.len(), SERVICE_PROBES.len());
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), SERVICE_PROBES.len(), "port {port}");
        }
    }

    /// Plays `replies` (one per probe the plan sends, `None` for silence) against a plan for
    /// an unhinted port: the probes' names, and the last verdict.
    fn play(replies: &[(&str, Option<&[u8]>)]) -> (Vec<&'static str>, Option<ReplyVerdict>) {
        let mut plan = ProbePlan::new(40_000);
        let mut sent = Vec::new();
        let mut verdict = None;
        for &(want, reply) in replies {
            let Some(probe) = plan.next() else { break };
            assert_eq!(probe.name, want, "after {sent:?}");
            plan.mark_sent(probe);
            sent.push(probe.name);
            verdict = reply.map(|r| plan.judge(r, true));
        }
        assert_eq!(plan.sent(), u8::try_from(sent.len()).unwrap_or(u8::MAX));
        (sent, verdict)
    }

    #[test]
    fn a_service_named_without_its_version_gets_its_own_probe_once() {
        // ngIRCd answers the HTTP probe with an ERROR line: the IRC probe follows, and its
        // welcome names the software; then the plan is spent.
        let mut plan = ProbePlan::new(40_000);
        let http = plan.next().map(|p| p.name);
        assert_eq!(http, Some("http"));
        plan.mark_sent(&SERVICE_PROBES[0]);
        let error = b"ERROR :\"Oops, HTTP request received? This is IRC!\"\r\n";
        assert_eq!(
            plan.judge(error, true),
            ReplyVerdict::Recognised { follow_up: true }
        );
        let irc = plan.next().unwrap_or_else(|| panic!("no follow-up"));
        assert_eq!(irc.name, "irc");
        plan.mark_sent(irc);
        let welcome = b":irc.test 001 porthawk :Welcome\r\n\
            :irc.test 002 porthawk :Your host is irc.test, running version ngircd-26.1 (x86_64)\r\n";
        assert_eq!(
            plan.judge(welcome, true),
            ReplyVerdict::Recognised { follow_up: false }
        );
        assert_eq!(plan.next(), None);
        assert_eq!(plan.sent(), 2);

        // memcached closes on the HTTP probe, says ERROR to the next ones, and its version
        // to its own; RabbitMQ's protocol header is followed by the AMQP probe.
        let (sent, verdict) = play(&[
            ("http", None),
            ("tls", None),
            ("redis", Some(b"ERROR\r\nERROR\r\nERROR\r\n")),
            ("memcached", Some(b"VERSION 1.6.18\r\n")),
        ]);
        assert_eq!(sent, ["http", "tls", "redis", "memcached"]);
        assert_eq!(verdict, Some(ReplyVerdict::Recognised { follow_up: false }));
        let (sent, _) = play(&[("http", Some(b"AMQP\x00\x00\x09\x01")), ("amqp", None)]);
        assert_eq!(sent, ["http", "amqp"]);
    }

    #[test]
    fn vlc_named_by_its_not_found_page_is_asked_over_rtsp() {
        // VLC's web server (its RTSP port too) answers `GET /` with a page that names
        // VideoLAN only; the RTSP probe follows, whose answer names the version.
        let page = crate::fuzzing::sample_reply("vlc-3.0.24-http-not-found");
        let options = crate::fuzzing::sample_reply("vlc-3.0.24-rtsp");
        let (sent, verdict) = play(&[("http", Some(page)), ("rtsp", Some(options))]);
        assert_eq!(sent, ["http", "rtsp"]);
        assert_eq!(verdict, Some(ReplyVerdict::Recognised { follow_up: false }));
    }

    #[test]
    fn etcd_named_by_its_headers_is_asked_its_version() {
        // etcd's `404 page not found` to `GET /` names it by its CORS headers; its own
        // probe asks `/version`. Other HTTP servers without a version are not followed up.
        let cors = b"HTTP/1.0 404 Not Found\r\n\
            Access-Control-Allow-Headers: accept, content-type, authorization\r\n\
            Access-Control-Allow-Methods: POST, GET, OPTIONS, PUT, DELETE\r\n\r\n";
        let version = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n\
            {\"etcdserver\":\"3.4.23\",\"etcdcluster\":\"3.4.0\"}";
        let (sent, verdict) = play(&[("http", Some(cors)), ("etcd", Some(version))]);
        assert_eq!(sent, ["http", "etcd"]);
        assert_eq!(verdict, Some(ReplyVerdict::Recognised { follow_up: false }));
        let mut plan = ProbePlan::new(40_000);
        plan.mark_sent(&SERVICE_PROBES[0]);
        assert_eq!(
            plan.judge(cors, true),
            ReplyVerdict::Recognised { follow_up: true }
        );
        let mut plan = ProbePlan::new(40_000);
        plan.mark_sent(&SERVICE_PROBES[0]);
        let caddy = b"HTTP/1.0 200 OK\r\nServer: Caddy\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            plan.judge(caddy, true),
            ReplyVerdict::Recognised { follow_up: false }
        );
        assert_eq!(plan.next(), None);
        // On etcd's own port, `/version` is asked at once after `GET /`.
        let names = probe_order(2379)
            .map(|p| p.name)
            .take(2)
            .collect::<Vec<_>>();
        assert_eq!(names, ["http", "etcd"]);
    }

    #[test]
    fn java_rmi_is_reached_within_the_default_budget_on_any_port() {
        // rmiregistry (OpenJDK 17) closes on every probe but its own without a byte; the
        // ProtocolAck to `JRMI` names it. That takes five probes on an unhinted port.
        let budget = usize::from(crate::DEFAULT_MAX_PROBES);
        for port in [1099, 8080, 40_000, 65_535] {
            assert!(
                probe_order(port).take(budget).any(|p| p.name == "java-rmi"),
                "port {port}"
            );
        }
        let ack: &[u8] = b"N\x00\x09127.0.0.1\x00\x00\xc8\x9c";
        let (sent, verdict) = play(&[
            ("http", None),
            ("tls", None),
            ("redis", None),
            ("memcached", None),
            ("java-rmi", Some(ack)),
        ]);
        assert_eq!(sent.len(), budget);
        assert_eq!(verdict, Some(ReplyVerdict::Recognised { follow_up: false }));
        assert_eq!(probe_order(1099).next().map(|p| p.name), Some("java-rmi"));
    }

    #[test]
    fn docker_named_by_its_not_found_is_asked_its_version() {
        // The Engine API's `GET /` is a JSON 404 without a Server header; `/version` has one.
        let root = b"HTTP/1.0 404 Not Found\r\nContent-Type: application/json\r\n\
            Content-Length: 29\r\n\r\n{\"message\":\"page not found\"}\n";
        let version = b"HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n\
            Server: Docker/20.10.24+dfsg1 (linux)\r\nContent-Length: 2\r\n\r\n{}";
        let (sent, verdict) = play(&[("http", Some(root)), ("docker", Some(version))]);
        assert_eq!(sent, ["http", "docker"]);
        assert_eq!(verdict, Some(ReplyVerdict::Recognised { follow_up: false }));
        let names = probe_order(2375)
            .map(|p| p.name)
            .take(2)
            .collect::<Vec<_>>();
        assert_eq!(names, ["http", "docker"]);
    }

    #[test]
    fn a_follow_up_that_tells_nothing_ends_the_plan() {
        let mut plan = ProbePlan::new(40_000);
        plan.mark_sent(&SERVICE_PROBES[0]);
        let err = b"-ERR wrong number of arguments for 'get' command\r\n";
        assert_eq!(
            plan.judge(err, true),
            ReplyVerdict::Recognised { follow_up: true }
        );
        let redis = plan.next().unwrap_or_else(|| panic!("no follow-up"));
        assert_eq!(redis.name, "redis");
        plan.mark_sent(redis);
        assert_eq!(plan.judge(b"\x00\x01garbage", true), ReplyVerdict::Unknown);
        assert_eq!(plan.next(), None);
        // A reply with a version, or one of a service without a probe, is not followed up.
        let mut plan = ProbePlan::new(40_000);
        plan.mark_sent(&SERVICE_PROBES[0]);
        let ssh = b"SSH-2.0-OpenSSH_9.2p1\r\n";
        assert_eq!(
            plan.judge(ssh, true),
            ReplyVerdict::Recognised { follow_up: false }
        );
        assert_eq!(plan.next(), None);
        let mut plan = ProbePlan::new(40_000);
        assert_eq!(
            plan.judge(b"220 (vsFTPd 3.0.3)\r\n", true),
            ReplyVerdict::Recognised { follow_up: false }
        );
    }

    #[test]
    fn an_http_answer_is_read_on_until_its_body_is_there() {
        // VLC's not-found page names VideoLAN in its body only; a read that ends after the
        // head must not settle for a plain `http`.
        let reply = crate::fuzzing::sample_reply("vlc-3.0.24-http-not-found");
        let head = super::super::find(reply, b"\r\n\r\n").expect("a head") + 4;
        for cut in [10, head - 2, head, head + 20, reply.len() - 1] {
            let mut plan = ProbePlan::new(40_000);
            assert_eq!(
                plan.judge(&reply[..cut], false),
                ReplyVerdict::ReadMore,
                "cut at {cut}"
            );
        }
        let mut plan = ProbePlan::new(40_000);
        assert_eq!(
            plan.judge(reply, false),
            ReplyVerdict::Recognised { follow_up: true }
        );
        // What came is taken as it is once no more will.
        let mut plan = ProbePlan::new(40_000);
        assert_eq!(
            plan.judge(&reply[..head], true),
            ReplyVerdict::Recognised { follow_up: true }
        );
    }

    #[test]
    fn a_grpc_answer_is_read_on_until_its_stream_ends() {
        let reply = crate::fuzzing::sample_reply("containerd-1.6.20-cri-version");
        let containerd = SERVICE_PROBES.iter().find(|p| p.name == "containerd");
        let containerd = containerd.unwrap_or_else(|| panic!("no containerd probe"));
        let data = super::super::find(reply, b"\x00\x00(\x00").expect("the DATA frame");
        let trailers = reply.len() - 33;
        for cut in [1, 9, 15, 24, data, data + 20, trailers, reply.len() - 1] {
            let mut plan = ProbePlan::new(40_000);
            plan.mark_sent(containerd);
            // SETTINGS, its ack, WINDOW_UPDATE, PING, HEADERS, DATA: stream 1 is open.
            assert_eq!(
                plan.judge(&reply[..cut], false),
                ReplyVerdict::ReadMore,
                "cut at {cut}"
            );
        }
        let mut plan = ProbePlan::new(40_000);
        plan.mark_sent(containerd);
        assert_eq!(
            plan.judge(reply, false),
            ReplyVerdict::Recognised { follow_up: false }
        );
        // After another probe (the HTTP probe gets containerd's SETTINGS frame and nothing
        // more), the plan goes on at once.
        let mut plan = ProbePlan::new(40_000);
        let http = plan.next().unwrap_or_else(|| panic!("no probe"));
        plan.mark_sent(http);
        assert_eq!(plan.judge(&reply[..15], false), ReplyVerdict::Unknown);
        // The last read takes what came: the DATA frame names containerd, even without its
        // trailers; SETTINGS alone names nothing.
        let mut plan = ProbePlan::new(40_000);
        plan.mark_sent(containerd);
        assert_eq!(
            plan.judge(&reply[..trailers], true),
            ReplyVerdict::Recognised { follow_up: false }
        );
        assert_eq!(plan.judge(&reply[..15], true), ReplyVerdict::Unknown);
    }

    #[test]
    fn an_irc_welcome_is_read_on_until_it_names_the_software() {
        let mut plan = ProbePlan::new(6667);
        let irc = plan.next().unwrap_or_else(|| panic!("no probe"));
        assert_eq!(irc.name, "irc");
        plan.mark_sent(irc);
        let welcome: &[u8] = b":irc.test 001 porthawk :Welcome to the network\r\n";
        assert_eq!(plan.judge(welcome, false), ReplyVerdict::ReadMore);
        let mut more = welcome.to_vec();
        more.extend_from_slice(
            b":irc.test 002 porthawk :Your host is irc.test, running version ngircd-26.1\r\n",
        );
        assert_eq!(
            plan.judge(&more, false),
            ReplyVerdict::Recognised { follow_up: false }
        );
        // An X server's accepted setup is read on to its vendor.
        let mut plan = ProbePlan::new(6000);
        let header = b"\x01\x00\x0b\x00\x00\x00U\x09";
        assert_eq!(plan.judge(header, false), ReplyVerdict::ReadMore);
        assert_eq!(
            plan.judge(header, true),
            ReplyVerdict::Recognised { follow_up: true }
        );
        // The last read takes what came, version or not.
        let mut plan = ProbePlan::new(6667);
        plan.mark_sent(irc);
        assert_eq!(
            plan.judge(welcome, true),
            ReplyVerdict::Recognised { follow_up: false }
        );
    }

    #[test]
    fn every_probe_names_a_service_the_recognisers_use_and_fits_the_plan() {
        assert!(SERVICE_PROBES.len() <= 64);
        for p in SERVICE_PROBES {
            assert_eq!(
                SERVICE_PROBES.iter().filter(|q| q.name == p.name).count(),
                1,
                "{}",
                p.name
            );
            assert!(!p.service.is_empty());
        }
    }

    #[test]
    fn the_table_is_ordered_by_rarity() {
        assert!(SERVICE_PROBES
            .windows(2)
            .all(|w| w[0].rarity <= w[1].rarity));
    }

    #[test]
    fn framed_probes_carry_their_own_lengths() {
        let get = |name| {
            SERVICE_PROBES
                .iter()
                .find(|p| p.name == name)
                .map_or(&[][..], |p| p.bytes)
        };
        let be16 = |b: &[u8], at: usize| usize::from(u16::from_be_bytes([b[at], b[at + 1]]));
        let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        assert_eq!(be16(get("x224"), 2), get("x224").len());
        assert_eq!(be16(get("tds"), 2), get("tds").len());
        assert_eq!(be16(get("dns"), 0), get("dns").len() - 2);
        assert_eq!(be16(get("smb2"), 2), get("smb2").len() - 4);
        assert_eq!(be16(get("openvpn"), 0), get("openvpn").len() - 2);
        assert_eq!(le32(get("mongodb")), get("mongodb").len());
        assert_eq!(le32(&get("mongodb")[21..]), get("mongodb").len() - 21);
        assert_eq!(usize::from(get("mqtt")[1]), get("mqtt").len() - 2);
        assert_eq!(usize::from(get("ldap")[1]), get("ldap").len() - 2);
        let hello = get("tls");
        assert_eq!(be16(hello, 3), hello.len() - 5);
        assert_eq!(be16(hello, 7), hello.len() - 9);
        assert_eq!(&hello[11..43], b"porthawk identify: TLS probe 001");
        let extensions = 43 + 1 + 2 + be16(hello, 44) + 2;
        assert_eq!(be16(hello, extensions), hello.len() - extensions - 2);
        let kafka = get("kafka");
        assert_eq!(be16(kafka, 2), kafka.len() - 4);
        assert_eq!(
            &get("git")[..4],
            format!("{:04x}", get("git").len()).as_bytes()
        );
    }

    #[test]
    fn the_grpc_probe_is_well_framed_http2() {
        let probe = SERVICE_PROBES
            .iter()
            .find(|p| p.name == "containerd")
            .map_or(&[][..], |p| p.bytes);
        let rest = probe.strip_prefix(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]);
        let mut rest = rest.expect("the client preface");
        // (length, type, flags, stream) of each frame: the lengths add up to the probe.
        let mut frames = Vec::new();
        while let [a, b, c, kind, flags, s0, s1, s2, s3, ref tail @ ..] = *rest {
            let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
            let stream = u32::from_be_bytes([s0, s1, s2, s3]);
            frames.push((len, kind, flags, stream, &tail[..len]));
            rest = &tail[len..];
        }
        assert!(rest.is_empty());
        let shape: Vec<_> = frames.iter().map(|f| (f.1, f.2, f.3)).collect();
        assert_eq!(shape, [(4, 0, 0), (1, 4, 1), (0, 1, 1)]);
        assert_eq!(frames[0].0, 0);
        assert_eq!(frames[2].4, [0, 0, 0, 0, 0]);
        // The HPACK block: indexed fields, then literals whose lengths cover the block.
        let mut block = frames[1].4;
        let mut fields = Vec::new();
        while let [first, ref tail @ ..] = *block {
            block = tail;
            if first & 0x80 != 0 {
                fields.push(format!("#{}", first & 0x7f));
                continue;
            }
            // A literal without indexing: a 4-bit name index (15 and over go on in the next
            // byte), or 0 and a literal name.
            let mut index = usize::from(first & 0x0f);
            if index == 0x0f {
                let [more, ref tail @ ..] = *block else {
                    panic!("an index without its rest");
                };
                index += usize::from(more);
                block = tail;
            }
            let mut strings = Vec::new();
            for _ in 0..if index == 0 { 2 } else { 1 } {
                let [len, ref tail @ ..] = *block else {
                    panic!("a literal without its length");
                };
                assert_eq!(len & 0x80, 0, "no Huffman");
                let len = usize::from(len);
                strings.push(String::from_utf8_lossy(&tail[..len]).into_owned());
                block = &tail[len..];
            }
            fields.push(format!("{index}:{}", strings.join("=")));
        }
        assert_eq!(
            fields,
            [
                "#3",
                "#6",
                "4:/runtime.v1.RuntimeService/Version",
                "1:localhost",
                "31:application/grpc",
                "0:te=trailers"
            ]
        );
    }

    #[test]
    fn a_tls_reply_takes_the_plan_inside_tls_http_first() {
        // An OpenSSL server closes on the HTTP probe without a byte; the ClientHello gets a
        // ServerHello: the plan goes inside TLS (the handshake counts), HTTP first, and every
        // probe but the TLS one may go again.
        let server_hello: &[u8] = b"\x16\x03\x03\x00\x5a\x02\x00\x00\x56\x03\x03";
        let mut plan = ProbePlan::new(40_000);
        let names = |plan: &ProbePlan| plan.next().map(|p| p.name);
        assert_eq!(names(&plan), Some("http"));
        plan.mark_sent(&SERVICE_PROBES[0]);
        assert_eq!(names(&plan), Some("tls"));
        plan.mark_sent(&SERVICE_PROBES[index_of_name("tls")]);
        assert_eq!(plan.judge(server_hello, true), ReplyVerdict::Tls);
        assert_eq!(plan.next(), None, "spent unless it goes inside TLS");
        plan.enter_tls();
        assert_eq!((plan.sent(), plan.tls()), (3, PlanTls::Entered));
        assert_eq!(names(&plan), Some("http"));
        plan.mark_sent(&SERVICE_PROBES[0]);
        assert_eq!(names(&plan), Some("redis"));
        // Inside, a TLS-looking reply is just a reply.
        assert_eq!(
            plan.judge(server_hello, true),
            ReplyVerdict::Recognised { follow_up: false }
        );
        // On 993 the ClientHello goes first, and HTTP still leads inside.
        let mut plan = ProbePlan::new(993);
        assert_eq!(names(&plan), Some("tls"));
        plan.mark_sent(&SERVICE_PROBES[index_of_name("tls")]);
        assert_eq!(
            plan.judge(b"\x15\x03\x03\x00\x02\x02\x28", true),
            ReplyVerdict::Tls
        );
        plan.enter_tls();
        let inside: Vec<_> = probe_order_in_tls(993).map(|p| p.name).collect();
        assert_eq!(inside[..2], ["http", "redis"]);
        assert!(!inside.contains(&"tls"));
        assert_eq!(inside.len(), SERVICE_PROBES.len() - 1);
    }

    #[test]
    fn https_servers_complaining_of_plain_http_show_tls() {
        let replies: [&[u8]; 3] = [
            b"HTTP/1.1 400 Bad Request\r\nServer: nginx/1.22.1\r\n\r\n<html>\r\n<head><title>400 \
              The plain HTTP request was sent to HTTPS port</title></head>",
            b"HTTP/1.1 400 Bad Request\r\nServer: Apache/2.4.71 (Debian)\r\n\r\n<p>Reason: \
              You're speaking plain HTTP to an SSL-enabled server port.<br />",
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        ];
        for reply in replies {
            let mut plan = ProbePlan::new(40_000);
            plan.mark_sent(&SERVICE_PROBES[0]);
            assert_eq!(plan.judge(reply, true), ReplyVerdict::Tls);
        }
        // Not a complaint: a 400 of another kind, or the words in a 200 page.
        let mut plan = ProbePlan::new(40_000);
        plan.mark_sent(&SERVICE_PROBES[0]);
        let page = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\r\n\
            The plain HTTP request was sent to HTTPS port";
        assert_eq!(
            plan.judge(page, true),
            ReplyVerdict::Recognised { follow_up: false }
        );
        // With TLS given (`--identify --tls`), no TLS probe and no TLS verdict.
        let mut plan = ProbePlan::new(443);
        plan.given_tls();
        assert_eq!(plan.next().map(|p| p.name), Some("http"));
        plan.mark_sent(&SERVICE_PROBES[0]);
        assert_ne!(plan.next().map(|p| p.name), Some("tls"));
        assert_eq!(
            plan.judge(replies[0], true),
            ReplyVerdict::Recognised { follow_up: false }
        );
    }

    #[test]
    fn the_kubernetes_api_is_asked_its_version_inside_tls() {
        // `GET /` inside TLS: the API's 403 Status (anonymous) names Kubernetes without a
        // version; the follow-up is `GET /version`.
        let forbidden = crate::fuzzing::sample_reply("kubernetes-1.28-forbidden");
        let version = crate::fuzzing::sample_reply("kubernetes-1.28.2-version");
        let mut plan = ProbePlan::new(40_000);
        plan.mark_sent(&SERVICE_PROBES[0]);
        assert_eq!(
            plan.judge(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n", true),
            ReplyVerdict::Tls
        );
        plan.enter_tls();
        let http = plan.next().unwrap_or_else(|| panic!("no probe"));
        assert_eq!(http.name, "http");
        plan.mark_sent(http);
        assert_eq!(
            plan.judge(forbidden, true),
            ReplyVerdict::Recognised { follow_up: true }
        );
        let follow = plan.next().unwrap_or_else(|| panic!("no follow-up"));
        assert_eq!(follow.name, "kubernetes");
        plan.mark_sent(follow);
        assert_eq!(
            plan.judge(version, true),
            ReplyVerdict::Recognised { follow_up: false }
        );
        assert_eq!(plan.sent(), 4);
        assert!(plan.sent() <= crate::DEFAULT_MAX_PROBES);
        let id = super::super::identify(version).unwrap_or_else(|| panic!("not identified"));
        assert_eq!(
            (id.service, id.product.as_deref(), id.version.as_deref()),
            ("http", Some("Kubernetes"), Some("1.28.2"))
        );
        assert_eq!(
            id.cpe.as_deref(),
            Some("cpe:/a:kubernetes:kubernetes:1.28.2")
        );
        // Without anonymous access, `/version` is refused too: Kubernetes, no version.
        let unauthorized = crate::fuzzing::sample_reply("kubernetes-1.28-unauthorized");
        let id = super::super::identify(unauthorized).unwrap_or_else(|| panic!("not identified"));
        assert_eq!(
            (id.product.as_deref(), id.version),
            (Some("Kubernetes"), None)
        );
    }
}
