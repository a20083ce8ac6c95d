//! The probe plan for ports that stay silent: which protocol's first message to send, in
//! which order. One table, [`SERVICE_PROBES`], holds every probe with the ports it is most
//! likely on and its rarity; [`probe_order`] turns it into the order for one port.

/// One protocol probe: the first message of a protocol, which a server of that protocol
/// answers in a way [`super::identify`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceProbe {
    /// A short name (`http`, `memcached`, `x224`), for reports and tests.
    pub name: &'static str,
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

/// Every protocol probe, in order of rarity. The one table of port hints.
pub const SERVICE_PROBES: &[ServiceProbe] = &[
    ServiceProbe {
        name: "http",
        bytes: b"GET / HTTP/1.0\r\n\r\n",
        ports: &[
            80, 81, 443, 591, 631, 2375, 2379, 3000, 3128, 5000, 5601, 8000, 8008, 8080, 8081,
            8088, 8443, 8888, 9090, 9100, 9200, 9300,
        ],
        rarity: 1,
    },
    ServiceProbe {
        name: "redis",
        bytes: b"*1\r\n$4\r\nINFO\r\n",
        ports: &[6379, 6380, 26379],
        rarity: 3,
    },
    ServiceProbe {
        name: "memcached",
        bytes: b"version\r\n",
        ports: &[11211],
        rarity: 3,
    },
    ServiceProbe {
        name: "x224",
        bytes: RDP_CONNECTION_REQUEST,
        ports: &[3389],
        rarity: 4,
    },
    ServiceProbe {
        name: "smb2",
        bytes: SMB2_NEGOTIATE,
        ports: &[139, 445],
        rarity: 4,
    },
    ServiceProbe {
        name: "mqtt",
        bytes: MQTT_CONNECT,
        ports: &[1883],
        rarity: 5,
    },
    ServiceProbe {
        name: "ldap",
        bytes: LDAP_ROOT_DSE,
        ports: &[389, 3268],
        rarity: 5,
    },
    ServiceProbe {
        name: "dns",
        bytes: DNS_VERSION_BIND,
        ports: &[53],
        rarity: 5,
    },
    ServiceProbe {
        name: "amqp",
        bytes: b"AMQP\x00\x00\x09\x01",
        ports: &[5672],
        rarity: 5,
    },
    ServiceProbe {
        name: "mongodb",
        bytes: MONGODB_BUILDINFO,
        ports: &[27017, 27018],
        rarity: 6,
    },
    ServiceProbe {
        name: "tds",
        bytes: TDS_PRELOGIN,
        ports: &[1433],
        rarity: 6,
    },
    ServiceProbe {
        name: "kafka",
        bytes: KAFKA_API_VERSIONS,
        ports: &[9092],
        rarity: 6,
    },
    ServiceProbe {
        name: "git",
        bytes: b"0025git-upload-pack /\x00host=localhost\x00",
        ports: &[9418],
        rarity: 6,
    },
    ServiceProbe {
        name: "irc",
        bytes: b"NICK porthawk\r\nUSER porthawk 0 * :porthawk\r\n",
        ports: &[6667, 6668, 6669, 6697],
        rarity: 6,
    },
    ServiceProbe {
        name: "zookeeper",
        bytes: b"srvr",
        ports: &[2181],
        rarity: 7,
    },
    ServiceProbe {
        name: "sip",
        bytes: SIP_OPTIONS,
        ports: &[5060],
        rarity: 7,
    },
    ServiceProbe {
        name: "rtsp",
        bytes: b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        ports: &[554, 8554],
        rarity: 7,
    },
    ServiceProbe {
        name: "x11",
        bytes: X11_SETUP,
        ports: &[6000, 6001, 6002, 6003],
        rarity: 8,
    },
    ServiceProbe {
        name: "java-rmi",
        bytes: b"JRMI\x00\x02\x4b",
        ports: &[1099],
        rarity: 8,
    },
    ServiceProbe {
        name: "openvpn",
        bytes: OPENVPN_RESET,
        ports: &[1194],
        rarity: 8,
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

/// The `n`th probe (from 0) for `port`.
pub fn nth_probe(port: u16, n: usize) -> Option<&'static ServiceProbe> {
    probe_order(port).nth(n)
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
        let kafka = get("kafka");
        assert_eq!(be16(kafka, 2), kafka.len() - 4);
        assert_eq!(
            &get("git")[..4],
            format!("{:04x}", get("git").len()).as_bytes()
        );
    }
}
