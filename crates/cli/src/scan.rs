//! `porthawk scan`: one sweep, from flags to output.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use porthawk_core::{is_local_errno, PortState, ProbeRecord, TargetSpace, XmlRun};
use porthawk_engine::{
    default_inflight, max_inflight, raise_nofile_limit, result_channel, Backend, Engine,
    EngineConfig, Job, JobHandle,
};

use crate::args::ScanArgs;
use crate::output::Output;
use crate::targets;

/// Result batches the engine may queue for the output before its shards wait.
const RESULT_BATCHES: usize = 64;

/// Exit code after Ctrl-C, as shells report a SIGINT death.
const EXIT_INTERRUPTED: u8 = 130;

/// Exit code of a finished sweep in which some probe ended in a local resource error
/// (`porthawk_core::is_local_errno`): the results are incomplete through our own fault.
const EXIT_LOCAL_ERROR: u8 = 1;

pub fn run(args: ScanArgs) -> Result<ExitCode> {
    let space = Arc::new(target_space(&args)?);
    let spec = crate::probe::spec(&args.probe, args.timeout, args.tries)?;
    let config = engine_config(&args, space.len())?;

    let mut sink: Box<dyn Write> = match &args.output {
        Some(path) => {
            Box::new(BufWriter::new(File::create(path).with_context(|| {
                format!("cannot create output file '{}'", path.display())
            })?))
        }
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let dest = match &args.output {
        Some(path) => format!("'{}'", path.display()),
        None => "standard output".to_string(),
    };
    let mut output = Output::new(args.format, &mut sink, dest)?;

    let engine = Engine::start(&config)?;
    if let Some(reason) = engine.fallback_reason() {
        eprintln!("porthawk: io_uring not used, falling back to epoll: {reason}");
    }
    let (result_sink, results) = result_channel(RESULT_BATCHES);
    let job = engine.submit(Job {
        id: engine.next_job_id(),
        positions: 0..space.len(),
        space: Arc::clone(&space),
        spec,
        rate: args.rate,
        sink: result_sink,
    });
    let interrupted = cancel_on_ctrl_c(&job)?;
    let progress = progress_bar(space.len());

    let started = Instant::now();
    let start_unix = crate::output::unix_now();
    let mut tally = Tally::default();
    let cancelled = loop {
        let batch = results
            .recv()
            .context("the engine stopped before the sweep finished")?;
        for r in &batch.records {
            tally.count(r);
            output.seen(r);
            if args.all || r.state == PortState::Open {
                output.record(r, space.name_of(r.ip))?;
            }
        }
        if let Some(bar) = &progress {
            bar.set_position(tally.done);
            let rate = tally.done as f64 / started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!("{rate:.0}/s, {} open", tally.counts[0]));
        }
        if batch.job_done {
            break batch.cancelled;
        }
    };
    let elapsed = started.elapsed();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    output.set_run(XmlRun {
        args: std::env::args().collect::<Vec<_>>().join(" "),
        version: env!("CARGO_PKG_VERSION").to_string(),
        start_unix,
        end_unix: crate::output::unix_now(),
        elapsed_secs: elapsed.as_secs_f64(),
        ports: space.ports().as_slice().to_vec(),
        hosts_total: u64::try_from(space.hosts().len()).unwrap_or(u64::MAX),
        answered: Default::default(),
        error: if interrupted.load(Ordering::SeqCst) || cancelled {
            Some("interrupted".into())
        } else if tally.local_errors > 0 {
            Some(format!(
                "{} probes failed for lack of local resources",
                tally.local_errors
            ))
        } else {
            None
        },
    });
    output.finish()?;
    drop(sink);

    print_summary(&engine, &job, &tally, space.len(), elapsed, cancelled);
    if interrupted.load(Ordering::SeqCst) || cancelled {
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    if tally.local_errors > 0 {
        eprintln!(
            "porthawk: {} probes failed for lack of local resources (descriptors, buffers, memory or local ports): their results say nothing about the targets",
            tally.local_errors
        );
        return Ok(ExitCode::from(EXIT_LOCAL_ERROR));
    }
    Ok(ExitCode::SUCCESS)
}

/// The targets and ports of the command line, less every exclusion, in a seeded order.
fn target_space(args: &ScanArgs) -> Result<TargetSpace> {
    let (exclude_targets, exclude_port_tokens) = targets::split_excludes(&args.exclude);
    let exclude_files = args
        .exclude_file
        .iter()
        .map(|p| targets::read_exclude_file(p))
        .collect::<Result<Vec<_>>>()?;
    let hosts = targets::hosts(
        &args.targets,
        &exclude_targets,
        &exclude_files,
        args.family.choice(),
    )?;
    let mut excluded_ports: Vec<&str> = exclude_port_tokens.iter().map(|t| &t[1..]).collect();
    excluded_ports.extend(args.exclude_ports.as_deref());
    excluded_ports.extend(
        exclude_files
            .iter()
            .flat_map(|f| f.ports.iter().map(String::as_str)),
    );
    let ports = targets::ports(args.ports.as_deref(), &excluded_ports)?;
    let seed = args.seed.unwrap_or_else(random_seed);
    TargetSpace::new(hosts, ports, seed).context("nothing to scan")
}

/// The engine for a sweep of `total` probes: in-flight from the flags or the descriptor
/// limit (raised first), no more shards than probes or in-flight slots.
fn engine_config(args: &ScanArgs, total: u64) -> Result<EngineConfig> {
    let nofile = raise_nofile_limit();
    let inflight = match args.inflight {
        Some(n) if n as usize > max_inflight(nofile) => bail!(
            "--inflight {n} is more than the file descriptor limit allows ({})",
            max_inflight(nofile)
        ),
        Some(n) => n as usize,
        None => default_inflight(nofile),
    };
    let mut config = EngineConfig {
        inflight,
        backend: args.backend,
        direct_fds: args.fd_path.direct_fds(),
        ..EngineConfig::default()
    };
    if let Some(shards) = args.shards {
        config.shards = shards.into();
    }
    // More shards than probes would leave threads idle; fewer in flight than shards too.
    config.shards = config
        .shards
        .min(total.max(1) as usize)
        .min(config.inflight);
    Ok(config)
}

/// Ctrl-C cancels the job (probes in flight still finish and are reported); a second one
/// exits at once. The flag says whether it was pressed.
fn cancel_on_ctrl_c(job: &JobHandle) -> Result<Arc<AtomicBool>> {
    let job = job.clone();
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C: the user does not want to wait for in-flight probes.
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        job.cancel();
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(interrupted)
}

/// A progress bar on a terminal; nothing when stderr is a file or a pipe.
fn progress_bar(total: u64) -> Option<ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} probes, {msg}, ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// What a sweep found so far.
#[derive(Default)]
struct Tally {
    /// Records per state, in `PortState::ALL` order.
    counts: [u64; PortState::ALL.len()],
    /// Records received.
    done: u64,
    /// Probes that ended in a shortage on this machine (EMFILE, ENOBUFS ...): no verdict.
    local_errors: u64,
}

impl Tally {
    fn count(&mut self, r: &ProbeRecord) {
        self.counts[r.state.index()] += 1;
        self.done += 1;
        self.local_errors +=
            u64::from(r.state == PortState::Error && r.errno.is_some_and(is_local_errno));
    }
}

/// The summary line on stderr (counts per state, rate, backend, latency), then any backend
/// failure.
fn print_summary(
    engine: &Engine,
    job: &JobHandle,
    tally: &Tally,
    total: u64,
    elapsed: Duration,
    cancelled: bool,
) {
    let stats = job.stats();
    let rate = tally.done as f64 / elapsed.as_secs_f64().max(1e-9);
    let per_state: Vec<String> = PortState::ALL
        .iter()
        .map(|s| format!("{s} {}", tally.counts[s.index()]))
        .collect();
    let p99 = stats.rtt_us.value_at_quantile(0.99);
    eprintln!(
        "porthawk: {} of {total} probes in {:.2}s ({:.0} probes/s): {}; backend {}{}, {} shards, {} in flight, connect p99 {:.1}ms{}",
        tally.done,
        elapsed.as_secs_f64(),
        rate,
        per_state.join(", "),
        engine.backend(),
        fd_path_note(engine),
        engine.shards(),
        engine.inflight(),
        p99 as f64 / 1000.0,
        if cancelled { "; interrupted" } else { "" },
    );
    for e in &stats.errors {
        eprintln!("porthawk: backend failure: {e}");
    }
}

/// Which descriptors io_uring holds (` with direct fds`, ` with plain fds`, and why not
/// direct when it fell back); nothing on epoll, which has plain ones only.
fn fd_path_note(engine: &Engine) -> String {
    match (engine.backend(), engine.fd_path_reason()) {
        (Backend::Epoll, _) => String::new(),
        (Backend::Uring, None) => format!(" with {} fds", engine.fd_path()),
        (Backend::Uring, Some(why)) => format!(" with {} fds (direct: {why})", engine.fd_path()),
    }
}

/// A seed that differs from run to run, without a random number crate: the standard
/// library's hasher keys are random per process.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}
