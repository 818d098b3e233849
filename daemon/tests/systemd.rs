//! Playing systemd: the test binds a `NOTIFY_SOCKET` datagram socket and checks the
//! daemon's READY, RELOADING/READY and STOPPING notifications through startup, a reload
//! and shutdown; and the unit file passes `systemd-analyze verify` and scores ≤ 2.5 in
//! `systemd-analyze security`.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn next(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn notifies_ready_reloading_and_stopping_in_order() {
    let s = Setup::new("", &[("p", "[pipelines.p]\nsource = { plugin = \"generator\", rate = 10 }\nsink = { plugin = \"file\", path = \"out.jsonl\" }\n")]);
    let path = s.path("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let args: Vec<std::ffi::OsString> =
        vec!["run".into(), "--config".into(), s.config.clone().into()];
    let mut d = Daemon::start_env(
        &args,
        s.metrics,
        root(),
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );

    let m = next(&sock);
    assert!(
        m.starts_with("READY=1\n") && m.contains("STATUS=0 streams, 1 pipelines running"),
        "{m}"
    );
    d.signal(libc::SIGHUP);
    let m = next(&sock);
    assert!(m.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{m}");
    let usec: u64 = m
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("MONOTONIC_USEC=")
        .parse()
        .unwrap();
    assert!(usec > 0);
    assert!(next(&sock).starts_with("READY=1"));
    d.signal(libc::SIGTERM);
    assert!(next(&sock).starts_with("STOPPING=1"));
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn unit_file_verifies_and_is_hardened() {
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        panic!(
            "systemd-analyze not found: run scripts/install-test-deps (Debian package `systemd`)"
        );
    };
    let unit = root().join("systemd/sluiced.service");
    // `verify` checks the binary path exists: point it at the built binary in a copy.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&unit)
        .unwrap()
        .replace("/usr/bin/sluiced", bin().to_str().unwrap());
    let copy = dir.path().join("sluiced.service");
    std::fs::write(&copy, text).unwrap();
    let out = std::process::Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let relevant: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("sluiced.service"))
        .collect();
    assert!(
        out.status.success() && relevant.is_empty(),
        "systemd-analyze verify:\n{err}"
    );
    let out = std::process::Command::new(analyze)
        .args(["security", "--offline=true"])
        .arg(&copy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score = exposure_score(&text, "sluiced.service");
    eprintln!("systemd-analyze security exposure: {score}");
    assert!(score <= 2.5, "exposure {score} > 2.5:\n{text}");
}
