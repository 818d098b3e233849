//! The one shape of jq program the transform answers without jaq, because it is the filter
//! Firehose users write most: `select(.a.b == "text")` (or `!=`, or `true`/`false`/`null`
//! on the right). The record is still parsed whole — a record that is not JSON goes to jaq,
//! which rejects it with its own words — but the members the path does not name are
//! skipped, not built, and a kept record passes through as its own bytes. Anything the
//! fast path cannot decide exactly as jaq would (a path through a value that is not an
//! object, a record serde_json refuses) is handed to jaq. Property-tested against jaq.

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// `select(PATH == LITERAL)` or `select(PATH != LITERAL)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    path: Vec<String>,
    equal: bool,
    literal: Literal,
}

/// The right-hand side: the scalars whose jq equality is plain equality (numbers are left
/// to jaq: `1 == 1.0`, big numbers).
#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Bool(bool),
    Null,
}

impl Select {
    /// The fast form of `code`, if it has one.
    pub fn recognize(code: &str) -> Option<Select> {
        let inner = code
            .trim()
            .strip_prefix("select")?
            .trim_start()
            .strip_prefix('(')?
            .strip_suffix(')')?
            .trim();
        // The path: `.name` segments, names as jq writes them without quotes.
        let mut path = Vec::new();
        let mut rest = inner;
        while let Some(after) = rest.strip_prefix('.') {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..end];
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            path.push(name.to_string());
            rest = &after[end..];
        }
        if path.is_empty() {
            return None;
        }
        let rest = rest.trim_start();
        let (equal, rest) = match (rest.strip_prefix("=="), rest.strip_prefix("!=")) {
            (Some(r), _) => (true, r),
            (_, Some(r)) => (false, r),
            _ => return None,
        };
        // A JSON string is a jq string literal with the same meaning (jq's own additions,
        // like `\(...)`, are not JSON and fall back to jaq).
        let literal = match serde_json::from_str::<serde_json::Value>(rest.trim()).ok()? {
            serde_json::Value::String(s) => Literal::Str(s),
            serde_json::Value::Bool(b) => Literal::Bool(b),
            serde_json::Value::Null => Literal::Null,
            _ => return None,
        };
        Some(Select {
            path,
            equal,
            literal,
        })
    }

    /// Whether `data` is kept (`Some`), or `None`: let jaq decide (it may be an error).
    pub fn keeps(&self, data: &[u8]) -> Option<bool> {
        // jaq reads bytes that are not UTF-8; serde_json does not skip them the same way.
        std::str::from_utf8(data).ok()?;
        let mut raw = member(data, &self.path[0])?;
        for name in &self.path[1..] {
            raw = match raw {
                // `.a.b` of a missing or null `.a` is null.
                None => None,
                Some(v) => match first_byte(v.get()) {
                    b'n' => None,
                    // Indexing a string, number or array: jaq raises an error.
                    b'{' => member(v.get().as_bytes(), name)?,
                    _ => return None,
                },
            };
        }
        let is = match (raw, &self.literal) {
            (None, Literal::Null) => true,
            (None, _) => false,
            (Some(v), lit) => {
                let text = v.get();
                match (first_byte(text), lit) {
                    (b'"', Literal::Str(s)) => {
                        serde_json::from_str::<std::borrow::Cow<'_, str>>(text).ok()? == **s
                    }
                    (b't', Literal::Bool(b)) => *b,
                    (b'f', Literal::Bool(b)) => !*b,
                    (b'n', Literal::Null) => true,
                    _ => false,
                }
            }
        };
        Some(is == self.equal)
    }
}

fn first_byte(text: &str) -> u8 {
    text.trim_start()
        .as_bytes()
        .first()
        .copied()
        .unwrap_or(b' ')
}

/// The member `name` of the JSON object `data` (the last one when it repeats, as jaq keeps
/// it), parsing every byte; `None` when `data` is not an object or not JSON (jaq decides),
/// `Some(None)` when the member is absent.
fn member<'a>(data: &'a [u8], name: &str) -> Option<Option<&'a RawValue>> {
    struct Find<'n>(&'n str);
    impl<'de> DeserializeSeed<'de> for Find<'_> {
        type Value = Option<&'de RawValue>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Find<'_> {
        type Value = Option<&'de RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(is) = map.next_key_seed(Key(self.0))? {
                if is {
                    found = Some(map.next_value::<&'de RawValue>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    /// A member name compared where it lies, without a `String`.
    struct Key<'n>(&'n str);
    impl<'de> DeserializeSeed<'de> for Key<'_> {
        type Value = bool;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl<'de> Visitor<'de> for Key<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a member name")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
            Ok(v == self.0)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(data);
    let found = Find(name).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_json, Program};
    use proptest::prelude::*;

    #[test]
    fn only_the_simple_select_shapes_are_recognized() {
        let s = Select::recognize(r#" select( .a.b_2 != "x\ny" ) "#).unwrap();
        assert_eq!(s.path, ["a", "b_2"]);
        assert!(!s.equal);
        assert_eq!(s.literal, Literal::Str("x\ny".into()));
        assert!(Select::recognize("select(.a == null)").is_some());
        assert!(Select::recognize("select(.a == true)").is_some());
        for other in [
            "select(.a == 1)",
            r#"select(.a == "x" and .b == "y")"#,
            r#"select(.a == "\(.b)")"#,
            r#"select(.a | . == "x")"#,
            r#"select(."a" == "x")"#,
            r#"select(.[0] == "x")"#,
            r#"select(.1a == "x")"#,
            r#"select(. == "x")"#,
            r#"select(.a == "x") | .b"#,
            r#"map(select(.a == "x"))"#,
            ".a",
        ] {
            assert_eq!(Select::recognize(other), None, "{other}");
        }
    }

    /// What jaq does with one record: kept (as the input itself), dropped, or an error.
    fn jaq_keeps(program: &Program, data: &str) -> Option<bool> {
        let v = parse_json(data.as_bytes()).ok()?;
        let out: Result<Vec<_>, _> = program.run(v).collect();
        match out.ok()?.len() {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            Just("1".to_string()),
            Just("1.0".to_string()),
            Just(r#""x""#.to_string()),
            Just(r#""y""#.to_string()),
            Just(r#""\u0078""#.to_string()),
            Just(r#""x\n""#.to_string()),
            Just(r#""é""#.to_string()),
            Just("[1,\"x\"]".to_string()),
        ]
    }

    fn object(inner: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
        prop::collection::vec((prop::sample::select(vec!["a", "b", "c"]), inner), 0..4).prop_map(
            |members| {
                let m: Vec<String> = members
                    .iter()
                    .map(|(k, v)| format!(r#""{k}": {v}"#))
                    .collect();
                format!("{{{}}}", m.join(", "))
            },
        )
    }

    /// Records: mostly objects (what the fast path decides on), members repeating.
    fn value() -> impl Strategy<Value = String> {
        let nested = scalar().prop_recursive(2, 16, 4, |inner| object(inner).boxed());
        prop_oneof![4 => object(nested), 1 => scalar()]
    }

    proptest! {
        /// Wherever the fast path decides, it decides as jaq does.
        #[test]
        fn the_fast_path_agrees_with_jaq(
            record in value(),
            path in prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..3),
            op in prop::sample::select(vec!["==", "!="]),
            lit in prop::sample::select(vec![r#""x""#, r#""y""#, r#""é""#, "null", "true", "false"]),
            tail in prop::sample::select(vec!["", " trailing", "}"]),
        ) {
            let code = format!("select(.{} {op} {lit})", path.join("."));
            let fast = Select::recognize(&code).unwrap();
            let program = Program::compile(&code).unwrap();
            let data = format!("{record}{tail}");
            // Where it gives up (`None`), jaq runs: nothing to compare.
            if let Some(keep) = fast.keeps(data.as_bytes()) {
                prop_assert_eq!(Some(keep), jaq_keeps(&program, &data), "{} on {}", code, data);
            }
        }
    }

    #[test]
    fn records_the_fast_path_cannot_decide_go_to_jaq() {
        let s = Select::recognize(r#"select(.a.b == "x")"#).unwrap();
        assert_eq!(s.keeps(br#"{"a":{"b":"x"}}"#), Some(true));
        assert_eq!(s.keeps(br#"{"a":{"b":"\u0078"}}"#), Some(true));
        assert_eq!(s.keeps(br#"{"a":null}"#), Some(false));
        assert_eq!(s.keeps(br#"{"a":{"b":"y"},"a":{"b":"x"}}"#), Some(true));
        // jaq's errors and refusals stay jaq's.
        assert_eq!(s.keeps(br#"{"a":"flat"}"#), None);
        assert_eq!(s.keeps(br#"[{"a":{"b":"x"}}]"#), None);
        assert_eq!(s.keeps(br#"{"a":{"b":"x"}"#), None);
        assert_eq!(s.keeps(b"{\"a\":{\"b\":\"x\xff\"}}"), None);
    }
}
