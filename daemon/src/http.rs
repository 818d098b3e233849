//! Serving HTTP/1.1 with limits, for the data API and the operator endpoints: a cap on
//! open connections (past it new ones are closed at once and counted), and a header-read
//! timeout that also ends idle keep-alive connections (hyper starts it whenever it waits
//! for a request head). Bodies are bounded by the handlers (size and read timeout).

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time for a request head to arrive, counted from when the connection starts waiting
    /// for one: a slow sender and an idle keep-alive connection both end after it.
    pub header_timeout: Duration,
}

/// Defaults: 1,024 connections, 20 s for a request head (AWS SDKs keep idle connections
/// in their pools and reconnect when one is closed).
pub const LIMITS: Limits = Limits {
    max_connections: 1024,
    header_timeout: Duration::from_secs(20),
};

/// Serves `app` on `listener` until the process ends. `name` labels the metrics.
pub async fn serve(listener: TcpListener, app: axum::Router, limits: Limits, name: &'static str) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open = metrics::gauge!("sluice_http_connections", "listener" => name);
    let refused = metrics::counter!("sluice_http_connections_refused_total", "listener" => name);
    refused.increment(0);
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment instead of spinning.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused.increment(1);
            drop(sock);
            continue;
        };
        let _ = sock.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        let open = open.clone();
        tokio::spawn(async move {
            open.increment(1.0);
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true);
            let _ = b.serve_connection(TokioIo::new(sock), svc).await;
            open.decrement(1.0);
            drop(permit);
        });
    }
}
