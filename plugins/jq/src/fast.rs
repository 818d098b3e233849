//! The shape of jq program the transform answers without jaq, because it is the filter
//! Firehose users write most: `select(COND)` where COND compares member paths with
//! strings, booleans or `null` (`.a.b == "text"`, `!=`), tests a path's truthiness
//! (`.flag`), and combines those with `and`, `or`, `| not` and parentheses. The record is
//! still parsed whole — a record that is not JSON goes to jaq, which rejects it with its
//! own words — but in one pass that takes only the members the condition names (the rest
//! are skipped, not built), and a kept record passes through as its own bytes. Anything
//! the fast path cannot decide exactly as jaq would (a path through a value that is not an
//! object, a record serde_json refuses) is handed to jaq. Property-tested against jaq.

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Distinct top-level members a fast condition may read (its lookups live on the stack).
const MAX_TOPS: usize = 8;
/// Parentheses deeper than this are left to jaq (the parser recurses).
const MAX_DEPTH: usize = 32;

/// `select(COND)` in its fast form.
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    /// The first member name of every path COND reads, each once.
    tops: Vec<String>,
    cond: Cond,
}

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    /// A path (`tops[top]`, then `rest`) and what is asked of its value.
    Test {
        top: usize,
        rest: Vec<String>,
        test: Test,
    },
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Eq(Literal),
    Ne(Literal),
    /// Neither `null` (or absent) nor `false`.
    Truthy,
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
        let mut p = Parser {
            s: code,
            tops: Vec::new(),
            depth: 0,
        };
        if !p.keyword("select") || !p.eat("(") {
            return None;
        }
        let cond = p.pipe()?;
        if !p.eat(")") {
            return None;
        }
        p.ws();
        if !p.s.is_empty() || p.tops.len() > MAX_TOPS {
            return None;
        }
        Some(Select { tops: p.tops, cond })
    }

    /// Whether `data` is kept (`Some`), or `None`: let jaq decide (it may be an error).
    pub fn keeps(&self, data: &[u8]) -> Option<bool> {
        // jaq reads bytes that are not UTF-8; serde_json does not skip them the same way.
        std::str::from_utf8(data).ok()?;
        let mut found = [None; MAX_TOPS];
        pick(data, &self.tops, &mut found[..self.tops.len()])?;
        self.cond.eval(&found)
    }
}

impl Cond {
    /// jq's answer (`and`/`or` short-circuit as jq's do), or `None`: jaq decides.
    fn eval(&self, found: &[Option<&RawValue>]) -> Option<bool> {
        match self {
            Cond::And(a, b) => match a.eval(found)? {
                false => Some(false),
                true => b.eval(found),
            },
            Cond::Or(a, b) => match a.eval(found)? {
                true => Some(true),
                false => b.eval(found),
            },
            Cond::Not(c) => c.eval(found).map(|b| !b),
            Cond::Test { top, rest, test } => {
                let mut raw = found[*top];
                for name in rest {
                    raw = match raw {
                        // `.a.b` of a missing or null `.a` is null.
                        None => None,
                        Some(v) => match first_byte(v.get()) {
                            b'n' => None,
                            // Indexing a string, number or array: jaq raises an error.
                            b'{' => member(v, name)?,
                            _ => return None,
                        },
                    };
                }
                let first = raw.map(|v| first_byte(v.get()));
                let (literal, equal) = match test {
                    Test::Truthy => return Some(!matches!(first, None | Some(b'n' | b'f'))),
                    Test::Eq(l) => (l, true),
                    Test::Ne(l) => (l, false),
                };
                let is = match (raw, first, literal) {
                    (None, _, Literal::Null) => true,
                    (None, _, _) => false,
                    (Some(v), Some(b'"'), Literal::Str(s)) => {
                        serde_json::from_str::<std::borrow::Cow<'_, str>>(v.get()).ok()? == **s
                    }
                    (_, Some(b't'), Literal::Bool(b)) => *b,
                    (_, Some(b'f'), Literal::Bool(b)) => !*b,
                    (_, Some(b'n'), Literal::Null) => true,
                    _ => false,
                };
                Some(is == equal)
            }
        }
    }
}

/// A recursive-descent reader of the fast grammar, in jq's precedence (`|` below `or`
/// below `and` below comparison):
/// `pipe := or ("|" "not")*`, `or := and ("or" and)*`, `and := atom ("and" atom)*`,
/// `atom := "(" pipe ")" | path [("==" | "!=") literal]`.
struct Parser<'a> {
    s: &'a str,
    tops: Vec<String>,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        self.s = self.s.trim_start();
    }

    /// Consumes `tok` if it comes next.
    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        match self.s.strip_prefix(tok) {
            Some(rest) => {
                self.s = rest;
                true
            }
            None => false,
        }
    }

    /// Consumes the word `kw` if it comes next as a whole word.
    fn keyword(&mut self, kw: &str) -> bool {
        self.ws();
        match self.s.strip_prefix(kw) {
            Some(rest) if !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') => {
                self.s = rest;
                true
            }
            _ => false,
        }
    }

    fn pipe(&mut self) -> Option<Cond> {
        let mut c = self.or()?;
        while self.eat("|") {
            if !self.keyword("not") {
                return None;
            }
            c = Cond::Not(Box::new(c));
        }
        Some(c)
    }

    fn or(&mut self) -> Option<Cond> {
        let mut c = self.and()?;
        while self.keyword("or") {
            c = Cond::Or(Box::new(c), Box::new(self.and()?));
        }
        Some(c)
    }

    fn and(&mut self) -> Option<Cond> {
        let mut c = self.atom()?;
        while self.keyword("and") {
            c = Cond::And(Box::new(c), Box::new(self.atom()?));
        }
        Some(c)
    }

    fn atom(&mut self) -> Option<Cond> {
        if self.eat("(") {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return None;
            }
            let c = self.pipe()?;
            self.depth -= 1;
            return self.eat(")").then_some(c);
        }
        let mut path = self.path()?;
        let test = if self.eat("==") {
            Test::Eq(self.literal()?)
        } else if self.eat("!=") {
            Test::Ne(self.literal()?)
        } else {
            Test::Truthy
        };
        let first = path.remove(0);
        let top = top_index(&mut self.tops, &first);
        Some(Cond::Test {
            top,
            rest: path,
            test,
        })
    }

    /// `.name` segments, names as jq writes them without quotes.
    fn path(&mut self) -> Option<Vec<String>> {
        self.ws();
        let mut path = Vec::new();
        while let Some(after) = self.s.strip_prefix('.') {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..end];
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            path.push(name.to_string());
            self.s = &after[end..];
        }
        (!path.is_empty()).then_some(path)
    }

    /// A string (as JSON writes it: jq's own additions, like `\(...)`, are not JSON and
    /// fall back to jaq), `true`, `false` or `null`.
    fn literal(&mut self) -> Option<Literal> {
        self.ws();
        if self.keyword("true") {
            return Some(Literal::Bool(true));
        }
        if self.keyword("false") {
            return Some(Literal::Bool(false));
        }
        if self.keyword("null") {
            return Some(Literal::Null);
        }
        let body = self.s.strip_prefix('"')?;
        let mut escaped = false;
        let end = body.char_indices().find_map(|(i, c)| match (escaped, c) {
            (true, _) => {
                escaped = false;
                None
            }
            (false, '\\') => {
                escaped = true;
                None
            }
            (false, '"') => Some(i),
            _ => None,
        })?;
        let text = &self.s[..end + 2];
        self.s = &self.s[end + 2..];
        serde_json::from_str::<String>(text).ok().map(Literal::Str)
    }
}

fn first_byte(text: &str) -> u8 {
    text.trim_start()
        .as_bytes()
        .first()
        .copied()
        .unwrap_or(b' ')
}

/// The members `names` of the JSON object `data` (the last one when a name repeats, as
/// jaq keeps it) into `out` (as long as `names`), borrowed from `data`; `None` when
/// `data` is not an object or not JSON. An absent member stays `None` in `out`. Every
/// byte is parsed, but members nobody asked for are skipped without being built and no
/// map is made: the cost per record of both fast paths (this one and partitioning's).
pub fn pick<'a>(data: &'a [u8], names: &[String], out: &mut [Option<&'a RawValue>]) -> Option<()> {
    struct Pick<'n, 'o, 'a>(&'n [String], &'o mut [Option<&'a RawValue>]);
    impl<'de> DeserializeSeed<'de> for Pick<'_, '_, 'de> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Pick<'_, '_, 'de> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(found) = map.next_key_seed(Key(self.0))? {
                match found {
                    Some(i) => self.1[i] = Some(map.next_value::<&'de RawValue>()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(data);
    Pick(names, out).deserialize(&mut de).ok()?;
    de.end().ok()
}

/// The member `name` of `v` (`Some(None)` when it has none), or `None` when `v` is not a
/// JSON object: one step of a path below the top-level members [`pick`] read.
pub fn member<'a>(v: &'a RawValue, name: &String) -> Option<Option<&'a RawValue>> {
    let mut one = [None];
    pick(v.get().as_bytes(), std::slice::from_ref(name), &mut one)?;
    Some(one[0])
}

/// Where `name` is in `tops`, appended when new: paths that start from the same member
/// share one read of it by [`pick`].
pub fn top_index(tops: &mut Vec<String>, name: &str) -> usize {
    match tops.iter().position(|t| t == name) {
        Some(i) => i,
        None => {
            tops.push(name.to_string());
            tops.len() - 1
        }
    }
}

/// A member name compared where it lies (borrowed, or in the parser's scratch buffer when
/// escaped): the index of the wanted name it equals, without a `String`.
struct Key<'n>(&'n [String]);
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
        Ok(self.0.iter().position(|n| n == v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_json, Program};
    use proptest::prelude::*;

    #[test]
    fn only_the_select_shapes_it_can_decide_are_recognized() {
        let s = Select::recognize(r#" select( .a.b_2 != "x\ny" ) "#).unwrap();
        assert_eq!(s.tops, ["a"]);
        assert_eq!(
            s.cond,
            Cond::Test {
                top: 0,
                rest: vec!["b_2".into()],
                test: Test::Ne(Literal::Str("x\ny".into()))
            }
        );
        for fast in [
            "select(.a == null)",
            "select(.a == true)",
            "select(.a)",
            r#"select(.a == "x" and .b == "y")"#,
            r#"select(.a == "x" or .a.b != "y" and .c)"#,
            r#"select((.a == "x" | not) and (.b | not | not))"#,
            r#"select(.a == "x" and .b == "y" | not)"#,
            r#"select(.a == "a)b\"(")"#,
            "select(.and or .or)",
        ] {
            assert!(Select::recognize(fast).is_some(), "{fast}");
        }
        let deep = format!("select({}.a{})", "(".repeat(40), ")".repeat(40));
        for other in [
            "select(.a == 1)",
            r#"select(.a == "\(.b)")"#,
            r#"select(.a | . == "x")"#,
            r#"select(."a" == "x")"#,
            r#"select(.[0] == "x")"#,
            r#"select(.1a == "x")"#,
            r#"select(. == "x")"#,
            r#"select(.a == "x") | .b"#,
            r#"select(.a == "x") | select(.b == "y")"#,
            r#"select(.a == "x" == true)"#,
            r#"select(.a = "x")"#,
            r#"select(.a == "x" | not and .b)"#,
            r#"select((.a == "x")"#,
            r#"select(.a == "x"))"#,
            r#"select(.a == "x)"#,
            r#"selector(.a)"#,
            "select(not)",
            "select(.a[0])",
            "select(.a?)",
            "select(.a or .b or .c or .d or .e or .f or .g or .h or .i)",
            deep.as_str(),
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

    /// Conditions of the fast grammar, as jq text.
    fn condition() -> impl Strategy<Value = String> {
        let path = prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..3)
            .prop_map(|p| format!(".{}", p.join(".")));
        let leaf = (
            path,
            prop::sample::select(vec!["==", "!=", ""]),
            prop::sample::select(vec![r#""x""#, r#""y""#, r#""é""#, "null", "true", "false"]),
        )
            .prop_map(|(p, op, lit)| match op {
                "" => p,
                op => format!("{p} {op} {lit}"),
            });
        leaf.prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} or {b}")),
                inner.clone().prop_map(|a| format!("({a})")),
                inner.prop_map(|a| format!("({a} | not)")),
            ]
        })
    }

    proptest! {
        /// Wherever the fast path decides, it decides as jaq does.
        #[test]
        fn the_fast_path_agrees_with_jaq(
            record in value(),
            cond in condition(),
            negate in any::<bool>(),
            tail in prop::sample::select(vec!["", "", "", " trailing", "}"]),
        ) {
            let code = format!("select({cond}{})", if negate { " | not" } else { "" });
            let fast = Select::recognize(&code);
            prop_assert!(fast.is_some(), "{} not recognized", code);
            let fast = fast.unwrap();
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
        // `and` and `or` stop where jq stops: what jq never looks at cannot fail.
        let s = Select::recognize(r#"select(.t == "x" and .a.b == "y")"#).unwrap();
        assert_eq!(s.keeps(br#"{"t":"z","a":"flat"}"#), Some(false));
        assert_eq!(s.keeps(br#"{"t":"x","a":"flat"}"#), None);
        let s = Select::recognize(r#"select(.t == "x" or .a.b == "y")"#).unwrap();
        assert_eq!(s.keeps(br#"{"t":"x","a":"flat"}"#), Some(true));
        assert_eq!(s.keeps(br#"{"t":"z","a":{"b":"y"}}"#), Some(true));
        let s = Select::recognize(r#"select(.t and (.n | not))"#).unwrap();
        assert_eq!(s.keeps(br#"{"t":0,"n":false}"#), Some(true));
        assert_eq!(s.keeps(br#"{"t":false,"n":null}"#), Some(false));
        assert_eq!(s.keeps(br#"{"t":"", "n":[]}"#), Some(false));
    }
}
