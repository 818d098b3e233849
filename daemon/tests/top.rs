//! `sluiced top` as a person sees it (issue #14): run in a real terminal (tmux), it shows
//! every running pipeline and shard with live numbers, and `q` quits.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux not found: run scripts/install-test-deps (Debian package tmux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn top_shows_pipelines_and_shards_with_live_numbers() {
    let cfg = "[streams.events]\nshards = 2\n\n[pipelines.feed]\nsource = { plugin = \"generator\", rate = 200 }\nsink = { plugin = \"stream\", stream = \"events\" }\n\n[pipelines.copy]\nsource = { plugin = \"stream\", stream = \"events\" }\nsink = { plugin = \"file\", path = \"out/copy.jsonl\" }\n";
    let s = Setup::new("", &[("p", cfg)]);
    let mut d = s.start();
    d.wait_ready();
    let session = format!("sluice-top-{}", std::process::id());
    // Its own tmux server socket: nothing of the user's sessions is touched.
    let sock = s.path("tmux.sock");
    let sock = sock.to_str().unwrap();
    let cmd = format!("{} top --config {}", bin().display(), s.config.display());
    tmux(&[
        "-S",
        sock,
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "40",
        &cmd,
    ]);
    let screen = || tmux(&["-S", sock, "capture-pane", "-p", "-t", &session]);
    // Both pipelines and both shards, with a records/s number that is not 0 for the feed.
    wait_until(Duration::from_secs(20), "top shows live numbers", || {
        let sc = screen();
        let feed = sc
            .lines()
            .find(|l| l.contains("feed") && l.contains("running"));
        sc.contains("copy")
            && sc.contains("shardId-000000000000")
            && sc.contains("shardId-000000000001")
            && feed.is_some_and(|l| {
                l.split_whitespace()
                    .nth(4)
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|r| r > 0)
            })
    });
    // Lag: the copy pipeline has a LAG figure, the feed (which reads no stream) has none.
    let sc = screen();
    assert!(sc.contains("LAG"), "{sc}");
    let copy = sc
        .lines()
        .find(|l| l.contains("copy") && l.contains("running"))
        .unwrap();
    let last_num = |l: &str| {
        l.split_whitespace()
            .rfind(|t| *t != "│")
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert!(last_num(copy).parse::<u64>().is_ok(), "copy row: {copy}");
    let feed = sc
        .lines()
        .find(|l| l.contains("feed") && l.contains("running"))
        .unwrap();
    assert_eq!(last_num(feed), "-", "feed row: {feed}");
    // The same figure in /admin/status, per shard and reading pipeline.
    let (code, body) = d.get("/admin/status").unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    for sh in v["streams"][0]["shards"].as_array().unwrap() {
        let c = &sh["consumers"];
        assert_eq!(c.as_array().unwrap().len(), 1, "{sh}");
        assert_eq!(c[0]["pipeline"], "copy");
        assert!(c[0]["lag_records"].as_u64().unwrap() <= sh["records"].as_u64().unwrap());
    }
    let before = screen();
    // The numbers move (records keep flowing).
    wait_until(Duration::from_secs(10), "the view refreshes", || {
        screen() != before
    });
    tmux(&["-S", sock, "send-keys", "-t", &session, "q"]);
    wait_until(Duration::from_secs(10), "q quits top", || {
        !Command::new("tmux")
            .args(["-S", sock, "has-session", "-t", &session])
            .status()
            .unwrap()
            .success()
    });
    let _ = tmux(&["-S", sock, "kill-server"]);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(20)).unwrap().success());
}
