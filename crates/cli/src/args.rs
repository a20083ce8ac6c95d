//! The command-line interface: the flags of every subcommand.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use porthawk_core::AddressMode;
use porthawk_engine::BackendChoice;

/// porthawk: check TCP ports at scale and keep watch over them.
#[derive(Debug, Parser)]
#[command(name = "porthawk", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// How log lines look on standard error (what to log: the RUST_LOG environment variable,
    /// default info for porthawk and warn for everything else).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Formats of the log on standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event, for people.
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sweep targets × ports once and report what answers.
    Scan(ScanArgs),
    /// Check one service, as a Nagios/Icinga plugin: exit 0 OK, 1 WARNING, 2 CRITICAL,
    /// 3 UNKNOWN, and one status line with performance data.
    Check(CheckArgs),
    /// Measure this machine's capacity on a loopback target farm it builds itself.
    Bench(BenchArgs),
    /// Serve the HTTP API: sweeps over HTTP, results in an embedded store, metrics.
    Serve(ServeArgs),
    /// Compare two sweeps' results (jsonl or nmap XML files): one JSON line per opened, closed
    /// or changed port; exit 0 when nothing changed, 1 when something did, 2 on an error.
    Diff(DiffArgs),
    /// Run a fleet agent: take slices of sweeps from NATS JetStream, probe them here, publish
    /// the results (exit 0 after a clean stop on SIGTERM, 1 on a runtime failure).
    Agent(AgentArgs),
    /// Fleet administration: nkey users for agents and the coordinator.
    Fleet(FleetArgs),
    /// Print a shell completion script on standard output (e.g. `porthawk completions bash
    /// > /etc/bash_completion.d/porthawk`).
    Completions(CompletionsArgs),
    /// Print porthawk's manual page (roff) on standard output (e.g. `porthawk man | man -l -`).
    Man,
}

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The NATS server (`nats://HOST:4222`); off this host it needs --nkey and TLS.
    #[arg(long, value_name = "URL")]
    pub nats: String,

    /// A pool to take work from (repeatable).
    #[arg(long = "pool", value_name = "NAME", required = true)]
    pub pools: Vec<String>,

    /// This agent's name, as in its NATS user's permissions [default: the host name].
    #[arg(long, value_name = "ID")]
    pub name: Option<String>,

    /// The file holding this agent's nkey seed (from `porthawk fleet add-agent`).
    #[arg(long, value_name = "FILE")]
    pub nkey: Option<PathBuf>,

    /// CA certificate(s) that signed the NATS server's certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// This agent's client certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Shard threads [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub shards: Option<u16>,

    /// Probes in flight across shards [default: from the file descriptor limit].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub inflight: Option<u64>,

    /// The most probes started per second in each running slice (a slice's own cap, if lower,
    /// wins; with --slices N the agent may start up to N times this).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,

    /// Slices run at once.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub slices: u16,

    /// After SIGTERM, how long running slices may take to finish before they are given back.
    #[arg(long, default_value = "30s", value_parser = duration, value_name = "DURATION")]
    pub grace: Duration,

    /// Talk to a NATS server off this host without nkey and TLS.
    #[arg(long)]
    pub allow_insecure: bool,

    /// The I/O backend: io_uring where available, or epoll.
    #[arg(long, default_value = "auto", value_parser = backend, value_name = "auto|uring|epoll")]
    pub backend: BackendChoice,

    /// Registry heartbeat interval (tests shorten it).
    #[arg(long, default_value = "10s", value_parser = duration, hide = true)]
    pub heartbeat: Duration,

    /// The actions the coordinator may ask this agent to run, by name (TOML: `[action.NAME]`
    /// with exec, restart or reboot, and timeout; `allow_reboot`). Without it the agent runs
    /// no action.
    #[arg(long, value_name = "FILE")]
    pub actions: Option<PathBuf>,

    /// With --actions: answer action requests with what would run, run nothing.
    #[arg(long, requires = "actions")]
    pub dry_run: bool,

    /// An address of this host, declared besides the detected ones (repeatable): how the
    /// coordinator finds this agent for a failing target (`agent = "{target}"`).
    #[arg(long = "host-address", value_name = "IP")]
    pub host_addresses: Vec<std::net::IpAddr>,

    /// A name of this host, declared besides the detected host name (repeatable).
    #[arg(long = "host-name", value_name = "NAME")]
    pub host_names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Make an nkey user for an agent: write its seed file (NAME.nk, mode 0600) and print the
    /// `users` entry, with its permissions, to paste into nats-server.conf.
    AddAgent(AddAgentArgs),
    /// Make the coordinator's nkey user: write its seed file and print its `users` entry.
    CoordinatorUser(CoordinatorUserArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddAgentArgs {
    /// The agent's name (its `--name`): 1 to 64 of A-Z a-z 0-9 _ -.
    pub name: String,

    /// A pool the agent takes work from (repeatable).
    #[arg(long = "pool", value_name = "NAME", required = true)]
    pub pools: Vec<String>,

    /// Where to write the seed file.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CoordinatorUserArgs {
    /// Where to write the seed file (coordinator.nk).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Output formats of `porthawk scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table, sorted by address and port, at the end of the sweep.
    Table,
    /// One JSON object per result, as results arrive.
    Jsonl,
    /// CSV with a header line, as results arrive.
    Csv,
    /// One grepable line per result, like nmap's -oG.
    Grep,
    /// nmap's XML (-oX), valid against nmap.dtd, at the end of the sweep.
    Xml,
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The older results (`porthawk scan --format jsonl` or `--format xml` output, or
    /// `nmap -oX`).
    #[arg(value_name = "OLD")]
    pub old: PathBuf,
    /// The newer results.
    #[arg(value_name = "NEW")]
    pub new: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Targets: 10.0.0.7, 10.0.0.0/24, 10.0.0.1-10.0.0.20, 10.0.0.1-20, fd00::/120,
    /// host.example, or @FILE with one target per line (# comments).
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,

    /// Ports to probe: 22,80,8000-8100 or all [default: a built-in list of common service ports]
    #[arg(short, long, value_name = "PORTS")]
    pub ports: Option<String>,

    /// Targets to leave out (addresses, blocks, ranges, names), or :PORTS to leave out ports.
    #[arg(long, value_name = "TARGET", num_args = 1..)]
    pub exclude: Vec<String>,

    /// A file of targets to leave out, one per line.
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,

    /// Ports to leave out.
    #[arg(long, value_name = "PORTS")]
    pub exclude_ports: Option<String>,

    /// How long a connect may take before it counts as unanswered.
    #[arg(long, default_value = "1s", value_parser = duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Connect attempts before an unanswered port is called filtered.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub tries: u8,

    /// Probes in flight across shards [default: from the file descriptor limit].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub inflight: Option<u64>,

    /// Shard threads [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub shards: Option<u16>,

    /// The most probes started per second, across shards.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,

    /// Seed of the probe order (the same seed gives the same order).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// The I/O backend: io_uring where available, or epoll.
    #[arg(long, default_value = "auto", value_parser = backend, value_name = "auto|uring|epoll")]
    pub backend: BackendChoice,

    /// How io_uring holds probes' sockets: direct descriptors inside the ring, plain ones,
    /// or direct where the kernel can (Linux 6.8).
    #[arg(long, value_enum, default_value_t = FdPathArg::Auto)]
    pub fd_path: FdPathArg,

    #[command(flatten)]
    pub family: FamilyArgs,

    #[command(flatten)]
    pub probe: ProbeArgs,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Report every probed port, not only the open ones.
    #[arg(long)]
    pub all: bool,

    /// Write results to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

fn duration(s: &str) -> Result<Duration, String> {
    let d = porthawk_core::parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("invalid duration '{s}': must be more than zero"));
    }
    Ok(d)
}

fn backend(s: &str) -> Result<BackendChoice, String> {
    s.parse()
}

/// `--fd-path`: how io_uring holds probes' sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FdPathArg {
    /// Direct descriptors where the kernel can, plain ones otherwise.
    Auto,
    /// Direct descriptors, or an error where the kernel cannot.
    Direct,
    /// Plain descriptors.
    Plain,
}

impl FdPathArg {
    /// As `EngineConfig::direct_fds`.
    pub fn direct_fds(self) -> Option<bool> {
        match self {
            FdPathArg::Auto => None,
            FdPathArg::Direct => Some(true),
            FdPathArg::Plain => Some(false),
        }
    }
}

/// What to do once connected: shared by `scan` and `check`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// A named dialog for a service: smtp, pop3, imap, ftp, ssh, http, https, redis, mysql,
    /// postgres, tls, ... (an unknown name lists them all).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["identify"])]
    pub preset: Option<String>,

    /// Identify services: read the banner, and send protocol probes (those likeliest for the
    /// port first) to services that wait for the client.
    #[arg(long, conflicts_with_all = ["send", "expect"])]
    pub identify: bool,

    /// With --identify: the most protocol probes sent to a silent port, each on its own
    /// connection after the first (0: read the banner only).
    #[arg(long, value_name = "N", default_value_t = porthawk_core::DEFAULT_MAX_PROBES, requires = "identify")]
    pub max_probes: u8,

    /// Bytes to send once connected (escapes: \r \n \t \0 \\ \xHH). Repeat --send and
    /// --expect for a dialog of several steps, run in the order given; ${N} sends the Nth
    /// capture group of the expects before it. After a STARTTLS preset the steps run inside TLS.
    #[arg(long, value_name = "DATA")]
    pub send: Vec<String>,

    /// A regular expression the reply must match (on bytes; ^ and $ match at the start and
    /// end of every line). Repeatable: each one reads a reply of its own, in order (see
    /// --expect-all).
    #[arg(long, value_name = "REGEX")]
    pub expect: Vec<String>,

    /// Read what the server says first and report it.
    #[arg(long)]
    pub banner: bool,

    /// Make a TLS handshake first (SNI from the target's name) and report the certificate;
    /// --send/--expect/--banner then run inside TLS.
    #[arg(long)]
    pub tls: bool,

    // TLS checks (issue 11 items 5, 6, 13, 14).
    /// Verify the server's certificate: chain to the system's CAs (or --ca-file), dates, and
    /// the name (--sni, else the target's name or address); a failure names the cause.
    #[arg(long)]
    pub verify: bool,

    /// Trust the CAs in this PEM file instead of the system's (with --verify).
    #[arg(long, value_name = "FILE", requires = "verify")]
    pub ca_file: Option<PathBuf>,

    /// The server name to present in TLS (SNI) and to verify, when the target is an address
    /// or another name.
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,

    /// A client certificate (PEM, chain leaf first) for servers that ask for one.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,

    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,

    /// The server must answer the TLS handshake with this alert (e.g. certificate_required
    /// for one that requires a client certificate): OK when it does.
    #[arg(long, value_name = "ALERT")]
    pub expect_alert: Option<String>,

    /// How long one read or send of the dialog may take.
    #[arg(long, default_value = "2s", value_parser = duration, value_name = "DURATION")]
    pub read_timeout: Duration,

    /// How long the whole dialog may take after the handshake.
    #[arg(long, default_value = "5s", value_parser = duration, value_name = "DURATION")]
    pub dialog_timeout: Duration,

    /// Every --expect with no --send between them must match the same reply (check_tcp -A),
    /// instead of reading a reply each.
    #[arg(long)]
    pub expect_all: bool,

    /// Bytes to send after the last step, e.g. 'QUIT\r\n' (escapes and ${N} as in --send).
    #[arg(long, value_name = "DATA")]
    pub quit: Option<String>,

    /// The most bytes a reply may run to while the dialog waits for its pattern (up to
    /// 1048576); a reply that reaches it without matching fails, and the reason says so.
    #[arg(long, default_value_t = 4096, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub max_reply: u64,

    /// Keep the peer's bytes out of reasons: they say how many bytes came instead of quoting
    /// them; check's status line has no banner or captures either (check_tcp -j).
    #[arg(long)]
    pub jail: bool,

    /// The --send and --expect steps in the order they were given (filled by [`parse_from`]
    /// from clap's indices).
    #[arg(skip)]
    pub steps: Vec<porthawk_core::ProbeStep>,
}

impl ProbeArgs {
    /// Puts `--send` and `--expect` in the order they were given on the command line.
    fn order_steps(&mut self, matches: &clap::ArgMatches) {
        use porthawk_core::ProbeStep;
        let mut steps: Vec<(usize, ProbeStep)> = Vec::new();
        if let Some(at) = matches.indices_of("send") {
            steps.extend(
                at.zip(&self.send)
                    .map(|(i, s)| (i, ProbeStep::Send(s.clone()))),
            );
        }
        if let Some(at) = matches.indices_of("expect") {
            steps.extend(
                at.zip(&self.expect)
                    .map(|(i, e)| (i, ProbeStep::Expect(e.clone()))),
            );
        }
        steps.sort_by_key(|&(i, _)| i);
        self.steps = steps.into_iter().map(|(_, s)| s).collect();
    }
}

/// Parses a command line (program name first) as `Cli::try_parse_from` does, and puts the
/// dialog steps of `scan` and `check` in their command-line order.
pub fn parse_from<I, T>(argv: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().try_get_matches_from(argv)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    let probe = match &mut cli.command {
        Command::Scan(a) => Some(&mut a.probe),
        Command::Check(a) => Some(&mut a.probe),
        _ => None,
    };
    if let (Some(probe), Some((_, sub))) = (probe, matches.subcommand()) {
        probe.order_steps(sub);
    }
    Ok(cli)
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Scenarios to run (repeat the flag): closed, banner, mix, filtered, scaling, inflight,
    /// identify
    /// [default: all]
    #[arg(long, value_name = "NAME", value_parser = scenario)]
    pub scenario: Vec<porthawk_bench::Scenario>,

    /// How long each scenario runs.
    #[arg(long, default_value = "3s", value_parser = duration, value_name = "DURATION")]
    pub duration: Duration,

    /// Shard threads (and floor threads) [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub shards: Option<u16>,

    /// Probes in flight across shards [default: from the file descriptor limit].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub inflight: Option<u64>,

    /// The I/O backend.
    #[arg(long, default_value = "auto", value_parser = backend, value_name = "auto|uring|epoll")]
    pub backend: BackendChoice,

    /// How io_uring holds probes' sockets (see `scan --fd-path`).
    #[arg(long, value_enum, default_value_t = FdPathArg::Auto)]
    pub fd_path: FdPathArg,

    /// The most probes one measured point may make (a bound besides the duration).
    #[arg(long, default_value_t = 50_000_000, value_name = "N")]
    pub max_probes: u64,

    /// Runs of the closed scenario, each right after a run of the raw-syscall floor: the
    /// report gives both medians and the median of the pairs' ratios.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=100))]
    pub pairs: u16,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn scenario(s: &str) -> Result<porthawk_bench::Scenario, String> {
    s.parse()
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The service: HOST:PORT, [IPv6]:PORT (every address of a host name is checked; see
    /// --addresses).
    #[arg(value_name = "HOST:PORT")]
    pub target: String,

    /// How long the connect may take.
    #[arg(long, default_value = "5s", value_parser = duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Connect attempts before an unanswered port is called filtered.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub tries: u8,

    #[command(flatten)]
    pub probe: ProbeArgs,

    /// Response time at or above which the check is WARNING (0: always).
    #[arg(long, value_parser = threshold, value_name = "DURATION")]
    pub warn: Option<Duration>,

    /// Response time at or above which the check is CRITICAL (0: always).
    #[arg(long, value_parser = threshold, value_name = "DURATION")]
    pub crit: Option<Duration>,

    /// Certificate days left at or below which the check is WARNING (with TLS).
    #[arg(long, default_value_t = 21, value_name = "DAYS")]
    pub cert_warn_days: i64,

    /// Certificate days left at or below which the check is CRITICAL (with TLS).
    #[arg(long, default_value_t = 7, value_name = "DAYS")]
    pub cert_crit_days: i64,

    /// The I/O backend.
    #[arg(long, default_value = "auto", value_parser = backend, value_name = "auto|uring|epoll")]
    pub backend: BackendChoice,

    /// For a host name with several addresses: `any` passes when one address passes (as
    /// check_tcp), `all` only when every one does (any failing address is CRITICAL).
    #[arg(long, default_value = "any", value_parser = address_mode, value_name = "any|all")]
    pub addresses: AddressMode,

    #[command(flatten)]
    pub family: FamilyArgs,

    /// The status when the reply does not match what the dialog expects (check_tcp -M).
    #[arg(long, value_enum, default_value_t = StateArg::Critical, value_name = "STATE")]
    pub mismatch: StateArg,

    /// The status when the connection is refused, e.g. `ok` for a port that must stay
    /// closed (check_tcp -r).
    #[arg(long, value_enum, default_value_t = StateArg::Critical, value_name = "STATE")]
    pub refused: StateArg,
}

/// Which addresses of a host name to probe: shared by `scan` and `check`.
#[derive(Debug, Clone, clap::Args)]
pub struct FamilyArgs {
    /// Probe only the IPv4 addresses of host names.
    #[arg(short = '4', long = "ipv4", conflicts_with_all = ["ipv6", "prefer_family"])]
    pub ipv4: bool,

    /// Probe only the IPv6 addresses of host names.
    #[arg(short = '6', long = "ipv6", conflicts_with = "prefer_family")]
    pub ipv6: bool,

    /// Probe the addresses of this family when a host name has any, else those of the other
    /// (blackbox_exporter's preferred_ip_protocol with fallback).
    #[arg(long, value_parser = ip_family, value_name = "ipv4|ipv6")]
    pub prefer_family: Option<porthawk_core::IpFamily>,
}

impl FamilyArgs {
    /// The choice these flags make.
    pub fn choice(&self) -> porthawk_core::FamilyChoice {
        let only = match (self.ipv4, self.ipv6) {
            (true, _) => Some(porthawk_core::IpFamily::Ipv4),
            (_, true) => Some(porthawk_core::IpFamily::Ipv6),
            _ => None,
        };
        porthawk_core::FamilyChoice::new(only, self.prefer_family)
    }
}

fn ip_family(s: &str) -> Result<porthawk_core::IpFamily, String> {
    s.parse()
}

fn address_mode(s: &str) -> Result<AddressMode, String> {
    s.parse()
}

/// A status that `check` maps an outcome to (`--mismatch`, `--refused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// OK (exit 0).
    Ok,
    /// WARNING (exit 1).
    #[value(alias = "warn")]
    Warning,
    /// CRITICAL (exit 2).
    #[value(alias = "crit")]
    Critical,
}

/// A response-time threshold: a duration, zero included (the check then always reaches it).
fn threshold(s: &str) -> Result<Duration, String> {
    porthawk_core::parse_duration(s)
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The configuration file ([api] listen, token, allow) [default: none, built-in defaults]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The address to listen on [default: [api] listen, or 127.0.0.1:9180]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,

    /// The directory of the store [default: ./porthawk-data]
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,

    /// Log what monitor actions would run instead of running them
    #[arg(long)]
    pub dry_run: bool,
    /// A blackbox_exporter blackbox.yml whose tcp modules `/probe` serves, next to
    /// porthawk.toml's [module.NAME]; modules of other probers are refused when used.
    #[arg(long, value_name = "FILE")]
    pub blackbox_config: Option<PathBuf>,
}

/// Whether a command line (program name first) runs `porthawk check`: its first word that is
/// not a global option is `check`. Used when clap stops before a command exists (help,
/// version, bad arguments), so that `check` still answers as a plugin (exit 3, UNKNOWN).
pub fn runs_check(argv: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    let mut words = argv.into_iter().skip(1);
    while let Some(word) = words.next() {
        if word == "--log-format" {
            words.next();
        } else if !word
            .to_str()
            .is_some_and(|w| w.starts_with("--log-format="))
        {
            return word == "check";
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_runs_are_told_from_the_first_word_after_global_options() {
        let runs = |line: &str| runs_check(line.split(' ').map(std::ffi::OsString::from));
        assert!(runs("porthawk check --help"));
        assert!(runs("porthawk --log-format json check -V"));
        assert!(runs("porthawk --log-format=json check mx:25"));
        assert!(!runs("porthawk scan --help"));
        assert!(!runs("porthawk --help"));
        assert!(!runs("porthawk help check"));
        assert!(!runs("porthawk --log-format check"));
    }
}
