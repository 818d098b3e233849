//! Where a pipeline's objects sit: its prefix template turned into a matcher that reads
//! partition keys and time folders back out of an object's key.

use regex::Regex;
use sluiced::spec::{Part, TimePart};

/// The column a time folder becomes, and the digits it has (`None`: literal text).
fn time_column(t: &TimePart) -> Option<(&'static str, &'static str)> {
    Some(match t {
        TimePart::Lit(_) => return None,
        TimePart::Year4 => ("year", "[0-9]{4}"),
        TimePart::Year2 => ("year", "[0-9]{2}"),
        TimePart::Month => ("month", "[0-9]{2}"),
        TimePart::Day => ("day", "[0-9]{2}"),
        TimePart::Hour => ("hour", "[0-9]{2}"),
        TimePart::Minute => ("minute", "[0-9]{2}"),
        TimePart::Second => ("second", "[0-9]{2}"),
    })
}

/// What a column of the layout holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    /// A partition key: text, Hive-unescaped.
    Key,
    /// A time folder: a number (`yy` folders are years of this century).
    Time {
        /// A two-digit year.
        year2: bool,
    },
}

/// A prefix template compiled into a matcher for object keys.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The literal start of every key (listing starts there).
    pub fixed: String,
    /// Columns, in template order, each named once.
    pub columns: Vec<(String, ColumnKind)>,
    /// Capture group of each column.
    groups: Vec<usize>,
    re: Regex,
}

/// A key's values, one per column.
pub type Values = Vec<PartValue>;

/// One column's value for an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartValue {
    /// A partition key's value.
    Text(String),
    /// A time folder's number.
    Number(i32),
}

impl Layout {
    /// Compiles a prefix template's parts (the daemon's own parse of it) for objects
    /// named `<pipeline>-...` under them.
    pub fn new(parts: &[Part], pipeline: &str) -> Result<Layout, regex::Error> {
        let mut fixed = String::new();
        let mut dynamic = false;
        let mut re = String::from("^");
        let mut columns: Vec<(String, ColumnKind)> = Vec::new();
        let mut groups = Vec::new();
        let mut group = 0;
        let mut lit = |l: &str, dynamic: bool, re: &mut String| {
            if !dynamic {
                fixed.push_str(l);
            }
            re.push_str(&regex::escape(l));
        };
        for p in parts {
            match p {
                Part::Lit(l) => lit(l, dynamic, &mut re),
                Part::Random | Part::ErrorType => {
                    re.push_str("[^/]+");
                    dynamic = true;
                }
                Part::Query(k) | Part::Lambda(k) => {
                    group += 1;
                    re.push_str("([^/]+)");
                    // A key used twice names one column (the first folder's value).
                    if !columns.iter().any(|(c, _)| c == k) {
                        columns.push((k.clone(), ColumnKind::Key));
                        groups.push(group);
                    }
                    dynamic = true;
                }
                Part::Time(pieces) => {
                    for t in pieces {
                        let Some((column, digits)) = time_column(t) else {
                            if let TimePart::Lit(l) = t {
                                lit(l, dynamic, &mut re);
                            }
                            continue;
                        };
                        group += 1;
                        re.push('(');
                        re.push_str(digits);
                        re.push(')');
                        // A partition key of the same name wins over a time folder.
                        if !columns.iter().any(|(c, _)| c == column) {
                            let year2 = matches!(t, TimePart::Year2);
                            columns.push((column.to_string(), ColumnKind::Time { year2 }));
                            groups.push(group);
                        }
                        dynamic = true;
                    }
                }
            }
        }
        // The object's own name: `<pipeline>-<version>-<time>-<id><extension>`.
        re.push_str(&regex::escape(pipeline));
        re.push_str("-[^/]+$");
        // Every piece is escaped or a fixed class; only a size limit can refuse it.
        let re = Regex::new(&re)?;
        Ok(Layout {
            fixed,
            columns,
            groups,
            re,
        })
    }

    /// The column values of the object at `key` (relative to the lake's root), or `None`
    /// when the key is not one of this pipeline's objects (error output, other pipelines,
    /// temp files).
    pub fn parse(&self, key: &str) -> Option<Values> {
        let caps = self.re.captures(key)?;
        self.columns
            .iter()
            .zip(&self.groups)
            .map(|((_, kind), g)| {
                let raw = caps.get(*g)?.as_str();
                match kind {
                    // A value that does not unescape to UTF-8 is kept as written.
                    ColumnKind::Key => Some(PartValue::Text(
                        hive_unescape(raw).unwrap_or_else(|| raw.to_string()),
                    )),
                    ColumnKind::Time { year2 } => {
                        let n: i32 = raw.parse().ok()?;
                        Some(PartValue::Number(if *year2 { 2000 + n } else { n }))
                    }
                }
            })
            .collect::<Option<Vec<_>>>()
    }
}

/// Reverses Hive's escaping of a partition value (`%XX`); `None` when the result is
/// not UTF-8.
pub fn hive_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout(prefix: &str, pipeline: &str) -> Layout {
        let t = sluiced::spec::Template::parse(prefix, false).unwrap();
        Layout::new(t.parts(), pipeline).unwrap()
    }

    /// The seed's layout: `type=X/source=Y/yyyy/MM/dd/HH/` (the time folders appended).
    fn seed() -> Layout {
        layout(
            "type=!{partitionKeyFromQuery:type}/source=!{partitionKeyFromQuery:source}/",
            "events-to-lake",
        )
    }

    /// Percent-encodes every byte that is not alphanumeric or `-_.~ ` (a superset of
    /// what Hive escapes: a reader must decode whatever was encoded).
    fn escape(v: &str) -> String {
        v.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~ ".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    #[test]
    fn reads_the_seed_layout() {
        let l = seed();
        assert_eq!(l.fixed, "type=");
        let key = "type=order.created/source=https%3A%2F%2Fgithub.com%2FJoseLuisSR%2Fawsmeter/2026/11/30/19/events-to-lake-1-2026-11-30-19-28-28-32959b2f.gz";
        assert_eq!(
            l.parse(key).unwrap(),
            vec![
                PartValue::Text("order.created".into()),
                PartValue::Text("https://github.com/JoseLuisSR/awsmeter".into()),
                PartValue::Number(2026),
                PartValue::Number(11),
                PartValue::Number(30),
                PartValue::Number(19),
            ]
        );
        // Not this pipeline's objects: error output, other pipelines, hidden temp files,
        // objects outside the time folders.
        for other in [
            "kdferror/partitioning-failed/2026/11/30/19/events-to-lake-1-x.gz",
            "type=a/source=b/2026/11/30/19/other-1-2026-x.gz",
            "type=a/source=b/2026/11/30/19/.events-to-lake-1-x.gz.tmp",
            "type=a/source=b/events-to-lake-1-x.gz",
            "type=a/source=b/2026/11/30/19/sub/events-to-lake-1-x.gz",
        ] {
            assert_eq!(l.parse(other), None, "{other}");
        }
    }

    #[test]
    fn a_layout_without_keys_has_only_time_columns() {
        let l = layout("data/!{timestamp:yy-MM}/!{firehose:random-string}/", "p");
        assert_eq!(l.fixed, "data/");
        let cols: Vec<&str> = l.columns.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(cols, ["year", "month"]);
        assert_eq!(
            l.parse("data/26-11/Ab3dE5gH1jK/p-1-x.zst"),
            Some(vec![PartValue::Number(2026), PartValue::Number(11)])
        );
    }

    proptest! {
        /// Any partition values, escaped into folders, are read back exactly.
        #[test]
        fn values_round_trip(t in "\\PC{1,40}", s in "\\PC{1,40}", y in 1000i32..9999, h in 0i32..24) {
            let key = format!(
                "type={}/source={}/{y:04}/01/02/{h:02}/events-to-lake-1-2026-x.gz",
                escape(&t),
                escape(&s)
            );
            let got = seed().parse(&key);
            prop_assert_eq!(
                got,
                Some(vec![
                    PartValue::Text(t),
                    PartValue::Text(s),
                    PartValue::Number(y),
                    PartValue::Number(1),
                    PartValue::Number(2),
                    PartValue::Number(h),
                ])
            );
        }

        /// What the sink escapes into a folder name (the daemon's own `hive_escape`) is
        /// read back exactly.
        #[test]
        fn the_sinks_escaping_is_undone(v in "\\PC{1,64}") {
            let folder = sluiced::spec::hive_escape(&v);
            prop_assert_eq!(hive_unescape(&folder), Some(v));
        }

        /// Unescaping never panics, whatever the folder name.
        #[test]
        fn unescape_takes_anything(v in "\\PC{0,40}|%[0-9a-fA-F%]{0,6}") {
            let _ = hive_unescape(&v);
        }
    }
}
