//! Partition-key extraction (`partitioning.query`, Firehose's MetadataExtractionQuery).
//!
//! A query made only of plain field paths — `{type, source}`, `{type: .type, src: .a.b}` —
//! takes a fast path that reads the fields straight from the JSON text without building
//! jq values; anything else runs through jaq. Either way the result is an object whose
//! values must be strings.

use serde_json::value::RawValue;
use sluice_plugin_jq::{parse_json, JqError, Program, Val};
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
    /// Plain field paths: (output key, path of field names).
    Fields(Vec<(String, Vec<String>)>),
    /// A general jq program.
    Jq(Program),
}

fn ident(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// The field paths of a query made only of `key` / `key: .a.b` entries, if it is one.
pub fn fast_path(query: &str) -> Option<Vec<(String, Vec<String>)>> {
    let inner = query.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    for entry in inner.split(',') {
        let entry = entry.trim();
        let (key, path) = match entry.split_once(':') {
            None => (entry.to_string(), vec![entry.to_string()]),
            Some((k, p)) => {
                let k = k.trim();
                let k = k
                    .strip_prefix('"')
                    .and_then(|k| k.strip_suffix('"'))
                    .unwrap_or(k);
                let p = p.trim().strip_prefix('.')?;
                let path: Vec<String> = p.split('.').map(str::to_string).collect();
                if !path.iter().all(|s| ident(s)) {
                    return None;
                }
                (k.to_string(), path)
            }
        };
        if !ident(&key) && key.chars().any(|c| c == '"' || c == '\\') {
            return None;
        }
        if key.is_empty() || !path.iter().all(|s| ident(s)) {
            return None;
        }
        out.push((key, path));
    }
    (!out.is_empty()).then_some(out)
}

/// The values of the members `names` of the JSON object `data` (the last one when a name
/// repeats, as a map would keep it), in `names`' order, borrowed from `data`. Every byte is
/// still parsed (a record that is not JSON is refused), but members nobody asked for are
/// skipped without being built, and no map is made: the fast path's cost per record.
fn pick<'a>(
    data: &'a [u8],
    names: &[&str],
) -> Result<Vec<Option<&'a RawValue>>, serde_json::Error> {
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
    struct Pick<'n>(&'n [&'n str]);
    impl<'de> DeserializeSeed<'de> for Pick<'_> {
        type Value = Vec<Option<&'de RawValue>>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Pick<'_> {
        type Value = Vec<Option<&'de RawValue>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = vec![None; self.0.len()];
            while let Some(found) = map.next_key_seed(Key(self.0))? {
                match found {
                    Some(i) => {
                        let v: &'de RawValue = map.next_value()?;
                        // Every field asking for this name gets it.
                        for (slot, n) in out.iter_mut().zip(self.0) {
                            if *n == self.0[i] {
                                *slot = Some(v);
                            }
                        }
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(out)
        }
    }
    /// A member name compared where it lies (borrowed, or in the parser's scratch buffer
    /// when escaped): the index of the first wanted name it equals, without a `String`.
    struct Key<'n>(&'n [&'n str]);
    impl<'de> DeserializeSeed<'de> for Key<'_> {
        type Value = Option<usize>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl<'de> Visitor<'de> for Key<'_> {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a member name")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(self.0.iter().position(|n| *n == v))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(data);
    let out = Pick(names).deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

impl Partitioner {
    /// Compiles a query (fast path when possible).
    pub fn new(query: &str) -> Result<Partitioner, JqError> {
        match fast_path(query) {
            Some(f) => Ok(Partitioner::Fields(f)),
            None => Program::compile(query).map(Partitioner::Jq),
        }
    }

    /// The keys a fast-path query produces (None for jq queries: known only at run time).
    pub fn keys(&self) -> Option<Vec<&str>> {
        match self {
            Partitioner::Fields(f) => Some(f.iter().map(|(k, _)| k.as_str()).collect()),
            Partitioner::Jq(_) => None,
        }
    }

    /// The partition keys of one record, or why they cannot be extracted.
    pub fn extract(&self, data: &[u8]) -> Result<Vec<(String, String)>, PartitionError> {
        match self {
            Partitioner::Fields(fields) => {
                let firsts: Vec<&str> = fields.iter().map(|(_, p)| p[0].as_str()).collect();
                let top = pick(data, &firsts).map_err(|_| PartitionError::NotJson)?;
                let mut out = Vec::with_capacity(fields.len());
                for ((key, path), found) in fields.iter().zip(top) {
                    let missing = || PartitionError::MissingField(path.join("."));
                    let mut raw = found.ok_or_else(missing)?;
                    for seg in &path[1..] {
                        raw = pick(raw.get().as_bytes(), &[seg.as_str()])
                            .ok()
                            .and_then(|mut v| v.pop().flatten())
                            .ok_or_else(missing)?;
                    }
                    let v: Cow<'_, str> = serde_json::from_str(raw.get())
                        .map_err(|_| PartitionError::FieldNotString(path.join(".")))?;
                    out.push((key.clone(), v.into_owned()));
                }
                Ok(out)
            }
            Partitioner::Jq(p) => {
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
                        Val::TStr(s) | Val::BStr(s) => {
                            out.push((key, String::from_utf8_lossy(s).into_owned()))
                        }
                        _ => return Err(PartitionError::KeyNotString(key)),
                    }
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn recognises_field_paths() {
        assert_eq!(
            fast_path("{type, source}").unwrap(),
            vec![
                ("type".into(), vec!["type".into()]),
                ("source".into(), vec!["source".into()])
            ]
        );
        assert_eq!(
            fast_path("{t: .a.b}").unwrap(),
            vec![("t".into(), vec!["a".into(), "b".into()])]
        );
        assert!(fast_path("{t: .a | ascii_downcase}").is_none());
        assert!(fast_path(".type").is_none());
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
            assert!(matches!(fast, Partitioner::Fields(_)));
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
        #[test]
        fn fast_path_matches_jq_on_random_records(t in "[a-zA-Z0-9 ./:=\\\\\"é]{0,12}", s in "[a-z]{0,5}", n in any::<i32>()) {
            let rec = serde_json::json!({"type": t, "source": s, "n": n}).to_string();
            let fast = Partitioner::new("{type, source}").unwrap();
            let jq = Partitioner::Jq(Program::compile("{type, source}").unwrap());
            prop_assert_eq!(fast.extract(rec.as_bytes()), jq.extract(rec.as_bytes()));
        }
    }
}
