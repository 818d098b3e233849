//! Firehose prefix templates and Hive-style escaping of partition values.
//!
//! `!{partitionKeyFromQuery:KEY}`, `!{partitionKeyFromLambda:KEY}`, `!{timestamp:PATTERN}`
//! (Java DateTimeFormatter letters `yyyy yy MM dd HH mm ss`, UTC), `!{firehose:random-string}`
//! and, in error prefixes only, `!{firehose:error-output-type}`. Without a timestamp
//! expression, `!{timestamp:yyyy/MM/dd/HH/}` is appended, as Firehose does.

/// Longest evaluated prefix, as Firehose.
pub const MAX_PREFIX: usize = 512;

/// A piece of a template (readers of the output, like `sluiced query`, walk them to
/// read partition values back out of object keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text.
    Lit(String),
    /// `!{partitionKeyFromQuery:KEY}`.
    Query(String),
    /// `!{partitionKeyFromLambda:KEY}`.
    Lambda(String),
    /// `!{timestamp:PATTERN}`.
    Time(Vec<TimePart>),
    /// `!{firehose:random-string}`.
    Random,
    /// `!{firehose:error-output-type}`.
    ErrorType,
}

/// A piece of a timestamp pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimePart {
    /// Literal text.
    Lit(String),
    /// `yyyy`
    Year4,
    /// `yy`
    Year2,
    /// `MM`
    Month,
    /// `dd`
    Day,
    /// `HH`
    Hour,
    /// `mm`
    Minute,
    /// `ss`
    Second,
}

/// Why a prefix template does not parse (a config error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A letter `!{timestamp:...}` does not know.
    #[error("unsupported timestamp pattern letter `{letter}` in `{pattern}` (use yyyy, yy, MM, dd, HH, mm, ss)")]
    TimeLetter {
        /// The letter.
        letter: char,
        /// The whole pattern.
        pattern: String,
    },
    /// `!{` without `}`.
    #[error("unterminated `!{{` in `{0}`")]
    Unterminated(String),
    /// `!{...}` without a namespace.
    #[error("invalid expression `!{{{0}}}`")]
    Invalid(String),
    /// The error type outside `error_prefix`.
    #[error("`!{{firehose:error-output-type}}` is only allowed in error_prefix")]
    ErrorTypeOutsideErrorPrefix,
    /// An expression Firehose does not have.
    #[error("unknown expression `!{{{0}}}` (use partitionKeyFromQuery, partitionKeyFromLambda, timestamp, firehose:random-string, firehose:error-output-type)")]
    Unknown(String),
}

/// Why a template cannot be evaluated for a record (`partitioning-failed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A key the prefix names has an empty value.
    #[error("the partition key `{key}` ({namespace}) is empty")]
    Empty {
        /// The key.
        key: String,
        /// `partitionKeyFromQuery` or `partitionKeyFromLambda`.
        namespace: &'static str,
    },
    /// A key the prefix names is not among the record's keys.
    #[error("the partition key `{key}` ({namespace}) is missing")]
    Missing {
        /// The key.
        key: String,
        /// `partitionKeyFromQuery` or `partitionKeyFromLambda`.
        namespace: &'static str,
    },
    /// The evaluated prefix is longer than Firehose allows.
    #[error("the evaluated prefix is {0} bytes, longer than {MAX_PREFIX}")]
    TooLong(usize),
}

/// A parsed prefix template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

fn parse_time(p: &str) -> Result<Vec<TimePart>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = p;
    while !rest.is_empty() {
        let (part, n) = if rest.starts_with("yyyy") {
            (TimePart::Year4, 4)
        } else if rest.starts_with("yy") {
            (TimePart::Year2, 2)
        } else if rest.starts_with("MM") {
            (TimePart::Month, 2)
        } else if rest.starts_with("dd") {
            (TimePart::Day, 2)
        } else if rest.starts_with("HH") {
            (TimePart::Hour, 2)
        } else if rest.starts_with("mm") {
            (TimePart::Minute, 2)
        } else if rest.starts_with("ss") {
            (TimePart::Second, 2)
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            if c.is_ascii_alphabetic() {
                return Err(TemplateError::TimeLetter {
                    letter: c,
                    pattern: p.to_string(),
                });
            }
            match out.last_mut() {
                Some(TimePart::Lit(s)) => s.push(c),
                _ => out.push(TimePart::Lit(c.to_string())),
            }
            rest = &rest[c.len_utf8()..];
            continue;
        };
        out.push(part);
        rest = &rest[n..];
    }
    Ok(out)
}

impl Template {
    /// Parses a prefix; `error_prefix` allows `!{firehose:error-output-type}`.
    pub fn parse(s: &str, error_prefix: bool) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find("!{") {
            if i > 0 {
                parts.push(Part::Lit(rest[..i].to_string()));
            }
            let after = &rest[i + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| TemplateError::Unterminated(s.to_string()))?;
            let expr = &after[..end];
            let (ns, arg) = expr
                .split_once(':')
                .ok_or_else(|| TemplateError::Invalid(expr.to_string()))?;
            parts.push(match (ns, arg) {
                ("partitionKeyFromQuery", k) if !k.is_empty() => Part::Query(k.to_string()),
                ("partitionKeyFromLambda", k) if !k.is_empty() => Part::Lambda(k.to_string()),
                ("timestamp", p) if !p.is_empty() => Part::Time(parse_time(p)?),
                ("firehose", "random-string") => Part::Random,
                ("firehose", "error-output-type") if error_prefix => Part::ErrorType,
                ("firehose", "error-output-type") => {
                    return Err(TemplateError::ErrorTypeOutsideErrorPrefix)
                }
                _ => return Err(TemplateError::Unknown(expr.to_string())),
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Time(_))) {
            parts.push(Part::Time(parse_time("yyyy/MM/dd/HH/")?));
        }
        Ok(Template { parts })
    }

    /// The parsed pieces, in order (a default timestamp already appended).
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Query keys the template uses.
    pub fn query_keys(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Query(k) => Some(k.as_str()),
            _ => None,
        })
    }

    /// Whether the template uses any partition key (dynamic partitioning).
    pub fn is_dynamic(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Query(_) | Part::Lambda(_)))
    }

    /// Evaluates the template. Partition values are Hive-escaped; a missing or empty key,
    /// or a result longer than [`MAX_PREFIX`], is an error (`partitioning-failed`).
    pub fn render(
        &self,
        query: &[(String, String)],
        lambda: &[(String, String)],
        ts_ms: i64,
        error_type: Option<&str>,
        random: &str,
    ) -> Result<String, RenderError> {
        let mut out = String::new();
        let get = |kvs: &[(String, String)], k: &str, namespace: &'static str| match kvs
            .iter()
            .rev()
            .find(|(kk, _)| kk == k)
        {
            Some((_, v)) if !v.is_empty() => Ok(hive_escape(v)),
            Some(_) => Err(RenderError::Empty {
                key: k.to_string(),
                namespace,
            }),
            None => Err(RenderError::Missing {
                key: k.to_string(),
                namespace,
            }),
        };
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Query(k) => out.push_str(&get(query, k, "partitionKeyFromQuery")?),
                Part::Lambda(k) => out.push_str(&get(lambda, k, "partitionKeyFromLambda")?),
                Part::Time(t) => format_time(&mut out, t, ts_ms),
                Part::Random => out.push_str(random),
                Part::ErrorType => out.push_str(error_type.unwrap_or("unknown")),
            }
        }
        if out.len() > MAX_PREFIX {
            return Err(RenderError::TooLong(out.len()));
        }
        Ok(out)
    }
}

/// (year, month, day, hour, minute, second) of ms since the epoch, UTC.
/// Times outside jiff's range (years -9999..=9999, only from a misbehaving source) are
/// clamped to its ends.
pub fn civil(ms: i64) -> (i64, i64, i64, i64, i64, i64) {
    use jiff::{tz::TimeZone, Timestamp};
    let ts = Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    let t = TimeZone::UTC.to_datetime(ts);
    (
        i64::from(t.year()),
        i64::from(t.month()),
        i64::from(t.day()),
        i64::from(t.hour()),
        i64::from(t.minute()),
        i64::from(t.second()),
    )
}

fn format_time(out: &mut String, t: &[TimePart], ms: i64) {
    use std::fmt::Write as _;
    let (y, mo, d, h, mi, s) = civil(ms);
    for p in t {
        let _ = match p {
            TimePart::Lit(l) => write!(out, "{l}"),
            TimePart::Year4 => write!(out, "{y:04}"),
            TimePart::Year2 => write!(out, "{:02}", y.rem_euclid(100)),
            TimePart::Month => write!(out, "{mo:02}"),
            TimePart::Day => write!(out, "{d:02}"),
            TimePart::Hour => write!(out, "{h:02}"),
            TimePart::Minute => write!(out, "{mi:02}"),
            TimePart::Second => write!(out, "{s:02}"),
        };
    }
}

/// Escapes a partition value the way Hive escapes path names, so no value can leave its
/// path segment: `/ \ = : % # ? * " ' { [ ] ^`, DEL and control characters become `%XX`,
/// and the values `.` and `..` are encoded entirely.
pub fn hive_escape(v: &str) -> String {
    if v == "." || v == ".." {
        return v.chars().map(|_| "%2E").collect();
    }
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        let esc = matches!(
            c,
            '/' | '\\'
                | '='
                | ':'
                | '%'
                | '#'
                | '?'
                | '*'
                | '"'
                | '\''
                | '{'
                | '['
                | ']'
                | '^'
                | '\u{7f}'
        ) || (c as u32) < 0x20;
        if esc {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn renders_firehose_templates() {
        let t = Template::parse(
            "type=!{partitionKeyFromQuery:type}/source=!{partitionKeyFromQuery:source}/",
            false,
        )
        .unwrap();
        let q = [
            kv("type", "order.created"),
            kv("source", "https://github.com/JoseLuisSR/awsmeter"),
        ];
        let ts = 1_795_632_475_960; // 2026-11-25T18:47:55.960Z
        assert_eq!(
            t.render(&q, &[], ts, None, "r").unwrap(),
            "type=order.created/source=https%3A%2F%2Fgithub.com%2FJoseLuisSR%2Fawsmeter/2026/11/25/18/"
        );
        let e = Template::parse("kdferror/!{firehose:error-output-type}/", true).unwrap();
        assert_eq!(
            e.render(&[], &[], ts, Some("processing-failed"), "r")
                .unwrap(),
            "kdferror/processing-failed/2026/11/25/18/"
        );
        let t = Template::parse(
            "y=!{timestamp:yyyy}/m=!{timestamp:MM}/!{partitionKeyFromLambda:k}/",
            false,
        )
        .unwrap();
        assert_eq!(
            t.render(&[], &[kv("k", "v")], ts, None, "r").unwrap(),
            "y=2026/m=11/v/"
        );
        assert!(Template::parse("!{firehose:error-output-type}/", false).is_err());
        assert!(Template::parse("!{nope:x}", false).is_err());
        assert_eq!(
            t.render(&[], &[], ts, None, "r").unwrap_err().to_string(),
            "the partition key `k` (partitionKeyFromLambda) is missing"
        );
        assert_eq!(
            t.render(&[], &[kv("k", "")], ts, None, "r").unwrap_err(),
            RenderError::Empty {
                key: "k".into(),
                namespace: "partitionKeyFromLambda"
            }
        );
    }

    #[test]
    fn escapes_dangerous_values() {
        assert_eq!(hive_escape(".."), "%2E%2E");
        assert_eq!(hive_escape("."), "%2E");
        assert_eq!(hive_escape("a/../b"), "a%2F..%2Fb");
        assert_eq!(hive_escape("x=y:z"), "x%3Dy%3Az");
        assert_eq!(hive_escape("tab\there"), "tab%09here");
        assert_eq!(hive_escape("ünï"), "ünï");
    }

    proptest! {
        /// No value can produce a key outside the configured prefix: the rendered part
        /// contains no separator and is never `.` or `..`.
        #[test]
        fn values_stay_in_their_segment(v in ".{1,40}") {
            let e = hive_escape(&v);
            prop_assert!(!e.contains('/') && !e.contains('\\'));
            prop_assert!(e != "." && e != "..");
            prop_assert!(!e.chars().any(|c| (c as u32) < 0x20));
            let t = Template::parse("p=!{partitionKeyFromQuery:k}/", false).unwrap();
            if let Ok(r) = t.render(&[("k".into(), v.clone())], &[], 0, None, "r") {
                prop_assert!(r.starts_with("p="));
                prop_assert_eq!(r.matches('/').count(), 5); // p=…/yyyy/MM/dd/HH/
                prop_assert!(!r.split('/').any(|seg| seg == ".."));
            }
        }
    }
}
