//! The command line as a person meets it (issue #14): plain `error: …` messages, honest
//! plurals, tables whose columns line up, non-zero exits on failure.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

#[test]
fn messages_are_plain_and_plurals_honest() {
    let s = Setup::new("", &[("p", "[streams.s]\nshards = 1\n\n[pipelines.one]\nsource = { plugin = \"generator\", rate = 1 }\nsink = { plugin = \"stdout\" }\n")]);
    let (code, _, err) = s.cli(&["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.trim_end().ends_with("ok (1 stream, 1 pipeline)"),
        "{err}"
    );
    // Nothing runs: a plain error line, exit 1, no log timestamp.
    let (code, _, err) = s.cli(&["status"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: cannot reach sluiced at "), "{err}");
    let mut d = s.start();
    d.wait_ready();
    let out = std::process::Command::new(bin())
        .args(["put", "s", "--config"])
        .arg(&s.config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"{\"a\":1}\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("put 1 record into s"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The status tables line up: every row's columns start where the header's do.
    let (code, out, err) = s.cli(&["status"]);
    assert_eq!(code, 0, "{err}");
    for block in out.split("\n\n") {
        let rows: Vec<&str> = block.lines().collect();
        let header = rows[0].as_bytes();
        // Where each header column starts: a non-space after two spaces.
        let starts: Vec<usize> = (2..header.len())
            .filter(|&i| header[i] != b' ' && header[i - 1] == b' ' && header[i - 2] == b' ')
            .collect();
        assert!(!starts.is_empty(), "{block}");
        for r in &rows[1..] {
            for &c in &starts {
                // Left-aligned columns start at the header's column; right-aligned ones
                // end where the header's name ends: either way there is a gap before.
                assert!(
                    r.len() <= c || r.as_bytes()[c - 1] == b' ',
                    "column at {c} does not line up:\n{block}"
                );
            }
        }
    }
}

/// Shell completions and the man page come from the CLI definition itself.
#[test]
fn completions_and_man_page() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    assert!(
        bash.contains("_sluiced()") && bash.contains("check") && bash.contains("status"),
        "{bash:.300}"
    );
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef sluiced"), "{zsh:.100}");
    assert!(run(&["completions", "fish"]).contains("complete -c sluiced"));
    let man = run(&["man"]);
    assert!(man.contains(".TH sluiced"), "{man:.200}");
    for sub in ["check", "plugins", "status", "tail", "put", "completions"] {
        assert!(man.contains(sub), "man page lacks {sub}");
    }
    let st = std::process::Command::new(bin())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!st.status.success());
}
