//! The raw-syscall floor: what the kernel allows when a thread does nothing but open a
//! socket, ask for a reset on close, start a non-blocking connect and close.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// How to measure the floor.
#[derive(Debug, Clone)]
pub struct FloorConfig {
    /// Threads, one per core.
    pub threads: usize,
    /// How long to run at most.
    pub duration: Duration,
    /// How many probes to make at most, across threads.
    pub max_probes: u64,
}

/// What the floor loop achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct FloorResult {
    /// Threads that ran.
    pub threads: usize,
    /// Probes (socket + connect + close) made.
    pub probes: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Probes per second across threads.
    pub probes_per_sec: f64,
    /// CPU time (user + system) of the process during the run: the floor's threads, as
    /// nothing else in the process is busy then.
    pub cpu: Duration,
}

impl FloorResult {
    /// The floor rate for `threads` threads, scaled linearly from what was measured.
    pub fn rate_for(&self, threads: usize) -> f64 {
        self.probes_per_sec * threads as f64 / self.threads.max(1) as f64
    }

    /// CPU time per probe in microseconds (0 without probes).
    pub fn cpu_us_per_probe(&self) -> f64 {
        if self.probes == 0 {
            0.0
        } else {
            self.cpu.as_secs_f64() * 1e6 / self.probes as f64
        }
    }
}

/// Runs `socket` + `SO_LINGER 0` + non-blocking `connect` + `close` in a tight loop on
/// `config.threads` threads, cycling through `targets` (closed loopback ports), until the
/// duration or the probe count is reached. Probe `i` goes to `targets[i % targets.len()]`
/// and thread `k` makes the probes `i ≡ k (mod threads)`, so with `max_probes` equal to the
/// number of targets every target is probed exactly once, as a sweep would. Socket errors
/// end nothing: the loop measures the cost of the calls, whatever they return.
pub fn measure_floor(config: &FloorConfig, targets: &[SocketAddr]) -> FloorResult {
    let threads = config.threads.max(1);
    if targets.is_empty() {
        return FloorResult {
            threads,
            probes: 0,
            elapsed: Duration::ZERO,
            probes_per_sec: 0.0,
            cpu: Duration::ZERO,
        };
    }
    let targets: Arc<[socket2::SockAddr]> = targets.iter().map(|&t| t.into()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = crate::sys::process_cpu_time();
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            let targets = Arc::clone(&targets);
            let stop = Arc::clone(&stop);
            let deadline = started + config.duration;
            // The probes i < max_probes with i ≡ k (mod threads).
            let quota = config
                .max_probes
                .saturating_sub(k as u64)
                .div_ceil(threads as u64);
            std::thread::spawn(move || floor_loop(&targets, k, threads, quota, deadline, &stop))
        })
        .collect();
    let mut probes = 0;
    for h in handles {
        probes += h.join().unwrap_or(0);
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    FloorResult {
        threads,
        probes,
        elapsed,
        probes_per_sec: probes as f64 / elapsed.as_secs_f64().max(1e-9),
        cpu: crate::sys::process_cpu_time().saturating_sub(cpu0),
    }
}

fn floor_loop(
    targets: &[socket2::SockAddr],
    offset: usize,
    stride: usize,
    max: u64,
    deadline: Instant,
    stop: &AtomicBool,
) -> u64 {
    let mut done = 0u64;
    let mut i = offset % targets.len();
    while done < max {
        // Reading the clock every probe would be part of the measured cost; every 64 is
        // cheap and still stops within a fraction of a millisecond.
        if done.is_multiple_of(64) && (Instant::now() >= deadline || stop.load(Ordering::Relaxed)) {
            break;
        }
        let target = &targets[i];
        let domain = if target.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        if let Ok(s) = Socket::new(domain, Type::STREAM.nonblocking(), None) {
            let _ = s.set_linger(Some(Duration::ZERO));
            let _ = s.connect(target);
            drop(s);
        }
        done += 1;
        i = (i + stride) % targets.len();
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::farm::{Farm, FarmConfig};
    use std::net::IpAddr;

    #[test]
    fn floor_loop_returns_a_rate() {
        let farm = Farm::start(&FarmConfig {
            hosts: 2,
            open_ports: 0,
            banner_ports: 0,
            closed_ports: 50,
            ..FarmConfig::default()
        })
        .unwrap();
        let targets: Vec<SocketAddr> = farm
            .closed_ports()
            .iter()
            .map(|&p| SocketAddr::new(IpAddr::V4(farm.hosts()[0]), p))
            .collect();
        let r = measure_floor(
            &FloorConfig {
                threads: 2,
                duration: Duration::from_millis(300),
                max_probes: 1_000_000,
            },
            &targets,
        );
        assert!(r.probes > 0 && r.probes_per_sec > 0.0, "{r:?}");
        assert!(r.elapsed < Duration::from_secs(30));
        let bounded = measure_floor(
            &FloorConfig {
                threads: 1,
                duration: Duration::from_secs(30),
                max_probes: 100,
            },
            &targets,
        );
        assert_eq!(bounded.probes, 100);
        let odd = measure_floor(
            &FloorConfig {
                threads: 3,
                duration: Duration::from_secs(30),
                max_probes: 49,
            },
            &targets,
        );
        assert_eq!(odd.probes, 49);
    }
}
