//! The HTTP server's accept loop: HTTP/1.1 connections under a cap, with a header-read
//! timeout, so that clients (slow, idle or hostile) can never hold more descriptors than the
//! cap and never the ones probes need.
//!
//! A permit of the connection semaphore is taken *before* `accept`: over the cap, new
//! connections wait in the kernel's listen backlog, costing this process no descriptor, until
//! a connection ends. Each connection's requests carry the local address it was accepted on
//! ([`LocalAddr`]), which the guard's `Host` check compares against.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::config::HttpGuard;
use crate::guard::LocalAddr;

/// How long the loop waits before accepting again after `accept` failed (EMFILE, ENOBUFS):
/// the failure is ours, and retrying at once would only spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` with at most `cap` connections until `stop` resolves; then asks
/// every connection to finish its response and close, and waits up to `grace` for them.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    guard: &HttpGuard,
    cap: usize,
    stop: impl Future<Output = ()>,
    grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(cap));
    let (closing, closing_rx) = watch::channel(false);
    let fallback = listener.local_addr().ok();
    let mut stop = std::pin::pin!(stop);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                // The connection is lost to the client, who sees it reset; the failure is
                // ours and passes.
                Err(_) => {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(local) = stream.local_addr().ok().or(fallback) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let closing = closing_rx.clone();
        let header_timeout = guard.header_timeout;
        tokio::spawn(async move {
            connection(stream, local, app, header_timeout, closing).await;
            drop(permit);
        });
    }
    let _ = closing.send(true);
    // Every permit back means every connection ended.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(grace, permits.acquire_many(all)).await;
}

/// Serves one connection until it ends, or until `closing`: then it finishes the response
/// in progress and closes.
async fn connection(
    stream: tokio::net::TcpStream,
    local: SocketAddr,
    app: Router,
    header_timeout: Duration,
    mut closing: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(LocalAddr(local));
        app.clone().oneshot(req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let closing = async move {
        // A dropped sender also means closing.
        let _ = closing.wait_for(|c| *c).await;
    };
    tokio::select! {
        _ = conn.as_mut() => {}
        () = closing => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
