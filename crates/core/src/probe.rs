//! The probe state machine: what a completion means and what to do next.
//!
//! The engine's backends (io_uring and epoll) own the sockets; they feed this machine the
//! completions they see and do what it answers. Because both backends ask the same machine,
//! they cannot disagree on what a completion means.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::errno::consts::*;
use crate::{Dialog, Errno, PortState};

/// How to probe each target of a job.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// How long a connect may take before the attempt counts as unanswered.
    pub connect_timeout: Duration,
    /// How many connect attempts a target gets before it is called filtered (at least 1).
    /// Only unanswered attempts are retried: a refusal or a handshake is an answer.
    pub tries: u8,
    /// What to send and expect once connected; `None` closes right after the handshake.
    pub dialog: Option<Arc<Dialog>>,
    /// How long one send or read of the dialog may take (the first byte of a banner, say).
    pub read_timeout: Duration,
    /// How long the whole dialog may take, from the handshake on.
    pub dialog_timeout: Duration,
    /// The TLS client configuration for dialogs with a `StartTls` step
    /// (see [`crate::tls_client_config`]).
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    /// The most bytes one read step of the dialog keeps while it waits for its pattern
    /// (`--max-reply`, at most [`crate::MAX_REPLY_LIMIT`]); a reply that reaches it without
    /// matching fails, and the reason says the limit was hit.
    pub max_reply: usize,
    /// Keep the peer's bytes out of failure reasons (`check --jail`): they say how many
    /// bytes came instead of quoting them.
    pub jail: bool,
    /// What a TLS dialog checks beyond the handshake: SNI, verification, an expected alert.
    pub tls_check: Option<Arc<crate::TlsCheck>>,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        ProbeSpec {
            connect_timeout: Duration::from_secs(1),
            tries: 2,
            dialog: None,
            read_timeout: Duration::from_secs(2),
            dialog_timeout: Duration::from_secs(5),
            tls_config: None,
            max_reply: crate::READ_LIMIT,
            jail: false,
            tls_check: None,
        }
    }
}

/// What happened to one connect attempt, as the backend saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectEvent {
    /// The handshake completed; `local` is the socket's own address.
    Connected {
        /// The local address of the connected socket.
        local: SocketAddr,
        /// The address that was connected to.
        peer: SocketAddr,
    },
    /// The connect failed with this errno (`ECONNREFUSED`, `EHOSTUNREACH`, ...).
    Failed(Errno),
    /// No answer before the connect timeout.
    TimedOut,
}

/// What the backend should do next with a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Close the socket and connect again on a new one (an unanswered attempt with tries left,
    /// or a local resource shortage that says nothing about the target).
    Reconnect,
    /// Send the conversation's pending bytes, giving up after `timeout`.
    Send {
        /// How long the send may take.
        timeout: Duration,
    },
    /// Read what the peer sends, giving up after `timeout`.
    Recv {
        /// How long to wait for bytes.
        timeout: Duration,
    },
    /// The probe is finished with this verdict.
    Done {
        /// The port's state.
        state: PortState,
        /// The errno behind `Unreachable` and `Error` (and `Closed`), if any.
        errno: Option<Errno>,
    },
}

/// The state of one probe. Small and `Copy`, so that a backend keeps a fixed slab of them
/// and allocates nothing per probe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Probe {
    tries: u8,
    local_retries: u8,
}

/// How often a local shortage (no ephemeral port, no buffer) is retried before the probe is
/// reported as an error. These retries do not use up the user's `tries`.
const MAX_LOCAL_RETRIES: u8 = 8;

impl Probe {
    /// A probe about to make its first connect attempt.
    pub fn new() -> Self {
        Probe::default()
    }

    /// Connect attempts made so far (including the one in flight once the backend reports it).
    pub fn tries(&self) -> u8 {
        self.tries
    }

    /// Call once with the outcome of each connect attempt; do what the returned [`Step`] says.
    pub fn on_connect(&mut self, spec: &ProbeSpec, event: ConnectEvent) -> Step {
        self.tries = self.tries.saturating_add(1);
        let done = |state, errno| Step::Done { state, errno };
        match event {
            ConnectEvent::Connected { local, peer } => {
                // On loopback a connect to a closed port inside the ephemeral range can pick the
                // same port as its source and connect to itself (TCP simultaneous open). Nothing
                // listens there: it is closed.
                if local == peer {
                    done(PortState::Closed, None)
                } else {
                    done(PortState::Open, None)
                }
            }
            ConnectEvent::TimedOut | ConnectEvent::Failed(ETIMEDOUT) => {
                if self.tries < spec.tries.max(1) {
                    Step::Reconnect
                } else {
                    done(PortState::Filtered, None)
                }
            }
            ConnectEvent::Failed(ECONNREFUSED) => done(PortState::Closed, None),
            // Linux reports a reset during the handshake as ECONNREFUSED; ECONNRESET means the
            // handshake completed and the service then reset the connection: it is open.
            ConnectEvent::Failed(ECONNRESET) => done(PortState::Open, None),
            ConnectEvent::Failed(e @ (EHOSTUNREACH | ENETUNREACH | EHOSTDOWN | ENETDOWN)) => {
                done(PortState::Unreachable, Some(e))
            }
            ConnectEvent::Failed(e @ (EADDRNOTAVAIL | ENOBUFS | EAGAIN | EINTR)) => {
                // A shortage on this machine, not an answer from the target: try again without
                // counting it against the user's tries, within a bound.
                self.tries -= 1;
                self.local_retries += 1;
                if self.local_retries <= MAX_LOCAL_RETRIES {
                    Step::Reconnect
                } else {
                    done(PortState::Error, Some(e))
                }
            }
            ConnectEvent::Failed(e) => done(PortState::Error, Some(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn spec(tries: u8) -> ProbeSpec {
        ProbeSpec {
            connect_timeout: Duration::from_millis(100),
            tries,
            ..ProbeSpec::default()
        }
    }

    fn run(tries: u8, events: &[ConnectEvent]) -> Vec<Step> {
        let mut p = Probe::new();
        events
            .iter()
            .map(|e| p.on_connect(&spec(tries), *e))
            .collect()
    }

    #[test]
    fn scripted_completions_give_the_expected_verdicts() {
        use ConnectEvent::*;
        use PortState::*;
        let connected = Connected {
            local: addr("127.0.0.1:40000"),
            peer: addr("127.0.0.1:80"),
        };
        let self_connect = Connected {
            local: addr("127.0.0.1:40000"),
            peer: addr("127.0.0.1:40000"),
        };
        let done = |state, errno| Step::Done { state, errno };
        let table: Vec<(u8, Vec<ConnectEvent>, Vec<Step>)> = vec![
            (1, vec![connected], vec![done(Open, None)]),
            (1, vec![self_connect], vec![done(Closed, None)]),
            (1, vec![Failed(ECONNREFUSED)], vec![done(Closed, None)]),
            (1, vec![Failed(ECONNRESET)], vec![done(Open, None)]),
            (1, vec![TimedOut], vec![done(Filtered, None)]),
            (
                2,
                vec![TimedOut, connected],
                vec![Step::Reconnect, done(Open, None)],
            ),
            (
                2,
                vec![TimedOut, TimedOut],
                vec![Step::Reconnect, done(Filtered, None)],
            ),
            (0, vec![TimedOut], vec![done(Filtered, None)]),
            (
                1,
                vec![Failed(EHOSTUNREACH)],
                vec![done(Unreachable, Some(EHOSTUNREACH))],
            ),
            (
                1,
                vec![Failed(ENETUNREACH)],
                vec![done(Unreachable, Some(ENETUNREACH))],
            ),
            (1, vec![Failed(71)], vec![done(Error, Some(71))]),
            (
                1,
                vec![Failed(EADDRNOTAVAIL), Failed(ECONNREFUSED)],
                vec![Step::Reconnect, done(Closed, None)],
            ),
        ];
        for (tries, events, want) in table {
            assert_eq!(run(tries, &events), want, "tries {tries}, {events:?}");
        }
    }

    #[test]
    fn local_shortage_is_bounded() {
        let mut p = Probe::new();
        let mut steps = 0;
        loop {
            steps += 1;
            match p.on_connect(&spec(1), ConnectEvent::Failed(EADDRNOTAVAIL)) {
                Step::Reconnect => assert!(steps < 100),
                Step::Done { state, errno } => {
                    assert_eq!((state, errno), (PortState::Error, Some(EADDRNOTAVAIL)));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(steps, usize::from(MAX_LOCAL_RETRIES) + 1);
    }
}
