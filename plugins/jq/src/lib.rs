//! The bundled `jq` transform, and [`Program`], the jq engine (jaq) the daemon also uses
//! for `partitioning.query`.
//!
//! The transform parses each record as JSON, runs the filter and outputs every result
//! (0..n per input) as compact JSON with the input's partition key and arrival time.
//! Records that are not JSON, or on which the filter raises an error, go to the error
//! output with jaq's message (`processing-failed`). Compile errors are config errors.
//! `select(...)` of path comparisons with strings, booleans and `null`, path truthiness,
//! `and`, `or` and `| not` takes a fast path (`fast.rs`) that agrees with jaq.

mod fast;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, unwrap_valr, Compiler, Ctx, Vars};
use sluice_plugin_api::{
    declare_library, Batch, Context, Error, NewRecord, Output, Plugin, Transform,
};

pub use fast::{member, pick as pick_members, top_index};
pub use jaq_json::Val;

type Data = data::JustLut<Val>;

/// What went wrong compiling or running jq, with jaq's own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JqError {
    /// The program does not parse or names undefined filters: every problem, with columns.
    #[error("invalid jq program: {}", .0.join("; "))]
    Compile(Vec<String>),
    /// The program raised an error on an input.
    #[error("{0}")]
    Runtime(String),
    /// The input is not one JSON value.
    #[error("invalid JSON: {0}")]
    Json(String),
}

/// A compiled jq program.
pub struct Program {
    filter: jaq_core::Filter<Data>,
}

/// Byte offset of `part` inside `whole`, when `part` is a sub-slice of it.
fn offset_in(whole: &str, part: &str) -> Option<usize> {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    (p >= w && p <= w + whole.len()).then(|| p - w)
}

fn describe_at(code: &str, part: &str) -> String {
    match offset_in(code, part) {
        Some(off) => {
            let col = code[..off].chars().count() + 1;
            if part.is_empty() {
                format!("at column {col} (end of program)")
            } else {
                format!(
                    "at column {col} (`{}`)",
                    part.chars().take(20).collect::<String>()
                )
            }
        }
        None => String::new(),
    }
}

impl Program {
    /// Parses and compiles `code` with jq's standard library. The error is jaq's message
    /// with the column in the program.
    pub fn compile(code: &str) -> Result<Program, JqError> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errs| {
                let mut msgs = Vec::new();
                for (_, e) in errs {
                    match e {
                        jaq_core::load::Error::Io(v) => {
                            msgs.extend(v.into_iter().map(|(p, m)| format!("cannot load {p}: {m}")))
                        }
                        jaq_core::load::Error::Lex(v) => {
                            msgs.extend(v.into_iter().map(|(exp, at)| {
                                format!("expected {} {}", exp.as_str(), describe_at(code, at))
                            }))
                        }
                        jaq_core::load::Error::Parse(v) => {
                            msgs.extend(v.into_iter().map(|(exp, at)| {
                                let found = if at.is_empty() {
                                    "end of program".to_string()
                                } else {
                                    format!("`{at}`")
                                };
                                format!(
                                    "expected {}, found {found} {}",
                                    exp.as_str(),
                                    describe_at(code, at)
                                )
                            }))
                        }
                    }
                }
                JqError::Compile(msgs)
            })?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| {
                let msgs: Vec<String> = errs
                    .into_iter()
                    .flat_map(|(_, v)| v)
                    .map(|(name, undef)| {
                        format!(
                            "undefined {} `{name}` {}",
                            undef.as_str(),
                            describe_at(code, name)
                        )
                    })
                    .collect();
                JqError::Compile(msgs)
            })?;
        Ok(Program { filter })
    }

    /// Runs the program on `input`; each output is a value or jaq's error message.
    pub fn run(&self, input: Val) -> impl Iterator<Item = Result<Val, JqError>> + '_ {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        self.filter
            .id
            .run((ctx, input))
            .map(unwrap_valr)
            .map(|r| r.map_err(|e| JqError::Runtime(e.to_string())))
    }
}

/// Parses one JSON value.
pub fn parse_json(bytes: &[u8]) -> Result<Val, JqError> {
    jaq_json::read::parse_single(bytes).map_err(|e| JqError::Json(e.to_string()))
}

/// `jq` transform options.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JqConfig {
    /// The jq program, e.g. `select(.specversion == "1.0")`.
    pub filter: String,
    /// Output string results without JSON quotes (like `jq -r`).
    #[serde(default)]
    pub raw_output: bool,
}

/// The `jq` transform.
pub struct Jq {
    program: Program,
    /// The program's fast form, when it has one (never with `raw_output`).
    fast: Option<fast::Select>,
    raw_output: bool,
    scratch: String,
}

impl Plugin for Jq {
    type Config = JqConfig;
    fn create(cfg: JqConfig, _: &Context) -> Result<Self, Error> {
        let program = Program::compile(&cfg.filter)
            .map_err(|e| Error::config_field("filter", e.to_string()))?;
        Ok(Jq {
            program,
            fast: fast::Select::recognize(&cfg.filter).filter(|_| !cfg.raw_output),
            raw_output: cfg.raw_output,
            scratch: String::new(),
        })
    }
}

impl Transform for Jq {
    fn transform(&mut self, input: &Batch<'_>, out: &mut Output<'_>) -> Result<(), Error> {
        for (i, r) in input.iter().enumerate() {
            match self.fast.as_ref().and_then(|f| f.keeps(r.data)) {
                Some(true) => out.keep(i),
                Some(false) => {}
                None => self.run_one(i, &r, out),
            }
        }
        Ok(())
    }
}

impl Jq {
    /// Runs jaq on record `i`: its outputs, or its rejection.
    fn run_one(&mut self, i: usize, r: &sluice_plugin_api::Record<'_>, out: &mut Output<'_>) {
        use std::fmt::Write as _;
        {
            let v = match parse_json(r.data) {
                Ok(v) => v,
                Err(e) => {
                    out.reject(i, &e.to_string());
                    return;
                }
            };
            // Outputs are collected first so that an error mid-stream rejects the record
            // as a whole instead of emitting a partial result.
            let input = v.clone();
            let results: Result<Vec<Val>, JqError> = self.program.run(v).collect();
            match results {
                Err(e) => out.reject(i, &format!("jq: {e}")),
                Ok(vals) => {
                    for v in vals {
                        // `select(...)` and friends hand back the input itself: pass the
                        // original bytes through instead of re-serialising them.
                        if same_value(&v, &input) && !self.raw_output {
                            out.keep(i);
                            continue;
                        }
                        self.scratch.clear();
                        match (&v, self.raw_output) {
                            (Val::TStr(s), true) | (Val::BStr(s), true) => {
                                self.scratch.push_str(&String::from_utf8_lossy(s));
                            }
                            _ => {
                                let _ = write!(self.scratch, "{v}");
                            }
                        }
                        out.push(
                            i,
                            &NewRecord {
                                data: self.scratch.as_bytes(),
                                ..r.to_new()
                            },
                        );
                    }
                }
            }
        }
    }
}

/// True when `a` is the very same (shared) object or array as `b`.
fn same_value(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Obj(x), Val::Obj(y)) => std::sync::Arc::ptr_eq(x, y),
        (Val::Arr(x), Val::Arr(y)) => std::sync::Arc::ptr_eq(x, y),
        _ => false,
    }
}

declare_library!(
    name: "jq",
    plugins: [transform("jq", Jq, "runs a jq program on each JSON record (jaq)")]
);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(code: &str, input: &str) -> Vec<String> {
        let p = Program::compile(code).unwrap();
        p.run(parse_json(input.as_bytes()).unwrap())
            .map(|r| {
                r.map(|v| v.to_string())
                    .unwrap_or_else(|e| format!("error: {e}"))
            })
            .collect()
    }

    #[test]
    fn outputs_compact_json() {
        assert_eq!(
            run("{type, source}", r#"{"type":"a","source":"b","x":1}"#),
            [r#"{"type":"a","source":"b"}"#]
        );
        assert_eq!(run(".[]", "[1,2,3]"), ["1", "2", "3"]);
        assert_eq!(run("select(.a == 1)", r#"{"a":2}"#), Vec::<String>::new());
    }

    #[test]
    fn runtime_errors_are_reported() {
        let out = run(".a + 1", r#"{"a":"x"}"#);
        assert!(out[0].starts_with("error: "), "{out:?}");
    }

    #[test]
    fn compile_errors_carry_jaqs_message_and_column() {
        let e = Program::compile("{type, ").err().unwrap().to_string();
        assert!(e.starts_with("invalid jq program: expected"), "{e}");
        let e = Program::compile("nosuchfn(1)").err().unwrap().to_string();
        assert!(
            e.contains("undefined filter `nosuchfn`") && e.contains("column 1"),
            "{e}"
        );
    }
}
