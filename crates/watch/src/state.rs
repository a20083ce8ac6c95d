//! The state of one monitored target-port: PENDING, UP or DOWN after `fail_after` failures or
//! `recover_after` successes, and flap detection. Plain code: the time comes in as `now_ms`.
//!
//! A monitor with several vantage points keeps one [`Tracker`] per target-port and vantage;
//! [`agree`] turns their hard states into the monitor's verdict by its [`Quorum`], and the
//! target's own tracker follows that verdict with [`Tracker::settle`].

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::config::{Quorum, Thresholds};

/// What a target looks like from outside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = TargetHealth))]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Failing, but not yet `fail_after` times; or recovering, not yet `recover_after`
    /// times; or never checked.
    #[default]
    Pending,
    /// Answering as expected.
    Up,
    /// Failed `fail_after` checks in a row.
    Down,
}

impl Health {
    /// `pending`, `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Pending => "pending",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Health {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Health::Pending),
            "up" => Ok(Health::Up),
            "down" => Ok(Health::Down),
            _ => Err(format!("unknown health '{s}'")),
        }
    }
}

/// What one observation changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The hard state changed (`from` is `Pending` for the first verdict).
    Became {
        /// The hard state before.
        from: Health,
        /// The hard state now.
        to: Health,
    },
    /// The target started flapping.
    FlapStarted,
    /// The target stopped flapping; `now` is its hard state.
    FlapStopped {
        /// The hard state it settled in.
        now: Health,
    },
}

/// The state machine of one target-port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracker {
    /// The last hard state: `Pending` until the first verdict.
    pub hard: Health,
    /// Failures in a row.
    pub fail_run: u32,
    /// Successes in a row.
    pub ok_run: u32,
    /// When the hard state last changed.
    pub since_ms: u64,
    /// Whether it is flapping.
    pub flapping: bool,
    /// When the hard state changed, within the flap window.
    changes: VecDeque<u64>,
}

impl Tracker {
    /// A tracker restored from the store.
    pub fn restored(
        hard: Health,
        fail_run: u32,
        ok_run: u32,
        since_ms: u64,
        flapping: bool,
    ) -> Self {
        Tracker {
            hard,
            fail_run,
            ok_run,
            since_ms,
            flapping,
            changes: VecDeque::new(),
        }
    }

    /// What the target shows: its hard state, or `Pending` while a run of failures (or of
    /// successes) has not yet reached its threshold.
    pub fn health(&self) -> Health {
        match self.hard {
            Health::Up if self.fail_run > 0 => Health::Pending,
            Health::Down if self.ok_run > 0 => Health::Pending,
            h => h,
        }
    }

    /// Feeds one check result at `now_ms`; returns what changed, in order.
    pub fn observe(&mut self, ok: bool, now_ms: u64, t: &Thresholds) -> Vec<Change> {
        let mut out = Vec::new();
        if ok {
            self.ok_run = self.ok_run.saturating_add(1);
            self.fail_run = 0;
        } else {
            self.fail_run = self.fail_run.saturating_add(1);
            self.ok_run = 0;
        }
        let next = match self.hard {
            // Nothing to recover from: the first success is UP.
            Health::Pending if ok => Some(Health::Up),
            Health::Pending | Health::Up if self.fail_run >= t.fail_after => Some(Health::Down),
            Health::Down if self.ok_run >= t.recover_after => Some(Health::Up),
            _ => None,
        };
        if let Some(to) = next {
            let from = self.hard;
            self.hard = to;
            self.since_ms = now_ms;
            // A success in a failing UP target ends the run; in a DOWN target once it is UP
            // the successes need not be counted any more.
            if to == Health::Up {
                self.ok_run = 0;
            } else {
                self.fail_run = 0;
            }
            if from != Health::Pending {
                self.changes.push_back(now_ms);
            }
            out.push(Change::Became { from, to });
        } else if ok && self.hard == Health::Up {
            self.ok_run = 0;
        } else if !ok && self.hard == Health::Down {
            self.fail_run = 0;
        }
        self.flap(now_ms, t, &mut out);
        out
    }

    /// Moves the hard state to `to`, decided elsewhere (the quorum of a monitor's vantage
    /// points), at `now_ms`; returns what changed, flapping included, as
    /// [`Tracker::observe`] does. `Pending` decides nothing and changes nothing. The runs
    /// stay 0: they belong to the vantages' trackers, so [`Tracker::health`] is the hard
    /// state.
    pub fn settle(&mut self, to: Health, now_ms: u64, t: &Thresholds) -> Vec<Change> {
        let mut out = Vec::new();
        self.fail_run = 0;
        self.ok_run = 0;
        if to != Health::Pending && to != self.hard {
            let from = self.hard;
            self.hard = to;
            self.since_ms = now_ms;
            if from != Health::Pending {
                self.changes.push_back(now_ms);
            }
            out.push(Change::Became { from, to });
        }
        self.flap(now_ms, t, &mut out);
        out
    }

    /// Flap detection over the hard state's changes within the window.
    fn flap(&mut self, now_ms: u64, t: &Thresholds, out: &mut Vec<Change>) {
        let window_start = now_ms.saturating_sub(t.flap_window_ms);
        while self.changes.front().is_some_and(|&c| c < window_start) {
            self.changes.pop_front();
        }
        let n = self.changes.len() as u32;
        if !self.flapping && n >= t.flap_changes {
            self.flapping = true;
            out.push(Change::FlapStarted);
        } else if self.flapping && n <= t.flap_changes / 2 {
            // Hysteresis: it must calm down well below the threshold, so that a target near
            // it is not reported as flapping and stable by turns.
            self.flapping = false;
            out.push(Change::FlapStopped { now: self.hard });
        }
    }
}

/// How one vantage point sees a target, for [`agree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sight {
    /// The vantage's hard state.
    Seen(Health),
    /// The vantage has no live agent: it sees nothing, which is a fact about the fleet,
    /// never about the target.
    NoAgents,
}

/// What a target's vantage points say together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// The verdict's hard state: `Down` when at least the quorum of vantages see it DOWN,
    /// `Up` when fewer do and at least one sees it UP, otherwise the `before` state held (no
    /// vantage can tell, or those that could have lost their agents).
    pub hard: Health,
    /// Some vantages, but fewer than the quorum, see it DOWN: a path or regional problem.
    pub partial: bool,
    /// Vantages that see it DOWN.
    pub down: usize,
    /// Vantages that see it at all (with agents and a verdict).
    pub seeing: usize,
}

/// The verdict of a target seen from `sights` (one per vantage of the monitor's `from`), by
/// `quorum`, given its verdict `before`. A vantage without agents counts neither as DOWN nor
/// as UP.
pub fn agree(sights: &[Sight], quorum: Quorum, before: Health) -> Agreement {
    let needed = quorum.needed(sights.len());
    let seen = |h: Health| {
        sights
            .iter()
            .filter(|s| matches!(s, Sight::Seen(x) if *x == h))
            .count()
    };
    let (down, up) = (seen(Health::Down), seen(Health::Up));
    let hard = if down >= needed {
        Health::Down
    } else if up > 0 {
        Health::Up
    } else {
        before
    };
    Agreement {
        hard,
        partial: down > 0 && down < needed,
        down,
        seeing: down + up,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Thresholds {
        Thresholds {
            fail_after: 3,
            recover_after: 2,
            flap_changes: 4,
            flap_window_ms: 60_000,
        }
    }

    fn feed(tr: &mut Tracker, pattern: &str, start_ms: u64, step_ms: u64) -> Vec<(u64, Change)> {
        let mut out = Vec::new();
        for (i, c) in pattern.chars().enumerate() {
            let now = start_ms + i as u64 * step_ms;
            for ch in tr.observe(c == '+', now, &t()) {
                out.push((now, ch));
            }
        }
        out
    }

    #[test]
    fn first_success_is_up_and_one_lost_check_pages_nobody() {
        let mut tr = Tracker::default();
        assert_eq!(tr.health(), Health::Pending);
        let ch = feed(&mut tr, "+", 0, 1000);
        assert_eq!(
            ch,
            [(
                0,
                Change::Became {
                    from: Health::Pending,
                    to: Health::Up
                }
            )]
        );
        let ch = feed(&mut tr, "--+--+", 1000, 1000);
        assert!(ch.is_empty(), "{ch:?}");
        assert_eq!(tr.health(), Health::Up);
        feed(&mut tr, "-", 7000, 1000);
        assert_eq!(tr.health(), Health::Pending);
    }

    #[test]
    fn down_after_fail_after_and_up_after_recover_after() {
        let mut tr = Tracker::default();
        feed(&mut tr, "+", 0, 1000);
        let ch = feed(&mut tr, "---", 1000, 1000);
        assert_eq!(
            ch,
            [(
                3000,
                Change::Became {
                    from: Health::Up,
                    to: Health::Down
                }
            )]
        );
        assert_eq!(tr.health(), Health::Down);
        assert_eq!(tr.since_ms, 3000);
        // One success is not a recovery; a failure between resets the count.
        assert!(feed(&mut tr, "+-+", 4000, 1000).is_empty());
        assert_eq!(tr.health(), Health::Pending);
        let ch = feed(&mut tr, "+", 7000, 1000);
        assert_eq!(
            ch,
            [(
                7000,
                Change::Became {
                    from: Health::Down,
                    to: Health::Up
                }
            )]
        );
        assert_eq!(tr.health(), Health::Up);
    }

    #[test]
    fn never_up_target_goes_down_after_fail_after() {
        let mut tr = Tracker::default();
        let ch = feed(&mut tr, "---", 0, 1000);
        assert_eq!(
            ch,
            [(
                2000,
                Change::Became {
                    from: Health::Pending,
                    to: Health::Down
                }
            )]
        );
    }

    #[test]
    fn flapping_is_reported_once_then_stable_once() {
        let mut tr = Tracker::default();
        feed(&mut tr, "+", 0, 1000);
        // DOWN/UP cycles of 5 checks: 3 failures then 2 successes, one check a second.
        let ch = feed(&mut tr, &"---++".repeat(6), 1000, 1000);
        let flaps: Vec<_> = ch
            .iter()
            .filter(|(_, c)| matches!(c, Change::FlapStarted))
            .collect();
        assert_eq!(flaps.len(), 1, "{ch:?}");
        // The fourth change (DOWN, UP, DOWN, UP) starts it.
        assert_eq!(flaps[0].0, 10_000);
        assert!(tr.flapping);
        // Quiet for longer than the window: it stops flapping, once, in its real state.
        let ch = feed(&mut tr, &"+".repeat(70), 31_000, 1000);
        let stops: Vec<_> = ch
            .iter()
            .filter(|(_, c)| matches!(c, Change::FlapStopped { .. }))
            .collect();
        assert_eq!(stops.len(), 1, "{ch:?}");
        assert_eq!(stops[0].1, Change::FlapStopped { now: Health::Up });
        assert!(!tr.flapping);
    }

    #[test]
    fn the_quorum_decides_down_partial_and_up() {
        use Health::{Down, Pending, Up};
        use Sight::{NoAgents, Seen};
        let all = |s: &[Sight]| agree(s, Quorum::All, Up);
        let a = all(&[Seen(Down), Seen(Down), Seen(Down)]);
        assert_eq!((a.hard, a.partial, a.down, a.seeing), (Down, false, 3, 3));
        let a = all(&[Seen(Down), Seen(Up), Seen(Down)]);
        assert_eq!((a.hard, a.partial, a.down), (Up, true, 2));
        let a = all(&[Seen(Up), Seen(Up)]);
        assert_eq!((a.hard, a.partial), (Up, false));
        // A pool without agents is not a DOWN vote: "all" cannot be reached without it.
        let a = all(&[Seen(Down), NoAgents]);
        assert_eq!((a.hard, a.partial, a.seeing), (Up, true, 1));
        // Nor an UP vote: a DOWN verdict holds when the only other vantage goes blind.
        let a = agree(&[Seen(Down), NoAgents], Quorum::All, Down);
        assert_eq!((a.hard, a.partial), (Down, true));
        let any = agree(&[Seen(Up), Seen(Down)], Quorum::Any, Up);
        assert_eq!((any.hard, any.partial), (Down, false));
        let two = |s: &[Sight]| agree(s, Quorum::AtLeast(2), Up).hard;
        assert_eq!(two(&[Seen(Down), Seen(Up), Seen(Up)]), Up);
        assert_eq!(two(&[Seen(Down), Seen(Up), Seen(Down)]), Down);
        // Nothing decided yet: the verdict stays pending.
        let a = agree(&[Seen(Pending), NoAgents], Quorum::Any, Pending);
        assert_eq!((a.hard, a.partial, a.seeing), (Pending, false, 0));
    }

    #[test]
    fn settle_follows_a_verdict_and_detects_flapping() {
        let mut tr = Tracker::default();
        assert!(tr.settle(Health::Pending, 0, &t()).is_empty());
        assert_eq!(
            tr.settle(Health::Up, 1000, &t()),
            [Change::Became {
                from: Health::Pending,
                to: Health::Up
            }]
        );
        assert!(tr.settle(Health::Up, 2000, &t()).is_empty());
        let mut all = Vec::new();
        for (i, h) in [Health::Down, Health::Up, Health::Down, Health::Up]
            .into_iter()
            .enumerate()
        {
            all.extend(tr.settle(h, 3000 + i as u64 * 1000, &t()));
        }
        assert_eq!(all.last(), Some(&Change::FlapStarted), "{all:?}");
        assert_eq!(
            (tr.health(), tr.since_ms, tr.fail_run),
            (Health::Up, 6000, 0)
        );
    }

    #[test]
    fn fail_after_one_goes_down_at_once() {
        let mut tr = Tracker::default();
        let th = Thresholds {
            fail_after: 1,
            recover_after: 1,
            ..t()
        };
        tr.observe(true, 0, &th);
        assert_eq!(
            tr.observe(false, 1, &th),
            [Change::Became {
                from: Health::Up,
                to: Health::Down
            }]
        );
        assert_eq!(
            tr.observe(true, 2, &th),
            [Change::Became {
                from: Health::Down,
                to: Health::Up
            }]
        );
    }
}
