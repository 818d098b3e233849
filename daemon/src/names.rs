//! Names that become file-system paths: streams, pipelines, delivery streams. This is
//! the one place that turns a user-supplied name into a folder, and it cannot escape its
//! base folder whatever the name: only `[a-zA-Z0-9_.-]{1,128}` is taken, and `.` and `..`
//! (the two such names that do not name a child) are refused.

use std::path::{Path, PathBuf};

/// Longest name (AWS's limit for stream names).
pub const MAX_LEN: usize = 128;

/// Why a name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty.
    #[error("name must not be empty")]
    Empty,
    /// Longer than [`MAX_LEN`].
    #[error("name `{0}` is longer than 128 characters")]
    TooLong(String),
    /// A character outside `[a-zA-Z0-9_.-]`.
    #[error("invalid name `{0}`: use 1-128 characters among a-z, A-Z, 0-9, '-', '_', '.'")]
    Charset(String),
    /// `.` or `..`.
    #[error("invalid name `{0}`: `.` and `..` are not names")]
    Dots(String),
}

/// Checks that `name` can name a folder below any base folder.
pub fn check(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_LEN {
        return Err(NameError::TooLong(name.to_string()));
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
    {
        return Err(NameError::Charset(name.to_string()));
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots(name.to_string()));
    }
    Ok(())
}

/// `base/name`, refused unless `name` passes [`check`]; the result is always a direct
/// child of `base`.
pub fn child(base: &Path, name: &str) -> Result<PathBuf, NameError> {
    check(name)?;
    Ok(base.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dots_and_separators_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x", "a\0b", "/", "é", "a b"] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "...", ".hidden", "a.b-c_d", "A9"] {
            assert!(check(good).is_ok(), "{good:?}");
        }
        assert!(check(&"a".repeat(128)).is_ok());
        assert!(check(&"a".repeat(129)).is_err());
    }

    proptest! {
        #[test]
        fn child_never_leaves_its_base(name in "\\PC{0,20}") {
            let base = Path::new("/base/dir");
            if let Ok(p) = child(base, &name) {
                prop_assert_eq!(p.parent(), Some(base));
                prop_assert_eq!(p.components().count(), base.components().count() + 1);
            }
        }
    }
}
