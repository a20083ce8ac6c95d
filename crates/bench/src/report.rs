//! The outcome of a bench run and its two renderings: a human table and JSON.

use std::fmt::Write as _;
use std::time::Duration;

use porthawk_core::PortState;

use crate::{FloorResult, Scenario};

/// Everything a bench run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The machine it ran on.
    pub machine: Machine,
    /// The configured duration of each scenario.
    pub duration: Duration,
    /// The raw-syscall floor measured in the same run.
    pub floor: FloorResult,
    /// One entry per measured point (scaling and in-flight sweeps have several).
    pub scenarios: Vec<ScenarioResult>,
    /// Scenarios that could not run here, with the reason.
    pub skipped: Vec<Skipped>,
    /// The closed scenario against the floor, in alternating runs (`--pairs`).
    pub paired: Option<Paired>,
    /// What the numbers mean for capacity planning, if a scenario gave a usable rate.
    pub capacity: Option<Capacity>,
}

/// The machine a run measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Cores available to the process.
    pub cores: usize,
    /// The engine backend the scenarios ran on.
    pub backend: String,
    /// The kernel release.
    pub kernel: String,
    /// The `RLIMIT_NOFILE` soft limit after raising it.
    pub nofile: u64,
}

/// The measurements of one scenario point.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// The scenario.
    pub scenario: Scenario,
    /// What this point varies, e.g. `shards=2`; empty for single-point scenarios.
    pub point: String,
    /// What the targets were, e.g. `64 hosts × 1000 closed ports`.
    pub targets: String,
    /// The engine backend it ran on.
    pub backend: String,
    /// Shard threads.
    pub shards: usize,
    /// Configured in-flight limit across shards.
    pub inflight: usize,
    /// The connect timeout.
    pub timeout: Duration,
    /// Connect attempts per target.
    pub tries: u8,
    /// Probes finished (records received).
    pub probes: u64,
    /// Wall time from the first submission to the last job's end.
    pub elapsed: Duration,
    /// Probes finished per second.
    pub probes_per_sec: f64,
    /// CPU time (user + system) of the process per probe, in microseconds, without the
    /// farm's accept threads.
    pub cpu_us_per_probe: f64,
    /// Connect latency of open and closed verdicts.
    pub latency: Latency,
    /// The highest number of probes in flight for one job (a point keeps several jobs
    /// outstanding, so the machine had up to a few times this many in flight).
    pub peak_inflight: usize,
    /// Peak resident set size of the process during the point, in KiB.
    pub peak_rss_kib: u64,
    /// Probes per second over the raw-syscall floor for as many threads as shards.
    pub floor_ratio: f64,
    /// Records per state, indexed as [`PortState::ALL`].
    pub states: [u64; 5],
    /// Each shard's busy fraction: its thread's CPU time over the wall time.
    pub shard_busy: Vec<f64>,
    /// Each shard's adaptive in-flight window when the measurement ended.
    pub windows: Vec<usize>,
    /// What was found against the farm's ground truth.
    pub accuracy: Accuracy,
    /// Remarks on how to read the numbers.
    pub notes: Vec<String>,
}

/// Connect latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
}

/// Results compared with the farm's ground truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accuracy {
    /// Records compared.
    pub records_checked: u64,
    /// Records whose state differs from the ground truth (or whose target is not the farm's).
    pub wrong: u64,
    /// Jobs that ran to the end (not cancelled at the deadline).
    pub complete_jobs: u64,
    /// Targets the complete jobs did not report.
    pub missing: u64,
    /// Open targets in the complete jobs' spaces.
    pub open_expected: u64,
    /// Open targets the complete jobs found.
    pub open_found: u64,
}

impl Accuracy {
    /// Whether every record was right and every complete job found every open port.
    pub fn exact(&self) -> bool {
        self.wrong == 0
            && self.missing == 0
            && self.complete_jobs > 0
            && self.open_found == self.open_expected
    }
}

/// One pair of alternating runs: the raw-syscall floor, then porthawk's closed scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairRun {
    /// The floor's probes per second.
    pub floor_rate: f64,
    /// The floor's CPU time per probe, in microseconds.
    pub floor_cpu_us: f64,
    /// porthawk's probes per second.
    pub rate: f64,
    /// porthawk's CPU time per probe, in microseconds.
    pub cpu_us: f64,
}

/// porthawk's closed scenario against the floor with as many threads, run by run: on a noisy
/// machine only runs taken side by side compare.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    /// Threads of the floor, and shards of porthawk.
    pub threads: usize,
    /// The pairs, in the order they ran.
    pub runs: Vec<PairRun>,
}

/// The median of `values` (the mean of the middle two for an even count; 0 for none).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

impl Paired {
    /// The floor's median rate.
    pub fn floor_median(&self) -> f64 {
        median(self.runs.iter().map(|r| r.floor_rate))
    }

    /// porthawk's median rate.
    pub fn median(&self) -> f64 {
        median(self.runs.iter().map(|r| r.rate))
    }

    /// The median of the pairs' rate ratios (porthawk ÷ floor): above 1, porthawk is faster.
    pub fn rate_ratio(&self) -> f64 {
        median(
            self.runs
                .iter()
                .filter(|r| r.floor_rate > 0.0)
                .map(|r| r.rate / r.floor_rate),
        )
    }

    /// The median of the pairs' CPU-per-probe ratios (porthawk ÷ floor): below 1, porthawk
    /// spends less CPU per probe.
    pub fn cpu_ratio(&self) -> f64 {
        median(
            self.runs
                .iter()
                .filter(|r| r.floor_cpu_us > 0.0)
                .map(|r| r.cpu_us / r.floor_cpu_us),
        )
    }

    /// The summary line.
    pub fn line(&self) -> String {
        format!(
            "paired with the floor ({} alternating pairs, {} threads): floor median {} probes/s, porthawk median {} probes/s, median pair ratio {:.3}; CPU per probe: median pair ratio {:.3}",
            self.runs.len(),
            self.threads,
            human_count(self.floor_median()),
            human_count(self.median()),
            self.rate_ratio(),
            self.cpu_ratio(),
        )
    }
}

/// A scenario that did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The scenario.
    pub scenario: Scenario,
    /// Why.
    pub reason: String,
}

/// Capacity planning from the sustained rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// Checks per second this machine sustains.
    pub checks_per_sec: f64,
    /// The scenario the rate comes from.
    pub basis: Scenario,
    /// Target-ports that can be checked once every 60 s.
    pub watch_ports_60s: u64,
    /// Time for a sweep of a /16 × 100 ports.
    pub sweep_16x100: Duration,
}

/// Probes in a /16 × 100 ports sweep.
const SWEEP_16X100: f64 = 65_536.0 * 100.0;

impl Capacity {
    /// Capacity from a sustained rate.
    pub fn from_rate(checks_per_sec: f64, basis: Scenario) -> Option<Capacity> {
        (checks_per_sec.is_finite() && checks_per_sec > 0.0).then(|| Capacity {
            checks_per_sec,
            basis,
            watch_ports_60s: (checks_per_sec * 60.0) as u64,
            sweep_16x100: Duration::from_secs_f64(SWEEP_16X100 / checks_per_sec),
        })
    }

    /// The one-line summary.
    pub fn line(&self) -> String {
        format!(
            "this machine: ~{} checks/s sustained ({} scenario); at a 60 s interval it can watch ~{} target-ports; a /16 × 100 ports sweep takes ~{}",
            human_count(self.checks_per_sec),
            self.basis,
            human_count(self.watch_ports_60s as f64),
            human_duration(self.sweep_16x100),
        )
    }
}

impl Report {
    /// A table per scenario, the floor, skipped scenarios and the capacity line.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "porthawk bench: {} cores, backend {}, kernel {}, RLIMIT_NOFILE {}, {} per scenario",
            m.cores,
            m.backend,
            m.kernel,
            m.nofile,
            human_duration(self.duration)
        );
        let _ = writeln!(
            out,
            "raw-syscall floor (socket + SO_LINGER 0 + connect + close, {} threads): {} probes/s",
            self.floor.threads,
            human_count(self.floor.probes_per_sec)
        );
        let mut scenario: Option<Scenario> = None;
        for r in &self.scenarios {
            if scenario != Some(r.scenario) {
                scenario = Some(r.scenario);
                let _ = writeln!(
                    out,
                    "\n== {} — {}: {}, timeout {} × {} tries",
                    r.scenario,
                    r.scenario.description(),
                    r.targets,
                    human_duration(r.timeout),
                    r.tries
                );
                let _ = writeln!(
                    out,
                    "{:<14} {:>10} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>12} {:>6}",
                    "point",
                    "probes/s",
                    "cpu µs/p",
                    "p50",
                    "p90",
                    "p99",
                    "p99.9",
                    "max",
                    "peak-if",
                    "rss MiB",
                    "floor",
                    "open found",
                    "exact"
                );
            }
            let a = &r.accuracy;
            let _ = writeln!(
                out,
                "{:<14} {:>10} {:>9.2} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8.1} {:>6.2} {:>12} {:>6}",
                if r.point.is_empty() { "-" } else { &r.point },
                human_count(r.probes_per_sec),
                r.cpu_us_per_probe,
                human_us(r.latency.p50_us),
                human_us(r.latency.p90_us),
                human_us(r.latency.p99_us),
                human_us(r.latency.p999_us),
                human_us(r.latency.max_us),
                r.peak_inflight,
                r.peak_rss_kib as f64 / 1024.0,
                r.floor_ratio,
                format!("{}/{}", a.open_found, a.open_expected),
                if a.exact() { "yes" } else { "NO" },
            );
            let states: Vec<String> = PortState::ALL
                .iter()
                .zip(r.states)
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| format!("{s} {n}"))
                .collect();
            let _ = writeln!(
                out,
                "{:<14} {} probes in {}: {}; {} jobs complete, {} wrong, {} missing",
                "",
                r.probes,
                human_duration(r.elapsed),
                states.join(", "),
                a.complete_jobs,
                a.wrong,
                a.missing
            );
            if !r.shard_busy.is_empty() {
                let busy: Vec<String> = r.shard_busy.iter().map(|b| format!("{b:.2}")).collect();
                let windows: Vec<String> = r.windows.iter().map(usize::to_string).collect();
                let _ = writeln!(
                    out,
                    "{:<14} shards busy {} (CPU time / wall); in-flight windows {}",
                    "",
                    busy.join(" "),
                    windows.join(" ")
                );
            }
            for n in &r.notes {
                let _ = writeln!(out, "{:<14} note: {n}", "");
            }
        }
        if !self.skipped.is_empty() {
            out.push('\n');
            for s in &self.skipped {
                let _ = writeln!(out, "skipped {}: {}", s.scenario, s.reason);
            }
        }
        if let Some(p) = &self.paired {
            let _ = writeln!(out, "\n{}", p.line());
            for (i, r) in p.runs.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  pair {}: floor {} probes/s {:.2} µs/probe; porthawk {} probes/s {:.2} µs/probe; ratio {:.3}",
                    i + 1,
                    human_count(r.floor_rate),
                    r.floor_cpu_us,
                    human_count(r.rate),
                    r.cpu_us,
                    if r.floor_rate > 0.0 { r.rate / r.floor_rate } else { 0.0 },
                );
            }
        }
        if let Some(c) = &self.capacity {
            let _ = writeln!(out, "\n{}", c.line());
        }
        out
    }

    /// The report as one JSON object (keys in snake case, durations in seconds, latencies in
    /// microseconds; a rate that is not a finite number is `null`). The shape is
    /// [`json::Report`]'s.
    pub fn to_json(&self) -> String {
        let report = json::Report::from(self);
        match serde_json::to_string(&report) {
            Ok(text) => text,
            // Structs of numbers and strings always serialise.
            Err(e) => unreachable!("the bench report serialises: {e}"),
        }
    }
}

/// The shape of `porthawk bench --json`: views of the report with the names and units
/// scripts read.
mod json {
    use serde::Serialize;

    use porthawk_core::PortState;

    /// The whole report.
    #[derive(Serialize)]
    pub(super) struct Report<'a> {
        machine: Machine<'a>,
        duration_s: f64,
        floor: Floor,
        scenarios: Vec<Scenario<'a>>,
        skipped: Vec<Skipped<'a>>,
        paired: Option<Paired>,
        capacity: Option<Capacity>,
    }

    #[derive(Serialize)]
    struct Paired {
        threads: usize,
        runs: Vec<PairRun>,
        floor_median_probes_per_s: f64,
        median_probes_per_s: f64,
        rate_ratio: f64,
        cpu_ratio: f64,
    }

    #[derive(Serialize)]
    struct PairRun {
        floor_probes_per_s: f64,
        floor_cpu_us_per_probe: f64,
        probes_per_s: f64,
        cpu_us_per_probe: f64,
    }

    #[derive(Serialize)]
    struct Machine<'a> {
        cores: usize,
        backend: &'a str,
        kernel: &'a str,
        nofile: u64,
    }

    #[derive(Serialize)]
    struct Floor {
        threads: usize,
        probes: u64,
        elapsed_s: f64,
        probes_per_s: f64,
        cpu_us_per_probe: f64,
    }

    #[derive(Serialize)]
    struct Scenario<'a> {
        name: &'static str,
        point: &'a str,
        targets: &'a str,
        backend: &'a str,
        shards: usize,
        inflight: usize,
        timeout_ms: f64,
        tries: u8,
        probes: u64,
        elapsed_s: f64,
        probes_per_s: f64,
        cpu_us_per_probe: f64,
        latency_us: Latency,
        peak_inflight: usize,
        peak_rss_kib: u64,
        floor_ratio: f64,
        states: States,
        accuracy: Accuracy,
        shard_busy: &'a [f64],
        windows: &'a [usize],
        notes: &'a [String],
    }

    #[derive(Serialize)]
    struct Latency {
        p50: u64,
        p90: u64,
        p99: u64,
        p99_9: u64,
        max: u64,
    }

    #[derive(Serialize)]
    struct States {
        open: u64,
        closed: u64,
        filtered: u64,
        unreachable: u64,
        error: u64,
    }

    #[derive(Serialize)]
    struct Accuracy {
        records_checked: u64,
        wrong: u64,
        complete_jobs: u64,
        missing: u64,
        open_expected: u64,
        open_found: u64,
        exact: bool,
    }

    #[derive(Serialize)]
    struct Skipped<'a> {
        name: &'static str,
        reason: &'a str,
    }

    #[derive(Serialize)]
    struct Capacity {
        checks_per_s: f64,
        basis: &'static str,
        watch_target_ports_60s: u64,
        sweep_16x100_s: f64,
        line: String,
    }

    impl<'a> From<&'a super::Report> for Report<'a> {
        fn from(r: &'a super::Report) -> Self {
            let m = &r.machine;
            let f = &r.floor;
            Report {
                machine: Machine {
                    cores: m.cores,
                    backend: &m.backend,
                    kernel: &m.kernel,
                    nofile: m.nofile,
                },
                duration_s: r.duration.as_secs_f64(),
                floor: Floor {
                    threads: f.threads,
                    probes: f.probes,
                    elapsed_s: f.elapsed.as_secs_f64(),
                    probes_per_s: f.probes_per_sec,
                    cpu_us_per_probe: f.cpu_us_per_probe(),
                },
                scenarios: r.scenarios.iter().map(Scenario::from).collect(),
                skipped: r
                    .skipped
                    .iter()
                    .map(|s| Skipped {
                        name: s.scenario.as_str(),
                        reason: &s.reason,
                    })
                    .collect(),
                paired: r.paired.as_ref().map(|p| Paired {
                    threads: p.threads,
                    runs: p
                        .runs
                        .iter()
                        .map(|r| PairRun {
                            floor_probes_per_s: r.floor_rate,
                            floor_cpu_us_per_probe: r.floor_cpu_us,
                            probes_per_s: r.rate,
                            cpu_us_per_probe: r.cpu_us,
                        })
                        .collect(),
                    floor_median_probes_per_s: p.floor_median(),
                    median_probes_per_s: p.median(),
                    rate_ratio: p.rate_ratio(),
                    cpu_ratio: p.cpu_ratio(),
                }),
                capacity: r.capacity.as_ref().map(|c| Capacity {
                    checks_per_s: c.checks_per_sec,
                    basis: c.basis.as_str(),
                    watch_target_ports_60s: c.watch_ports_60s,
                    sweep_16x100_s: c.sweep_16x100.as_secs_f64(),
                    line: c.line(),
                }),
            }
        }
    }

    impl<'a> From<&'a super::ScenarioResult> for Scenario<'a> {
        fn from(r: &'a super::ScenarioResult) -> Self {
            let state = |s: PortState| r.states[s.index()];
            let a = &r.accuracy;
            Scenario {
                name: r.scenario.as_str(),
                point: &r.point,
                targets: &r.targets,
                backend: &r.backend,
                shards: r.shards,
                inflight: r.inflight,
                timeout_ms: r.timeout.as_secs_f64() * 1000.0,
                tries: r.tries,
                probes: r.probes,
                elapsed_s: r.elapsed.as_secs_f64(),
                probes_per_s: r.probes_per_sec,
                cpu_us_per_probe: r.cpu_us_per_probe,
                latency_us: Latency {
                    p50: r.latency.p50_us,
                    p90: r.latency.p90_us,
                    p99: r.latency.p99_us,
                    p99_9: r.latency.p999_us,
                    max: r.latency.max_us,
                },
                peak_inflight: r.peak_inflight,
                peak_rss_kib: r.peak_rss_kib,
                floor_ratio: r.floor_ratio,
                states: States {
                    open: state(PortState::Open),
                    closed: state(PortState::Closed),
                    filtered: state(PortState::Filtered),
                    unreachable: state(PortState::Unreachable),
                    error: state(PortState::Error),
                },
                accuracy: Accuracy {
                    records_checked: a.records_checked,
                    wrong: a.wrong,
                    complete_jobs: a.complete_jobs,
                    missing: a.missing,
                    open_expected: a.open_expected,
                    open_found: a.open_found,
                    exact: a.exact(),
                },
                shard_busy: &r.shard_busy,
                windows: &r.windows,
                notes: &r.notes,
            }
        }
    }
}

/// 1234567 → "1.23M".
fn human_count(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e4 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

fn human_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else if us >= 1000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{us}µs")
    }
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 7200.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 120.0 {
        format!("{:.1} min", s / 60.0)
    } else if s >= 1.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.0} ms", s * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    pub(crate) fn sample() -> Report {
        let r = ScenarioResult {
            scenario: Scenario::Closed,
            point: String::new(),
            targets: "2 hosts × 3 closed ports".into(),
            backend: "epoll".into(),
            shards: 2,
            inflight: 64,
            timeout: Duration::from_millis(200),
            tries: 2,
            probes: 1000,
            elapsed: Duration::from_millis(500),
            probes_per_sec: 2000.0,
            cpu_us_per_probe: 3.5,
            latency: Latency {
                p50_us: 10,
                p90_us: 20,
                p99_us: 30,
                p999_us: 40,
                max_us: 50,
            },
            peak_inflight: 12,
            peak_rss_kib: 4096,
            floor_ratio: 0.5,
            states: [0, 1000, 0, 0, 0],
            shard_busy: vec![0.9, 0.8],
            windows: vec![128, 256],
            accuracy: Accuracy {
                records_checked: 1000,
                complete_jobs: 2,
                ..Accuracy::default()
            },
            notes: vec!["a \"quoted\" note".into()],
        };
        Report {
            machine: Machine {
                cores: 2,
                backend: "epoll".into(),
                kernel: "6.1".into(),
                nofile: 1024,
            },
            duration: Duration::from_secs(1),
            floor: FloorResult {
                threads: 2,
                probes: 4000,
                elapsed: Duration::from_secs(1),
                probes_per_sec: 4000.0,
                cpu: Duration::from_millis(60),
            },
            scenarios: vec![r],
            skipped: vec![Skipped {
                scenario: Scenario::Filtered,
                reason: "needs root".into(),
            }],
            paired: Some(Paired {
                threads: 2,
                runs: vec![
                    PairRun {
                        floor_rate: 100.0,
                        floor_cpu_us: 10.0,
                        rate: 110.0,
                        cpu_us: 9.0,
                    },
                    PairRun {
                        floor_rate: 200.0,
                        floor_cpu_us: 10.0,
                        rate: 180.0,
                        cpu_us: 12.0,
                    },
                    PairRun {
                        floor_rate: 100.0,
                        floor_cpu_us: 10.0,
                        rate: 100.0,
                        cpu_us: 10.0,
                    },
                ],
            }),
            capacity: Capacity::from_rate(2000.0, Scenario::Closed),
        }
    }

    #[test]
    fn json_has_every_key() {
        let text = sample().to_json();
        // Keys in the order of the shape, not sorted.
        assert!(
            text.starts_with(r#"{"machine":{"cores":2,"backend":"epoll","#),
            "{text}"
        );
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["machine"]["cores"], 2);
        assert_eq!(json["floor"]["threads"], 2);
        assert_eq!(json["floor"]["probes_per_s"], 4000.0);
        let r = &json["scenarios"][0];
        assert_eq!(r["name"], "closed");
        assert_eq!(r["cpu_us_per_probe"], 3.5);
        assert_eq!(
            r["latency_us"],
            json!({"p50": 10, "p90": 20, "p99": 30, "p99_9": 40, "max": 50})
        );
        assert_eq!(r["peak_inflight"], 12);
        assert_eq!(r["peak_rss_kib"], 4096);
        assert_eq!(r["floor_ratio"], 0.5);
        assert_eq!(r["timeout_ms"], 200.0);
        assert_eq!(r["states"]["open"], 0);
        assert_eq!(r["states"]["closed"], 1000);
        assert_eq!(r["accuracy"]["exact"], true);
        assert_eq!(r["notes"], json!(["a \"quoted\" note"]));
        assert_eq!(r["shard_busy"], json!([0.9, 0.8]));
        assert_eq!(r["windows"], json!([128, 256]));
        assert_eq!(json["floor"]["cpu_us_per_probe"], 15.0);
        // Pair ratios 1.1, 0.9, 1.0: their median, not the ratio of the medians.
        let p = &json["paired"];
        assert_eq!(p["rate_ratio"], 1.0);
        assert_eq!(p["cpu_ratio"], 1.0);
        assert_eq!(p["floor_median_probes_per_s"], 100.0);
        assert_eq!(p["median_probes_per_s"], 110.0);
        assert_eq!(p["runs"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            json["skipped"],
            json!([{"name": "filtered", "reason": "needs root"}])
        );
        assert_eq!(json["capacity"]["checks_per_s"], 2000.0);
        assert_eq!(json["capacity"]["watch_target_ports_60s"], 120_000);
        assert_eq!(json["capacity"]["sweep_16x100_s"], 3276.8);
        // A rate that is not a number is null, never invalid JSON.
        let mut odd = sample();
        odd.scenarios[0].probes_per_sec = f64::NAN;
        odd.capacity = None;
        let json: Value = serde_json::from_str(&odd.to_json()).unwrap();
        assert_eq!(json["scenarios"][0]["probes_per_s"], Value::Null);
        assert_eq!(json["capacity"], Value::Null);
    }

    #[test]
    fn table_and_capacity_line() {
        let text = sample().render_table();
        assert!(text.contains("== closed"), "{text}");
        assert!(text.contains("skipped filtered: needs root"));
        assert!(text.contains(
            "this machine: ~2000 checks/s sustained (closed scenario); at a 60 s interval it can watch ~120.0k target-ports; a /16 × 100 ports sweep takes ~54.6 min"
        ), "{text}");
        assert_eq!(Capacity::from_rate(0.0, Scenario::Closed), None);
        assert!(text.contains("shards busy 0.90 0.80"), "{text}");
        assert!(text.contains("median pair ratio 1.000"), "{text}");
        assert!(text.contains("pair 2: floor 200 probes/s"), "{text}");
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median([]), 0.0);
    }
}
