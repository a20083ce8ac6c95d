//! The benchmark harness of porthawk: `porthawk bench` calls [`run`].
//!
//! A run needs no setup. It builds its own target farm on loopback ([`Farm`]: listeners on
//! `127.a.b.x` addresses, some sending a banner, most ports closed), measures the
//! raw-syscall floor ([`measure_floor`]), then runs each [`Scenario`] on the real engine for
//! a bounded time and reports probes/s, CPU per probe, connect latency percentiles, peak
//! in-flight, peak RSS, the ratio to the floor and the accuracy against the farm's ground
//! truth ([`Report`]). Where it runs as root with `ip` and `nft`, the scenarios with filtered
//! ports run in a network namespace whose nftables rules drop those ports; elsewhere they are
//! skipped or run without filtered ports, and the report says so.
//!
//! Architecture invariant: the farm's ground truth is its own listeners. Ports it calls
//! closed had no listener on any address when it was built, so other services on the
//! machine cannot make a scan look wrong (or right).

mod farm;
mod floor;
mod identify;
mod netns;
mod report;
mod sweep;
mod sys;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use porthawk_core::ProbeSpec;
use porthawk_engine::{
    default_inflight, max_inflight, raise_nofile_limit, BackendChoice, EngineConfig, EngineError,
};

pub use farm::{Farm, FarmConfig, FarmError, BANNER, MAX_LISTENERS};
pub use floor::{measure_floor, FloorConfig, FloorResult};
pub use report::{
    median, Accuracy, Capacity, Latency, Machine, PairRun, Paired, Report, ScenarioResult, Skipped,
};

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// Closed ports only.
    Closed,
    /// Open ports whose listeners send a banner.
    Banner,
    /// Mostly closed, some open and, where privileged, a few filtered ports.
    Mix,
    /// Dropped ports with a short timeout (needs a network namespace).
    Filtered,
    /// Closed ports with 1 to `cores` shards.
    Scaling,
    /// Closed ports with in-flight limits from 64 to 16384.
    Inflight,
    /// `--identify`'s probe plan on ports that do not speak first.
    Identify,
}

impl Scenario {
    /// Every scenario, in the order a run measures them.
    pub const ALL: [Scenario; 7] = [
        Scenario::Closed,
        Scenario::Banner,
        Scenario::Mix,
        Scenario::Filtered,
        Scenario::Scaling,
        Scenario::Inflight,
        Scenario::Identify,
    ];

    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Closed => "closed",
            Scenario::Banner => "banner",
            Scenario::Mix => "mix",
            Scenario::Filtered => "filtered",
            Scenario::Scaling => "scaling",
            Scenario::Inflight => "inflight",
            Scenario::Identify => "identify",
        }
    }

    /// One line on what the scenario measures.
    pub fn description(self) -> &'static str {
        match self {
            Scenario::Closed => "closed ports",
            Scenario::Banner => "open ports whose listeners send a banner",
            Scenario::Mix => "a fleet-like mix: mostly closed, some open, a few filtered",
            Scenario::Filtered => "dropped ports, short timeout",
            Scenario::Scaling => "closed ports, 1 to all cores",
            Scenario::Inflight => "closed ports, throughput against in-flight",
            Scenario::Identify => "--identify on silent, closing and own-protocol-only ports",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scenario '{s}': expected closed, banner, mix, filtered, scaling, inflight or identify"
                )
            })
    }
}

/// How to run the bench.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The scenarios to run (each once, in [`Scenario::ALL`] order).
    pub scenarios: Vec<Scenario>,
    /// How long each scenario runs; scenarios with several points (scaling, inflight) split
    /// it between them, at least 1 s each (or the whole duration, if shorter).
    pub duration: Duration,
    /// Shard threads, and threads of the floor loop (default: the number of cores).
    pub shards: usize,
    /// Probes in flight across shards (default: from `RLIMIT_NOFILE`, as `porthawk scan`).
    pub inflight: Option<usize>,
    /// The engine backend.
    pub backend: BackendChoice,
    /// io_uring's sockets as direct descriptors or plain ones (`None`: direct where the
    /// kernel can), as `EngineConfig::direct_fds`.
    pub direct_fds: Option<bool>,
    /// The most probes one measured point makes; a second bound besides the duration.
    pub max_probes: u64,
    /// The connect timeout of the scenarios with filtered ports.
    pub filtered_timeout: Duration,
    /// Whether scenarios may create a network namespace (when privileged).
    pub use_netns: bool,
    /// Runs of the closed scenario, each right after a run of the floor (at least 1): the
    /// report gives the medians and the median of the pairs' ratios.
    pub pairs: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            scenarios: Scenario::ALL.to_vec(),
            duration: Duration::from_secs(3),
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            inflight: None,
            backend: BackendChoice::Auto,
            direct_fds: None,
            max_probes: 50_000_000,
            filtered_timeout: Duration::from_millis(200),
            use_netns: true,
            pairs: 5,
        }
    }
}

/// Why a bench run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A zero or impossible setting.
    #[error("invalid bench setting: {0}")]
    Config(String),
    /// The farm could not be built.
    #[error("cannot build the target farm")]
    Farm(#[from] FarmError),
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A target space could not be built from the farm.
    #[error("cannot build the target space")]
    Space(#[from] porthawk_core::SpaceError),
    /// The engine's result channel closed during a sweep.
    #[error("the engine stopped during a sweep")]
    EngineStopped,
    /// Jobs did not end long after they were cancelled.
    #[error("a sweep did not end: {0}")]
    Stalled(String),
    /// Anything else that should not happen.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Closed-port farm shared by the floor, `closed`, `scaling` and `inflight`.
const CLOSED_FARM: FarmConfig = FarmConfig {
    hosts: 64,
    open_ports: 0,
    banner_ports: 0,
    closed_ports: 1000,
    filtered_ports: 0,
    accept_threads: 1,
};

/// Open-port farm of `banner`: 1024 listeners, all sending a banner.
const BANNER_FARM: FarmConfig = FarmConfig {
    hosts: 64,
    open_ports: 16,
    banner_ports: 16,
    closed_ports: 0,
    filtered_ports: 0,
    accept_threads: 2,
};

/// In-flight limits of the `inflight` scenario.
const INFLIGHT_POINTS: [usize; 5] = [64, 256, 1024, 4096, 16384];

/// Runs the configured scenarios and returns the report. `progress` receives one line per
/// step (the CLI prints them to stderr).
pub fn run(config: &BenchConfig, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    let nofile = raise_nofile_limit();
    let ctx = Ctx {
        config: config.clone(),
        inflight: checked_inflight(config, nofile)?,
        nofile,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    progress("building the target farm");
    let closed_farm = Farm::start(&CLOSED_FARM)?;
    let floor = ctx.floor(&closed_farm, progress);

    let mut scenarios = config.scenarios.clone();
    scenarios.sort();
    scenarios.dedup();
    let mut results: Vec<ScenarioResult> = Vec::new();
    let mut skipped = Vec::new();
    let mut paired = None;
    for scenario in scenarios {
        progress(&format!("scenario {scenario}: {}", scenario.description()));
        if scenario == Scenario::Closed {
            let (point, pairs) = ctx.closed_paired(&closed_farm, progress)?;
            report_points(scenario, std::slice::from_ref(&point), progress);
            progress(&pairs.line());
            results.push(point);
            paired = Some(pairs);
            continue;
        }
        match ctx.scenario(scenario, &closed_farm, &floor, progress)? {
            Outcome::Points(points) => {
                report_points(scenario, &points, progress);
                results.extend(points);
            }
            Outcome::Skipped(s) => skipped.push(s),
        }
    }
    drop(closed_farm);
    let mut report = ctx.report(floor, results, skipped);
    report.paired = paired;
    Ok(report)
}

/// The in-flight limit of the run: the configured one if the descriptor limit allows it,
/// else the default for that limit; an error for a zero or impossible setting.
fn checked_inflight(config: &BenchConfig, nofile: u64) -> Result<usize, BenchError> {
    if config.duration.is_zero()
        || config.shards == 0
        || config.max_probes == 0
        || config.pairs == 0
    {
        return Err(BenchError::Config(
            "duration, shards, max probes and pairs must be more than zero".into(),
        ));
    }
    match config.inflight {
        Some(n) if n > max_inflight(nofile) => Err(BenchError::Config(format!(
            "in-flight {n} is more than the file descriptor limit allows ({})",
            max_inflight(nofile)
        ))),
        Some(0) => Err(BenchError::Config("in-flight must be at least 1".into())),
        Some(n) => Ok(n),
        None => Ok(default_inflight(nofile)),
    }
}

/// One progress line per measured point: its rate, its share of the floor, its accuracy.
fn report_points(scenario: Scenario, points: &[ScenarioResult], progress: &mut dyn FnMut(&str)) {
    for r in points {
        progress(&format!(
            "{scenario}{}{}: {:.0} probes/s, {:.2} of the floor, {}",
            if r.point.is_empty() { "" } else { " " },
            r.point,
            r.probes_per_sec,
            r.floor_ratio,
            if r.accuracy.exact() {
                "every result right"
            } else {
                "RESULTS DIFFER FROM THE GROUND TRUTH"
            }
        ));
    }
}

/// What one scenario gave: its measured points, or why it could not run here.
enum Outcome {
    Points(Vec<ScenarioResult>),
    Skipped(Skipped),
}

/// The settings every point shares.
#[derive(Clone)]
struct Ctx {
    config: BenchConfig,
    inflight: usize,
    nofile: u64,
    cores: usize,
}

impl Ctx {
    /// Measures the raw-syscall floor against the closed farm.
    fn floor(&self, closed_farm: &Farm, progress: &mut dyn FnMut(&str)) -> FloorResult {
        let config = &self.config;
        progress(&format!(
            "measuring the raw-syscall floor ({} threads, {:.1}s)",
            config.shards,
            config.duration.as_secs_f64()
        ));
        let floor = self.floor_run(closed_farm);
        progress(&format!("floor: {:.0} probes/s", floor.probes_per_sec));
        floor
    }

    /// One run of the floor against the closed farm.
    fn floor_run(&self, closed_farm: &Farm) -> FloorResult {
        let config = &self.config;
        let targets: Vec<SocketAddr> = closed_farm
            .hosts()
            .iter()
            .flat_map(|&h| {
                closed_farm
                    .closed_ports()
                    .iter()
                    .map(move |&p| SocketAddr::new(IpAddr::V4(h), p))
            })
            .collect();
        measure_floor(
            &FloorConfig {
                threads: config.shards,
                duration: config.duration,
                max_probes: config.max_probes,
            },
            &targets,
        )
    }

    /// The closed scenario in `pairs` runs, each right after a run of the floor. The point
    /// reported is the run with the median rate, with the median of the pairs' ratios as
    /// its floor ratio and the accuracy of every run added up.
    fn closed_paired(
        &self,
        closed_farm: &Farm,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(ScenarioResult, Paired), BenchError> {
        let pairs = self.config.pairs.max(1);
        let mut runs = Vec::with_capacity(pairs);
        let mut points = Vec::with_capacity(pairs);
        for i in 1..=pairs {
            let floor = self.floor_run(closed_farm);
            let r = self.closed_point(
                Scenario::Closed,
                String::new(),
                closed_farm,
                self.config.shards,
                self.inflight,
                self.config.duration,
                &floor,
            )?;
            progress(&format!(
                "closed, pair {i}/{pairs}: floor {:.0} probes/s, porthawk {:.0} probes/s",
                floor.probes_per_sec, r.probes_per_sec
            ));
            runs.push(PairRun {
                floor_rate: floor.probes_per_sec,
                floor_cpu_us: floor.cpu_us_per_probe(),
                rate: r.probes_per_sec,
                cpu_us: r.cpu_us_per_probe,
            });
            points.push(r);
        }
        let paired = Paired {
            threads: self.config.shards,
            runs,
        };
        let mut accuracy = Accuracy::default();
        for p in &points {
            let a = &p.accuracy;
            accuracy.records_checked += a.records_checked;
            accuracy.wrong += a.wrong;
            accuracy.complete_jobs += a.complete_jobs;
            accuracy.missing += a.missing;
            accuracy.open_expected += a.open_expected;
            accuracy.open_found += a.open_found;
        }
        points.sort_by(|a, b| a.probes_per_sec.total_cmp(&b.probes_per_sec));
        let mut point = points.swap_remove(points.len() / 2);
        point.floor_ratio = paired.rate_ratio();
        point.accuracy = accuracy;
        if pairs > 1 {
            point.notes.push(format!(
                "the median of {pairs} runs, each right after a run of the floor; floor ratio: the median of the pairs' ratios; accuracy: all runs"
            ));
        }
        Ok((point, paired))
    }

    /// Runs one scenario.
    fn scenario(
        &self,
        scenario: Scenario,
        closed_farm: &Farm,
        floor: &FloorResult,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Outcome, BenchError> {
        let points = match scenario {
            Scenario::Closed => vec![self.closed_paired(closed_farm, progress)?.0],
            Scenario::Banner => vec![self.banner(floor)?],
            Scenario::Mix => vec![self.mix(floor)?],
            Scenario::Filtered => match self.netns_point(scenario, floor) {
                Ok(r) => vec![r],
                Err(NetnsOutcome::Failed(e)) => return Err(e),
                Err(NetnsOutcome::Unavailable(why)) => {
                    progress(&format!("skipping filtered: network namespace {why}"));
                    return Ok(Outcome::Skipped(Skipped {
                        scenario,
                        reason: format!("network namespace {why}"),
                    }));
                }
            },
            Scenario::Scaling => self.scaling(closed_farm, floor, progress)?,
            Scenario::Inflight => self.inflight_points(closed_farm, floor, progress)?,
            Scenario::Identify => identify::points(
                &EngineConfig {
                    shards: self.config.shards.min(self.inflight).max(1),
                    inflight: self.inflight,
                    backend: self.config.backend,
                    ..EngineConfig::default()
                },
                |shards| floor.rate_for(shards),
            )?,
        };
        Ok(Outcome::Points(points))
    }

    /// One point of closed ports on the closed farm.
    #[allow(clippy::too_many_arguments)]
    fn closed_point(
        &self,
        scenario: Scenario,
        point: String,
        closed_farm: &Farm,
        shards: usize,
        inflight: usize,
        duration: Duration,
        floor: &FloorResult,
    ) -> Result<ScenarioResult, BenchError> {
        self.point(
            scenario,
            point,
            closed_farm,
            closed_farm.closed_ports(),
            shards,
            inflight,
            ProbeSpec::default(),
            duration,
            floor,
        )
    }

    /// `banner`: open ports that send a banner, read by every probe.
    fn banner(&self, floor: &FloorResult) -> Result<ScenarioResult, BenchError> {
        let farm = Farm::start(&BANNER_FARM)?;
        let mut r = self.point(
            Scenario::Banner,
            String::new(),
            &farm,
            farm.open_ports(),
            self.config.shards,
            self.inflight,
            ProbeSpec {
                dialog: Some(std::sync::Arc::new(porthawk_core::Dialog::banner())),
                ..ProbeSpec::default()
            },
            self.config.duration,
            floor,
        )?;
        r.notes.push(
            "each probe connects, reads the listener's banner, and closes with an RST".into(),
        );
        Ok(r)
    }

    /// `mix`: in a network namespace with filtered ports where one can be made, else on
    /// loopback without them (and the point says so).
    fn mix(&self, floor: &FloorResult) -> Result<ScenarioResult, BenchError> {
        let why = match self.netns_point(Scenario::Mix, floor) {
            Ok(r) => return Ok(r),
            Err(NetnsOutcome::Failed(e)) => return Err(e),
            Err(NetnsOutcome::Unavailable(why)) => why,
        };
        let farm = Farm::start(&mix_farm(0))?;
        let mut ports = farm.closed_ports().to_vec();
        ports.extend(farm.open_ports());
        let mut r = self.point(
            Scenario::Mix,
            String::new(),
            &farm,
            &ports,
            self.config.shards,
            self.inflight,
            self.filtered_spec(),
            self.config.duration,
            floor,
        )?;
        r.notes
            .push(format!("no filtered ports: network namespace {why}"));
        Ok(r)
    }

    /// `scaling`: closed ports with 1 shard up to as many as cores.
    fn scaling(
        &self,
        closed_farm: &Farm,
        floor: &FloorResult,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<ScenarioResult>, BenchError> {
        let points = shard_points(self.cores.max(self.config.shards));
        let duration = split(self.config.duration, points.len());
        let mut results = Vec::with_capacity(points.len());
        for shards in points {
            progress(&format!("scaling: {shards} shards"));
            results.push(self.closed_point(
                Scenario::Scaling,
                format!("shards={shards}"),
                closed_farm,
                shards,
                self.inflight,
                duration,
                floor,
            )?);
        }
        Ok(results)
    }

    /// `inflight`: closed ports at each in-flight limit the descriptor limit allows.
    fn inflight_points(
        &self,
        closed_farm: &Farm,
        floor: &FloorResult,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<ScenarioResult>, BenchError> {
        let points: Vec<usize> = INFLIGHT_POINTS
            .into_iter()
            .filter(|&n| n <= max_inflight(self.nofile))
            .collect();
        if points.len() < INFLIGHT_POINTS.len() {
            progress("inflight: the file descriptor limit leaves out the largest points");
        }
        let duration = split(self.config.duration, points.len());
        let mut results = Vec::with_capacity(points.len());
        for n in points {
            progress(&format!("inflight: {n}"));
            results.push(self.closed_point(
                Scenario::Inflight,
                format!("inflight={n}"),
                closed_farm,
                self.config.shards,
                n,
                duration,
                floor,
            )?);
        }
        Ok(results)
    }

    /// The report of the run: the machine, the points, and the capacity line from the first
    /// exact `mix` or `closed` point.
    fn report(
        &self,
        floor: FloorResult,
        results: Vec<ScenarioResult>,
        skipped: Vec<Skipped>,
    ) -> Report {
        let capacity = [Scenario::Mix, Scenario::Closed].into_iter().find_map(|s| {
            results
                .iter()
                .find(|r| r.scenario == s && r.accuracy.exact())
                .and_then(|r| Capacity::from_rate(r.probes_per_sec, s))
        });
        Report {
            machine: Machine {
                cores: self.cores,
                backend: results
                    .first()
                    .map_or_else(|| "none".into(), |r| r.backend.clone()),
                kernel: sys::kernel_release(),
                nofile: self.nofile,
            },
            duration: self.config.duration,
            floor,
            scenarios: results,
            skipped,
            paired: None,
            capacity,
        }
    }
}

enum NetnsOutcome {
    /// No namespace here (unprivileged, no `ip` or `nft`): skip or degrade the scenario.
    Unavailable(String),
    /// The scenario ran in the namespace and failed.
    Failed(BenchError),
}

fn mix_farm(filtered: u16) -> FarmConfig {
    FarmConfig {
        hosts: 32,
        open_ports: 4,
        banner_ports: 2,
        closed_ports: 1000,
        filtered_ports: filtered,
        accept_threads: 1,
    }
}

impl Ctx {
    fn filtered_spec(&self) -> ProbeSpec {
        ProbeSpec {
            connect_timeout: self.config.filtered_timeout,
            ..ProbeSpec::default()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn point(
        &self,
        scenario: Scenario,
        point: String,
        farm: &Farm,
        ports: &[u16],
        shards: usize,
        inflight: usize,
        probe: ProbeSpec,
        duration: Duration,
        floor: &FloorResult,
    ) -> Result<ScenarioResult, BenchError> {
        let engine = EngineConfig {
            shards: shards.min(inflight).max(1),
            inflight,
            backend: self.config.backend,
            direct_fds: self.config.direct_fds,
            ..EngineConfig::default()
        };
        let m = sweep::measure(&sweep::PointSpec {
            farm,
            ports: ports.to_vec(),
            engine,
            probe: probe.clone(),
            duration,
            max_probes: self.config.max_probes,
        })?;
        let rate = m.probes as f64 / m.elapsed.as_secs_f64().max(1e-9);
        let floor_rate = floor.rate_for(m.shards);
        let mut notes = Vec::new();
        for e in m.errors.iter().take(3) {
            notes.push(format!("engine error: {e}"));
        }
        let open = ports
            .iter()
            .filter(|p| farm.open_ports().contains(p))
            .count();
        let filtered = ports
            .iter()
            .filter(|p| farm.filtered_ports().contains(p))
            .count();
        let mut targets = format!("{} hosts × {} ports", farm.hosts().len(), ports.len());
        if open > 0 || filtered > 0 {
            targets.push_str(&format!(
                " ({open} open, {filtered} filtered, {} closed)",
                ports.len() - open - filtered
            ));
        }
        Ok(ScenarioResult {
            scenario,
            point,
            targets,
            backend: m.backend,
            shards: m.shards,
            inflight: m.inflight,
            timeout: probe.connect_timeout,
            tries: probe.tries,
            probes: m.probes,
            elapsed: m.elapsed,
            probes_per_sec: rate,
            cpu_us_per_probe: if m.probes == 0 {
                0.0
            } else {
                m.cpu.as_secs_f64() * 1e6 / m.probes as f64
            },
            latency: m.latency,
            peak_inflight: m.peak_inflight,
            peak_rss_kib: m.peak_rss_kib,
            floor_ratio: if floor_rate > 0.0 {
                rate / floor_rate
            } else {
                0.0
            },
            states: m.states,
            accuracy: m.accuracy,
            shard_busy: m.shard_busy,
            windows: m.windows,
            notes,
        })
    }

    /// Runs `mix` or `filtered` inside a fresh network namespace whose nftables rules drop
    /// the farm's filtered ports.
    fn netns_point(
        &self,
        scenario: Scenario,
        floor: &FloorResult,
    ) -> Result<ScenarioResult, NetnsOutcome> {
        if !self.config.use_netns {
            return Err(NetnsOutcome::Unavailable("disabled".into()));
        }
        let ns = netns::Netns::create().map_err(NetnsOutcome::Unavailable)?;
        let name = ns.name().to_string();
        let ctx = self.clone();
        let floor = floor.clone();
        let outcome = ns.run(move || -> Result<ScenarioResult, NetnsOutcome> {
            let (farm_config, with_open) = match scenario {
                Scenario::Filtered => {
                    // Enough dropped targets that one job covers the in-flight limit, so a
                    // job finishes within a timeout × tries or two.
                    let hosts = ctx.inflight.div_ceil(256).clamp(1, 64) as u8;
                    (
                        FarmConfig {
                            hosts,
                            open_ports: 0,
                            banner_ports: 0,
                            closed_ports: 0,
                            filtered_ports: 256,
                            accept_threads: 1,
                        },
                        false,
                    )
                }
                _ => (mix_farm(16), true),
            };
            let farm = Farm::start(&farm_config).map_err(|e| NetnsOutcome::Failed(e.into()))?;
            netns::drop_ports(&name, farm.filtered_ports()).map_err(NetnsOutcome::Unavailable)?;
            let mut ports = farm.filtered_ports().to_vec();
            if with_open {
                ports.extend(farm.closed_ports());
                ports.extend(farm.open_ports());
            }
            let mut r = ctx
                .point(
                    scenario,
                    String::new(),
                    &farm,
                    &ports,
                    ctx.config.shards,
                    ctx.inflight,
                    ctx.filtered_spec(),
                    ctx.config.duration,
                    &floor,
                )
                .map_err(NetnsOutcome::Failed)?;
            r.notes
                .push("in a network namespace; filtered ports dropped by nftables on lo".into());
            if ctx.nofile < 4096 {
                r.notes.push(format!(
                    "RLIMIT_NOFILE {} caps in-flight, and with it the filtered rate",
                    ctx.nofile
                ));
            }
            Ok(r)
        });
        match outcome {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(e),
            Err(why) => Err(NetnsOutcome::Unavailable(why)),
        }
    }
}

/// 1, 2, 4, ... up to `cores`, and `cores` itself.
fn shard_points(cores: usize) -> Vec<usize> {
    let mut points: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
        .take_while(|&n| n < cores)
        .collect();
    points.push(cores.max(1));
    points
}

/// A share of `total` for one of `points` points: at least 1 s, or `total` if shorter.
fn split(total: Duration, points: usize) -> Duration {
    (total / points.max(1) as u32).max(total.min(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use porthawk_core::PortState;
    use std::time::Instant;

    #[test]
    fn scenario_names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(s.as_str().parse::<Scenario>(), Ok(s));
        }
        assert!("fast".parse::<Scenario>().is_err());
    }

    #[test]
    fn points_are_bounded() {
        assert_eq!(shard_points(1), vec![1]);
        assert_eq!(shard_points(2), vec![1, 2]);
        assert_eq!(shard_points(6), vec![1, 2, 4, 6]);
        assert_eq!(shard_points(8), vec![1, 2, 4, 8]);
        assert_eq!(split(Duration::from_secs(3), 5), Duration::from_secs(1));
        assert_eq!(
            split(Duration::from_millis(500), 5),
            Duration::from_millis(500)
        );
        assert_eq!(split(Duration::from_secs(10), 2), Duration::from_secs(5));
    }

    #[test]
    fn closed_smoke_run_is_sane_and_bounded() {
        let config = BenchConfig {
            scenarios: vec![Scenario::Closed],
            duration: Duration::from_secs(1),
            pairs: 2,
            ..BenchConfig::default()
        };
        let mut lines = Vec::new();
        let started = Instant::now();
        let report = run(&config, &mut |l: &str| lines.push(l.to_string())).unwrap();
        // A hang guard, not a speed assertion.
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(!lines.is_empty());
        assert!(report.floor.probes_per_sec > 0.0);
        let [r] = &report.scenarios[..] else {
            panic!("one result expected: {report:?}");
        };
        assert_eq!(r.scenario, Scenario::Closed);
        assert!(r.probes > 0 && r.probes_per_sec > 0.0, "{r:?}");
        assert!(r.cpu_us_per_probe > 0.0, "{r:?}");
        assert!(r.floor_ratio > 0.0 && r.floor_ratio < 2.0, "{r:?}");
        assert!(r.latency.max_us >= r.latency.p50_us);
        assert!(r.peak_inflight > 0 && r.peak_rss_kib > 0, "{r:?}");
        assert!(r.accuracy.exact(), "{:?}", r.accuracy);
        assert_eq!(r.states[PortState::Closed.index()], r.probes);
        assert_eq!(r.shard_busy.len(), r.shards, "{r:?}");
        assert!(r.shard_busy.iter().all(|&b| b > 0.0 && b < 1.5), "{r:?}");
        assert_eq!(r.windows.len(), r.shards, "{r:?}");
        assert!(r.windows.iter().all(|&w| w > 0 && w <= r.inflight), "{r:?}");
        let paired = report
            .paired
            .as_ref()
            .expect("the closed scenario runs paired");
        assert_eq!(paired.runs.len(), 2);
        assert!(paired
            .runs
            .iter()
            .all(|p| p.floor_rate > 0.0 && p.rate > 0.0));
        assert!(
            paired.rate_ratio() > 0.0 && paired.cpu_ratio() > 0.0,
            "{paired:?}"
        );
        assert!(report.capacity.is_some());
        assert_ne!(report.machine.backend, "none");
        let json = report.to_json();
        assert!(json.contains("\"name\":\"closed\""), "{json}");
    }

    #[test]
    fn filtered_and_mix_run_in_a_namespace_or_are_skipped() {
        let config = BenchConfig {
            scenarios: vec![Scenario::Filtered, Scenario::Mix],
            duration: Duration::from_secs(1),
            ..BenchConfig::default()
        };
        let started = Instant::now();
        let report = run(&config, &mut |_: &str| {}).unwrap();
        assert!(started.elapsed() < Duration::from_secs(60));
        if sys::is_root() && report.skipped.is_empty() {
            assert_eq!(report.scenarios.len(), 2, "{report:?}");
            for r in &report.scenarios {
                assert!(r.accuracy.exact(), "{r:?}");
                assert!(r.states[PortState::Filtered.index()] > 0, "{r:?}");
            }
        } else {
            // CI=true runs as root with `ip` and `nft` installed: a skip there is a failure.
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "CI=true and the filtered scenario was skipped: {report:?}"
            );
            assert_eq!(report.skipped.len(), 1);
            assert_eq!(report.skipped[0].scenario, Scenario::Filtered);
        }
    }
}
