//! `packager` builds the prebuilt runtime binaries that Heroku-style buildpacks download.
//!
//! The pipeline is recipe → plan → fetch → stack → build → package → test → publish; each step
//! is a module named for it. Library modules never print: they report through [`report::Reporter`].

pub mod archive;
pub mod package;
