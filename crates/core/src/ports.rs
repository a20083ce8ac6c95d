//! Port lists: `22,80,443,8000-8100`, the built-in list of common service ports, exclusions.

/// What is wrong with a port list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortsError {
    /// The list names no port at all.
    #[error("empty port list")]
    Empty,
    /// An element that is not a port number or a range.
    #[error("invalid port '{0}': expected a number from 1 to 65535 or a range like 8000-8100")]
    Invalid(String),
    /// Port 0 or above 65535.
    #[error("invalid port '{0}': ports go from 1 to 65535")]
    OutOfRange(String),
    /// A range whose end is below its start.
    #[error("invalid port range '{0}': the end is below the start")]
    Reversed(String),
    /// More comma-separated elements than [`MAX_PORT_ELEMENTS`].
    #[error("port list too long: {elements} elements, at most {max} are allowed")]
    TooLong {
        /// Elements in the list (commas + 1).
        elements: usize,
        /// The cap, [`MAX_PORT_ELEMENTS`].
        max: usize,
    },
}

/// The most comma-separated elements a port list may have (`scan -p`, `--exclude :PORTS`, an
/// API sweep's or a monitor's `ports`): enough to name every port one by one. A longer list
/// is refused before any element is parsed, so a request's cost is bounded by this.
pub const MAX_PORT_ELEMENTS: usize = 65_536;

/// Common service ports probed when the user names none: mail, web, databases, remote access,
/// directory, message brokers, monitoring. Sorted and without duplicates.
pub const DEFAULT_PORTS: &[u16] = &[
    21, 22, 23, 25, 53, 80, 81, 88, 110, 111, 135, 139, 143, 179, 389, 443, 445, 465, 514, 515,
    587, 631, 636, 873, 993, 995, 1080, 1194, 1433, 1521, 1723, 1883, 2049, 2181, 2375, 2376, 2379,
    3000, 3128, 3268, 3306, 3389, 4222, 4369, 5000, 5060, 5222, 5432, 5601, 5672, 5900, 5984, 6379,
    6443, 7001, 8000, 8008, 8080, 8081, 8086, 8088, 8443, 8500, 8888, 9000, 9042, 9090, 9092, 9093,
    9100, 9200, 9300, 9418, 10250, 11211, 15672, 25565, 27017, 50000,
];

/// A sorted set of distinct ports. At most 65,535 entries, so it is stored as a plain list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSet {
    ports: Vec<u16>,
}

impl PortSet {
    /// Parses `22,80,443,8000-8100` (spaces allowed around elements; `all` or `-` for 1-65535).
    ///
    /// One pass into a 65,536-bit set: the cost is linear in the text whatever it says, and
    /// an element list longer than [`MAX_PORT_ELEMENTS`] is refused before any of it is used.
    pub fn parse(text: &str) -> Result<Self, PortsError> {
        // Counting commas first bounds the work before a single element is looked at.
        let elements = text.bytes().filter(|b| *b == b',').count() + 1;
        if elements > MAX_PORT_ELEMENTS {
            return Err(PortsError::TooLong {
                elements,
                max: MAX_PORT_ELEMENTS,
            });
        }
        let mut bits = PortBits::default();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if part == "all" || part == "-" {
                bits.insert(1, u16::MAX);
                continue;
            }
            match part.split_once('-') {
                Some((a, b)) => {
                    let a = if a.trim().is_empty() {
                        1
                    } else {
                        parse_port(a, part)?
                    };
                    let b = if b.trim().is_empty() {
                        u16::MAX
                    } else {
                        parse_port(b, part)?
                    };
                    if b < a {
                        return Err(PortsError::Reversed(shown(part)));
                    }
                    bits.insert(a, b);
                }
                None => {
                    let p = parse_port(part, part)?;
                    bits.insert(p, p);
                }
            }
        }
        let ports = bits.ports();
        if ports.is_empty() {
            return Err(PortsError::Empty);
        }
        Ok(PortSet { ports })
    }

    /// The built-in list of common service ports.
    pub fn default_ports() -> Self {
        Self::from_ports(DEFAULT_PORTS.to_vec())
    }

    /// A set made of the given ports (port 0 is dropped).
    pub fn from_ports(mut ports: Vec<u16>) -> Self {
        ports.retain(|p| *p != 0);
        ports.sort_unstable();
        ports.dedup();
        PortSet { ports }
    }

    /// Removes every port of `other`.
    pub fn remove(&mut self, other: &PortSet) {
        self.ports.retain(|p| other.ports.binary_search(p).is_err());
    }

    /// The number of ports.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Whether no port is left.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The ports, ascending.
    pub fn as_slice(&self) -> &[u16] {
        &self.ports
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.ports.binary_search(&port).is_ok()
    }
}

fn parse_port(text: &str, part: &str) -> Result<u16, PortsError> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortsError::Invalid(shown(part)));
    }
    match t.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(PortsError::OutOfRange(shown(part))),
    }
}

/// An element as an error shows it: whole, or its first 40 characters and an ellipsis (an
/// element can be as long as the request that carried it).
fn shown(part: &str) -> String {
    const SHOWN: usize = 40;
    match part.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &part[..cut]),
        None => part.to_string(),
    }
}

/// Ports 0 to 65535 as bits, filled a word at a time.
struct PortBits([u64; 1024]);

impl Default for PortBits {
    fn default() -> Self {
        PortBits([0; 1024])
    }
}

impl PortBits {
    /// Adds `first..=last`.
    fn insert(&mut self, first: u16, last: u16) {
        let (first, last) = (usize::from(first), usize::from(last));
        let (fw, lw) = (first / 64, last / 64);
        let low = u64::MAX << (first % 64);
        let high = u64::MAX >> (63 - last % 64);
        if fw == lw {
            self.0[fw] |= low & high;
            return;
        }
        self.0[fw] |= low;
        for w in &mut self.0[fw + 1..lw] {
            *w = u64::MAX;
        }
        self.0[lw] |= high;
    }

    /// The ports, ascending (port 0 is never inserted).
    fn ports(&self) -> Vec<u16> {
        let mut out = Vec::new();
        for (i, &word) in self.0.iter().enumerate() {
            let mut w = word;
            while w != 0 {
                let bit = w.trailing_zeros() as usize;
                // i < 1024 and bit < 64, so the port fits in a u16.
                out.push((i * 64 + bit) as u16);
                w &= w - 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges() {
        let p = PortSet::parse("80, 22,8000-8003,22").unwrap();
        assert_eq!(p.as_slice(), &[22, 80, 8000, 8001, 8002, 8003]);
        assert_eq!(PortSet::parse("all").unwrap().len(), 65535);
        assert_eq!(PortSet::parse("-").unwrap().len(), 65535);
        assert_eq!(PortSet::parse("65530-").unwrap().len(), 6);
        assert_eq!(PortSet::parse("-3").unwrap().as_slice(), &[1, 2, 3]);
    }

    #[test]
    fn rejects_bad_ports_naming_them() {
        let table: &[(&str, PortsError)] = &[
            ("", PortsError::Empty),
            (",,", PortsError::Empty),
            ("0", PortsError::OutOfRange("0".into())),
            ("65536", PortsError::OutOfRange("65536".into())),
            ("99999999999", PortsError::OutOfRange("99999999999".into())),
            ("22,http", PortsError::Invalid("http".into())),
            ("90-80", PortsError::Reversed("90-80".into())),
            ("1-2-3", PortsError::Invalid("1-2-3".into())),
            ("-5-", PortsError::Invalid("-5-".into())),
            ("+5", PortsError::Invalid("+5".into())),
        ];
        for (text, want) in table {
            assert_eq!(PortSet::parse(text).as_ref(), Err(want), "{text:?}");
        }
    }

    #[test]
    fn merges_overlaps_and_word_edges() {
        let table: &[(&str, &[u16])] = &[
            ("63-65,64,1-2,2-3", &[1, 2, 3, 63, 64, 65]),
            ("127-129, 128", &[127, 128, 129]),
            ("65535,65534-", &[65534, 65535]),
            ("1", &[1]),
            ("64-64", &[64]),
            (" 22 , 22 ,, 21 ", &[21, 22]),
        ];
        for (text, want) in table {
            assert_eq!(PortSet::parse(text).unwrap().as_slice(), *want, "{text:?}");
        }
        let p = PortSet::parse("1000-2000,1500-2500,all").unwrap();
        assert_eq!(p.len(), 65535);
        assert_eq!(p.as_slice().first(), Some(&1));
        assert_eq!(p.as_slice().last(), Some(&65535));
        let p = PortSet::parse("100-199,150-300,1-5").unwrap();
        let want: Vec<u16> = (1..=5).chain(100..=300).collect();
        assert_eq!(p.as_slice(), &want[..]);
    }

    /// Issue 14 item 1: `-,-,-,...` of 64 KB once took minutes and gigabytes; now it is one
    /// pass. A list longer than the cap is refused with the cap named.
    #[test]
    fn huge_lists_are_parsed_in_one_pass_or_refused() {
        let dashes = vec!["-"; 32 * 1024].join(",");
        assert_eq!(dashes.len(), 64 * 1024 - 1);
        assert_eq!(PortSet::parse(&dashes).unwrap().len(), 65535);
        let every: Vec<String> = (1..=65535u32).rev().map(|p| p.to_string()).collect();
        assert_eq!(PortSet::parse(&every.join(",")).unwrap().len(), 65535);
        let too_many = vec!["-"; MAX_PORT_ELEMENTS + 1].join(",");
        let err = PortSet::parse(&too_many).unwrap_err();
        assert_eq!(
            err,
            PortsError::TooLong {
                elements: MAX_PORT_ELEMENTS + 1,
                max: MAX_PORT_ELEMENTS
            }
        );
        assert_eq!(
            err.to_string(),
            "port list too long: 65537 elements, at most 65536 are allowed"
        );
        let long = "9".repeat(100_000);
        let err = PortSet::parse(&long).unwrap_err().to_string();
        assert!(err.starts_with("invalid port '9999999999"), "{err}");
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn default_list_is_sorted_unique_and_nonzero() {
        assert!(DEFAULT_PORTS.windows(2).all(|w| w[0] < w[1]));
        assert!(DEFAULT_PORTS[0] > 0);
        assert_eq!(PortSet::default_ports().len(), DEFAULT_PORTS.len());
    }

    #[test]
    fn removes_excluded_ports() {
        let mut p = PortSet::parse("20-25").unwrap();
        p.remove(&PortSet::parse("22,24").unwrap());
        assert_eq!(p.as_slice(), &[20, 21, 23, 25]);
    }
}
