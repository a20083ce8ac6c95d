//! The `identify` scenario: what `--identify`'s probe plan costs per port that does not speak
//! first. Three kinds of listener, each on its own free ports of 127.0.0.1 (no port hint
//! orders the plan): silent ones (they read and never answer), ones that close on the first
//! bytes they get (as memcached does on an HTTP line), and one that answers only its own
//! protocol's probe (memcached's `version`, which the plan sends third). Each kind is swept
//! once with the identify dialog of `--identify` (the default `--max-probes`, a 200 ms read
//! timeout); the listeners count the connections they accept and the probes they receive
//! (connections on which bytes arrived), so the cost is measured where the probes land.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use porthawk_core::{
    identify, AddrRange, Dialog, HostSetBuilder, PortSet, PortState, ProbeSpec, TargetSpace,
    DEFAULT_MAX_PROBES,
};
use porthawk_engine::{result_channel, Engine, EngineConfig, Job};

use crate::report::{Accuracy, Latency, ScenarioResult};
use crate::{sys, BenchError, Scenario};

/// Listeners of each of the silent and closing kinds.
const PORTS_PER_KIND: usize = 32;

/// The read timeout of the scenario's identify dialog (`--read-timeout`).
const READ_TIMEOUT: Duration = Duration::from_millis(200);

/// The whole dialog's time (`--dialog-timeout`).
const DIALOG_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a sweep may take before the scenario gives up on it.
const SWEEP_LIMIT: Duration = Duration::from_secs(60);

/// What the memcached-like listener answers to its own probe.
const OWN_REPLY: &[u8] = b"VERSION 1.6.18\r\n";

/// How a listener of the scenario treats what it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Reads everything, says nothing.
    Silent,
    /// Closes the connection on the first bytes it gets.
    ClosesOnForeign,
    /// Answers `version` as memcached does, and nothing else.
    OwnProtocolOnly,
}

impl Behaviour {
    fn point(self) -> &'static str {
        match self {
            Behaviour::Silent => "silent",
            Behaviour::ClosesOnForeign => "closes-on-foreign",
            Behaviour::OwnProtocolOnly => "own-protocol-only",
        }
    }

    fn ports(self) -> usize {
        match self {
            Behaviour::OwnProtocolOnly => 1,
            _ => PORTS_PER_KIND,
        }
    }
}

/// What the listeners of one kind saw.
#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    probes: AtomicU64,
}

/// The listeners of one kind, served by threads that stop when it is dropped.
struct Listeners {
    ports: Vec<u16>,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Listeners {
    fn start(behaviour: Behaviour) -> Result<Listeners, BenchError> {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let mut ports = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..behaviour.ports() {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| BenchError::Internal(format!("identify listener: {e}")))?;
            let port = listener
                .local_addr()
                .map_err(|e| BenchError::Internal(format!("identify listener: {e}")))?
                .port();
            ports.push(port);
            let (stop, counts) = (Arc::clone(&stop), Arc::clone(&counts));
            threads.push(std::thread::spawn(move || {
                accept_loop(&listener, behaviour, &stop, &counts);
            }));
        }
        Ok(Listeners {
            ports,
            counts,
            stop,
            threads,
        })
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Accepts until `stop`, each connection served by a thread of its own (a few hundred at
/// most: ports times probes).
fn accept_loop(
    listener: &TcpListener,
    behaviour: Behaviour,
    stop: &Arc<AtomicBool>,
    counts: &Arc<Counts>,
) {
    let mut served = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                counts.connections.fetch_add(1, Ordering::SeqCst);
                let (stop, counts) = (Arc::clone(stop), Arc::clone(counts));
                served.push(std::thread::spawn(move || {
                    serve(stream, behaviour, &stop, &counts);
                }));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    for t in served {
        let _ = t.join();
    }
}

/// One connection: counts a probe when bytes arrive, and answers as `behaviour` says.
fn serve(mut stream: TcpStream, behaviour: Behaviour, stop: &AtomicBool, counts: &Counts) {
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .is_err()
    {
        return;
    }
    let mut buf = [0u8; 512];
    let mut probed = false;
    let deadline = Instant::now() + SWEEP_LIMIT;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if !probed {
                    probed = true;
                    counts.probes.fetch_add(1, Ordering::SeqCst);
                }
                match behaviour {
                    Behaviour::Silent => {}
                    Behaviour::ClosesOnForeign => return,
                    Behaviour::OwnProtocolOnly => {
                        if buf[..n].starts_with(b"version") {
                            let _ = stream.write_all(OWN_REPLY);
                        }
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Runs the scenario: one point per kind of listener.
pub(crate) fn points(
    engine: &EngineConfig,
    floor_rate: impl Fn(usize) -> f64,
) -> Result<Vec<ScenarioResult>, BenchError> {
    [
        Behaviour::Silent,
        Behaviour::ClosesOnForeign,
        Behaviour::OwnProtocolOnly,
    ]
    .into_iter()
    .map(|b| point(b, engine, &floor_rate))
    .collect()
}

fn point(
    behaviour: Behaviour,
    engine: &EngineConfig,
    floor_rate: &dyn Fn(usize) -> f64,
) -> Result<ScenarioResult, BenchError> {
    let listeners = Listeners::start(behaviour)?;
    let probe = ProbeSpec {
        dialog: Some(Arc::new(Dialog::identify(DEFAULT_MAX_PROBES))),
        read_timeout: READ_TIMEOUT,
        dialog_timeout: DIALOG_TIMEOUT,
        ..ProbeSpec::default()
    };
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut hosts = HostSetBuilder::default();
    if let Some(range) = AddrRange::new(ip, ip) {
        hosts.include(range);
    }
    let space = Arc::new(TargetSpace::new(
        hosts.build(),
        PortSet::from_ports(listeners.ports.clone()),
        1,
    )?);
    sys::reset_peak_rss();
    let engine = Engine::start(engine)?;
    let (sink, results) = result_channel(64);
    let cpu0 = sys::process_cpu_time();
    let started = Instant::now();
    let handle = engine.submit(Job {
        id: engine.next_job_id(),
        positions: 0..space.len(),
        space: Arc::clone(&space),
        spec: probe.clone(),
        rate: None,
        sink,
    });
    let mut states = [0u64; 5];
    let (mut records, mut identified) = (0u64, 0u64);
    loop {
        if started.elapsed() > SWEEP_LIMIT {
            handle.cancel();
            return Err(BenchError::Stalled(format!(
                "identify {}: {records} of {} ports after {SWEEP_LIMIT:?}",
                behaviour.point(),
                space.len()
            )));
        }
        let Ok(batch) = results.recv_timeout(Duration::from_millis(50)) else {
            continue;
        };
        for r in &batch.records {
            states[r.state.index()] += 1;
            records += 1;
            if r.banner.as_deref().and_then(identify).is_some() {
                identified += 1;
            }
        }
        if batch.job_done {
            break;
        }
    }
    let elapsed = started.elapsed();
    let cpu = sys::process_cpu_time().saturating_sub(cpu0);
    // The listeners' threads count a connection as it is accepted: let the last ones in.
    std::thread::sleep(Duration::from_millis(50));
    let connections = listeners.counts.connections.load(Ordering::SeqCst);
    let probes = listeners.counts.probes.load(Ordering::SeqCst);
    let stats = handle.stats();
    let ports = listeners.ports.len() as u64;
    let per_port = |n: u64| n as f64 / ports.max(1) as f64;
    let hist: &Histogram<u64> = &stats.rtt_us;
    let open = states[PortState::Open.index()];
    let mut notes = vec![format!(
        "per port: {:.2} s, {:.1} probes sent, {:.1} connections (--max-probes {DEFAULT_MAX_PROBES}, \
         --read-timeout {} ms); {identified} of {ports} identified",
        elapsed.as_secs_f64(),
        per_port(probes),
        per_port(connections),
        READ_TIMEOUT.as_millis(),
    )];
    notes.extend(
        stats
            .errors
            .iter()
            .take(3)
            .map(|e| format!("engine error: {e}")),
    );
    let rate = records as f64 / elapsed.as_secs_f64().max(1e-9);
    let wanted_identified = u64::from(behaviour == Behaviour::OwnProtocolOnly) * ports;
    Ok(ScenarioResult {
        scenario: Scenario::Identify,
        point: behaviour.point().to_string(),
        targets: format!("1 host × {ports} {} ports", behaviour.point()),
        backend: engine.backend().to_string(),
        shards: engine.shards(),
        inflight: engine.inflight(),
        timeout: probe.connect_timeout,
        tries: probe.tries,
        probes: records,
        elapsed,
        probes_per_sec: rate,
        cpu_us_per_probe: cpu.as_secs_f64() * 1e6 / records.max(1) as f64,
        latency: Latency {
            p50_us: hist.value_at_quantile(0.5),
            p90_us: hist.value_at_quantile(0.9),
            p99_us: hist.value_at_quantile(0.99),
            p999_us: hist.value_at_quantile(0.999),
            max_us: hist.max(),
        },
        peak_inflight: stats.peak_inflight,
        peak_rss_kib: sys::peak_rss_kib(),
        // Identification waits on read timeouts: the shards' busy share and windows say
        // nothing about it.
        shard_busy: Vec::new(),
        windows: engine.window_per_shard(),
        floor_ratio: rate / floor_rate(engine.shards()).max(1e-9),
        states,
        accuracy: Accuracy {
            records_checked: records,
            // Every port is open; a silent or closing one must not be named, the
            // memcached-like one must.
            wrong: (ports - open) + identified.abs_diff(wanted_identified),
            complete_jobs: 1,
            missing: ports.saturating_sub(records),
            open_expected: ports,
            open_found: open,
        },
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_costs_what_the_plan_allows_and_only_the_own_protocol_is_named() {
        let engine = EngineConfig {
            shards: 1,
            inflight: 256,
            ..EngineConfig::default()
        };
        let points = points(&engine, |_| 1.0).unwrap_or_else(|e| panic!("identify: {e}"));
        assert_eq!(points.len(), 3);
        for p in &points {
            assert!(
                p.accuracy.exact(),
                "{}: {:?} {:?}",
                p.point,
                p.accuracy,
                p.notes
            );
        }
        // Silent ports get every probe of the budget (the first on the null probe's
        // connection); closing ones as many, each on its own connection; the memcached-like
        // one is found by the fourth probe (after HTTP, TLS and Redis).
        let probes = |i: usize| -> f64 {
            let note = &points[i].notes[0];
            let sent = note.split(" probes sent").next().unwrap_or_default();
            sent.rsplit(' ')
                .next()
                .unwrap_or_default()
                .parse()
                .unwrap_or(-1.0)
        };
        let budget = f64::from(DEFAULT_MAX_PROBES);
        assert_eq!(probes(0), budget, "{:?}", points[0].notes);
        assert_eq!(probes(1), budget, "{:?}", points[1].notes);
        assert_eq!(probes(2), 4.0, "{:?}", points[2].notes);
    }
}
