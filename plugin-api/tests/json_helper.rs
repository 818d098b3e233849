//! `include/sluice_json.h`, the C plugins' config helper, built with the system C compiler
//! (warnings as errors, with AddressSanitizer where the compiler has it) and run:
//! well-formed and malformed configs, escapes, surrogate pairs, nesting limits, quoting.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn the_c_json_helper_reads_configs_and_refuses_malformed_ones() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile_dir();
    let exe = dir.join("json_helper");
    let build = |sanitize: bool| {
        let mut cmd = Command::new("cc");
        cmd.args(["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror"]);
        if sanitize {
            cmd.args(["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]);
        }
        cmd.arg("-I")
            .arg(here.join("include"))
            .arg("-o")
            .arg(&exe)
            .arg(here.join("tests/json_helper.c"))
            .status()
            .expect("a C compiler (scripts/install-test-deps installs gcc)")
            .success()
    };
    assert!(
        build(true) || build(false),
        "the helper test did not compile"
    );
    let out = Command::new(&exe).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-json-helper-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
