//! The Debian package (issue #14): `scripts/build-deb` packages the binary (here the test
//! build), the package unpacks into a throwaway root, its unit verifies with the packaged
//! binary and scores ≤ 1.5 in `systemd-analyze security --offline=true`, the packaged
//! production config passes `sluiced check` (with its example pipeline enabled too), and
//! the man page renders.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn analyze() -> &'static str {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect(
            "systemd-analyze not found: run scripts/install-test-deps (Debian package `systemd`)",
        )
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_deb_installs_verifies_and_checks() {
    let out = tempfile::tempdir().unwrap();
    let deb = ok(Command::new(root().join("scripts/build-deb"))
        .arg(out.path())
        .env("SLUICED_BIN", bin())
        .env("DEB_COMPRESSION", "none"));
    let deb = deb.trim();
    assert!(deb.ends_with(".deb") && Path::new(deb).exists(), "{deb}");
    let info = ok(Command::new("dpkg-deb").args(["--info", deb]));
    assert!(
        info.contains("Package: sluiced") && info.contains("Depends: libc6, systemd"),
        "{info}"
    );
    let contents = ok(Command::new("dpkg-deb").args(["--contents", deb]));
    for f in [
        "./usr/bin/sluiced",
        "./usr/bin/sluice-query",
        "./usr/lib/systemd/system/sluiced.service",
        "./usr/lib/sysusers.d/sluiced.conf",
        "./usr/lib/tmpfiles.d/sluiced.conf",
        "./etc/sluice/sluiced.toml",
        "./usr/lib/sluice/plugins/",
        "./usr/share/man/man1/sluiced.1.gz",
        "./usr/share/bash-completion/completions/sluiced",
        "./usr/share/doc/sluiced/copyright",
        "./usr/share/doc/sluiced/README.md",
    ] {
        assert!(contents.contains(f), "{f} missing:\n{contents}");
    }
    assert!(
        contents.lines().all(|l| l.contains("root/root")),
        "{contents}"
    );
    // A throwaway root.
    let rootfs = tempfile::tempdir().unwrap();
    ok(Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(rootfs.path()));
    let r = |p: &str| rootfs.path().join(p.trim_start_matches('/'));
    // The unit, with the packaged binary: `verify` checks the commands exist (the
    // Documentation= man page is checked by rendering it below).
    let unit = std::fs::read_to_string(r("/usr/lib/systemd/system/sluiced.service")).unwrap();
    for doc in ["man:sluiced(1)", "file:///usr/share/doc/sluiced/README.md"] {
        assert!(unit.contains(doc), "Documentation= lacks {doc}");
    }
    assert!(r("/usr/share/doc/sluiced/README.md").exists());
    let copy = out.path().join("sluiced.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/sluiced", r("/usr/bin/sluiced").to_str().unwrap()),
    )
    .unwrap();
    let v = Command::new(analyze())
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(
        v.status.success() && !err.lines().any(|l| l.contains("sluiced.service")),
        "systemd-analyze verify:\n{err}"
    );
    let sec = ok(Command::new(analyze())
        .args(["security", "--offline=true"])
        .arg(format!("--root={}", rootfs.path().display()))
        .arg("sluiced.service"));
    let score = exposure_score(&sec, "sluiced.service");
    assert!(score <= 1.5, "exposure {score} > 1.5:\n{sec}");
    // The production config checks, with and without the example pipeline; it runs no
    // demo generator and keeps its lake under /var/lib/sluice (writable under the unit).
    let cfg = r("/etc/sluice/sluiced.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("data_dir = \"/var/lib/sluice\""), "{text}");
    assert!(
        text.contains("plugin_dirs = [\"/usr/lib/sluice/plugins\"]"),
        "{text}"
    );
    let (code, err) = check(&r("/usr/bin/sluiced"), &cfg);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("ok (0 streams, 0 pipelines)"), "{err}");
    let example = std::fs::read_to_string(r("/etc/sluice/pipelines/lake.toml.example")).unwrap();
    assert!(example.contains("url = \"/var/lib/sluice/lake\"") && !example.contains("generator"));
    std::fs::write(r("/etc/sluice/pipelines/lake.toml"), &example).unwrap();
    let (code, err) = check(&r("/usr/bin/sluiced"), &cfg);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("ok (1 stream, 1 pipeline)"), "{err}");
    // `sluiced query` runs the packaged sluice-query installed next to it.
    let out = Command::new(r("/usr/bin/sluiced"))
        .args(["query", "--config"])
        .arg(&cfg)
        .args(["--format", "csv", "-q", "SELECT 1 AS one"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n1\n");
    // `man sluiced` renders (the page read straight from the package).
    let page = ok(Command::new("man")
        .args(["-P", "cat", "-l"])
        .arg(r("/usr/share/man/man1/sluiced.1.gz"))
        .env("MANWIDTH", "100"));
    assert!(page.contains("NAME") && page.contains("sluiced"), "{page}");
}

fn check(binary: &Path, cfg: &Path) -> (i32, String) {
    let out = Command::new(binary)
        .args(["check", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
