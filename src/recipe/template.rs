//! `{name}` templates in recipe strings.
//!
//! `{runtime}`, `{version}`, `{major}`, `{minor}`, `{patch}`, `{prefix}`, `{stack}`, `{jobs}`, `{arch}` and
//! `{revision}` are replaced; `{{` and `}}` give literal braces. A `{` right after `$` is left alone, so shell
//! parameter expansions (`${CFLAGS}`, `${PREFIX:-/app}`) can be written as they are.

use std::collections::BTreeMap;

/// The variables a template may use.
pub const VARIABLES: &[&str] = &[
    "runtime", "version", "major", "minor", "patch", "prefix", "stack", "jobs", "arch", "revision",
];

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{name}` where `name` is not a variable.
    #[error("unknown template variable `{{{name}}}` (known: {known})", known = VARIABLES.iter().map(|v| format!("{{{v}}}")).collect::<Vec<_>>().join(", "))]
    Unknown {
        /// The unknown name.
        name: String,
    },
    /// A `{` without its `}` (or a lone `}`).
    #[error("unbalanced brace in template `{text}` (write `{{{{` or `}}}}` for a literal brace)")]
    Unbalanced {
        /// The template.
        text: String,
    },
}

/// Splits a template into literal text and variable names, checking every name.
fn walk(text: &str, mut out: impl FnMut(Piece<'_>)) -> Result<(), TemplateError> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut lit_start = 0;
    let unbalanced = || TemplateError::Unbalanced {
        text: text.to_string(),
    };
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                out(Piece::Lit(&text[lit_start..i + 1]));
                i += 2;
                lit_start = i;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                out(Piece::Lit(&text[lit_start..i + 1]));
                i += 2;
                lit_start = i;
            }
            b'{' if i > 0 && bytes[i - 1] == b'$' => {
                // Shell expansion: copied through, up to its matching brace.
                let mut depth = 0usize;
                loop {
                    match bytes.get(i) {
                        None => return Err(unbalanced()),
                        Some(b'{') => depth += 1,
                        Some(b'}') => depth -= 1,
                        _ => {}
                    }
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
            }
            b'{' => {
                let close = text[i..].find('}').ok_or_else(unbalanced)?;
                let name = &text[i + 1..i + close];
                if !VARIABLES.contains(&name) {
                    return Err(TemplateError::Unknown {
                        name: name.to_string(),
                    });
                }
                out(Piece::Lit(&text[lit_start..i]));
                out(Piece::Var(name));
                i += close + 1;
                lit_start = i;
            }
            b'}' => return Err(unbalanced()),
            _ => i += 1,
        }
    }
    out(Piece::Lit(&text[lit_start..]));
    Ok(())
}

enum Piece<'a> {
    Lit(&'a str),
    Var(&'a str),
}

/// Checks a template without expanding it.
pub fn check(text: &str) -> Result<(), TemplateError> {
    walk(text, |_| {})
}

/// Expands a template with the given values (every name in [`VARIABLES`] should be present).
pub fn expand(text: &str, vars: &BTreeMap<&'static str, String>) -> Result<String, TemplateError> {
    let mut result = String::with_capacity(text.len());
    let mut missing = None;
    walk(text, |piece| match piece {
        Piece::Lit(s) => result.push_str(s),
        Piece::Var(name) => match vars.get(name) {
            Some(v) => result.push_str(v),
            None => missing = Some(name.to_string()),
        },
    })?;
    match missing {
        Some(name) => Err(TemplateError::Unknown { name }),
        None => Ok(result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<&'static str, String> {
        [
            ("runtime", "mono"),
            ("version", "3.2.8"),
            ("major", "3"),
            ("minor", "2"),
            ("patch", "8"),
            ("prefix", "/app"),
            ("stack", "bookworm"),
            ("jobs", "2"),
            ("revision", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
    }

    #[test]
    fn expands_variables_and_escapes() {
        let v = vars();
        assert_eq!(
            expand("https://x/{runtime}-{version}.tar.bz2", &v).unwrap(),
            "https://x/mono-3.2.8.tar.bz2"
        );
        assert_eq!(
            expand(
                "make -j{jobs} V={{1}} CFLAGS=\"${CFLAGS} -O2\" P=${PREFIX:-{prefix}}",
                &v
            )
            .unwrap(),
            "make -j2 V={1} CFLAGS=\"${CFLAGS} -O2\" P=${PREFIX:-{prefix}}"
        );
        assert_eq!(expand("{major}.{minor}.{patch}", &v).unwrap(), "3.2.8");
    }

    #[test]
    fn refuses_unknown_and_unbalanced() {
        let v = vars();
        assert_eq!(
            expand("{verison}", &v),
            Err(TemplateError::Unknown {
                name: "verison".into()
            })
        );
        assert!(matches!(
            check("a {version"),
            Err(TemplateError::Unbalanced { .. })
        ));
        assert!(matches!(
            check("a }"),
            Err(TemplateError::Unbalanced { .. })
        ));
        assert!(check("${HOME}").is_ok());
    }
}
