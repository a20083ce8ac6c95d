//! The adaptive in-flight window of a shard: how many probes it may have in flight now.
//!
//! Sans-IO: the shard feeds it what happened (a connect answered after `rtt`, a local
//! shortage) and, once per loop turn, the time and (when an epoch ends) how long the shard
//! thread has been busy; it answers with [`InflightWindow::limit`]. Nothing here reads a
//! clock, so tests drive it with a fake one.
//!
//! Why a window at all: on loopback every connect to a closed port completes inside the
//! submitting system call, so probes in flight beyond what one loop turn can take only queue
//! (19,744 in flight made the connect p99 47 ms, and the sweep slower). On a real or filtered
//! network, in flight is what buys throughput (throughput = in flight / round trip). The
//! window tells these apart with two signals, judged once per *epoch* (a few turns, at least
//! twice the latency floor):
//!
//! - **busy**: the share of the epoch's wall time the shard thread spent on a CPU or waiting
//!   for one (a machine shared with other work saturates a shard as surely as its own work
//!   does). A shard that waits for answers (remote targets, timeouts) has room: the window
//!   grows, up to the budget (`--inflight`'s share), whatever the latency is; a spread of
//!   round trips across targets is not congestion.
//! - **latency above the floor**: when the shard is saturated, the lowest connect latency of
//!   the epoch is compared with the lowest seen recently (the floor). Every probe of a
//!   saturated shard waits for its loop turn, so queueing lifts even the lowest latency: above
//!   `floor + max(floor, queue_target)` the window shrinks by a quarter, otherwise it grows.
//!
//! Growth is multiplicative (doubling) until the first shrink, then about 12 % per epoch; it
//! only happens in epochs where the window was actually full. A local shortage (EMFILE,
//! ENOBUFS ...) shrinks it below the count in flight at once. If shrinking does not bring the
//! latency down for several epochs in a row, that latency was not ours (the targets are just
//! far): the floor is re-based to it.

use std::time::{Duration, Instant};

/// How to size a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowConfig {
    /// The most probes in flight: the shard's share of `--inflight`.
    pub max: usize,
    /// The fewest.
    pub min: usize,
    /// Where it starts.
    pub initial: usize,
    /// The queueing delay above the floor that a saturated shard tolerates.
    pub queue_target: Duration,
}

/// The fewest probes in flight a window allows (less when the budget is smaller).
const MIN_WINDOW: usize = 16;

/// Where a window starts; it doubles per epoch from there while nothing says stop.
const INITIAL_WINDOW: usize = 64;

/// The default tolerated queueing delay: keeps the loopback connect p99 in single-digit
/// milliseconds.
const QUEUE_TARGET: Duration = Duration::from_millis(1);

/// Bounds of an epoch's length (twice the floor, within these).
const EPOCH_MIN: Duration = Duration::from_millis(1);
const EPOCH_MAX: Duration = Duration::from_millis(100);

/// Answers an epoch wants before it judges latency; it waits up to four epoch lengths for
/// them, then judges with what it has.
const MIN_SAMPLES: u32 = 8;

/// A shard busier than this share of the wall time is saturated: more in flight cannot buy
/// throughput, only latency.
const SATURATED: f64 = 0.85;

/// How long a floor observation counts: the floor is the lowest latency of the last one to
/// two periods, so it follows a change of targets or network.
const FLOOR_PERIOD: Duration = Duration::from_secs(10);

/// Consecutive shrinking epochs after which the latency is taken to be the targets' own.
const REBASE_AFTER: u32 = 8;

impl WindowConfig {
    /// The default window for a budget of `max` probes in flight.
    pub(crate) fn for_budget(max: usize) -> Self {
        let max = max.max(1);
        WindowConfig {
            max,
            min: MIN_WINDOW.min(max),
            initial: INITIAL_WINDOW.min(max),
            queue_target: QUEUE_TARGET,
        }
    }
}

/// The lowest latency seen in the current and the previous [`FLOOR_PERIOD`].
#[derive(Debug, Clone, Copy)]
struct Floor {
    current: Option<Duration>,
    previous: Option<Duration>,
    since: Instant,
}

impl Floor {
    fn get(&self) -> Option<Duration> {
        match (self.current, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn observe(&mut self, rtt: Duration, now: Instant) {
        if now.saturating_duration_since(self.since) >= FLOOR_PERIOD {
            self.previous = self.current.take();
            self.since = now;
        }
        self.current = Some(self.current.map_or(rtt, |c| c.min(rtt)));
    }

    fn rebase(&mut self, rtt: Duration, now: Instant) {
        *self = Floor {
            current: Some(rtt),
            previous: None,
            since: now,
        };
    }
}

/// What one epoch saw.
#[derive(Debug, Clone, Copy)]
struct Epoch {
    start: Instant,
    busy_start: Duration,
    min_rtt: Option<Duration>,
    answers: u32,
    /// Whether the window was full at some turn (only then is growing worth anything).
    limited: bool,
    /// Whether a shortage already shrank the window in this epoch.
    shortage: bool,
}

impl Epoch {
    fn new(now: Instant, busy: Duration) -> Self {
        Epoch {
            start: now,
            busy_start: busy,
            min_rtt: None,
            answers: 0,
            limited: false,
            shortage: false,
        }
    }
}

/// The number of probes a shard may have in flight, adapted to what the shard sees.
#[derive(Debug, Clone)]
pub(crate) struct InflightWindow {
    config: WindowConfig,
    limit: usize,
    slow_start: bool,
    floor: Floor,
    epoch: Epoch,
    shrinking_streak: u32,
}

impl InflightWindow {
    /// A window starting at `now`, when the shard thread has been busy (on a CPU or waiting
    /// for one) for `busy` in all.
    pub(crate) fn new(config: WindowConfig, now: Instant, busy: Duration) -> Self {
        let max = config.max.max(1);
        let min = config.min.clamp(1, max);
        let config = WindowConfig {
            max,
            min,
            initial: config.initial.clamp(min, max),
            ..config
        };
        InflightWindow {
            config,
            limit: config.initial,
            slow_start: true,
            floor: Floor {
                current: None,
                previous: None,
                since: now,
            },
            epoch: Epoch::new(now, busy),
            shrinking_streak: 0,
        }
    }

    /// How many probes may be in flight now.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The lowest recent connect latency, if any probe was answered.
    #[cfg(test)]
    pub(crate) fn floor(&self) -> Option<Duration> {
        self.floor.get()
    }

    /// When the window may next grow, if it is full and below the budget: a shard with
    /// nothing to do but wait for completions (which may be a timeout away) should look
    /// again by then, so that the window ramps up without waiting for answers.
    pub(crate) fn next_decision(&self) -> Option<Instant> {
        if !self.epoch.limited || self.limit >= self.config.max {
            return None;
        }
        let length = self.epoch_length();
        let answers = self.epoch.answers;
        let length = if answers > 0 && answers < MIN_SAMPLES {
            length * 4
        } else {
            length
        };
        Some(self.epoch.start + length)
    }

    fn epoch_length(&self) -> Duration {
        self.floor
            .get()
            .map_or(EPOCH_MIN, |f| (f * 2).clamp(EPOCH_MIN, EPOCH_MAX))
    }

    /// A connect got an answer (open, refused, unreachable) `rtt` after it was started.
    /// Timeouts are not reported: they say nothing about the shard's own queueing.
    pub(crate) fn on_answer(&mut self, rtt: Duration) {
        self.epoch.answers += 1;
        self.epoch.min_rtt = Some(self.epoch.min_rtt.map_or(rtt, |m| m.min(rtt)));
    }

    /// A start ran into a local shortage (EMFILE, ENFILE, ENOBUFS, ENOMEM) with `inflight`
    /// probes in flight: the window drops below that at once (once per epoch).
    pub(crate) fn on_shortage(&mut self, inflight: usize) {
        if self.epoch.shortage {
            return;
        }
        self.epoch.shortage = true;
        self.slow_start = false;
        self.limit = (self.limit.min(inflight) * 3 / 4).max(self.config.min);
    }

    /// Called once per loop turn, after the turn's starts, with the probes in flight and the
    /// time. Ends the epoch when it is due and adapts the window; only then does it call
    /// `busy` for how long the shard thread has been on a CPU or waiting for one, in all.
    pub(crate) fn on_turn(
        &mut self,
        inflight: usize,
        now: Instant,
        busy: impl FnOnce() -> Duration,
    ) {
        if inflight >= self.limit {
            self.epoch.limited = true;
        }
        let floor = self.floor.get();
        let length = self.epoch_length();
        let elapsed = now.saturating_duration_since(self.epoch.start);
        if elapsed < length {
            return;
        }
        let answers = self.epoch.answers;
        if answers > 0 && answers < MIN_SAMPLES && elapsed < length * 4 {
            // Too few answers to judge latency by; give them a little longer.
            return;
        }
        let busy_total = busy();
        let busy = busy_total
            .saturating_sub(self.epoch.busy_start)
            .as_secs_f64()
            / elapsed.as_secs_f64().max(1e-9);
        let epoch = std::mem::replace(&mut self.epoch, Epoch::new(now, busy_total));
        let congested = match (epoch.min_rtt, floor) {
            (Some(low), Some(floor)) if busy >= SATURATED => {
                low > floor + floor.max(self.config.queue_target)
            }
            _ => false,
        };
        if congested {
            self.slow_start = false;
            self.limit = (self.limit * 3 / 4).max(self.config.min);
            self.shrinking_streak += 1;
            if self.shrinking_streak >= REBASE_AFTER {
                // Shrinking did not bring the latency down: it is the targets', not ours.
                if let Some(low) = epoch.min_rtt {
                    self.floor.rebase(low, now);
                }
                self.shrinking_streak = 0;
            }
        } else {
            self.shrinking_streak = 0;
            if epoch.limited && !epoch.shortage {
                let grown = if self.slow_start {
                    self.limit * 2
                } else {
                    self.limit + (self.limit / 8).max(1)
                };
                self.limit = grown.min(self.config.max);
            }
        }
        if let Some(low) = epoch.min_rtt {
            self.floor.observe(low, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    const MS: Duration = Duration::from_millis(1);
    const US: Duration = Duration::from_micros(1);

    /// A shard of the simulated world: how long a turn takes and what it completes.
    struct Sim {
        window: InflightWindow,
        now: Instant,
        cpu: Duration,
        inflight: usize,
        /// Probes in flight: when they end, when they started, whether they get an answer.
        pending: BinaryHeap<Reverse<(Instant, Instant, bool)>>,
        latencies: Vec<Duration>,
        completed: u64,
    }

    impl Sim {
        fn new(config: WindowConfig) -> Self {
            let now = Instant::now();
            Sim {
                window: InflightWindow::new(config, now, Duration::ZERO),
                now,
                cpu: Duration::ZERO,
                inflight: 0,
                pending: BinaryHeap::new(),
                latencies: Vec::new(),
                completed: 0,
            }
        }

        /// Runs turns for `span` of simulated time. Each turn starts what the window allows
        /// (at most 1,024), costing `start_cost` of CPU each; `outcome(i)` says after how long
        /// the i-th probe ends and whether it is answered. The turn then waits (idle, no CPU)
        /// until the next completion or the window's next decision, at most 50 ms.
        fn run(
            &mut self,
            span: Duration,
            start_cost: Duration,
            mut outcome: impl FnMut(u64) -> (Duration, bool),
        ) {
            let end = self.now + span;
            let mut n = 0u64;
            while self.now < end {
                let turn_start = self.now;
                let room = self.window.limit().saturating_sub(self.inflight).min(1024);
                for _ in 0..room {
                    let (after, answered) = outcome(n);
                    n += 1;
                    self.pending
                        .push(Reverse((turn_start + after, turn_start, answered)));
                }
                self.inflight += room;
                // Starting costs CPU, and on loopback the answers come during it.
                let work = start_cost * room as u32 + 20 * US;
                self.now += work;
                self.cpu += work;
                let cpu = self.cpu;
                self.window.on_turn(self.inflight, self.now, || cpu);
                // As the shard: wait for the next completion, at most 50 ms, and no longer
                // than the window's next decision.
                let mut wake = self.now + 50 * MS;
                if let Some(Reverse((next, _, _))) = self.pending.peek() {
                    wake = wake.min((*next).max(self.now));
                }
                if let Some(decision) = self.window.next_decision() {
                    wake = wake.min(decision.max(self.now));
                }
                if self.inflight < self.window.limit() {
                    // Work it could start: a shard does not sleep then.
                    wake = self.now;
                }
                self.now = wake;
                let now = self.now;
                while let Some(&Reverse((end, started, answered))) = self.pending.peek() {
                    if end > now {
                        break;
                    }
                    self.pending.pop();
                    self.inflight -= 1;
                    self.completed += 1;
                    if answered {
                        let rtt = now - started;
                        self.latencies.push(rtt);
                        self.window.on_answer(rtt);
                    }
                }
            }
        }

        fn p99_since(&self, from: usize) -> Duration {
            let mut l = self.latencies[from..].to_vec();
            l.sort_unstable();
            l[(l.len() * 99 / 100).min(l.len() - 1)]
        }
    }

    /// Loopback: every connect completes while it is submitted, at 15 µs of CPU each, so
    /// probes in flight beyond a turn's worth only queue. The window settles small: connect
    /// latency stays in single-digit milliseconds instead of growing with the budget.
    #[test]
    fn loopback_stays_near_the_latency_floor() {
        let mut sim = Sim::new(WindowConfig::for_budget(9872));
        sim.run(Duration::from_secs(2), 15 * US, |_| (Duration::ZERO, true));
        let from = sim.latencies.len() / 2;
        let p99 = sim.p99_since(from);
        assert!(p99 <= 10 * MS, "p99 {p99:?}, window {}", sim.window.limit());
        assert!(sim.window.limit() < 1000, "window {}", sim.window.limit());
        assert!(sim.window.limit() >= 16);
        // Throughput is not given up: the shard stays busy starting probes.
        let per_sec = sim.completed as f64 / 2.0;
        assert!(per_sec > 40_000.0, "{per_sec} probes/s");
    }

    /// Filtered: nothing answers within the timeout. The window grows to the budget fast
    /// (well before the first timeout), so throughput is budget ÷ timeout.
    #[test]
    fn filtered_network_grows_to_the_budget_before_the_first_timeout() {
        let mut sim = Sim::new(WindowConfig::for_budget(9872));
        sim.run(Duration::from_millis(200), 5 * US, |_| {
            (Duration::from_secs(1), false)
        });
        assert_eq!(sim.window.limit(), 9872);
        assert_eq!(sim.inflight, 9872);
        // And it stays there across the timeouts.
        sim.run(Duration::from_secs(3), 5 * US, |_| {
            (Duration::from_secs(1), false)
        });
        assert_eq!(sim.window.limit(), 9872);
    }

    /// Remote targets with round trips from 5 to 300 ms: the spread is not congestion. The
    /// shard mostly waits, so the window grows to the budget.
    #[test]
    fn spread_out_round_trips_on_an_idle_shard_grow_to_the_budget() {
        let mut sim = Sim::new(WindowConfig::for_budget(4096));
        let mut x: u64 = 12345;
        sim.run(Duration::from_secs(3), 5 * US, |_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let ms = 5 + (x >> 33) % 296;
            (Duration::from_millis(ms), true)
        });
        assert_eq!(sim.window.limit(), 4096);
    }

    /// A mix: 2 % of targets never answer (1 s timeout), the rest answer on loopback. The
    /// unanswered ones hold slots without costing CPU; the window keeps room for them and
    /// the answered ones keep a low latency.
    #[test]
    fn a_few_filtered_among_many_closed_keep_latency_low() {
        let mut sim = Sim::new(WindowConfig::for_budget(9872));
        sim.run(Duration::from_secs(4), 15 * US, |i| {
            if i % 50 == 0 {
                (Duration::from_secs(1), false)
            } else {
                (Duration::ZERO, true)
            }
        });
        let from = sim.latencies.len() / 2;
        assert!(sim.p99_since(from) <= 10 * MS, "{:?}", sim.p99_since(from));
        let per_sec = sim.completed as f64 / 4.0;
        assert!(
            per_sec > 40_000.0,
            "{per_sec} probes/s, window {}",
            sim.window.limit()
        );
    }

    #[test]
    fn a_shortage_shrinks_below_the_count_in_flight_once_per_epoch() {
        let t0 = Instant::now();
        let mut w = InflightWindow::new(WindowConfig::for_budget(10_000), t0, Duration::ZERO);
        // Grow it first: nothing answers, the window is full every turn.
        let mut now = t0;
        for _ in 0..20 {
            now += 2 * MS;
            w.on_turn(w.limit(), now, || Duration::ZERO);
        }
        assert_eq!(w.limit(), 10_000);
        w.on_shortage(4000);
        assert_eq!(w.limit(), 3000);
        w.on_shortage(2000);
        assert_eq!(w.limit(), 3000, "one cut per epoch");
        // The epoch with the shortage does not grow the window back.
        now += 2 * MS;
        w.on_turn(w.limit(), now, || Duration::ZERO);
        assert_eq!(w.limit(), 3000);
        // Never below the minimum.
        for _ in 0..50 {
            now += 2 * MS;
            w.on_turn(0, now, || Duration::ZERO);
            w.on_shortage(0);
        }
        assert_eq!(w.limit(), 16);
    }

    /// A window that is not full does not grow: an idle shard keeps its window.
    #[test]
    fn an_unused_window_does_not_grow() {
        let t0 = Instant::now();
        let mut w = InflightWindow::new(WindowConfig::for_budget(10_000), t0, Duration::ZERO);
        let mut now = t0;
        for _ in 0..100 {
            now += 5 * MS;
            w.on_turn(3, now, || Duration::ZERO);
        }
        assert_eq!(w.limit(), 64);
    }

    /// A saturated shard whose latency does not come down when it shrinks (far targets,
    /// not queueing) re-bases its floor and grows again instead of collapsing.
    #[test]
    fn latency_that_shrinking_does_not_cure_rebases_the_floor() {
        let t0 = Instant::now();
        let mut w = InflightWindow::new(WindowConfig::for_budget(4096), t0, Duration::ZERO);
        let (mut now, mut cpu) = (t0, Duration::ZERO);
        // A floor of 100 µs from a loopback job.
        for _ in 0..10 {
            w.on_answer(100 * US);
        }
        now += 2 * MS;
        cpu += 2 * MS;
        w.on_turn(w.limit(), now, || cpu);
        assert_eq!(w.floor(), Some(100 * US));
        // Then only targets 50 ms away, with the shard saturated.
        for _ in 0..40 {
            for _ in 0..10 {
                w.on_answer(50 * MS);
            }
            now += 200 * MS;
            cpu += 200 * MS;
            w.on_turn(w.limit(), now, || cpu);
        }
        assert_eq!(w.floor(), Some(50 * MS));
        assert!(w.limit() > 16, "window {}", w.limit());
    }

    #[test]
    fn small_budgets_are_respected() {
        let t0 = Instant::now();
        let mut w = InflightWindow::new(WindowConfig::for_budget(5), t0, Duration::ZERO);
        assert_eq!(w.limit(), 5);
        w.on_shortage(5);
        assert_eq!(w.limit(), 5, "the minimum is the budget when it is smaller");
        let w = InflightWindow::new(WindowConfig::for_budget(0), t0, Duration::ZERO);
        assert_eq!(w.limit(), 1);
    }
}
