//! The golden ABI test (issue #11): a plugin built from the ABI 1.0 header and source as
//! released (`tests/fixtures/abi-1.0/`, frozen) keeps loading and running in this sluiced,
//! whatever changes in the current header.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::time::Duration;

#[test]
fn a_plugin_built_against_abi_1_0_still_loads_and_runs() {
    let fixtures = root().join("daemon/tests/fixtures/abi-1.0");
    let plugins = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(plugins.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let so = plugins.path().join("libgolden.so");
    // The exact build command of golden.c's header comment.
    let st = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-I"])
        .arg(&fixtures)
        .arg("-o")
        .arg(&so)
        .arg(fixtures.join("golden.c"))
        .status()
        .expect("cc not found: run scripts/install-test-deps");
    assert!(st.success(), "cc failed on the golden fixture");
    let p = "[pipelines.g]\nsource = { plugin = \"generator\", count = 300 }\n\n[[pipelines.g.transforms]]\nplugin = \"golden-abi-1-0\"\n\n[pipelines.g.sink]\nplugin = \"file\"\npath = \"out/g.jsonl\"\n";
    let s = Setup::new(
        &format!("plugin_dirs = [\"{}\"]", plugins.path().display()),
        &[("g", p)],
    );
    let (code, out, err) = s.cli(&["plugins"]);
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.contains("golden-abi-1-0"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("1.0"), "{line}");
    let mut d = s.start();
    d.wait_ready();
    wait_until(
        Duration::from_secs(20),
        "300 records through the 1.0 plugin",
        || lines(&s.path("out/g.jsonl")).len() == 300,
    );
    assert!(
        d.stderr().contains("golden-abi-1-0 started"),
        "{}",
        d.stderr()
    );
}
