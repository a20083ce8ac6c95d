//! Readings from `/proc`: CPU time, peak RSS, thread ids, listening sockets, privileges.
//!
//! Everything here reads files rather than calling `getrusage` or `gettid`, so that the
//! harness needs no `unsafe` for its measurements.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// `/proc/*/stat` reports CPU time in `USER_HZ` ticks, which Linux fixes at 100 per second
/// on every architecture it exports to user space.
const USER_HZ: u64 = 100;

/// User plus system CPU time of the `stat` file at `path` (a process or a task).
fn cpu_time_of(path: &Path) -> Option<Duration> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted from
    // the last ')'. After it come state (field 3) ... utime (14), stime (15).
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// CPU time (user + system) used by this process so far, including threads that ended.
pub(crate) fn process_cpu_time() -> Duration {
    cpu_time_of(Path::new("/proc/self/stat")).unwrap_or_default()
}

/// CPU time (user + system) used so far by thread `tid` of this process, if it still runs.
pub(crate) fn thread_cpu_time(tid: u32) -> Duration {
    cpu_time_of(Path::new(&format!("/proc/self/task/{tid}/stat"))).unwrap_or_default()
}

/// The kernel thread id of the calling thread (`/proc/thread-self` links to `PID/task/TID`).
pub(crate) fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// The peak resident set size of this process in KiB (`VmHWM`).
pub(crate) fn peak_rss_kib() -> u64 {
    status_field("VmHWM:")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resets the peak RSS to the current RSS, so that each scenario reports its own peak.
/// Best effort: kernels without `clear_refs` keep the process-wide peak.
pub(crate) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Whether the process runs with an effective uid of 0.
pub(crate) fn is_root() -> bool {
    status_field("Uid:")
        .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        .unwrap_or(false)
}

fn status_field(name: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
}

/// What listens in the calling thread's network namespace.
#[derive(Debug, Default)]
pub(crate) struct Listening {
    /// Every port with a listener, on any address.
    pub ports: HashSet<u16>,
    /// The `127.a.b.0/24` blocks with an IPv4 listener in them, as `(a, b)`.
    pub loopback_blocks: HashSet<(u8, u8)>,
    /// Whether something listens on the IPv4 or IPv6 wildcard address.
    pub wildcard: bool,
}

/// Reads the listening sockets of the calling thread's network namespace. The farm keeps
/// their ports out of its "closed" ports and avoids their address blocks: its ground truth
/// must not depend on what else runs on the machine.
pub(crate) fn listening() -> Listening {
    let mut out = Listening::default();
    for file in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1);
            let state = fields.nth(1);
            // State 0A is TCP_LISTEN.
            let (Some(local), Some("0A")) = (local, state) else {
                continue;
            };
            let Some((addr, port)) = local.split_once(':') else {
                continue;
            };
            if let Ok(port) = u16::from_str_radix(port, 16) {
                out.ports.insert(port);
            }
            if addr.chars().all(|c| c == '0') {
                out.wildcard = true;
            } else if addr.len() == 8 {
                // The kernel prints the address as a native-endian u32 of network-order bytes.
                if let Ok(v) = u32::from_str_radix(addr, 16) {
                    let b = v.to_ne_bytes();
                    if b[0] == 127 {
                        out.loopback_blocks.insert((b[1], b[2]));
                    }
                }
            }
        }
    }
    out
}

/// The lowest port of the ephemeral range; the farm stays below it so that no probe can
/// meet a socket the kernel opened on its own.
pub(crate) fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// The kernel release, for the report.
pub(crate) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_readings_are_present() {
        let tid = current_tid().unwrap();
        assert!(tid > 0);
        // Burn a little CPU so the tick counter moves.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        assert!(process_cpu_time() > Duration::ZERO);
        assert!(peak_rss_kib() > 0);
        assert!(ephemeral_low() > 1024);
    }
}
