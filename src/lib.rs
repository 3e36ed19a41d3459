#![warn(missing_docs)]
//! `packager` builds the prebuilt runtime binaries that Heroku-style buildpacks download.
//!
//! The pipeline is recipe → plan → fetch → stack → build → package → test → publish; each step
//! is a module named for it. Docker, HTTP and S3 are each touched in one module only. Library
//! modules never print: they report through [`report::Reporter`] and return errors that carry
//! what failed and where; the binary renders them.

pub mod arch;
pub mod archive;
pub mod build;
pub mod cache;
pub mod checksum;
pub mod docker;
pub mod drop_cleanup;
pub mod error;
pub mod fetch;
pub mod linkage;
pub mod output_tail;
pub mod package;
pub mod pipeline;
pub mod plan;
pub mod publish;
pub mod recipe;
pub mod redact;
pub mod report;
pub mod reproduce;
pub mod sandbox;
pub mod schedule;
pub mod stack;
pub mod version;

pub use error::Error;
