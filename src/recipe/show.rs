//! `show`: the merged recipe written back as TOML, in the recipe format.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::checksum::Checksum;

use super::Recipe;

#[derive(Serialize)]
struct ShowRecipe<'a> {
    runtime: &'a str,
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    stack: &'a str,
    prefix: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    prefix_outside_app: bool,
    revision: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    arch: Option<crate::arch::Arch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arches: Option<&'a [crate::arch::Arch]>,
    artifact: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<crate::package::ArtifactFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zstd_level: Option<u32>,
    source: ShowSource<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    resources: Vec<ShowResource<'a>>,
    build: ShowBuild<'a>,
    test: ShowTest<'a>,
}

#[derive(Serialize)]
struct ShowSource<'a> {
    url: &'a str,
    mirrors: &'a [String],
    #[serde(flatten)]
    checksum: BTreeMap<&'static str, &'a str>,
    strip_components: u32,
}

#[derive(Serialize)]
struct ShowResource<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    mirrors: &'a [String],
    #[serde(flatten)]
    checksum: BTreeMap<&'static str, &'a str>,
    dest: &'a str,
    unpack: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<u32>,
    strip_components: u32,
}

#[derive(Serialize)]
struct ShowBuild<'a> {
    configure: &'a [String],
    build: &'a [String],
    install: &'a [String],
    requires: Vec<&'a str>,
    include_requires: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stack_packages: &'a [String],
    network: &'a super::Network,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    root: &'a [String],
    env: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ShowTest<'a> {
    commands: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    allow_missing: &'a [String],
}

fn checksum_map(c: &Checksum) -> BTreeMap<&'static str, &str> {
    [(c.algo().name(), c.hex())].into_iter().collect()
}

impl Recipe {
    /// The merged, templated recipe as TOML, in the recipe format (plus `runtime` and
    /// `version`).
    pub fn to_toml(&self) -> String {
        let show = ShowRecipe {
            runtime: self.runtime.as_str(),
            version: self.version.to_string(),
            description: self.description.as_deref(),
            stack: &self.stack,
            prefix: &self.prefix,
            prefix_outside_app: self.prefix_outside_app,
            revision: self.revision,
            // Shown (and so in the build key) for any but amd64, whose keys stay as they were.
            arch: (self.arch != crate::arch::Arch::Amd64).then_some(self.arch),
            arches: self.arches.as_deref(),
            artifact: &self.artifact,
            // Shown (and so in the build key) for tar.zst only: tar.gz keys stay as they were.
            format: (self.format != crate::package::ArtifactFormat::TarGz).then_some(self.format),
            zstd_level: (self.format == crate::package::ArtifactFormat::TarZst)
                .then_some(self.zstd_level),
            source: ShowSource {
                url: &self.source.url,
                mirrors: &self.source.mirrors,
                checksum: checksum_map(&self.source.checksum),
                strip_components: self.source.strip_components,
            },
            resources: self
                .resources
                .iter()
                .map(|r| ShowResource {
                    url: &r.url,
                    mirrors: &r.mirrors,
                    checksum: checksum_map(&r.checksum),
                    dest: &r.dest,
                    unpack: r.unpack,
                    patch: r.patch,
                    strip_components: r.strip_components,
                })
                .collect(),
            build: ShowBuild {
                configure: &self.build.configure,
                build: &self.build.build,
                install: &self.build.install,
                requires: self
                    .build
                    .requires
                    .iter()
                    .map(|r| r.text.as_str())
                    .collect(),
                include_requires: self.build.include_requires,
                stack_packages: &self.build.stack_packages,
                network: &self.build.network,
                root: &self.build.root,
                env: &self.build.env,
            },
            test: ShowTest {
                commands: &self.test.commands,
                allow_missing: &self.test.allow_missing,
            },
        };
        toml::to_string_pretty(&show).expect("a recipe always serialises")
    }
}
