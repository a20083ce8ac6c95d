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
        if let Some(c) = &self.capacity {
            let _ = writeln!(out, "\n{}", c.line());
        }
        out
    }

    /// The report as one JSON object (keys in snake case, durations in seconds, latencies in
    /// microseconds).
    pub fn to_json(&self) -> String {
        let mut j = Json::default();
        j.open('{');
        j.key("machine");
        j.open('{');
        j.field_num("cores", self.machine.cores as f64);
        j.field_str("backend", &self.machine.backend);
        j.field_str("kernel", &self.machine.kernel);
        j.field_num("nofile", self.machine.nofile as f64);
        j.close('}');
        j.field_num("duration_s", self.duration.as_secs_f64());
        j.key("floor");
        j.open('{');
        j.field_num("threads", self.floor.threads as f64);
        j.field_num("probes", self.floor.probes as f64);
        j.field_num("elapsed_s", self.floor.elapsed.as_secs_f64());
        j.field_num("probes_per_s", self.floor.probes_per_sec);
        j.close('}');
        j.key("scenarios");
        j.open('[');
        for r in &self.scenarios {
            j.open('{');
            j.field_str("name", r.scenario.as_str());
            j.field_str("point", &r.point);
            j.field_str("targets", &r.targets);
            j.field_str("backend", &r.backend);
            j.field_num("shards", r.shards as f64);
            j.field_num("inflight", r.inflight as f64);
            j.field_num("timeout_ms", r.timeout.as_secs_f64() * 1000.0);
            j.field_num("tries", r.tries.into());
            j.field_num("probes", r.probes as f64);
            j.field_num("elapsed_s", r.elapsed.as_secs_f64());
            j.field_num("probes_per_s", r.probes_per_sec);
            j.field_num("cpu_us_per_probe", r.cpu_us_per_probe);
            j.key("latency_us");
            j.open('{');
            j.field_num("p50", r.latency.p50_us as f64);
            j.field_num("p90", r.latency.p90_us as f64);
            j.field_num("p99", r.latency.p99_us as f64);
            j.field_num("p99_9", r.latency.p999_us as f64);
            j.field_num("max", r.latency.max_us as f64);
            j.close('}');
            j.field_num("peak_inflight", r.peak_inflight as f64);
            j.field_num("peak_rss_kib", r.peak_rss_kib as f64);
            j.field_num("floor_ratio", r.floor_ratio);
            j.key("states");
            j.open('{');
            for (s, n) in PortState::ALL.iter().zip(r.states) {
                j.field_num(s.as_str(), n as f64);
            }
            j.close('}');
            let a = &r.accuracy;
            j.key("accuracy");
            j.open('{');
            j.field_num("records_checked", a.records_checked as f64);
            j.field_num("wrong", a.wrong as f64);
            j.field_num("complete_jobs", a.complete_jobs as f64);
            j.field_num("missing", a.missing as f64);
            j.field_num("open_expected", a.open_expected as f64);
            j.field_num("open_found", a.open_found as f64);
            j.field_bool("exact", a.exact());
            j.close('}');
            j.key("notes");
            j.open('[');
            for n in &r.notes {
                j.string(n);
            }
            j.close(']');
            j.close('}');
        }
        j.close(']');
        j.key("skipped");
        j.open('[');
        for s in &self.skipped {
            j.open('{');
            j.field_str("name", s.scenario.as_str());
            j.field_str("reason", &s.reason);
            j.close('}');
        }
        j.close(']');
        j.key("capacity");
        match &self.capacity {
            Some(c) => {
                j.open('{');
                j.field_num("checks_per_s", c.checks_per_sec);
                j.field_str("basis", c.basis.as_str());
                j.field_num("watch_target_ports_60s", c.watch_ports_60s as f64);
                j.field_num("sweep_16x100_s", c.sweep_16x100.as_secs_f64());
                j.field_str("line", &c.line());
                j.close('}');
            }
            None => j.raw("null"),
        }
        j.close('}');
        j.out
    }
}

/// A minimal JSON writer: the report is small and fixed in shape, so a dependency on a
/// serialization framework would buy nothing.
#[derive(Default)]
struct Json {
    out: String,
    /// Per open container: whether it has an element yet.
    has_item: Vec<bool>,
    after_key: bool,
}

impl Json {
    fn sep(&mut self) {
        if self.after_key {
            self.after_key = false;
            return;
        }
        if let Some(has) = self.has_item.last_mut() {
            if *has {
                self.out.push(',');
            }
            *has = true;
        }
    }

    fn open(&mut self, c: char) {
        self.sep();
        self.out.push(c);
        self.has_item.push(false);
    }

    fn close(&mut self, c: char) {
        self.has_item.pop();
        self.out.push(c);
    }

    fn key(&mut self, k: &str) {
        self.string(k);
        self.out.push(':');
        self.after_key = true;
    }

    fn raw(&mut self, v: &str) {
        self.sep();
        self.out.push_str(v);
    }

    fn string(&mut self, s: &str) {
        self.sep();
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(self.out, "\\u{:04x}", c as u32);
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn field_str(&mut self, k: &str, v: &str) {
        self.key(k);
        self.string(v);
    }

    fn field_num(&mut self, k: &str, v: f64) {
        self.key(k);
        if !v.is_finite() {
            self.raw("null");
        } else if v.fract() == 0.0 && v.abs() < 9e15 {
            self.raw(&format!("{}", v as i64));
        } else {
            self.raw(&format!("{v:.3}"));
        }
    }

    fn field_bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.raw(if v { "true" } else { "false" });
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
            },
            scenarios: vec![r],
            skipped: vec![Skipped {
                scenario: Scenario::Filtered,
                reason: "needs root".into(),
            }],
            capacity: Capacity::from_rate(2000.0, Scenario::Closed),
        }
    }

    #[test]
    fn json_has_every_key() {
        let json = sample().to_json();
        for key in [
            "\"machine\":{\"cores\":2,",
            "\"floor\":{\"threads\":2,",
            "\"probes_per_s\":4000",
            "\"scenarios\":[{\"name\":\"closed\",",
            "\"cpu_us_per_probe\":3.500",
            "\"latency_us\":{\"p50\":10,\"p90\":20,\"p99\":30,\"p99_9\":40,\"max\":50}",
            "\"peak_inflight\":12",
            "\"peak_rss_kib\":4096",
            "\"floor_ratio\":0.500",
            "\"states\":{\"open\":0,\"closed\":1000,",
            "\"exact\":true",
            "\"notes\":[\"a \\\"quoted\\\" note\"]",
            "\"skipped\":[{\"name\":\"filtered\",\"reason\":\"needs root\"}]",
            "\"capacity\":{\"checks_per_s\":2000,",
            "\"watch_target_ports_60s\":120000",
            "\"sweep_16x100_s\":3276.800",
        ] {
            assert!(json.contains(key), "{key} missing from {json}");
        }
        // Brackets balance and no separator is doubled or dangling.
        assert_eq!(json.matches('{').count(), json.matches('}').count());
        assert_eq!(json.matches('[').count(), json.matches(']').count());
        assert!(!json.contains(",,") && !json.contains(",}") && !json.contains(",]"));
        assert!(!json.contains("{,") && !json.contains("[,"));
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
    }
}
