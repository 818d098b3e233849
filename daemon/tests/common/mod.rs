//! Shared harness for end-to-end tests: starts the real `sluiced` binary on free ports,
//! captures its output, talks HTTP to it over real sockets, and waits on conditions with
//! deadlines (never bare sleeps).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

/// Real servers for tests (nats-server clusters), shared with the unit tests.
#[path = "../../src/testing.rs"]
pub mod testing;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The daemon binary built for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluiced"))
}

/// A port nobody listens on right now, below Linux's ephemeral range (32768–60999): the
/// kernel never hands such a port to an outgoing connection, so a daemon that a test
/// restarts finds its port free again (an ephemeral port can be taken by any client
/// socket of a parallel test while the daemon is down).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id() * 7919;
    for _ in 0..20_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + ((seed + n * 97) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// Polls `f` until it returns true or `timeout` passes (then panics with `what`).
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

/// A config folder: `sluiced.toml` plus `pipelines/*.toml`, with free ports.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub metrics: SocketAddr,
    pub api: SocketAddr,
}

impl Setup {
    /// Writes a daemon file (extra TOML appended at top level) and pipeline files.
    pub fn new(extra: &str, pipelines: &[(&str, &str)]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("sluiced.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"var\"\npipelines_dir = \"pipelines\"\nshutdown_timeout = \"10s\"\n{extra}\n\n[api]\nlisten = \"{api}\"\n\n[metrics]\nlisten = \"{metrics}\"\n"
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
        let s = Setup {
            dir,
            config,
            metrics,
            api,
        };
        for (name, body) in pipelines {
            s.write_pipeline(name, body);
        }
        s
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write_pipeline(&self, name: &str, body: &str) {
        std::fs::write(self.path("pipelines").join(format!("{name}.toml")), body).unwrap();
    }

    /// Runs `sluiced <args> --config <config>` to completion.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("SLUICE_LOG", "info")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn start(&self) -> Daemon {
        Daemon::start(&self.config, self.metrics)
    }

    /// Starts the daemon with extra environment variables.
    pub fn start_env(&self, env: &[(&str, &str)]) -> Daemon {
        let args = [
            OsStrArg::from("run"),
            OsStrArg::from("--config"),
            self.config.as_os_str().to_owned(),
        ];
        Daemon::start_env(&args, self.metrics, root(), env)
    }
}

/// A running `sluiced`.
pub struct Daemon {
    pub child: Child,
    pub metrics: SocketAddr,
    pub stdout: Arc<Mutex<Vec<u8>>>,
    pub stderr: Arc<Mutex<String>>,
    /// How many of the two output readers reached the end of their pipe.
    drained: Arc<std::sync::atomic::AtomicUsize>,
}

impl Daemon {
    pub fn start(config: &Path, metrics: SocketAddr) -> Daemon {
        Self::start_with(
            &[
                OsStrArg::from("run"),
                OsStrArg::from("--config"),
                config.as_os_str().to_owned(),
            ],
            metrics,
            root(),
        )
    }

    pub fn start_with(args: &[std::ffi::OsString], metrics: SocketAddr, cwd: PathBuf) -> Daemon {
        Self::start_env(args, metrics, cwd, &[])
    }

    pub fn start_env(
        args: &[std::ffi::OsString],
        metrics: SocketAddr,
        cwd: PathBuf,
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut child = Command::new(bin())
            .args(args)
            .envs(env.iter().copied())
            .current_dir(cwd)
            .env("SLUICE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let o = stdout.clone();
        let drained = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let d = drained.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            d.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let err = child.stderr.take().unwrap();
        let e = stderr.clone();
        let d = drained.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("SLUICE_TEST_ECHO").is_some() {
                    eprintln!("[sluiced] {line}");
                }
                let mut g = e.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
            d.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        Daemon {
            child,
            metrics,
            stdout,
            stderr,
            drained,
        }
    }

    /// Waits for `/readyz` to answer 200.
    pub fn wait_ready(&mut self) {
        let deadline = Duration::from_secs(30);
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("sluiced exited early with {st}:\n{}", self.stderr());
            }
            if matches!(self.get("/readyz"), Some((200, _))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sluiced not ready after {deadline:?}:\n{}", self.stderr());
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        let b = self.stdout.lock().unwrap();
        String::from_utf8_lossy(&b)
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http(self.metrics, "GET", path)
    }

    pub fn post(&self, path: &str) -> Option<(u16, String)> {
        http(self.metrics, "POST", path)
    }

    pub fn metrics_text(&self) -> String {
        self.get("/metrics").map(|r| r.1).unwrap_or_default()
    }

    /// Sum of every sample of `name` whose labels contain all of `labels` (`k="v"` pairs).
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        metric_sum(&self.metrics_text(), name, labels)
    }

    /// SIGTERM, and a clean exit (status 0) within 20 s.
    pub fn stop_cleanly(&mut self) {
        self.signal(libc::SIGTERM);
        let st = self.wait_exit(Duration::from_secs(20));
        assert!(
            st.is_some_and(|s| s.success()),
            "no clean exit after SIGTERM ({st:?}):\n{}",
            self.stderr()
        );
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(st) = self.child.try_wait().unwrap() {
                // What it wrote last (its exit error) is read by the output threads:
                // wait until they reach the end of the pipes (a process it started may
                // still hold them: not forever).
                let drained = Instant::now();
                while self.drained.load(std::sync::atomic::Ordering::SeqCst) < 2
                    && drained.elapsed() < Duration::from_secs(5)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

type OsStrArg = std::ffi::OsString;

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of samples of `name` with all `labels` in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            (n == name && labels.iter().all(|lab| rest.contains(lab)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// One HTTP/1.1 request with `Connection: close`; `None` if nothing listens.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Builds the example plugins once per test process: the Rust example (a real `.so`
/// built by cargo with its `dylib` feature) and the C example (compiled by `cc`), plus
/// the refusal fixtures (the C example built with broken descriptors). Returns the folder
/// holding the built files (not a plugin dir: tests copy what they need).
pub fn example_plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = root();
        let target = root.join("target").join("example-plugins");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--quiet",
                "-p",
                "sluice-example-passthrough",
                "--features",
                "dylib",
                "--target-dir",
            ])
            .arg(&target)
            .status()
            .unwrap();
        assert!(st.success(), "building the Rust example plugin failed");
        let out = tempfile::Builder::new()
            .prefix("sluice-plugins-")
            .tempdir()
            .unwrap()
            .keep();
        std::fs::copy(
            target
                .join("debug")
                .join("libsluice_example_passthrough.so"),
            out.join("libsluice_example_passthrough.so"),
        )
        .unwrap();
        let c_src = root.join("plugins/examples/c/passthrough.c");
        let include = root.join("plugin-api/include");
        let build_c = |name: &str, defines: &[&str]| {
            let st = Command::new("cc")
                .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror"])
                .args(defines)
                .arg("-I")
                .arg(&include)
                .arg("-o")
                .arg(out.join(name))
                .arg(&c_src)
                .status()
                .unwrap();
            assert!(st.success(), "cc failed for {name}");
        };
        build_c("libc_passthrough.so", &[]);
        build_c("bad_magic.so", &["-DFIXTURE_MAGIC=0x12345678u"]);
        build_c("bad_major.so", &["-DFIXTURE_MAJOR=2"]);
        build_c("too_small.so", &["-DFIXTURE_SIZE=16"]);
        build_c("needs_newer_host.so", &["-DFIXTURE_MIN_HOST_MINOR=7"]);
        build_c(
            "abi_v2_symbol.so",
            &["-DFIXTURE_SYMBOL=sl_plugin_library_v2"],
        );
        build_c("no_symbol.so", &["-DFIXTURE_SYMBOL=not_a_plugin"]);
        out
    })
}

/// A fresh plugin folder (mode 0755) holding copies (mode 0644) of `files` from
/// [`example_plugins`].
pub fn plugin_dir(files: &[&str]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let src = example_plugins();
    let dir = tempfile::Builder::new()
        .prefix("sluice-plugdir-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in files {
        install_library(dir.path(), &src.join(f));
    }
    dir
}

/// Copies library `lib` into plugin folder `dir` with mode 0644 (what the loader's
/// ownership and permission checks accept); returns the copy.
pub fn install_library(dir: &Path, lib: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let to = dir.join(lib.file_name().unwrap());
    std::fs::copy(lib, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    to
}

impl Setup {
    /// A daemon file loading plugins from `dir`, reloading only when asked.
    pub fn with_plugin_dir(dir: &Path) -> Setup {
        Setup::new(
            &format!("plugin_dirs = [\"{}\"]\nwatch = false", dir.display()),
            &[],
        )
    }
}

/// One Kinesis call that must succeed; returns the answer's body.
pub fn kinesis_ok(addr: SocketAddr, op: &str, body: &str) -> String {
    let (code, text) = kinesis(addr, op, body);
    assert_eq!(code, 200, "{op}: {text}");
    text
}

/// Reads a file's lines (empty if missing).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// One AWS JSON 1.1 call with this `X-Amz-Target`, over a fresh connection: (HTTP status,
/// x-amzn-RequestId present, body), or `None` when nothing answers (the daemon was killed).
pub fn aws_call(addr: SocketAddr, target: &str, body: &str) -> Option<(u16, bool, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Amz-Target: {target}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let rid = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("x-amzn-requestid:"));
    Some((code, rid, body.to_string()))
}

/// A Kinesis operation that must answer: (status, body).
pub fn kinesis(addr: SocketAddr, op: &str, body: &str) -> (u16, String) {
    let (code, _, body) =
        aws_call(addr, &format!("Kinesis_20131202.{op}"), body).expect("the API answers");
    (code, body)
}

/// Runs the AWS CLI from the repo's venv against `endpoint` (dummy credentials, no user
/// config); panics with its stderr unless it succeeds; returns its stdout.
pub fn aws_cli(endpoint: &str, args: &[&str]) -> String {
    let bin = root().join("target/pyenv/bin/aws");
    assert!(
        bin.exists(),
        "{} missing: run scripts/install-test-deps",
        bin.display()
    );
    let out = Command::new(bin)
        .args(["--endpoint-url", endpoint])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Records stored per shard of a stream, counted from its segment files (daemon stopped).
pub fn shard_records(stream_dir: &Path) -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    for shard in std::fs::read_dir(stream_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
    {
        let mut n = 0;
        for seg in std::fs::read_dir(shard.path()).unwrap().flatten() {
            use sluice_shardlog::frame::{self, Codec, SegmentStart};
            if seg.path().extension().is_none_or(|e| e != "seg") {
                continue;
            }
            let bytes = std::fs::read(seg.path()).unwrap();
            let codec = match frame::segment_start(&bytes) {
                SegmentStart::V2(salt) => Codec::V2 { salt },
                SegmentStart::V1 => Codec::V1,
                SegmentStart::TornHeader => continue,
            };
            let mut pos = codec.data_start() as usize;
            while let frame::Decoded::Frame(_, k) = frame::decode(&bytes[pos..], codec) {
                n += 1;
                pos += k;
            }
        }
        out.insert(shard.file_name().to_string_lossy().into_owned(), n);
    }
    out
}

/// A tool of the test venv (`scripts/install-test-deps`).
pub fn venv_bin(tool: &str) -> PathBuf {
    let p = root().join("target/pyenv/bin").join(tool);
    assert!(
        p.exists(),
        "{} missing: run scripts/install-test-deps (the Python venv of the tests)",
        p.display()
    );
    p
}

/// Runs the venv's Python with `args` (a script under `daemon/tests/interop/` and its
/// arguments, or `-c CODE ...`); fails the test with its output and the daemon's log
/// unless it succeeds. Returns its stdout.
pub fn python<S: AsRef<std::ffi::OsStr>>(args: &[S], d: &Daemon) -> String {
    let out = Command::new(venv_bin("python"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python {:?} failed:\n{stdout}{}\ndaemon log:\n{}",
        args.iter()
            .map(|a| a.as_ref().to_owned())
            .collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr),
        d.stderr()
    );
    stdout
}

/// Runs interop script `script` with the API's endpoint URL and `args`; it must succeed
/// and print `ok`. Returns what it printed.
pub fn run_interop(d: &Daemon, api: SocketAddr, script: &str, args: &[&str]) -> String {
    let mut all: Vec<std::ffi::OsString> = vec![
        interop(script).into_os_string(),
        format!("http://{api}").into(),
    ];
    all.extend(args.iter().map(|a| a.into()));
    let out = python(&all, d);
    assert!(out.contains("ok"), "{script} did not finish: {out}");
    out
}

/// An interop script's path.
pub fn interop(script: &str) -> PathBuf {
    root().join("daemon/tests/interop").join(script)
}

/// Every file below `dir`, recursively (none if it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The newest segment file (`*.seg`) of a shard folder.
pub fn segment_file(shard_dir: &Path) -> PathBuf {
    std::fs::read_dir(shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .unwrap_or_else(|| panic!("no segment in {}", shard_dir.display()))
}

/// The overall exposure score in `systemd-analyze security` output for `unit`.
pub fn exposure_score(output: &str, unit: &str) -> f64 {
    output
        .lines()
        .find_map(|l| {
            l.split(&format!("Overall exposure level for {unit}: "))
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{output}"))
}

/// Lines of every delivered object under `dir` (a directory lake, uncompressed), read while
/// the daemon may be writing: its temp files (`.name.tmp`, renamed into place when
/// complete) are not objects, and one may be renamed between listing and reading. Objects
/// under `kdferror` (error documents) are left out.
pub fn object_lines(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for p in files_under(dir) {
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden || p.components().any(|c| c.as_os_str() == "kdferror") {
            continue;
        }
        match std::fs::read_to_string(&p) {
            Ok(t) => out.extend(t.lines().map(str::to_string)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{}: {e}", p.display()),
        }
    }
    out
}

/// `promtool check metrics` accepts `text` (a /metrics page): help text, types, names.
pub fn assert_promtool_accepts(text: &str) {
    let promtool = std::env::var_os("PATH")
        .and_then(|p| {
            p.to_str()?
                .split(':')
                .map(|d| Path::new(d).join("promtool"))
                .find(|p| p.is_file())
        })
        .expect("promtool not found: run scripts/install-test-deps (Debian package `prometheus`)");
    let out = output_with_stdin(
        Command::new(promtool).args(["check", "metrics"]),
        text.as_bytes(),
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// moto's S3-compatible server from the repo's venv, on a free port; killed on drop.
pub struct Moto {
    pub child: std::process::Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let bin = root().join("target/pyenv/bin/moto_server");
        assert!(
            bin.exists(),
            "run scripts/install-test-deps (installs moto's server)"
        );
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_until(Duration::from_secs(30), "moto listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Moto { child, endpoint }
    }

    pub fn aws(&self, args: &[&str]) -> String {
        aws_cli(&self.endpoint, args)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The error documents (one JSON object per line) of every object under `dir`.
pub fn error_docs(dir: &std::path::Path) -> Vec<serde_json::Value> {
    files_under(dir)
        .iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .flat_map(|p| lines(p))
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

/// Runs `cmd` with `input` on its stdin; returns its output (stdout and stderr captured).
pub fn output_with_stdin(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Puts records `{"n":from}` .. `{"n":from+n-1}` into stream `events` through `api`, keys
/// `k<n>` (spread over the shards); every one must be stored.
pub fn put_numbered(api: SocketAddr, from: usize, n: usize) {
    use base64::Engine as _;
    let recs: Vec<String> = (from..from + n)
        .map(|i| {
            format!(
                r#"{{"Data":"{}","PartitionKey":"k{i}"}}"#,
                base64::engine::general_purpose::STANDARD.encode(format!("{{\"n\":{i}}}"))
            )
        })
        .collect();
    let body = format!(
        r#"{{"StreamName":"events","Records":[{}]}}"#,
        recs.join(",")
    );
    let (code, out) = kinesis(api, "PutRecords", &body);
    assert_eq!(code, 200, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["FailedRecordCount"], 0, "{out}");
}
