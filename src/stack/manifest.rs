//! What `stack.toml` says, as written, and the checks that make one image source of it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{BootstrapTool, StackError};
use crate::recipe::source::parse_toml;

/// How a Debian root filesystem is bootstrapped (`[bootstrap]` / `[run.bootstrap]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// Debian suite, e.g. `bookworm`.
    pub suite: String,
    /// mmdebstrap/debootstrap variant, e.g. `minbase`, `apt`, `buildd`. Default `minbase`.
    #[serde(default = "default_variant")]
    pub variant: String,
    /// Packages to install on top of the variant.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Archive components. Default `["main"]`.
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// Mirror URL. Default: none, i.e. the tool's default; [`MIRROR_ENV`] overrides either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// `SOURCE_DATE_EPOCH` for the bootstrap. Default [`DEFAULT_SOURCE_DATE_EPOCH`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<u64>,
    /// Force a tool: `"mmdebstrap"` or `"debootstrap"`. Default: mmdebstrap if installed,
    /// else debootstrap (which needs root and tars the result with GNU tar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<BootstrapTool>,
}

fn default_variant() -> String {
    "minbase".to_owned()
}

fn default_components() -> Vec<String> {
    vec!["main".to_owned()]
}

/// The `[run]` table: where the run image comes from (same sources as the build image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunManifest {
    /// A prebuilt image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A Dockerfile in the stack folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// A Debian bootstrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Bootstrap>,
}

/// `stack.toml`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackManifest {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A prebuilt build image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A Dockerfile in the stack folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// A Debian bootstrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Bootstrap>,
    /// The run image; absent means "test in the build image".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunManifest>,
    /// The architectures the stack can be made for; absent means every one packager knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arches: Option<Vec<crate::arch::Arch>>,
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A prebuilt image, pulled if absent.
    Prebuilt {
        /// The reference.
        image: String,
    },
    /// Built from a Dockerfile; the context is the stack folder.
    Dockerfile {
        /// Path of the Dockerfile relative to the stack folder.
        path: String,
    },
    /// A Debian bootstrap, imported.
    Bootstrap(Bootstrap),
}

impl ImageSource {
    pub(super) fn from_parts(
        image: &Option<String>,
        dockerfile: &Option<String>,
        bootstrap: &Option<Bootstrap>,
        manifest: &Path,
        table: &str,
    ) -> Result<Self, StackError> {
        let invalid = |reason: String| StackError::Invalid {
            path: manifest.to_owned(),
            reason,
        };
        match (image, dockerfile, bootstrap) {
            (Some(image), None, None) => {
                if image.trim().is_empty() {
                    return Err(invalid(format!("{table}`image` is empty")));
                }
                Ok(ImageSource::Prebuilt {
                    image: image.clone(),
                })
            }
            (None, Some(path), None) => {
                let p = Path::new(path);
                if p.is_absolute()
                    || p.components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(invalid(format!(
                        "{table}`dockerfile = \"{path}\"` must be a relative path inside the \
                         stack folder"
                    )));
                }
                Ok(ImageSource::Dockerfile { path: path.clone() })
            }
            (None, None, Some(bootstrap)) => {
                if bootstrap.suite.trim().is_empty() {
                    return Err(invalid(format!("{table}[bootstrap] `suite` is empty")));
                }
                if bootstrap.components.is_empty() {
                    return Err(invalid(format!("{table}[bootstrap] `components` is empty")));
                }
                if let Some(bad) = bootstrap
                    .packages
                    .iter()
                    .find(|p| p.is_empty() || p.contains([',', ' ', '\t']))
                {
                    return Err(invalid(format!(
                        "{table}[bootstrap] package name `{bad}` is not a single package"
                    )));
                }
                Ok(ImageSource::Bootstrap(bootstrap.clone()))
            }
            (None, None, None) => Err(invalid(format!(
                "{table}no image source: set `image`, `dockerfile` or [bootstrap]"
            ))),
            _ => Err(invalid(format!(
                "{table}more than one image source: set only one of `image`, `dockerfile` or \
                 [bootstrap]"
            ))),
        }
    }
}

/// Parses a manifest's text; `path` is only used in errors.
pub fn parse_manifest(text: &str, path: &Path) -> Result<StackManifest, StackError> {
    parse_toml(text).map_err(|e| StackError::Parse {
        path: path.to_owned(),
        line: e.location.line,
        column: e.location.column,
        message: e.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_line_and_column() {
        let text = "[bootstrap]\nsuite = \"bookworm\"\npackages = [\"gcc\"]\nfrobnicate = 1\n";
        let err = parse_manifest(text, Path::new("x/stack.toml")).unwrap_err();
        let StackError::Parse { line, column, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!((*line, *column), (4, 1));
        assert!(err.to_string().starts_with("x/stack.toml:4:1: "), "{err}");
        assert!(err.to_string().contains("frobnicate"), "{err}");
    }

    /// The TOML examples in this module's documentation are valid stacks.

    #[test]
    fn exactly_one_source() {
        let both = StackManifest {
            description: None,
            image: Some("a".into()),
            dockerfile: Some("Dockerfile".into()),
            bootstrap: None,
            run: None,
            arches: None,
        };
        let err = ImageSource::from_parts(
            &both.image,
            &both.dockerfile,
            &both.bootstrap,
            Path::new("s/stack.toml"),
            "",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("more than one image source"),
            "{err}"
        );
        let err = ImageSource::from_parts(&None, &None, &None, Path::new("s/stack.toml"), "[run] ")
            .unwrap_err();
        assert!(err.to_string().contains("[run] no image source"), "{err}");
    }
}
