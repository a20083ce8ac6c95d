//! End-to-end tests: they run the real `porthawk` binary against real sockets.
//!
//! Ground rules, so that the suite is safe to run anywhere and in parallel:
//!
//! - Traffic goes only to 127.0.0.0/8, `::1`, or into a network namespace that a test creates.
//! - Each test gets its own `127.a.b.0/24` block ([`util::test_net`]), so parallel tests never see
//!   each other's listeners. Tests that must use `127.0.0.1` or `::1` take [`util::loopback_lock`].
//! - The machine may have listeners of its own, on the wildcard address or on loopback. Expected
//!   results are therefore the test's own listeners plus whatever `/proc/net/tcp{,6}` shows
//!   listening right before and after the sweep ([`util::ListenSnapshot`]).
//! - Every loop and every child process is bounded by a deadline; a hang fails the test.
//! - Tests stop only the processes they started, by their handle.
//!
//! Modules by area: `scan` (sweeps against listener farms), `usage` (bad input exits 2), `bench`
//! (a short `porthawk bench` run), `monitor` (`porthawk serve` watching a listener, with
//! actions, email and webhooks to sinks the test runs, and the status page), `netns`
//! (filtered and unreachable ports behind nftables rules in a private network namespace),
//! `daemons` (dialogs, identification and TLS against real daemons from Debian's packages, with
//! their helpers in `daemon_util`), `dialogs` (whole dialogs: steps, captures, `--expect-all`,
//! `--max-reply`, check's state mapping, in check, scan, a monitor and the API), `check` (`porthawk check` exit codes and perfdata), `api_results` (the API's results
//! are the CLI's, line for line), `packaging` (completions, man page, `contrib/` files, and
//! `serve`'s start-up errors), `page` (the status page and the sweep pages, in headless
//! Chromium), `idle` (an idle `porthawk serve` wakes no thread on a timer: context switches per
//! thread over a quiet window).

mod api_results;
mod bench;
mod check;
mod daemon_util;
mod daemons;
mod dialogs;
mod fleet;
mod fleet_agent;
mod hardening;
mod identify;
mod idle;
mod layout;
mod limits;
mod monitor;
mod names;
mod nats_util;
mod netns;
mod packaging;
mod page;
mod remedy;
mod retention;
mod scan;
mod serve;
mod store_faults;
mod surface;
mod tls_checks;
mod usage;
mod util;
mod vantage;
mod xml;
