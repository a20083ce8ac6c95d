//! Names with several addresses: which of a name's addresses to probe (`-4`, `-6`,
//! `--prefer-family`, `ip_family`) and how their verdicts make the name's (`--addresses
//! any|all`).
//!
//! check_tcp, Gatus and Uptime Kuma call a name up when one of its addresses answers;
//! blackbox_exporter probes the preferred family's address and falls back to the other when
//! the name has none. Both rules are here once, for `check`, `scan`, the monitors and the API.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address family (`ipv4`, `ipv6` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    /// IPv4 (A records).
    Ipv4,
    /// IPv6 (AAAA records).
    Ipv6,
}

impl IpFamily {
    /// `ipv4` or `ipv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::Ipv4 => "ipv4",
            IpFamily::Ipv6 => "ipv6",
        }
    }

    /// Whether `ip` is of this family.
    pub fn holds(self, ip: &IpAddr) -> bool {
        match self {
            IpFamily::Ipv4 => ip.is_ipv4(),
            IpFamily::Ipv6 => ip.is_ipv6(),
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IpFamily {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ipv4" | "ip4" | "4" => Ok(IpFamily::Ipv4),
            "ipv6" | "ip6" | "6" => Ok(IpFamily::Ipv6),
            _ => Err(format!("'{s}' is not an address family: ipv4 or ipv6")),
        }
    }
}

/// Which of a name's addresses to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FamilyChoice {
    /// Every address the name has (the default).
    #[default]
    Both,
    /// Only this family's addresses (`-4`, `-6`, `ip_family`); a name without any has
    /// no address to probe.
    Only(IpFamily),
    /// This family's addresses if the name has any, else the other family's
    /// (`--prefer-family`, blackbox_exporter's `preferred_ip_protocol` with its fallback).
    Prefer(IpFamily),
}

impl FamilyChoice {
    /// The choice of `-4`/`-6`/`ip_family` (`only`) and `--prefer-family` (`prefer`);
    /// `only` wins where both are given.
    pub fn new(only: Option<IpFamily>, prefer: Option<IpFamily>) -> FamilyChoice {
        match (only, prefer) {
            (Some(f), _) => FamilyChoice::Only(f),
            (None, Some(f)) => FamilyChoice::Prefer(f),
            (None, None) => FamilyChoice::Both,
        }
    }

    /// The addresses of `ips` to probe, in their order.
    pub fn select(self, ips: &[IpAddr]) -> Vec<IpAddr> {
        match self {
            FamilyChoice::Both => ips.to_vec(),
            FamilyChoice::Only(f) => ips.iter().copied().filter(|ip| f.holds(ip)).collect(),
            FamilyChoice::Prefer(f) => {
                let preferred: Vec<IpAddr> = ips.iter().copied().filter(|ip| f.holds(ip)).collect();
                if preferred.is_empty() {
                    ips.to_vec()
                } else {
                    preferred
                }
            }
        }
    }

    /// Why a name with addresses `ips` has none left to probe (`has no ipv6 address
    /// (only 127.0.0.1)`), or `None` when it has some.
    pub fn nothing_left(self, ips: &[IpAddr]) -> Option<String> {
        if !self.select(ips).is_empty() {
            return None;
        }
        let all: Vec<String> = ips.iter().map(ToString::to_string).collect();
        Some(match self {
            FamilyChoice::Only(f) if !ips.is_empty() => {
                format!("it has no {f} address (only {})", all.join(", "))
            }
            _ => "it has no address".to_string(),
        })
    }
}

/// How the verdicts of a name's addresses make the name's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AddressMode {
    /// The name passes when one of its addresses passes (check_tcp, Gatus, Uptime Kuma).
    #[default]
    Any,
    /// The name passes only when every address passes: any failing address alerts.
    All,
}

impl AddressMode {
    /// `any` or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressMode::Any => "any",
            AddressMode::All => "all",
        }
    }

    /// Whether a name passes, given whether each of its probed addresses passed (a name
    /// with no address probed does not pass).
    pub fn passes(self, oks: impl IntoIterator<Item = bool>) -> bool {
        let mut seen = false;
        let mut any = false;
        let mut all = true;
        for ok in oks {
            seen = true;
            any |= ok;
            all &= ok;
        }
        seen && match self {
            AddressMode::Any => any,
            AddressMode::All => all,
        }
    }
}

impl fmt::Display for AddressMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AddressMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "any" => Ok(AddressMode::Any),
            "all" => Ok(AddressMode::All),
            _ => Err(format!("'{s}' is not an address mode: any or all")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn families_are_chosen_strictly_or_with_fallback() {
        let both = ips(&["127.0.0.1", "::1"]);
        let v4 = ips(&["127.0.0.1"]);
        let v6 = ips(&["::1"]);
        assert_eq!(FamilyChoice::Both.select(&both), both);
        let only6 = FamilyChoice::new(Some(IpFamily::Ipv6), None);
        assert_eq!(only6.select(&both), v6);
        assert_eq!(only6.select(&v4), Vec::<IpAddr>::new());
        assert_eq!(
            only6.nothing_left(&v4).unwrap(),
            "it has no ipv6 address (only 127.0.0.1)"
        );
        assert_eq!(only6.nothing_left(&both), None);
        let prefer6 = FamilyChoice::new(None, Some(IpFamily::Ipv6));
        assert_eq!(prefer6.select(&both), v6);
        assert_eq!(prefer6.select(&v4), v4, "falls back to the other family");
        let prefer4 = FamilyChoice::new(None, Some(IpFamily::Ipv4));
        assert_eq!(prefer4.select(&both), v4);
        assert_eq!(
            FamilyChoice::new(Some(IpFamily::Ipv4), Some(IpFamily::Ipv6)),
            FamilyChoice::Only(IpFamily::Ipv4)
        );
    }

    #[test]
    fn any_passes_on_one_address_all_needs_every_one() {
        assert!(AddressMode::Any.passes([false, true]));
        assert!(!AddressMode::All.passes([false, true]));
        assert!(AddressMode::All.passes([true, true]));
        assert!(!AddressMode::Any.passes([false, false]));
        assert!(!AddressMode::Any.passes([]));
        assert!(!AddressMode::All.passes([]));
    }

    #[test]
    fn names_parse() {
        assert_eq!("ipv6".parse::<IpFamily>().unwrap(), IpFamily::Ipv6);
        assert_eq!("all".parse::<AddressMode>().unwrap(), AddressMode::All);
        assert!("ipv5".parse::<IpFamily>().is_err());
        assert!("some".parse::<AddressMode>().is_err());
    }
}
