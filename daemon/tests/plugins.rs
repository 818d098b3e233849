//! Dynamic plugins: the Rust and C examples load from a plugin folder and records flow
//! through them exactly as through the bundled path; each refusal fixture gets its own
//! message in `sluiced plugins` and in the log while other pipelines keep running; a
//! panicking plugin fails and restarts only its own pipeline.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::time::Duration;

const GOOD: &[&str] = &["libsluice_example_passthrough.so", "libc_passthrough.so"];

fn generator(count: u32) -> String {
    format!(
        "{{ plugin = \"generator\", seed = 42, count = {count}, batch_size = 37, template = '{{\"n\":${{seq}},\"id\":\"${{eventId}}\",\"type\":\"${{type}}\",\"source\":\"${{source}}\"}}' }}"
    )
}

/// A pipeline from the seeded generator through `transforms` (TOML bodies of
/// `[[transforms]]` tables) into a file.
fn pipeline(name: &str, transforms: &[&str], out: &str) -> String {
    let mut s = format!("[pipelines.{name}]\nsource = {}\n", generator(2000));
    for t in transforms {
        s.push_str(&format!("\n[[pipelines.{name}.transforms]]\n{t}\n"));
    }
    s.push_str(&format!(
        "\n[pipelines.{name}.sink]\nplugin = \"file\"\npath = \"{out}\"\n"
    ));
    s
}

const RUST: &str = "plugin = \"passthrough\"";
const C: &str = "plugin = \"c-passthrough\"";
const JQ: &str = "plugin = \"jq\"\nfilter = \".\"";

#[test]
fn rust_and_c_plugins_match_the_bundled_path() {
    let plugins = plugin_dir(GOOD);
    let s = Setup::new(
        &format!("plugin_dirs = [\"{}\"]", plugins.path().display()),
        &[
            ("bundled", &pipeline("bundled", &[], "out/bundled.jsonl")),
            (
                "bundled_jq",
                &pipeline("bundled_jq", &[JQ], "out/bundled_jq.jsonl"),
            ),
            ("rust", &pipeline("rust", &[RUST], "out/rust.jsonl")),
            ("c", &pipeline("c", &[C], "out/c.jsonl")),
            (
                "chain",
                &pipeline("chain", &[RUST, C, RUST], "out/chain.jsonl"),
            ),
        ],
    );
    let mut d = s.start();
    d.wait_ready();
    let outs = ["bundled", "bundled_jq", "rust", "c", "chain"];
    wait_until(
        Duration::from_secs(30),
        "all pipelines delivered 2000 records",
        || {
            outs.iter()
                .all(|o| lines(&s.path(&format!("out/{o}.jsonl"))).len() >= 2000)
        },
    );
    let reference = lines(&s.path("out/bundled.jsonl"));
    assert_eq!(reference.len(), 2000);
    assert!(reference[0].starts_with("{\"n\":0,"), "{}", reference[0]);
    for o in &outs[1..] {
        let got = lines(&s.path(&format!("out/{o}.jsonl")));
        assert_eq!(got.len(), reference.len(), "{o}: record count");
        assert!(
            got == reference,
            "{o}: output differs from the bundled path"
        );
    }
    // The host timed and counted every call through the ABI, for loaded plugins too.
    assert!(
        d.metric(
            "sluice_plugin_calls_total",
            &[
                "plugin=\"c-passthrough\"",
                "call=\"transform\"",
                "status=\"ok\""
            ]
        ) > 0.0
    );
    assert!(
        d.metric(
            "sluice_plugin_calls_total",
            &["plugin=\"passthrough\"", "pipeline=\"chain\""]
        ) > 0.0
    );
    assert_eq!(
        d.metric(
            "sluice_plugin_info",
            &["plugin=\"c-passthrough\"", "abi=\"1.1\""]
        ),
        1.0
    );
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
}

const FIXTURES: &[(&str, &str)] = &[
    ("bad_magic.so", "not a sluice plugin library: bad magic 0x12345678 (expected 0x31504c53)"),
    ("bad_major.so", "was built for plugin ABI 2.1, but this sluiced 0.1.0 provides ABI 1.1"),
    ("too_small.so", "descriptor too small: 16 bytes"),
    ("needs_newer_host.so", "requires sluiced plugin ABI >= 1.7, but this sluiced 0.1.0 provides ABI 1.1: upgrade sluiced"),
    ("abi_v2_symbol.so", "does not export `sl_plugin_library_v1` (it exports `sl_plugin_library_v2`: built for plugin ABI 2"),
    ("no_symbol.so", "not a sluice plugin: it does not export `sl_plugin_library_v1`"),
    ("writable.so", "the file is writable by group or others (mode 0666)"),
    ("z_clash.so", "transform plugin `c-passthrough` is already provided by"),
    ("foreign_owner.so", "the file is owned by uid 65534, neither root nor the daemon's user"),
    ("link_to_foreign.so", "owned by uid 65534, neither root nor the daemon's user"),
    // The loader's own reason, not just "dlopen failed".
    ("garbage.so", "cannot load: dlopen failed: "),
];

fn refusal_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = plugin_dir(&[
        "libsluice_example_passthrough.so",
        "libc_passthrough.so",
        "bad_magic.so",
        "bad_major.so",
        "too_small.so",
        "needs_newer_host.so",
        "abi_v2_symbol.so",
        "no_symbol.so",
    ]);
    let src = example_plugins().join("libc_passthrough.so");
    std::fs::copy(&src, dir.path().join("writable.so")).unwrap();
    std::fs::set_permissions(
        dir.path().join("writable.so"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    std::fs::copy(&src, dir.path().join("z_clash.so")).unwrap();
    std::fs::set_permissions(
        dir.path().join("z_clash.so"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // A library owned by another user (mode 0755, so only the owner matters), and a link
    // whose target sits in a folder another user owns. Tests run as root (CI does), which
    // is what lets them make files of another user: fail loudly otherwise.
    let foreign = dir.path().join("foreign_owner.so");
    std::fs::copy(&src, &foreign).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534))
        .expect("chown needs root: these tests run as root");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::copy(&src, elsewhere.join("lib.so")).unwrap();
    std::fs::set_permissions(
        elsewhere.join("lib.so"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::os::unix::fs::chown(&elsewhere, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::symlink(
        elsewhere.join("lib.so"),
        dir.path().join("link_to_foreign.so"),
    )
    .unwrap();
    std::fs::write(dir.path().join("garbage.so"), b"not an ELF file").unwrap();
    std::fs::set_permissions(
        dir.path().join("garbage.so"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    dir
}

#[test]
fn each_refusal_has_its_own_message_and_other_pipelines_run() {
    let plugins = refusal_dir();
    let s = Setup::new(
        &format!("plugin_dirs = [\"{}\"]", plugins.path().display()),
        &[("c", &pipeline("c", &[C], "out/c.jsonl"))],
    );
    // `sluiced plugins` lists the good ones and every refusal with its reason, and exits
    // non-zero because of the refusals.
    let (code, out, err) = s.cli(&["plugins"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "error: {} plugin libraries were refused",
            FIXTURES.len()
        )),
        "{err}"
    );
    assert!(
        out.contains("c-passthrough") && out.contains("passthrough") && out.contains("chaos"),
        "{out}"
    );
    assert!(
        out.contains("generator") && out.contains("(bundled)"),
        "{out}"
    );
    for (file, why) in FIXTURES {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("/{file}:")))
            .unwrap_or_else(|| panic!("no refusal line for {file} in:\n{out}"));
        assert!(line.contains(why), "{file}: expected {why:?} in {line:?}");
    }
    // The daemon logs the same refusals and runs the pipeline that uses a good plugin.
    let mut d = s.start();
    d.wait_ready();
    wait_until(
        Duration::from_secs(20),
        "records through c-passthrough",
        || lines(&s.path("out/c.jsonl")).len() >= 2000,
    );
    let log = d.stderr();
    // The C plugin's own log line arrives through the host API, with its fields.
    assert!(
        log.lines().any(|l| l.contains("c-passthrough started")
            && l.contains("plugin=\"c-passthrough\"")
            && l.contains("pipeline=\"c\"")),
        "{log}"
    );
    for (file, why) in FIXTURES {
        assert!(
            log.lines().any(|l| l.contains("plugin library refused")
                && l.contains(file)
                && l.contains(why)),
            "log lacks the refusal of {file}:\n{log}"
        );
    }
}

#[test]
fn a_pipeline_using_a_refused_plugin_is_a_config_error_that_says_so() {
    let plugins = plugin_dir(&["bad_major.so"]);
    let s = Setup::new(
        &format!("plugin_dirs = [\"{}\"]", plugins.path().display()),
        &[("c", &pipeline("c", &[C], "out/c.jsonl"))],
    );
    let (code, _, err) = s.cli(&["check"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown transform plugin `c-passthrough`")
            && err.contains("1 plugin library was refused, see `sluiced plugins`"),
        "{err}"
    );
}

/// A transform that panics (or fails) on one record: the batch is bisected, the poison
/// record goes to the error output, everything else is delivered, the pipeline never
/// restarts, and the other pipeline never notices.
#[test]
fn a_poison_record_is_isolated_and_the_pipeline_goes_on() {
    let plugins = plugin_dir(GOOD);
    let chaotic = "[pipelines.chaotic]\nsource = { plugin = \"generator\", rate = 400, count = 300, template = '{\"n\":${seq}}' }\n\n[[pipelines.chaotic.transforms]]\nplugin = \"chaos\"\npanic_on = '\"n\":20}'\nfail_on = '\"n\":200}'\n\n[pipelines.chaotic.sink]\nplugin = \"file\"\npath = \"out/chaotic.jsonl\"\n";
    let steady = "[pipelines.steady]\nsource = { plugin = \"generator\", rate = 400 }\n\n[[pipelines.steady.transforms]]\nplugin = \"passthrough\"\n\n[pipelines.steady.sink]\nplugin = \"file\"\npath = \"out/steady.jsonl\"\n";
    let s = Setup::new(
        &format!("plugin_dirs = [\"{}\"]", plugins.path().display()),
        &[("chaotic", chaotic), ("steady", steady)],
    );
    let mut d = s.start();
    wait_until(Duration::from_secs(30), "298 of 300 delivered", || {
        lines(&s.path("out/chaotic.jsonl")).len() == 298
    });
    let out = lines(&s.path("out/chaotic.jsonl"));
    assert!(!out.iter().any(|l| l == "{\"n\":20}" || l == "{\"n\":200}"));
    assert!(out.iter().any(|l| l == "{\"n\":21}") && out.iter().any(|l| l == "{\"n\":299}"));
    // Order is kept around the holes.
    let ns: Vec<u64> = out
        .iter()
        .map(|l| {
            l.trim_start_matches("{\"n\":")
                .trim_end_matches('}')
                .parse()
                .unwrap()
        })
        .collect();
    assert!(ns.windows(2).all(|w| w[0] < w[1]), "{ns:?}");
    assert_eq!(
        d.metric(
            "sluice_records_failed_total",
            &["pipeline=\"chaotic\"", "error_type=\"processing-failed\""]
        ),
        2.0
    );
    assert_eq!(
        d.metric("sluice_poison_records_total", &["pipeline=\"chaotic\""]),
        2.0
    );
    assert_eq!(
        d.metric("sluice_pipeline_restarts_total", &["pipeline=\"chaotic\""]),
        0.0
    );
    // The panic is reported in the log (with its message) and in metrics.
    let log = d.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("poison record isolated") && l.contains("panic: chaos: record")),
        "{log}"
    );
    assert!(
        d.metric(
            "sluice_plugin_panics_total",
            &["plugin=\"chaos\"", "pipeline=\"chaotic\""]
        ) >= 1.0
    );
    // The other pipeline kept flowing the whole time, and the daemon is healthy.
    let before = lines(&s.path("out/steady.jsonl")).len();
    wait_until(
        Duration::from_secs(10),
        "steady pipeline keeps delivering",
        || lines(&s.path("out/steady.jsonl")).len() > before + 100,
    );
    assert_eq!(
        d.metric("sluice_pipeline_restarts_total", &["pipeline=\"steady\""]),
        0.0
    );
    assert_eq!(d.get("/healthz").unwrap().0, 200);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
}

/// A dynamic plugin that kills the whole process on one record of a stream (as a
/// segfault in C would): the restarted daemon narrows the batch down to the record and
/// quarantines it; after at most two crashes every other record is delivered and the
/// daemon keeps running — no crash loop.
#[test]
fn a_record_that_crashes_the_process_is_quarantined_not_replayed_forever() {
    let plugins = plugin_dir(GOOD);
    let cfg = "[streams.s]\nshards = 1\n\n[pipelines.copy]\nsource = { plugin = \"stream\", stream = \"s\" }\n\n[[pipelines.copy.transforms]]\nplugin = \"chaos\"\nabort_on = \"KILL\"\n\n[pipelines.copy.sink]\nplugin = \"file\"\npath = \"out/copy.jsonl\"\n";
    let s = Setup::new(
        &format!("plugin_dirs = [\"{}\"]", plugins.path().display()),
        &[("p", cfg)],
    );
    // The records are in the stream before any pipeline runs: start with the pipeline
    // file away, put, then add it.
    std::fs::rename(s.path("pipelines/p.toml"), s.path("p.toml.off")).unwrap();
    std::fs::write(s.path("pipelines/s.toml"), "[streams.s]\nshards = 1\n").unwrap();
    let mut d = s.start();
    d.wait_ready();
    for i in 0..40 {
        let data = if i == 17 {
            "KILL-17".to_string()
        } else {
            format!("rec-{i:02}")
        };
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD.encode(data);
        let (code, body) = kinesis(
            s.api,
            "PutRecord",
            &format!(r#"{{"StreamName":"s","Data":"{b}","PartitionKey":"k"}}"#),
        );
        assert_eq!(code, 200, "{body}");
    }
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
    std::fs::remove_file(s.path("pipelines/s.toml")).unwrap();
    std::fs::rename(s.path("p.toml.off"), s.path("pipelines/p.toml")).unwrap();
    let mut crashes = 0;
    let mut d = loop {
        let mut d = s.start();
        match d.wait_exit(Duration::from_secs(5)) {
            Some(st) => {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(st.signal(), Some(libc::SIGABRT), "{}", d.stderr());
                crashes += 1;
                assert!(crashes <= 2, "crash loop: {}", d.stderr());
            }
            None => break d,
        }
    };
    wait_until(
        Duration::from_secs(20),
        "the 39 other records delivered",
        || {
            let l = lines(&s.path("out/copy.jsonl"));
            (0..40)
                .filter(|&i| i != 17)
                .all(|i| l.contains(&format!("rec-{i:02}")))
        },
    );
    assert!(!lines(&s.path("out/copy.jsonl"))
        .iter()
        .any(|l| l.contains("KILL")));
    assert!(crashes >= 1);
    assert_eq!(
        d.metric(
            "sluice_records_failed_total",
            &["pipeline=\"copy\"", "error_type=\"processing-failed\""]
        ),
        1.0
    );
    assert!(d.stderr().contains("quarantined"), "{}", d.stderr());
    // The run that read the last crash's marker counted it.
    assert!(
        d.metric(
            "sluice_plugin_crashes_total",
            &["pipeline=\"copy\"", "component=\"transforms[0]\""]
        ) >= 1.0
    );
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
}

/// A sink that reports partial failures gets exactly the failed records again, until
/// every record is stored once; the retries are counted.
#[test]
fn partial_sink_failures_resubmit_only_the_failed_records() {
    let plugins = plugin_dir(GOOD);
    let p = "[pipelines.f]\nsource = { plugin = \"generator\", count = 1000, batch_size = 100, template = '{\"n\":${seq}}' }\n\n[pipelines.f.sink]\nplugin = \"flaky\"\npath = \"out/f.jsonl\"\nfail_every = 3\n";
    let s = Setup::new(
        &format!("plugin_dirs = [\"{}\"]", plugins.path().display()),
        &[("f", p)],
    );
    let d = s.start();
    wait_until(Duration::from_secs(30), "1000 records stored", || {
        lines(&s.path("out/f.jsonl")).len() >= 1000
    });
    let mut got: Vec<String> = lines(&s.path("out/f.jsonl"));
    got.sort();
    let mut want: Vec<String> = (0..1000).map(|i| format!("{{\"n\":{i}}}")).collect();
    want.sort();
    assert_eq!(got, want, "each record exactly once");
    assert!(d.metric("sluice_sink_retries_total", &["pipeline=\"f\""]) >= 3.0);
}

/// A plugin thread that outlives its instance (safe Rust: a `Completion`, a `Context` and a
/// `Notifier` moved to a thread in `Drop`) calls the host after `destroy`. The host checks
/// the instance handle and refuses the calls; the daemon and its other pipelines go on.
/// The sink never completes, so the drain times out and the pipeline is aborted: the
/// `complete` refusal also shows that an aborted pipeline's stages end and its instances
/// are destroyed (they used to run on after the abort).
#[test]
fn host_calls_after_destroy_are_refused_not_a_use_after_free() {
    let plugins = plugin_dir(&["libsluice_example_passthrough.so"]);
    let s = Setup::new(
        &format!("plugin_dirs = [\"{}\"]", plugins.path().display()),
        &[
            ("late", "[pipelines.late]\nsource = { plugin = \"generator\", rate = 200 }\nsink = { plugin = \"late\", after_ms = 100 }\n"),
            ("alive", "[pipelines.alive]\nsource = { plugin = \"generator\", rate = 200 }\nsink = { plugin = \"file\", path = \"out/alive.jsonl\" }\n"),
        ],
    );
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace("shutdown_timeout = \"10s\"", "shutdown_timeout = \"1s\""),
    )
    .unwrap();
    let mut d = s.start();
    wait_until(Duration::from_secs(20), "late holds batches", || {
        d.metric(
            "sluice_plugin_calls_total",
            &["plugin=\"late\"", "call=\"submit\""],
        ) > 0.0
    });
    std::fs::remove_file(s.path("pipelines/late.toml")).unwrap();
    let (code, body) = d.post("/admin/reload").unwrap();
    assert_eq!(code, 200, "{body}");
    wait_until(Duration::from_secs(20), "late calls refused", || {
        ["complete", "notify", "log"].iter().all(|c| {
            d.metric(
                "sluice_plugin_late_calls_total",
                &[&format!("call=\"{c}\"")],
            ) > 0.0
        })
    });
    assert!(
        d.stderr().contains("handle of a destroyed instance"),
        "{}",
        d.stderr()
    );
    // Still serving, still delivering.
    assert_eq!(d.get("/healthz").unwrap().0, 200);
    let before = lines(&s.path("out/alive.jsonl")).len();
    wait_until(Duration::from_secs(20), "alive keeps delivering", || {
        lines(&s.path("out/alive.jsonl")).len() > before
    });
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(20)).unwrap().success());
}

/// `plugin_dirs` are scanned again on every reload (issue #15): a library dropped in after
/// the start loads and its plugin can be used at once; a loaded library whose file changes
/// is refused with the reason (it cannot be unloaded) while its pipeline keeps running;
/// "unknown plugin" says where sluice looked.
#[test]
fn a_library_dropped_into_plugin_dirs_loads_on_reload() {
    let plugins = plugin_dir(&[]);
    let s = Setup::with_plugin_dir(plugins.path());
    let mut d = s.start();
    d.wait_ready();
    s.write_pipeline("c", &pipeline("c", &[C], "out/c.jsonl"));
    let (code, body) = d.post("/admin/reload").unwrap();
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("unknown transform plugin `c-passthrough`")
            && body.contains(&format!(
                "looked in: (bundled), {}",
                plugins.path().display()
            )),
        "{body}"
    );
    let lib = install_library(
        plugins.path(),
        &example_plugins().join("libc_passthrough.so"),
    );
    let (code, body) = d.post("/admin/reload").unwrap();
    assert_eq!(code, 200, "{body}\n{}", d.stderr());
    wait_until(Duration::from_secs(20), "the new plugin's output", || {
        !lines(&s.path("out/c.jsonl")).is_empty()
    });
    // A changed file of a loaded library — overwritten in place, as `cp` does: the daemon
    // runs a private copy, so it neither crashes nor changes; the change is refused with
    // its reason and the pipeline runs on.
    std::fs::copy(example_plugins().join("bad_major.so"), &lib).unwrap();
    let (code, body) = d.post("/admin/reload").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        d.stderr()
            .contains("the file changed since sluiced loaded it"),
        "{}",
        d.stderr()
    );
    wait_until(
        Duration::from_secs(20),
        "every record through the old build",
        || lines(&s.path("out/c.jsonl")).len() >= 2000,
    );
    assert_eq!(d.get("/healthz").map(|r| r.0), Some(200), "still alive");
}
