//! One shard: a thread with its own backend and a fixed slab of in-flight probes, taking
//! chunks of every job's positions from the job's shared cursor.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use hdrhistogram::Histogram;
use porthawk_core::{
    is_local_errno, ConnectEvent, Conversation, Errno, PortState, ProbeRecord, ResultBatch,
    ShardSlice, Step,
};

use crate::driver::{Completion, Driver, IoEvent};
use crate::rate::TokenBucket;
use crate::window::{InflightWindow, WindowConfig};
use crate::{new_histogram, JobShared};

/// What the engine tells a shard.
pub(crate) enum ShardCmd {
    /// Take your slice of this job.
    Job(Arc<JobShared>),
}

/// Batch and flush settings shared by all shards.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShardConfig {
    pub index: u16,
    pub shards: usize,
    pub batch_records: usize,
    pub flush_interval: Duration,
}

struct ActiveJob {
    shared: Arc<JobShared>,
    /// The chunk of positions this shard took from the job's cursor and has not started yet.
    claim: ShardSlice,
    batch: Vec<ProbeRecord>,
    last_flush: Instant,
    inflight: usize,
    bucket: Option<TokenBucket>,
    hist: Histogram<u64>,
    peak_inflight: usize,
    /// Probes of this job waiting for descriptors (counted in `inflight` too).
    starved: usize,
    /// Since when every probe of this job in this shard has been waiting for descriptors.
    starved_since: Option<Instant>,
}

impl ActiveJob {
    /// The next position this shard probes: from its claimed chunk, else from a new chunk of
    /// at most `room` positions taken from the job's shared cursor. `None` when every
    /// position is taken (or the job is cancelled).
    fn next_position(&mut self, shards: usize, room: usize) -> Option<u64> {
        if let Some(p) = self.claim.next_position() {
            return Some(p);
        }
        if self.shared.cancel.load(Ordering::Relaxed) {
            return None;
        }
        let chunk = self.shared.claim(shards, room as u64)?;
        self.claim = self.shared.space.shard_range(chunk, 0, 1);
        self.claim.next_position()
    }

    /// Whether positions are left to start: in this shard's chunk, or not yet taken by any
    /// shard.
    fn has_more(&self) -> bool {
        self.claim.remaining() > 0
            || (!self.shared.cancel.load(Ordering::Relaxed) && self.shared.unclaimed())
    }
}

/// Where a shard publishes what the engine reports about it.
#[derive(Clone, Default)]
pub(crate) struct ShardGauges {
    /// Probes in flight, as of the shard's last loop turn.
    pub inflight: Arc<AtomicUsize>,
    /// The shard thread's CPU time in nanoseconds, as of its last loop turn.
    pub cpu_ns: Arc<AtomicU64>,
    /// The shard's in-flight window, as of its last loop turn.
    pub window: Arc<AtomicUsize>,
}

#[derive(Clone, Copy)]
struct SlotState {
    job: usize,
    target: SocketAddr,
    /// When the current connect attempt started.
    started: Instant,
    /// When the handshake completed: the dialog's clock starts there.
    connected: Instant,
    /// The connect's round trip, kept for the record once the dialog is over.
    rtt_us: u32,
    /// The local shortage (EMFILE, ENOBUFS ...) the slot's last start ran into.
    local_errno: Errno,
}

/// The longest a shard sleeps in the kernel before it looks at cancellations and new jobs.
const MAX_WAIT: Duration = Duration::from_millis(50);

/// The most probes a shard starts in one loop turn. Completions are only reaped between
/// turns, so a turn must stay short next to the connect timeout: starting the whole slab at
/// once (tens of thousands of sockets) makes a turn last hundreds of milliseconds, inflates
/// every measured latency and lets timeouts race answers that have already arrived.
const MAX_STARTS_PER_TURN: usize = 1024;

/// The first pause before probes that hit a local shortage (EMFILE, ENFILE, ENOBUFS, ENOMEM)
/// are tried again; it doubles while the shortage lasts, up to the maximum.
const STARVED_BACKOFF_MIN: Duration = Duration::from_millis(1);
const STARVED_BACKOFF_MAX: Duration = Duration::from_millis(100);

/// How long a job's probes may wait for descriptors while none of the job's own probes is in
/// flight in the shard (so nothing of the job's own will free one). After that, the waiting
/// probes are reported as `error` with the errno: a probe never waits forever.
const STARVED_GIVE_UP: Duration = Duration::from_secs(10);

pub(crate) struct Shard<D: Driver> {
    config: ShardConfig,
    driver: D,
    commands: Receiver<ShardCmd>,
    /// Disconnected when the engine is dropped (see [`deliver`]).
    stopping: Receiver<()>,
    jobs: Vec<Option<ActiveJob>>,
    slots: Vec<SlotState>,
    /// The probe state of each slot (separate from `slots` because it is not `Copy`).
    conversations: Vec<Conversation>,
    free: Vec<u32>,
    /// Slots whose next connect waits for the next loop turn: retries.
    restart: Vec<u32>,
    /// Slots whose start ran into a local shortage (EMFILE, ENOBUFS ...): they start again
    /// after `starved_retry_at`, with backoff. A shortage is never a verdict on the target.
    starved: Vec<u32>,
    starved_backoff: Duration,
    starved_retry_at: Instant,
    completions: Vec<Completion>,
    next_job: usize,
    /// Where the shard publishes what it is doing (for metrics and `porthawk bench`).
    gauges: ShardGauges,
    /// How many probes may be in flight now (at most the slab's size).
    window: InflightWindow,
    busy_clock: BusyClock,
}

/// How long the calling thread has been busy: on a CPU or waiting in the run queue for one
/// (`/proc/thread-self/schedstat`, kept open). Where that file is missing, its CPU time.
struct BusyClock {
    schedstat: Option<std::fs::File>,
    buf: [u8; 96],
}

impl BusyClock {
    /// Opens the calling thread's clock: call it on the thread it measures.
    fn for_this_thread() -> Self {
        BusyClock {
            schedstat: std::fs::File::open("/proc/thread-self/schedstat").ok(),
            buf: [0; 96],
        }
    }

    fn read(&mut self) -> Duration {
        use std::os::unix::fs::FileExt;
        if let Some(file) = &self.schedstat {
            // "<ns on a CPU> <ns waiting for one> <time slices>"
            if let Ok(n) = file.read_at(&mut self.buf, 0) {
                let text = std::str::from_utf8(&self.buf[..n]).unwrap_or("");
                let mut fields = text.split_whitespace().map(|f| f.parse::<u64>());
                if let (Some(Ok(run)), Some(Ok(wait))) = (fields.next(), fields.next()) {
                    return Duration::from_nanos(run.saturating_add(wait));
                }
            }
        }
        thread_cpu_time()
    }
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

impl<D: Driver> Shard<D> {
    pub(crate) fn new(
        config: ShardConfig,
        driver: D,
        slots: usize,
        commands: Receiver<ShardCmd>,
        stopping: Receiver<()>,
        gauges: ShardGauges,
    ) -> Self {
        let now = Instant::now();
        // `new` runs on the shard's own thread (see `Engine::start_on`).
        let mut busy_clock = BusyClock::for_this_thread();
        let window = InflightWindow::new(WindowConfig::for_budget(slots), now, busy_clock.read());
        Shard {
            config,
            driver,
            commands,
            stopping,
            jobs: Vec::new(),
            slots: vec![
                SlotState {
                    job: 0,
                    target: SocketAddr::from(([0, 0, 0, 0], 0)),
                    started: now,
                    connected: now,
                    rtt_us: 0,
                    local_errno: 0,
                };
                slots
            ],
            conversations: (0..slots).map(|_| Conversation::default()).collect(),
            free: (0..slots as u32).rev().collect(),
            restart: Vec::with_capacity(slots),
            starved: Vec::with_capacity(slots),
            starved_backoff: STARVED_BACKOFF_MIN,
            starved_retry_at: now,
            completions: Vec::with_capacity(slots),
            next_job: 0,
            gauges,
            window,
            busy_clock,
        }
    }

    /// Slots holding a probe: in flight in the driver, waiting to restart or for descriptors.
    fn occupied(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Publishes the shard's in-flight count, window and CPU time.
    fn publish(&self, cpu: Duration) {
        let g = &self.gauges;
        g.inflight.store(self.occupied(), Ordering::Relaxed);
        g.window.store(self.window.limit(), Ordering::Relaxed);
        g.cpu_ns.store(
            u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn active(&self) -> bool {
        self.jobs.iter().any(Option::is_some)
    }

    fn add_job(&mut self, shared: Arc<JobShared>) {
        let now = Instant::now();
        // Empty: the first start takes a chunk from the job's cursor.
        let claim = shared.space.shard_range(0..0, 0, 1);
        let bucket = shared
            .rate
            .map(|r| TokenBucket::new(r as f64 / self.config.shards as f64, now));
        let job = ActiveJob {
            shared,
            claim,
            batch: Vec::with_capacity(self.config.batch_records),
            last_flush: now,
            inflight: 0,
            bucket,
            hist: new_histogram(),
            peak_inflight: 0,
            starved: 0,
            starved_since: None,
        };
        match self.jobs.iter().position(Option::is_none) {
            Some(i) => self.jobs[i] = Some(job),
            None => self.jobs.push(Some(job)),
        }
    }

    /// Runs until the engine goes away. A backend failure ends the shard: its jobs are
    /// finished with the error recorded, so no consumer waits forever.
    pub(crate) fn run(mut self) {
        loop {
            if !self.active() {
                // The last turn's closes are still queued in the driver: submit them before
                // sleeping, or a finished job's sockets stay open until the next job.
                if let Err(e) = self.driver.flush() {
                    self.fail(&e.to_string());
                    return;
                }
                self.publish(thread_cpu_time());
                // Nothing to do: block until the next job (or the engine's end), using no CPU.
                match self.commands.recv() {
                    Ok(ShardCmd::Job(job)) => self.add_job(job),
                    Err(_) => return,
                }
            }
            while let Ok(ShardCmd::Job(job)) = self.commands.try_recv() {
                self.add_job(job);
            }
            if let Err(e) = self.turn() {
                self.fail(&e.to_string());
                return;
            }
        }
    }

    /// One loop turn: start what may start, wait for completions, handle them, flush.
    fn turn(&mut self) -> std::io::Result<()> {
        let now = Instant::now();
        for job in self.jobs.iter_mut().flatten() {
            if job.shared.cancel.load(Ordering::Relaxed) {
                job.claim.clear();
            }
        }
        let mut restarts = std::mem::take(&mut self.restart);
        for slot in restarts.drain(..) {
            self.start(slot, now);
        }
        if self.restart.is_empty() {
            self.restart = restarts; // keep the allocation
        }
        self.retry_starved(now);
        let rate_wait = if self.starved.is_empty() {
            self.fill(now)
        } else {
            // New starts would run into the same shortage; the waiting ones go first.
            Some(self.starved_retry_at.saturating_duration_since(now))
        };
        let cpu = thread_cpu_time();
        let now = Instant::now();
        let occupied = self.occupied();
        let clock = &mut self.busy_clock;
        self.window.on_turn(occupied, now, || clock.read());

        // Batches with records are sent at the latest one flush interval after the last.
        let flush_wait = self
            .jobs
            .iter()
            .flatten()
            .filter(|j| !j.batch.is_empty())
            .map(|j| (j.last_flush + self.config.flush_interval).saturating_duration_since(now))
            .min()
            .unwrap_or(MAX_WAIT);
        let mut wait = flush_wait.min(MAX_WAIT);
        if let Some(r) = rate_wait {
            wait = wait.min(r);
        }
        if let Some(at) = self.window.next_decision() {
            // The window is full and may grow then: look again without waiting for an
            // answer that may be a timeout away (a filtered sweep ramps up this way).
            wait = wait.min(at.saturating_duration_since(now));
        }
        if self.could_start() || (self.driver.inflight() == 0 && !self.restart.is_empty()) {
            // Slots, window and targets left (the turn's start budget ran out, or the window
            // just grew): reap what is ready and go on at once, rather than wait for a
            // completion that may be a timeout away.
            wait = Duration::ZERO;
        }
        if self.driver.inflight() == 0 && wait > Duration::ZERO && self.restart.is_empty() {
            // Nothing in flight (rate-limited, or every job just drained): sleep instead of
            // asking the kernel to wait on nothing.
            let pending =
                !self.starved.is_empty() || self.jobs.iter().flatten().any(ActiveJob::has_more);
            if pending {
                std::thread::sleep(wait);
            }
        }
        self.completions.clear();
        self.driver.wait(&mut self.completions, wait)?;
        let now = Instant::now();
        for i in 0..self.completions.len() {
            let c = self.completions[i];
            self.complete(c.slot, c.event, now);
        }
        self.flush(now);
        self.publish(cpu);
        Ok(())
    }

    /// Whether the shard could start a probe right now: a free slot, room in the window, no
    /// probe waiting for descriptors, and a job with targets left that no rate limit holds.
    fn could_start(&self) -> bool {
        !self.free.is_empty()
            && self.occupied() < self.window.limit()
            && self.starved.is_empty()
            && self
                .jobs
                .iter()
                .flatten()
                .any(|j| j.bucket.is_none() && j.has_more())
    }

    /// Starts probes on free slots, taking targets from the active jobs in turn. Returns how
    /// long until a rate-limited job may start its next probe, if one is waiting for that.
    fn fill(&mut self, now: Instant) -> Option<Duration> {
        let mut rate_wait: Option<Duration> = None;
        let njobs = self.jobs.len();
        let mut idle_rounds = 0;
        let mut started = 0;
        let limit = self.window.limit();
        while !self.free.is_empty()
            && self.occupied() < limit
            && idle_rounds < njobs
            && started < MAX_STARTS_PER_TURN
        {
            let j = self.next_job % njobs.max(1);
            self.next_job = self.next_job.wrapping_add(1);
            let Some(job) = self.jobs[j].as_mut() else {
                idle_rounds += 1;
                continue;
            };
            if !job.has_more() {
                idle_rounds += 1;
                continue;
            }
            if let Some(bucket) = job.bucket.as_mut() {
                if !bucket.try_take(now) {
                    let w = bucket.wait_time();
                    rate_wait = Some(rate_wait.map_or(w, |r: Duration| r.min(w)));
                    idle_rounds += 1;
                    continue;
                }
            }
            // What the shard can start now: a chunk no larger, so that it holds no positions
            // it cannot start while another shard could.
            let occupied = self.slots.len() - self.free.len();
            let room = limit
                .saturating_sub(occupied)
                .min(MAX_STARTS_PER_TURN - started);
            let Some(position) = job.next_position(self.config.shards, room) else {
                // Another shard took the last chunk.
                idle_rounds += 1;
                continue;
            };
            idle_rounds = 0;
            let Some(target) = job.shared.space.get(position) else {
                continue;
            };
            let Some(slot) = self.free.pop() else {
                break;
            };
            job.inflight += 1;
            started += 1;
            self.slots[slot as usize] = SlotState {
                job: j,
                target,
                started: now,
                connected: now,
                rtt_us: 0,
                local_errno: 0,
            };
            let conv = &mut self.conversations[slot as usize];
            conv.reset();
            if job.shared.spec.tls_config.is_some() {
                // SNI: the name the user gave, if the address came from one.
                conv.set_server_name(job.shared.space.name_of(target.ip()));
            }
            self.start(slot, now);
            if !self.starved.is_empty() {
                // Out of descriptors or buffers: let some probes finish first.
                break;
            }
        }
        for job in self.jobs.iter_mut().flatten() {
            job.peak_inflight = job.peak_inflight.max(job.inflight);
        }
        rate_wait
    }

    /// Starts (or restarts) the connect of an occupied slot.
    fn start(&mut self, slot: u32, now: Instant) {
        let state = &mut self.slots[slot as usize];
        state.started = now;
        let Some(job) = self.jobs[state.job].as_ref() else {
            return;
        };
        let timeout = job.shared.spec.connect_timeout;
        let target = state.target;
        match self.driver.start(slot, target, timeout) {
            Ok(()) => {
                if let Some(job) = self.jobs[state.job].as_mut() {
                    job.starved_since = None;
                }
            }
            Err(e) if waits_for_resources(e) => self.starve(slot, e, now),
            Err(e) => self.complete(slot, IoEvent::Connect(ConnectEvent::Failed(e)), now),
        }
    }

    /// Puts a slot whose connect ran into a local shortage aside, to be started again when
    /// descriptors (or buffers, or local ports) free up.
    fn starve(&mut self, slot: u32, errno: Errno, now: Instant) {
        self.window.on_shortage(self.occupied());
        let state = &mut self.slots[slot as usize];
        state.local_errno = errno;
        if let Some(job) = self.jobs[state.job].as_mut() {
            job.starved += 1;
        }
        if self.starved.is_empty() {
            self.starved_retry_at = now + self.starved_backoff;
        }
        self.starved.push(slot);
    }

    /// Starts the probes waiting for descriptors again once their backoff has passed. A job
    /// whose probes have all been waiting, with none of its own in flight, for longer than
    /// [`STARVED_GIVE_UP`] has them reported as `error` with the shortage's errno.
    fn retry_starved(&mut self, now: Instant) {
        if self.starved.is_empty() || now < self.starved_retry_at {
            return;
        }
        for job in self.jobs.iter_mut().flatten() {
            if job.starved > 0 && job.starved == job.inflight {
                job.starved_since.get_or_insert(now);
            } else {
                job.starved_since = None;
            }
        }
        let waiting = std::mem::take(&mut self.starved);
        for job in self.jobs.iter_mut().flatten() {
            job.starved = 0;
        }
        for &slot in &waiting {
            let state = self.slots[slot as usize];
            let give_up = self.jobs[state.job]
                .as_ref()
                .and_then(|j| j.starved_since)
                .is_some_and(|since| now.saturating_duration_since(since) >= STARVED_GIVE_UP);
            if give_up {
                self.record(slot, PortState::Error, Some(state.local_errno), now);
            } else {
                self.start(slot, now);
            }
        }
        self.starved_backoff = if self.starved.is_empty() {
            STARVED_BACKOFF_MIN
        } else {
            (self.starved_backoff * 2).min(STARVED_BACKOFF_MAX)
        };
        self.starved_retry_at = now + self.starved_backoff;
    }

    /// Feeds a finished operation to the slot's conversation and does what it says next.
    fn complete(&mut self, slot: u32, event: IoEvent, now: Instant) {
        let i = slot as usize;
        let state = &mut self.slots[i];
        let Some(job) = self.jobs[state.job].as_ref() else {
            return;
        };
        let spec = &job.shared.spec;
        let conv = &mut self.conversations[i];
        let elapsed = now.saturating_duration_since(state.connected);
        let step = match event {
            IoEvent::Connect(ConnectEvent::Failed(e)) if waits_for_resources(e) => {
                // The connect itself ran short (ENOBUFS, EADDRNOTAVAIL ...): no answer from
                // the target, so not a try either.
                self.starve(slot, e, now);
                return;
            }
            IoEvent::Connect(connect) => {
                let rtt = now.saturating_duration_since(state.started);
                let answered = match connect {
                    ConnectEvent::Connected { .. } => true,
                    ConnectEvent::Failed(e) => !is_local_errno(e) && e != libc::ETIMEDOUT,
                    ConnectEvent::TimedOut => false,
                };
                if answered {
                    self.window.on_answer(rtt);
                }
                state.rtt_us = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
                state.connected = now;
                conv.on_connect(spec, connect)
            }
            IoEvent::Sent(Ok(n)) => conv.on_sent(spec, n, elapsed),
            IoEvent::Received(Ok(n)) => {
                let data = &self.driver.received(slot)[..n];
                conv.on_recv(spec, data, elapsed)
            }
            IoEvent::Sent(Err(e)) | IoEvent::Received(Err(e)) => conv.on_io_error(e),
            IoEvent::TimedOut => conv.on_timeout(spec, elapsed),
        };
        let connected = matches!(event, IoEvent::Connect(ConnectEvent::Connected { .. }))
            || !matches!(event, IoEvent::Connect(_));
        let io = match step {
            Step::Reconnect => {
                // A dialog that asks for a new connection (the identify plan's next probe)
                // leaves its connected socket behind: close it first.
                if !matches!(event, IoEvent::Connect(_)) {
                    self.driver.close(slot);
                }
                self.restart.push(slot);
                return;
            }
            Step::Send { timeout } => {
                let data = self.conversations[i].pending_send();
                self.driver.send(slot, data, timeout)
            }
            Step::Recv { timeout } => self.driver.recv(slot, timeout),
            Step::Done {
                state: verdict,
                errno,
            } => {
                if connected {
                    self.driver.close(slot);
                }
                self.record(slot, verdict, errno, now);
                return;
            }
        };
        let mut io = io;
        while let Err(e) = io {
            // The socket could not take the next operation (a peer's reset that the connect's
            // check already took leaves it closed): the dialog says what that means. It ends
            // the probe or, for an identify plan, moves on to its next probe on a new
            // connection; dropping that step would leave the slot busy for ever.
            self.driver.close(slot);
            io = match self.conversations[i].on_io_error(e) {
                Step::Done { state, errno } => {
                    self.record(slot, state, errno, now);
                    return;
                }
                Step::Reconnect => {
                    self.restart.push(slot);
                    return;
                }
                // Not what a dialog answers to an I/O error; on the closed socket it would
                // fail as the last one did, which the dialog is told again.
                Step::Send { .. } | Step::Recv { .. } => Err(libc::ENOTCONN),
            };
        }
    }

    /// Writes the slot's record into its job's batch and frees the slot.
    fn record(&mut self, slot: u32, verdict: PortState, errno: Option<i32>, now: Instant) {
        let i = slot as usize;
        let state = self.slots[i];
        let Some(job) = self.jobs[state.job].as_mut() else {
            return;
        };
        if matches!(verdict, PortState::Open | PortState::Closed) {
            // Values beyond the histogram's range are clamped by saturating_record.
            job.hist.saturating_record(u64::from(state.rtt_us.max(1)));
        }
        let conv = &self.conversations[i];
        job.batch.push(ProbeRecord {
            ip: state.target.ip(),
            port: state.target.port(),
            state: verdict,
            rtt_us: state.rtt_us,
            tries: conv.tries(),
            errno,
            banner: conv.banner().map(<[u8]>::to_vec),
            matched: conv.matched(),
            reason: conv.reason().map(str::to_string),
            tls: conv.tls().cloned(),
            dialog_us: job
                .shared
                .spec
                .dialog
                .as_ref()
                .and((verdict == PortState::Open).then(|| {
                    let d = now.saturating_duration_since(state.connected);
                    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
                })),
            captures: conv.captures().to_vec(),
            mismatch: conv.mismatched(),
        });
        job.inflight -= 1;
        self.free.push(slot);
    }

    /// Sends full or old batches, and finishes jobs with nothing left to probe.
    fn flush(&mut self, now: Instant) {
        for j in 0..self.jobs.len() {
            let Some(job) = self.jobs[j].as_mut() else {
                continue;
            };
            let finished = !job.has_more() && job.inflight == 0;
            let due = job.batch.len() >= self.config.batch_records
                || (!job.batch.is_empty()
                    && now.saturating_duration_since(job.last_flush) >= self.config.flush_interval);
            if due && !finished {
                let records = std::mem::replace(
                    &mut job.batch,
                    Vec::with_capacity(self.config.batch_records),
                );
                job.last_flush = now;
                let batch = make_batch(self.config.index, &job.shared, records, false, false);
                deliver(&job.shared.sink, &self.stopping, batch);
            }
            if finished {
                if let Some(job) = self.jobs[j].take() {
                    self.finish(job);
                }
            }
        }
    }

    fn batch(
        &self,
        shared: &JobShared,
        records: Vec<ProbeRecord>,
        shard_done: bool,
        job_done: bool,
    ) -> ResultBatch {
        make_batch(self.config.index, shared, records, shard_done, job_done)
    }

    fn send(&self, shared: &JobShared, batch: ResultBatch) {
        deliver(&shared.sink, &self.stopping, batch);
    }

    /// Sends the shard's last batch of a job and, from the last shard to finish, the batch
    /// that ends the job. Each shard sends its last batch before it counts itself out, so the
    /// job-ending batch is the last of the job in the channel.
    fn finish(&self, job: ActiveJob) {
        if let Ok(mut stats) = job.shared.stats.lock() {
            // Both histograms have the same bounds, so adding cannot fail.
            let _ = stats.rtt_us.add(&job.hist);
            stats.peak_inflight += job.peak_inflight;
        }
        let batch = self.batch(&job.shared, job.batch, true, false);
        self.send(&job.shared, batch);
        if job.shared.shards_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let done = self.batch(&job.shared, Vec::new(), true, true);
            self.send(&job.shared, done);
        }
    }

    /// Ends every job after a backend failure: whatever was in flight or not yet probed is
    /// reported as `error` (EIO) and the failure is recorded, so nothing is silently missing
    /// and no consumer waits forever. Later jobs are answered the same way.
    fn fail(&mut self, error: &str) {
        let mut occupied = vec![true; self.slots.len()];
        for &slot in &self.free {
            occupied[slot as usize] = false;
        }
        for (slot, busy) in occupied.iter().enumerate() {
            let state = self.slots[slot];
            if let (true, Some(job)) = (*busy, self.jobs[state.job].as_mut()) {
                job.batch.push(error_record(state.target));
                job.inflight -= 1;
            }
        }
        loop {
            for mut job in std::mem::take(&mut self.jobs).into_iter().flatten() {
                if let Ok(mut stats) = job.shared.stats.lock() {
                    stats
                        .errors
                        .push(format!("shard {}: {error}", self.config.index));
                }
                // The positions nobody has started yet go with it: this shard cannot probe
                // them, and the others may already be done with the job.
                while let Some(pos) = job.next_position(self.config.shards, usize::MAX) {
                    if let Some(target) = job.shared.space.get(pos) {
                        job.batch.push(error_record(target));
                    }
                    if job.batch.len() >= self.config.batch_records {
                        let records = std::mem::take(&mut job.batch);
                        let batch = self.batch(&job.shared, records, false, false);
                        self.send(&job.shared, batch);
                    }
                }
                self.finish(job);
            }
            match self.commands.recv() {
                Ok(ShardCmd::Job(job)) => self.add_job(job),
                Err(_) => return,
            }
        }
    }
}

/// Whether a probe that failed with `errno` waits for descriptors, buffers or memory to free
/// up. `EADDRNOTAVAIL`, though local too ([`is_local_errno`]), is left to the probe machine's
/// own bounded retries: it can also mean that no source address reaches the target, which
/// waiting does not cure, and waiting would hold up every other start of the shard.
fn waits_for_resources(errno: Errno) -> bool {
    is_local_errno(errno) && errno != libc::EADDRNOTAVAIL
}

fn error_record(target: SocketAddr) -> ProbeRecord {
    ProbeRecord {
        errno: Some(libc::EIO),
        ..ProbeRecord::new(target.ip(), target.port(), PortState::Error, 0, 0)
    }
}

fn make_batch(
    shard: u16,
    shared: &JobShared,
    records: Vec<ProbeRecord>,
    shard_done: bool,
    job_done: bool,
) -> ResultBatch {
    ResultBatch {
        job: shared.id,
        shard,
        records,
        shard_done,
        job_done,
        cancelled: shared.cancel.load(Ordering::Relaxed),
    }
}

/// Sends a batch to its job's sink. A full sink blocks here: back-pressure slows the shard,
/// nothing is dropped. Two exceptions, both when nobody will read it: a sink whose receiver is
/// gone (the consumer stopped listening; the shard goes on until the engine stops it), and a
/// full sink once the engine is being dropped (its owner may be the very thread that would
/// read it).
fn deliver(sink: &Sender<ResultBatch>, stopping: &Receiver<()>, batch: ResultBatch) {
    let batch = match sink.try_send(batch) {
        Ok(()) | Err(TrySendError::Disconnected(_)) => return,
        Err(TrySendError::Full(batch)) => batch,
    };
    crossbeam_channel::select! {
        send(sink, batch) -> _ => {}
        recv(stopping) -> _ => {}
    }
}
