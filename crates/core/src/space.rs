//! The target space of a sweep: every (address, port) pair, permuted and split into shards.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use crate::{HostSet, Permutation, PortSet};

/// The most probes one sweep may hold: every IPv4 address times every port fits.
pub const MAX_PROBES: u64 = 1 << 48;

/// Why a target space cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpaceError {
    /// No address is left to probe (after exclusions).
    #[error("no target address left to probe")]
    NoHosts,
    /// No port is left to probe (after exclusions).
    #[error("no port left to probe")]
    NoPorts,
    /// Hosts × ports is larger than [`MAX_PROBES`].
    #[error("sweep too large: {hosts} addresses × {ports} ports is more than 2^48 probes")]
    TooLarge {
        /// Number of addresses.
        hosts: u128,
        /// Number of ports.
        ports: usize,
    },
}

/// Every (address, port) pair of a sweep, in a seeded random-looking order.
///
/// Index `i` of `[0, len)` maps to the pair `permutation(i)` of hosts × ports; nothing is
/// materialised, so a /8 × 1,000-port space costs the same memory as a single host.
#[derive(Debug, Clone)]
pub struct TargetSpace {
    hosts: HostSet,
    ports: PortSet,
    permutation: Permutation,
}

impl TargetSpace {
    /// The space of `hosts` × `ports`, ordered by `seed`.
    pub fn new(hosts: HostSet, ports: PortSet, seed: u64) -> Result<Self, SpaceError> {
        if hosts.is_empty() {
            return Err(SpaceError::NoHosts);
        }
        if ports.is_empty() {
            return Err(SpaceError::NoPorts);
        }
        let total = hosts.len() * ports.len() as u128;
        if total > u128::from(MAX_PROBES) {
            return Err(SpaceError::TooLarge {
                hosts: hosts.len(),
                ports: ports.len(),
            });
        }
        let permutation = Permutation::new(total as u64, seed);
        Ok(TargetSpace {
            hosts,
            ports,
            permutation,
        })
    }

    /// The number of probes in the space.
    pub fn len(&self) -> u64 {
        self.permutation.len()
    }

    /// Always false: a space holds at least one address and one port.
    pub fn is_empty(&self) -> bool {
        self.permutation.is_empty()
    }

    /// The addresses of the space.
    pub fn hosts(&self) -> &HostSet {
        &self.hosts
    }

    /// The ports of the space.
    pub fn ports(&self) -> &PortSet {
        &self.ports
    }

    /// The `position`-th target in sweep order. `position` must be below [`TargetSpace::len`].
    pub fn get(&self, position: u64) -> Option<SocketAddr> {
        if position >= self.len() {
            return None;
        }
        let index = self.permutation.apply(position);
        let nports = self.ports.len() as u64;
        let (host, port) = (index / nports, index % nports);
        let (ip, _) = self.hosts.get(u128::from(host))?;
        Some(SocketAddr::new(ip, self.ports.as_slice()[port as usize]))
    }

    /// The part of the sweep order that shard `shard` of `shards` probes. The slices of all
    /// shards are contiguous, disjoint and together cover the whole space.
    pub fn shard(&self, shard: usize, shards: usize) -> ShardSlice {
        self.shard_range(0..self.len(), shard, shards)
    }

    /// The part of `positions` (a slice of the sweep order, such as a fleet work item's) that
    /// shard `shard` of `shards` probes. The parts of all shards are contiguous, disjoint and
    /// together cover exactly `positions`; positions past [`TargetSpace::len`] are dropped.
    pub fn shard_range(&self, positions: Range<u64>, shard: usize, shards: usize) -> ShardSlice {
        let end = positions.end.min(self.len());
        let start = positions.start.min(end);
        let shards = shards.max(1) as u128;
        let len = u128::from(end - start);
        let at = |k: u128| start + (len * k.min(shards) / shards) as u64;
        ShardSlice {
            next: at(shard as u128),
            end: at(shard as u128 + 1),
        }
    }

    /// The host name `ip` was given by, if any.
    pub fn name_of(&self, ip: IpAddr) -> Option<&str> {
        self.hosts.name_of(ip)
    }
}

/// A contiguous run of sweep positions that one shard walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSlice {
    next: u64,
    end: u64,
}

impl ShardSlice {
    /// The next position to probe, or `None` when the slice is done.
    pub fn next_position(&mut self) -> Option<u64> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// How many positions are left.
    pub fn remaining(&self) -> u64 {
        self.end - self.next
    }

    /// Drops every position not yet taken (used when a job is cancelled).
    pub fn clear(&mut self) {
        self.next = self.end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_target, HostSetBuilder, TargetToken};
    use std::collections::HashSet;

    fn space(targets: &[&str], ports: &str, seed: u64) -> TargetSpace {
        let mut b = HostSetBuilder::default();
        for t in targets {
            match parse_target(t).unwrap() {
                TargetToken::Range(r) => b.include(r),
                TargetToken::Host(h) => panic!("unexpected host {h}"),
            };
        }
        TargetSpace::new(b.build(), PortSet::parse(ports).unwrap(), seed).unwrap()
    }

    #[test]
    fn shards_cover_any_slice_exactly_once() {
        let s = space(&["10.0.0.0/24", "fd00::/126"], "22,80,443", 5);
        let len = s.len();
        let slices = [
            0..len,
            0..1,
            5..6,
            0..100,
            100..len,
            257..311,
            len - 1..len,
            7..7,
        ];
        for positions in slices {
            for shards in [1, 2, 3] {
                let mut seen = Vec::new();
                for k in 0..shards {
                    let mut part = s.shard_range(positions.clone(), k, shards);
                    while let Some(pos) = part.next_position() {
                        seen.push(pos);
                    }
                }
                // In order, each position once, exactly the slice's.
                let want: Vec<u64> = positions.clone().collect();
                assert_eq!(seen, want, "{positions:?} over {shards} shards");
            }
        }
        // Positions past the end of the space are not probed.
        let mut tail = s.shard_range(len - 2..len + 10, 0, 1);
        assert_eq!(tail.remaining(), 2);
        assert_eq!(tail.next_position(), Some(len - 2));
        assert_eq!(s.shard_range(len + 1..len + 5, 0, 2).remaining(), 0);
        assert_eq!(s.shard(1, 3), s.shard_range(0..len, 1, 3));
    }

    #[test]
    fn shards_cover_the_space_exactly_once() {
        for (targets, ports) in [
            (&["127.0.0.1"][..], "1-10"),
            (&["10.0.0.0/24", "10.0.1.7"][..], "22,80,443"),
            (&["fd00::/124", "127.0.0.1-127.0.0.3"][..], "1-37"),
        ] {
            for seed in [0, 9] {
                let s = space(targets, ports, seed);
                for shards in [1, 2, 3, 7] {
                    let mut seen = HashSet::new();
                    for k in 0..shards {
                        let mut slice = s.shard(k, shards);
                        while let Some(pos) = slice.next_position() {
                            assert!(seen.insert(s.get(pos).unwrap()), "duplicate target");
                        }
                    }
                    let want = s.hosts().len() as usize * s.ports().len();
                    assert_eq!(seen.len(), want, "{targets:?} {ports} {shards} shards");
                }
            }
        }
    }

    #[test]
    fn order_spreads_over_hosts() {
        // The first few probes of a /24 × 1 port sweep must not walk the hosts in order.
        let s = space(&["10.0.0.0/24"], "80", 3);
        let first: Vec<_> = (0..8).map(|i| s.get(i).unwrap()).collect();
        let sequential: Vec<_> = (0..8)
            .map(|i| SocketAddr::new(IpAddr::from([10, 0, 0, i as u8]), 80))
            .collect();
        assert_ne!(first, sequential);
    }

    #[test]
    fn rejects_empty_and_huge_spaces() {
        let hosts = HostSetBuilder::default().build();
        assert_eq!(
            TargetSpace::new(hosts, PortSet::parse("1").unwrap(), 0).unwrap_err(),
            SpaceError::NoHosts
        );
        let mut b = HostSetBuilder::default();
        if let TargetToken::Range(r) = parse_target("fd00::/88").unwrap() {
            b.include(r);
        }
        let err = TargetSpace::new(b.build(), PortSet::parse("all").unwrap(), 0).unwrap_err();
        assert!(matches!(err, SpaceError::TooLarge { .. }));
    }
}
