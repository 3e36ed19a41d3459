//! Runtime names, and the spelling rule they share with stack names.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::{RecipeError, STACKS_DIR};

/// Whether `name` is a lowercase slug: ASCII lowercase letters, digits, `.`, `_` and `-`,
/// starting with a letter or a digit (so never empty). Such a name is a folder name on every
/// file system and can be part of a Docker image name. Runtime and stack names both follow
/// it; each adds its own rules on top.
pub fn is_lowercase_slug(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// A runtime's name: the folder under `recipes/`, a [lowercase slug](is_lowercase_slug) other
/// than [`STACKS_DIR`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RuntimeName(String);

impl RuntimeName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RuntimeName {
    type Err = RecipeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if is_lowercase_slug(s) && s != STACKS_DIR {
            Ok(RuntimeName(s.to_string()))
        } else {
            Err(RecipeError::BadRuntimeName(s.to_string()))
        }
    }
}

impl fmt::Display for RuntimeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stack's name as recipes and stores use it: the folder under `recipes/stacks/` and the first
/// level of a store's layout. The stack module checks it when it loads the stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StackName(String);

impl StackName {
    /// A stack name, as a recipe gives it.
    pub fn new(name: impl Into<String>) -> Self {
        StackName(name.into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for StackName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for StackName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for StackName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl fmt::Display for StackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for ok in ["bookworm", "heroku-24", "mono", "3.2", "a_b.c-d"] {
            assert!(is_lowercase_slug(ok), "{ok}");
        }
        for bad in ["", "Bookworm", "-x", ".x", "_x", "a b", "a/b", "é"] {
            assert!(!is_lowercase_slug(bad), "{bad}");
        }
    }

    #[test]
    fn runtime_names() {
        assert!("mono".parse::<RuntimeName>().is_ok());
        assert!("stacks".parse::<RuntimeName>().is_err());
        assert!("Mono".parse::<RuntimeName>().is_err());
    }
}
