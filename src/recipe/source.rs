//! Where in a file of the recipes directory something is: byte offsets turned into lines and
//! columns, and TOML parse errors placed where the parser stopped. Recipes and stack manifests
//! both report their errors through this.

/// A 1-based line and column in a text; the column counts characters, not bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Location {
    /// Where byte `offset` of `text` is. An offset past the end means the end; one inside a
    /// multi-byte character means that character.
    pub fn of(text: &str, offset: usize) -> Location {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &text[..end];
        Location {
            line: before.matches('\n').count() + 1,
            column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
        }
    }
}

/// Why a TOML text did not parse into the expected type, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlError {
    /// Where the parser stopped; line 1, column 1 when it does not say.
    pub location: Location,
    /// The parser's message, trimmed, without the location (the caller adds the file).
    pub message: String,
}

/// Parses `text` into `T`, placing any error at its line and column.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, TomlError> {
    toml::from_str(text).map_err(|e: toml::de::Error| TomlError {
        location: e.span().map_or(Location { line: 1, column: 1 }, |span| {
            Location::of(text, span.start)
        }),
        message: e.message().trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_chars() {
        assert_eq!(Location::of("ab\ncd", 4), Location { line: 2, column: 2 });
        assert_eq!(Location::of("x", 0), Location { line: 1, column: 1 });
        assert_eq!(Location::of("x\n", 99), Location { line: 2, column: 1 });
        // `é` is two bytes: an offset inside it is that character.
        assert_eq!(Location::of("é\nb", 1), Location { line: 1, column: 1 });
        assert_eq!(Location::of("éb", 2), Location { line: 1, column: 2 });
    }

    #[test]
    fn toml_errors_are_placed() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let err = parse_toml::<T>("a = 1\nb = 2\n").unwrap_err();
        assert_eq!(err.location, Location { line: 2, column: 1 });
        assert!(err.message.contains("unknown field `b`"), "{}", err.message);
        assert_eq!(err.message, err.message.trim());
    }
}
