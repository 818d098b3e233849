//! Partition-key extraction (`partitioning.query`, Firehose's MetadataExtractionQuery).
//!
//! A query made only of plain field paths — `{type, source}`, `{type: .type, src: .a.b}` —
//! and string slices of them (`{day: .time[0:10]}`) takes a fast path that reads the
//! fields straight from the JSON text without building jq values; anything else runs
//! through jaq. A sliced field that is not a string (jq's slice of an array, or jaq's
//! error for `null`) sends its record through jaq, so the answer is jaq's. Either way the
//! result is an object whose values must be strings.

use sluice_plugin_jq::{member, parse_json, pick_members, top_index, JqError, Program, Val};
use std::borrow::Cow;

/// Why a record's partition keys cannot be extracted (`partitioning-failed`), worded as
/// Firehose words it where Firehose has words for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    /// The record is not JSON.
    #[error("Non JSON record provided")]
    NotJson,
    /// A field the query names is absent (the dotted path).
    #[error("the field `.{0}` is missing")]
    MissingField(String),
    /// A field the query names is not a string.
    #[error("the field `.{0}` is not a string")]
    FieldNotString(String),
    /// The jq query raised an error.
    #[error("jq: {0}")]
    Jq(JqError),
    /// The jq query produced nothing.
    #[error("the query produced no output")]
    NoOutput,
    /// The jq query produced several values.
    #[error("the query produced more than one output")]
    ManyOutputs,
    /// The jq query produced something other than an object.
    #[error("the query must produce an object of strings")]
    NotObject,
    /// A key of the query's object has a non-string value.
    #[error("the partition key `{0}` is not a string")]
    KeyNotString(String),
}

/// Extracts partition keys from records.
pub enum Partitioner {
    /// Plain field paths, some maybe sliced.
    Fields(FastQuery),
    /// A general jq program.
    Jq(Program),
}

/// A query the fast path answers.
pub struct FastQuery {
    fields: Vec<Field>,
    /// The first member name of the fields' paths, each once (read in one pass).
    tops: Vec<String>,
    /// Which of `tops` each field starts from.
    top_of: Vec<usize>,
    /// The query compiled by jaq, for the records a slice leaves to jaq (only when some
    /// field is sliced).
    fallback: Option<Program>,
}

/// Top-level members a record's lookups keep on the stack (more take a `Vec`).
const STACK_TOPS: usize = 8;

/// One entry of a fast-path query: `key: .path[from:to]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The output key.
    pub key: String,
    /// The member names leading to the value.
    pub path: Vec<String>,
    /// `[from:to]` in characters, negative from the end, as jq slices a string.
    pub slice: Option<(Option<i64>, Option<i64>)>,
}

fn ident(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// `[from:to]`, `[from:]` or `[:to]` with integer bounds, if `text` is one.
fn slice(text: &str) -> Option<(Option<i64>, Option<i64>)> {
    let inner = text.trim().strip_prefix('[')?.strip_suffix(']')?;
    let (from, to) = inner.split_once(':')?;
    let bound = |b: &str| -> Option<Option<i64>> {
        let b = b.trim();
        if b.is_empty() {
            return Some(None);
        }
        let digits = b.strip_prefix('-').unwrap_or(b);
        // Plain decimal integers only (jq reads `1e2` or `0x1` otherwise, or not at all).
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        b.parse().ok().map(Some)
    };
    let (from, to) = (bound(from)?, bound(to)?);
    (from.is_some() || to.is_some()).then_some((from, to))
}

/// The fields of a query made only of `key` / `key: .a.b` / `key: .a.b[m:n]` entries, if
/// it is one.
pub fn fast_path(query: &str) -> Option<Vec<Field>> {
    let inner = query.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    for entry in inner.split(',') {
        let entry = entry.trim();
        let (key, path, sliced) = match entry.split_once(':') {
            None => (entry.to_string(), vec![entry.to_string()], None),
            Some((k, p)) => {
                let k = k.trim();
                let k = k
                    .strip_prefix('"')
                    .and_then(|k| k.strip_suffix('"'))
                    .unwrap_or(k);
                let p = p.trim().strip_prefix('.')?;
                let (p, sliced) = match p.find('[') {
                    Some(i) => (&p[..i], Some(slice(&p[i..])?)),
                    None => (p, None),
                };
                let path: Vec<String> = p.trim_end().split('.').map(str::to_string).collect();
                if !path.iter().all(|s| ident(s)) {
                    return None;
                }
                (k.to_string(), path, sliced)
            }
        };
        if !ident(&key) && key.chars().any(|c| c == '"' || c == '\\') {
            return None;
        }
        if key.is_empty() || !path.iter().all(|s| ident(s)) {
            return None;
        }
        out.push(Field {
            key,
            path,
            slice: sliced,
        });
    }
    (!out.is_empty()).then_some(out)
}

/// `s[from:to]` as jq slices a string: by characters, a negative bound counting from the
/// end, both clamped to the string, empty when they cross.
fn slice_chars(s: &str, from: Option<i64>, to: Option<i64>) -> &str {
    let len = s.chars().count() as i64;
    let at = |b: i64| if b < 0 { (len + b).max(0) } else { b.min(len) };
    let from = from.map_or(0, at);
    let to = to.map_or(len, at);
    if from >= to {
        return "";
    }
    let byte = |n: i64| s.char_indices().nth(n as usize).map_or(s.len(), |(i, _)| i);
    &s[byte(from)..byte(to)]
}

impl Partitioner {
    /// Compiles a query (fast path when possible).
    pub fn new(query: &str) -> Result<Partitioner, JqError> {
        match fast_path(query) {
            Some(fields) => {
                let sliced = fields.iter().any(|f| f.slice.is_some());
                let fallback = if sliced {
                    Some(Program::compile(query)?)
                } else {
                    None
                };
                let mut tops = Vec::new();
                let top_of = fields
                    .iter()
                    .map(|f| top_index(&mut tops, &f.path[0]))
                    .collect();
                Ok(Partitioner::Fields(FastQuery {
                    fields,
                    tops,
                    top_of,
                    fallback,
                }))
            }
            None => Program::compile(query).map(Partitioner::Jq),
        }
    }

    /// The keys a fast-path query produces (None for jq queries: known only at run time).
    pub fn keys(&self) -> Option<Vec<&str>> {
        match self {
            Partitioner::Fields(q) => Some(q.fields.iter().map(|f| f.key.as_str()).collect()),
            Partitioner::Jq(_) => None,
        }
    }

    /// The partition keys of one record, or why they cannot be extracted.
    pub fn extract(&self, data: &[u8]) -> Result<Vec<(String, String)>, PartitionError> {
        match self {
            Partitioner::Fields(q) => {
                let mut stack = [None; STACK_TOPS];
                let mut heap = Vec::new();
                let found = if q.tops.len() <= STACK_TOPS {
                    &mut stack[..q.tops.len()]
                } else {
                    heap.resize(q.tops.len(), None);
                    &mut heap[..]
                };
                pick_members(data, &q.tops, found).ok_or(PartitionError::NotJson)?;
                let mut out = Vec::with_capacity(q.fields.len());
                for (field, &top) in q.fields.iter().zip(&q.top_of) {
                    let path = &field.path;
                    let mut raw = found[top];
                    for seg in &path[1..] {
                        // Below a value that is not an object: missing, as before.
                        raw = raw.and_then(|r| member(r, seg).flatten());
                    }
                    let text = raw.and_then(|r| serde_json::from_str::<Cow<'_, str>>(r.get()).ok());
                    let v = match (text, field.slice, &q.fallback) {
                        (Some(v), None, _) => v.into_owned(),
                        (Some(v), Some((from, to)), _) => slice_chars(&v, from, to).to_string(),
                        // A sliced null, number or array: jaq's answer, whatever it is.
                        (None, Some(_), Some(p)) => return run_jq(p, data),
                        (None, _, _) => {
                            let path = path.join(".");
                            return Err(match raw {
                                None => PartitionError::MissingField(path),
                                Some(_) => PartitionError::FieldNotString(path),
                            });
                        }
                    };
                    out.push((field.key.clone(), v));
                }
                Ok(out)
            }
            Partitioner::Jq(p) => run_jq(p, data),
        }
    }
}

/// The partition keys of `data` by the jq program `p`.
fn run_jq(p: &Program, data: &[u8]) -> Result<Vec<(String, String)>, PartitionError> {
    let v = parse_json(data).map_err(|_| PartitionError::NotJson)?;
    let mut outs = p.run(v);
    let first = outs
        .next()
        .ok_or(PartitionError::NoOutput)?
        .map_err(PartitionError::Jq)?;
    if outs.next().is_some() {
        return Err(PartitionError::ManyOutputs);
    }
    let Val::Obj(map) = first else {
        return Err(PartitionError::NotObject);
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map.iter() {
        let key = match k {
            Val::TStr(s) | Val::BStr(s) => String::from_utf8_lossy(s).into_owned(),
            other => other.to_string(),
        };
        match v {
            Val::TStr(s) | Val::BStr(s) => out.push((key, String::from_utf8_lossy(s).into_owned())),
            _ => return Err(PartitionError::KeyNotString(key)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field(key: &str, path: &[&str], slice: Option<(Option<i64>, Option<i64>)>) -> Field {
        Field {
            key: key.into(),
            path: path.iter().map(|s| s.to_string()).collect(),
            slice,
        }
    }

    #[test]
    fn recognises_field_paths() {
        assert_eq!(
            fast_path("{type, source}").unwrap(),
            vec![
                field("type", &["type"], None),
                field("source", &["source"], None)
            ]
        );
        assert_eq!(
            fast_path("{t: .a.b}").unwrap(),
            vec![field("t", &["a", "b"], None)]
        );
        assert_eq!(
            fast_path("{d: .time[0:10], k: .id [-4:], h: .a.b[ : 2 ]}").unwrap(),
            vec![
                field("d", &["time"], Some((Some(0), Some(10)))),
                field("k", &["id"], Some((Some(-4), None))),
                field("h", &["a", "b"], Some((None, Some(2)))),
            ]
        );
        for other in [
            "{t: .a | ascii_downcase}",
            ".type",
            "{t: .a[0]}",
            "{t: .a[:]}",
            "{t: .a[1:2][0:1]}",
            "{t: .a[1.5:2]}",
            "{t: .a[1e2:]}",
            "{t: .a[\"x\"]}",
            "{t: .a[1:2].b}",
            "{t: .a[-:2]}",
        ] {
            assert!(fast_path(other).is_none(), "{other}");
        }
    }

    #[test]
    fn slices_of_fields_are_jqs() {
        let p = Partitioner::new("{d: .time[0:10], k: .id[4:8]}").unwrap();
        assert!(matches!(&p, Partitioner::Fields(q) if q.fallback.is_some()));
        assert_eq!(
            p.extract(r#"{"time":"2026-12-01T22:00:00Z","id":"abcdéfghij"}"#.as_bytes())
                .unwrap(),
            [
                ("d".into(), "2026-12-01".into()),
                ("k".into(), "éfgh".into())
            ]
        );
        // What is not a string is jaq's to answer (an error for null, as jaq has it).
        let jq = Partitioner::Jq(Program::compile("{d: .time[0:10], k: .id[4:8]}").unwrap());
        for rec in [
            &br#"{"time":"2026","id":null}"#[..],
            br#"{"time":"2026"}"#,
            br#"{"time":"2026","id":[1,2,3,4,5,6]}"#,
            br#"{"time":"2026","id":12345678}"#,
            b"not json",
        ] {
            assert_eq!(
                p.extract(rec),
                jq.extract(rec),
                "{}",
                String::from_utf8_lossy(rec)
            );
            assert!(p.extract(rec).is_err());
        }
    }

    #[test]
    fn picking_fields_parses_the_whole_record() {
        let p = Partitioner::new("{type, s: .a.b}").unwrap();
        let got = p.extract(br#"{"type":"x","a":{"b":"y","c":[1,{"d":2}]},"type":"z"}"#);
        assert_eq!(
            got.unwrap(),
            [("type".into(), "z".into()), ("s".into(), "y".into())],
            "the last of a repeated name, as a map keeps it"
        );
        let shared = Partitioner::new("{s: .a.b, t: .a.c, u: .n, v: .a.b}").unwrap();
        assert_eq!(
            shared
                .extract(br#"{"a":{"b":"y","c":"z"},"n":"m"}"#)
                .unwrap(),
            [
                ("s".into(), "y".into()),
                ("t".into(), "z".into()),
                ("u".into(), "m".into()),
                ("v".into(), "y".into())
            ],
            "fields sharing a member read it once, each gets it"
        );
        for bad in [
            &br#"{"type":"x"} trailing"#[..],
            b"[1]",
            br#"{"type":"x","#,
            b"",
        ] {
            assert_eq!(
                p.extract(bad),
                Err(PartitionError::NotJson),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            p.extract(br#"{"type":"x","a":{"c":1}}"#),
            Err(PartitionError::MissingField("a.b".into()))
        );
        assert_eq!(
            p.extract(br#"{"type":"x","a":"flat"}"#),
            Err(PartitionError::MissingField("a.b".into()))
        );
        assert_eq!(
            p.extract(br#"{"type":1,"a":{"b":"y"}}"#),
            Err(PartitionError::FieldNotString("type".into()))
        );
    }

    #[test]
    fn fast_path_and_jq_agree() {
        let rec = br#"{"type":"a\"b","source":"s","n":1,"d":{"k":"v"}}"#;
        for q in ["{type, source}", "{type: .type, k: .d.k}"] {
            let fast = Partitioner::new(q).unwrap();
            assert!(matches!(&fast, Partitioner::Fields(f) if f.fallback.is_none()));
            let jq = Partitioner::Jq(Program::compile(q).unwrap());
            assert_eq!(fast.extract(rec), jq.extract(rec), "{q}");
        }
        let p = Partitioner::new("{n}").unwrap();
        assert!(p
            .extract(rec)
            .unwrap_err()
            .to_string()
            .contains("not a string"));
        assert!(Partitioner::new("{x}")
            .unwrap()
            .extract(rec)
            .unwrap_err()
            .to_string()
            .contains("missing"));
        assert!(Partitioner::new("{x}")
            .unwrap()
            .extract(b"not json")
            .unwrap_err()
            .to_string()
            .contains("Non JSON"));
        let p = Partitioner::new("{t: (.type | ascii_downcase)}").unwrap();
        assert!(matches!(p, Partitioner::Jq(_)));
        assert_eq!(
            p.extract(br#"{"type":"ABC"}"#).unwrap(),
            vec![("t".to_string(), "abc".to_string())]
        );
    }

    proptest! {
        /// Slices by characters, bounds negative, past the end or crossing: as jaq.
        #[test]
        fn slices_match_jq(
            id in "[a-zé€😀 ]{0,8}",
            from in prop::option::weighted(0.8, -10i64..10),
            to in prop::option::weighted(0.8, -10i64..10),
        ) {
            prop_assume!(from.is_some() || to.is_some());
            let b = |b: Option<i64>| b.map_or(String::new(), |b| b.to_string());
            let q = format!("{{k: .id[{}:{}]}}", b(from), b(to));
            let fast = Partitioner::new(&q).unwrap();
            prop_assert!(matches!(&fast, Partitioner::Fields(f) if f.fallback.is_some()), "{}", q);
            let jq = Partitioner::Jq(Program::compile(&q).unwrap());
            let rec = serde_json::json!({"id": id}).to_string();
            prop_assert_eq!(fast.extract(rec.as_bytes()), jq.extract(rec.as_bytes()), "{}", q);
        }

        #[test]
        fn fast_path_matches_jq_on_random_records(t in "[a-zA-Z0-9 ./:=\\\\\"é]{0,12}", s in "[a-z]{0,5}", n in any::<i32>()) {
            let rec = serde_json::json!({"type": t, "source": s, "n": n}).to_string();
            let fast = Partitioner::new("{type, source}").unwrap();
            let jq = Partitioner::Jq(Program::compile("{type, source}").unwrap());
            prop_assert_eq!(fast.extract(rec.as_bytes()), jq.extract(rec.as_bytes()));
        }
    }
}
