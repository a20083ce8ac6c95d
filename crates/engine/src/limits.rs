//! File descriptor limits: raise `RLIMIT_NOFILE` at start and size in-flight probes from it.

use rlimit::Resource;

/// File descriptors kept back for everything that is not a probe (stdio, the rings, output
/// files, the API's sockets).
const RESERVED_FDS: u64 = 256;

/// The most in-flight probes the engine sizes itself for by default.
const DEFAULT_MAX_INFLIGHT: u64 = 65_472;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; when privileged, first raises the hard
/// limit to `fs.nr_open`. Returns the soft limit in force afterwards.
pub fn raise_nofile_limit() -> u64 {
    let Ok((soft, hard)) = Resource::NOFILE.get() else {
        return 1024;
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let mut hard = hard;
    if let Some(nr_open) = nr_open {
        // Only a privileged process may raise the hard limit; for others this fails quietly.
        if nr_open > hard && Resource::NOFILE.set(nr_open, nr_open).is_ok() {
            hard = nr_open;
        }
    }
    if Resource::NOFILE.set(hard, hard).is_ok() {
        hard
    } else {
        soft
    }
}

/// The default number of probes in flight for a given descriptor limit: everything but a
/// reserve, capped where more in flight stops helping.
pub fn default_inflight(nofile: u64) -> usize {
    nofile
        .saturating_sub(RESERVED_FDS)
        .clamp(16, DEFAULT_MAX_INFLIGHT) as usize
}

/// The most in-flight probes a descriptor limit allows.
pub fn max_inflight(nofile: u64) -> usize {
    nofile.saturating_sub(RESERVED_FDS).max(16) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_follows_the_limit() {
        assert_eq!(default_inflight(1024), 768);
        assert_eq!(default_inflight(100), 16);
        assert_eq!(default_inflight(1 << 20), 65_472);
        assert_eq!(max_inflight(1 << 20), (1 << 20) - 256);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let (before, _) = Resource::NOFILE.get().unwrap();
        let after = raise_nofile_limit();
        assert!(after >= before);
    }
}
