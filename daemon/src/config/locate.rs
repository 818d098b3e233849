//! Turns "this key of this file" into `file:line:column`, for every config error.
//!
//! Serde errors from `toml` carry a byte span; errors found later (unknown plugin, a
//! plugin's own validation, a bad jq program) carry a key path, which is looked up in a
//! span-preserving parse of the same text.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};

/// One step of a path into a TOML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

impl fmt::Display for Seg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seg::Key(k) => f.write_str(k),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Shorthand for building key paths.
pub fn key(k: impl Into<String>) -> Seg {
    Seg::Key(k.into())
}

/// A config error with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column in characters (0 when unknown).
    pub column: usize,
    /// What is wrong, naming the key.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based (line, column) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// A file's text, for locating errors in it.
pub struct SourceFile {
    /// The path, as shown in messages.
    pub path: PathBuf,
    /// The file's contents.
    pub text: String,
}

impl SourceFile {
    /// Wraps a file's text.
    pub fn new(path: &Path, text: String) -> Self {
        SourceFile {
            path: path.to_path_buf(),
            text,
        }
    }

    /// An error at a byte span (or nowhere in particular).
    pub fn error_at(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        let (line, column) = span
            .map(|s| line_col(&self.text, s.start))
            .unwrap_or((0, 0));
        ConfigError {
            file: self.path.clone(),
            line,
            column,
            message: message.into(),
        }
    }

    /// An error about the key at `path`; when the path does not exist (a missing key), the
    /// nearest existing ancestor is used.
    pub fn error_at_path(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        self.error_at(self.span_of(path), message)
    }

    /// Converts a `toml` deserialisation error.
    pub fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        self.error_at(e.span(), e.message().trim_end().to_string())
    }

    /// The span of the deepest existing key along `path`.
    pub fn span_of(&self, path: &[Seg]) -> Option<Range<usize>> {
        let doc = DeTable::parse(&self.text).ok()?;
        let mut best = None;
        let mut cur: &DeValue<'_>;
        let root = doc.get_ref();
        let mut table: Option<&DeTable<'_>> = Some(root);
        let mut array: Option<&[toml::Spanned<DeValue<'_>>]> = None;
        for seg in path {
            let next = match (seg, table, array) {
                (Seg::Key(k), Some(t), _) => {
                    t.iter()
                        .find(|(key, _)| key.get_ref() == k)
                        .map(|(key, v)| {
                            best = Some(key.span());
                            v
                        })
                }
                (Seg::Index(i), _, Some(a)) => a.get(*i).inspect(|v| best = Some(v.span())),
                _ => None,
            };
            let Some(v) = next else { break };
            cur = v.get_ref();
            table = cur.as_table();
            array = cur.as_array().map(|a| &a[..]);
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_array_elements() {
        let text = "[pipelines.p]\nsource = { plugin = \"generator\", rate = 5 }\n\n[[pipelines.p.transforms]]\nplugin = \"jq\"\nfilter = \"{\"\n";
        let f = SourceFile::new(Path::new("p.toml"), text.to_string());
        let e = f.error_at_path(
            &[key("pipelines"), key("p"), key("source"), key("rate")],
            "bad",
        );
        assert_eq!((e.line, e.column), (2, 34));
        let e = f.error_at_path(
            &[
                key("pipelines"),
                key("p"),
                key("transforms"),
                Seg::Index(0),
                key("filter"),
            ],
            "bad",
        );
        assert_eq!((e.line, e.column), (6, 1));
        // a missing key points at its parent
        let e = f.error_at_path(&[key("pipelines"), key("p"), key("sink")], "missing");
        assert_eq!(e.line, 1);
        assert_eq!(e.to_string(), "p.toml:1:12: missing");
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
    }
}
