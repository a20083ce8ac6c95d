//! Issue 14 item 13: once a job has ended, none of its probe sockets stays open (on either
//! backend, and on io_uring with either fd path) while the engine waits for the next job;
//! that includes the sockets of timed-out probes that a slot keeps for its next probe
//! (issue 15 item 3).
//!
//! One test in its own binary, so that counting the process's sockets is not disturbed by
//! other tests running in parallel.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use porthawk_core::{AddrRange, HostSetBuilder, PortSet, ProbeSpec, TargetSpace};
use porthawk_engine::{result_channel, Backend, BackendChoice, Engine, EngineConfig, FdPath, Job};

/// Sockets this process holds open.
fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|link| link.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// Connections of this network namespace to `ip` (from `/proc/self/net/tcp`): the probes'
/// sockets whether or not they have a descriptor (direct descriptors have none).
fn connections_to(ip: Ipv4Addr) -> usize {
    // The kernel prints the address's bytes in memory order, as a hex u32 of this host.
    let want = format!("{:08X}", u32::from_ne_bytes(ip.octets()));
    std::fs::read_to_string("/proc/self/net/tcp")
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|line| {
                    line.split_whitespace()
                        .nth(2)
                        .is_some_and(|remote| remote.starts_with(&want))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Runs one job to its end; returns the number of records.
fn sweep(engine: &Engine, space: Arc<TargetSpace>) -> usize {
    let (sink, results) = result_channel(64);
    let job = engine.submit(Job {
        id: engine.next_job_id(),
        positions: 0..space.len(),
        space,
        spec: ProbeSpec {
            connect_timeout: Duration::from_millis(300),
            ..ProbeSpec::default()
        },
        rate: None,
        sink,
    });
    let mut records = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = results
            .recv_timeout(left)
            .expect("the job did not end within 60 s");
        assert_eq!(batch.job, job.id());
        records += batch.records.len();
        if batch.job_done {
            return records;
        }
    }
}

#[test]
fn no_probe_socket_outlives_its_job() {
    // One open port (never accepted: the handshake completes in the backlog) among 3,000
    // closed ones, on an address of its own.
    let v4 = Ipv4Addr::new(127, 77, 13, 1);
    let ip = IpAddr::V4(v4);
    let listener = TcpListener::bind((ip, 0)).expect("bind");
    let open_port = listener.local_addr().expect("addr").port();
    // And one unanswered port, on the next address: a listener with backlog 0 whose queue
    // one connection fills drops the SYNs of the probes, which time out (and whose sockets
    // their slots keep for the next probe).
    let full =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    full.bind(&std::net::SocketAddr::from((Ipv4Addr::new(127, 77, 13, 2), 0)).into())
        .expect("bind");
    full.listen(0).expect("listen");
    let full_addr = full.local_addr().expect("addr").as_socket().expect("inet");
    let _filler = std::net::TcpStream::connect(full_addr).expect("connect");
    let ports = format!("{open_port},{},61000-63999", full_addr.port());
    let mut hosts = HostSetBuilder::default();
    hosts
        .include(AddrRange::new(IpAddr::V4(v4), full_addr.ip()).expect("a range of two addresses"));
    let ports = PortSet::parse(&ports).expect("ports");
    let total = 2 * ports.len();
    let space = Arc::new(TargetSpace::new(hosts.build(), ports, 7).expect("space"));

    for (backend, direct_fds) in [
        (BackendChoice::Uring, Some(true)),
        (BackendChoice::Uring, Some(false)),
        (BackendChoice::Epoll, None),
    ] {
        let config = EngineConfig {
            shards: 2,
            inflight: 4096,
            backend,
            direct_fds,
            ..EngineConfig::default()
        };
        let engine = match Engine::start(&config) {
            Ok(engine) => engine,
            Err(e) if backend == BackendChoice::Uring => {
                assert_ne!(
                    std::env::var("CI").as_deref(),
                    Ok("true"),
                    "io_uring is needed under CI: {e}"
                );
                eprintln!("skipping io_uring: {e}");
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        let name = format!("{} ({} fds)", engine.backend(), engine.fd_path());
        assert_eq!(
            engine.backend() == Backend::Uring,
            backend == BackendChoice::Uring
        );
        assert_eq!(engine.fd_path() == FdPath::Direct, direct_fds == Some(true));
        let baseline = open_sockets();
        assert_eq!(
            connections_to(v4),
            0,
            "{name}: connections before the sweep"
        );
        for round in 0..2 {
            assert_eq!(sweep(&engine, Arc::clone(&space)), total);
            // Closes may still be on their way through the kernel: wait, bounded.
            let deadline = Instant::now() + Duration::from_secs(5);
            let left_now = || open_sockets().saturating_sub(baseline) + connections_to(v4);
            let mut left = left_now();
            while left > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                left = left_now();
            }
            assert_eq!(
                left, 0,
                "{name}, sweep {round}: {left} probe sockets still open after the job ended"
            );
        }
    }
    drop(listener);
}
