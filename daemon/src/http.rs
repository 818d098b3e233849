//! Serving HTTP/1.1 and cleartext HTTP/2 (prior knowledge: what the AWS SDKs use for
//! SubscribeToShard against an `http://` endpoint) with limits, for the data API and the
//! operator endpoints: a cap on open connections (past it new ones are closed at once and
//! counted); for HTTP/1.1 a header-read timeout that also ends idle keep-alive
//! connections (hyper starts it whenever it waits for a request head); for HTTP/2 at most
//! 100 concurrent streams per connection and keep-alive pings that end dead peers.
//! Bodies are bounded by the handlers (size and read timeout).

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

/// Waits, at most `limit`, until the first bytes tell HTTP/1 from HTTP/2 (the client
/// preface). hyper's automatic detection has no timeout of its own: without this, a
/// connection that sends nothing (or a few bytes) would hold its slot forever.
async fn protocol_known(sock: &tokio::net::TcpStream, limit: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 24];
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 {
            return false;
        }
        if n >= PREFACE.len() || buf[..n] != PREFACE[..n] {
            return true;
        }
        // Part of the HTTP/2 preface so far: wait for the rest.
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

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
            if !protocol_known(&sock, limits.header_timeout).await {
                open.decrement(1.0);
                drop(permit);
                return;
            }
            let mut b =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true);
            b.http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(100)
                .keep_alive_interval(Some(limits.header_timeout))
                .keep_alive_timeout(limits.header_timeout);
            let _ = b.serve_connection(TokioIo::new(sock), svc).await;
            open.decrement(1.0);
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A connection that never sends a request (not even enough to tell HTTP/1 from
    /// HTTP/2) is closed after the header timeout, so it cannot hold its slot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_connections_are_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let limits = Limits {
            max_connections: 4,
            header_timeout: Duration::from_millis(300),
        };
        tokio::spawn(serve(listener, app, limits, "test-silent"));
        let closed = tokio::task::spawn_blocking(move || {
            let mut silent = std::net::TcpStream::connect(addr).unwrap();
            let mut partial = std::net::TcpStream::connect(addr).unwrap();
            partial.write_all(b"PRI * HTTP").unwrap();
            let ends = |s: &mut std::net::TcpStream| {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = [0u8; 16];
                // Closed: end of stream, or a reset (unread bytes were left behind).
                match s.read(&mut buf) {
                    Ok(0) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                    Ok(_) => false,
                }
            };
            (ends(&mut silent), ends(&mut partial))
        })
        .await
        .unwrap();
        assert_eq!(closed, (true, true));
    }

    /// Past `max_connections` a new connection is closed at once; the open ones are served.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_past_the_cap_are_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let limits = Limits {
            max_connections: 2,
            header_timeout: Duration::from_secs(20),
        };
        tokio::spawn(serve(listener, app, limits, "test"));
        let res = tokio::task::spawn_blocking(move || {
            // Two connections hold the slots (no request yet).
            let held: Vec<std::net::TcpStream> = (0..2)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            // The server accepts in order: these two take both slots before the third.
            let mut third = std::net::TcpStream::connect(addr).unwrap();
            third
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut buf = Vec::new();
            // Closed unanswered: end of stream, or a reset (our request was unread).
            let third_closed = match third.read_to_end(&mut buf) {
                Ok(_) => buf.is_empty(),
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            };
            // A held one is served.
            let mut first = &held[0];
            first
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            (&held[0]).read_to_string(&mut answer).unwrap();
            (third_closed, answer)
        })
        .await
        .unwrap();
        assert!(res.0, "the third connection is closed unanswered");
        assert!(res.1.starts_with("HTTP/1.1 200"), "{}", res.1);
    }
}
