//! Test support shared by unit tests and the end-to-end tests (`tests/common` includes
//! this file): real servers started for a test and stopped with it. Not every user calls
//! every helper.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound and released; the server binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A server of a cluster being started exited at once (its log).
struct Exited(String);

/// `n` nats-server processes with JetStream, clustered on loopback ports (one server: no
/// cluster), each with its own store in a temp folder; killed when dropped. `max_payload`
/// is 8 MB (the default 1 MB is below a 1 MiB Kinesis record with its key).
pub struct NatsCluster {
    children: Vec<Child>,
    ports: Vec<u16>,
    /// Monitoring (HTTP) ports, for readiness.
    monitor: Vec<u16>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts the servers and waits until each accepts connections. Panics (the test
    /// fails) when `nats-server` is missing or does not start.
    pub fn start(n: usize) -> NatsCluster {
        Self::start_with(n, "")
    }

    /// [`NatsCluster::start`] with `extra` added to every server's configuration (TLS,
    /// `authorization`).
    pub fn start_with(n: usize, extra: &str) -> NatsCluster {
        // A port found free can be taken by another test before the server binds it: a
        // server that exits at once is started again, on other ports.
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(n, extra) {
                Ok(c) => {
                    c.wait_jetstream();
                    return c;
                }
                Err(Exited(log)) => last = log,
            }
        }
        panic!("nats-server did not start three times: {last}");
    }

    fn try_start(n: usize, extra: &str) -> Result<NatsCluster, Exited> {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let monitor: Vec<u16> = (0..n).map(|_| free_port()).collect();
        // A name of its own: a route port of this cluster taken by another test's cluster
        // (a port found free, bound by the other one first) is refused there instead of
        // joining two clusters whose servers share names — whose JetStream then elected
        // no leader (seen once: "never became ready").
        let tag = format!("{:08x}", fastrand::u32(..));
        let mut children = Vec::new();
        for i in 0..n {
            let store = dir.path().join(format!("n{i}"));
            let cluster = if n > 1 {
                let urls: Vec<String> = routes
                    .iter()
                    .map(|p| format!("nats-route://127.0.0.1:{p}"))
                    .collect();
                format!(
                    "cluster {{\n  name: sluice-test-{tag}\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    routes[i],
                    urls.join(", ")
                )
            } else {
                String::new()
            };
            let conf = format!(
                "server_name: n{i}-{tag}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\nmax_payload: 8MB\njetstream {{\n  store_dir: \"{}\"\n}}\n{cluster}{extra}\n",
                ports[i],
                monitor[i],
                store.display()
            );
            let path = dir.path().join(format!("n{i}.conf"));
            std::fs::write(&path, conf).expect("write nats-server config");
            children.push(spawn(dir.path(), i));
        }
        let mut c = NatsCluster {
            children,
            ports,
            monitor,
            dir,
        };
        for i in 0..n {
            let p = c.ports[i];
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
                if matches!(c.children[i].try_wait(), Ok(Some(_))) {
                    return Err(Exited(format!("nats-server n{i} exited: {}", c.log(i))));
                }
                assert!(
                    Instant::now() < deadline,
                    "nats-server n{i} did not listen on {p}: {}",
                    c.log(i)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(c)
    }

    /// Waits until every server reports JetStream ready (`/healthz`: JetStream on and,
    /// in a cluster, current with an elected meta leader), for at most 60 s.
    pub fn wait_jetstream(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for (i, p) in self.monitor.iter().enumerate() {
            loop {
                let ok = http_get(*p, "/healthz").is_some_and(|b| b.contains("\"ok\""))
                    && (self.ports.len() == 1
                        || http_get(*p, "/jsz").is_some_and(|b| has_meta_leader(&b)));
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "nats-server n{i}'s JetStream never became ready: {}",
                    self.log(i)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The servers' client URLs.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect()
    }

    /// Server `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("n{i}.log"))).unwrap_or_default()
    }

    /// Retries `f` until it succeeds (a new cluster elects its JetStream leader first),
    /// for at most 60 s.
    pub fn wait_for<T, E: std::fmt::Display>(&self, mut f: impl FnMut() -> Result<T, E>) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match f() {
                Ok(v) => return v,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!(
                    "the JetStream cluster never became ready: {e}\n{}",
                    self.log(0)
                ),
            }
        }
    }

    /// Starts server `i` again (after [`NatsCluster::stop`]), with its store as it was,
    /// and waits until the whole cluster reports JetStream ready.
    pub fn restart(&mut self, i: usize) {
        self.children[i] = spawn(self.dir.path(), i);
        self.wait_jetstream();
    }

    /// Every JetStream stream's details as the server with monitoring port `port`
    /// reports them.
    fn stream_details(port: u16) -> Option<Vec<serde_json::Value>> {
        let body = http_get(port, "/jsz?accounts=true&streams=true")?;
        let v = serde_json::from_str::<serde_json::Value>(&body).ok()?;
        let mut out = Vec::new();
        for acc in v["account_details"].as_array().into_iter().flatten() {
            out.extend(
                acc["stream_detail"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        Some(out)
    }

    /// The server leading JetStream stream `name` (its Raft group), as the servers'
    /// monitoring reports it.
    pub fn leader_of(&self, name: &str) -> Option<usize> {
        self.monitor.iter().find_map(|p| {
            let details = Self::stream_details(*p)?;
            let st = details.iter().find(|s| s["name"] == name)?;
            // Server names are `n<i>-<tag>`.
            st["cluster"]["leader"]
                .as_str()?
                .strip_prefix('n')
                .and_then(|n| n.split('-').next())
                .and_then(|n| n.parse().ok())
        })
    }

    /// The names of the cluster's JetStream streams (`None`: no server's monitoring
    /// answered).
    pub fn stream_names(&self) -> Option<Vec<String>> {
        Some(
            self.monitor
                .iter()
                .find_map(|p| Self::stream_details(*p))?
                .iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect(),
        )
    }

    /// Kills server `i` (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(c) = self.children.get_mut(i) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The folder holding the servers' stores and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Starts server `i` from its config file in `dir`, its log appended to `n<i>.log`.
fn spawn(dir: &Path, i: usize) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("n{i}.log")))
        .expect("log");
    Command::new("nats-server")
        .arg("-c")
        .arg(dir.join(format!("n{i}.conf")))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start nats-server (scripts/install-test-deps installs it): {e}")
        })
}

/// The body of `GET path` on a loopback port (HTTP/1.0: the server closes).
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(c, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    status.contains(" 200 ").then(|| body.to_string())
}

/// Whether `/jsz` names a meta leader (the cluster can create streams).
fn has_meta_leader(jsz: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(jsz).is_ok_and(|v| {
        v["meta_cluster"]["leader"]
            .as_str()
            .is_some_and(|l| !l.is_empty())
    })
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
