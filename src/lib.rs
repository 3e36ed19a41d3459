#![warn(missing_docs)]
//! `packager` builds the prebuilt runtime binaries that Heroku-style buildpacks download.
//!
//! The pipeline is recipe → plan → fetch → stack → build (with its test) → package → publish;
//! each step is a module named for it, and [`pipeline`] runs them end to end. Docker, HTTP and
//! S3 are each touched in one module only ([`docker`], [`fetch`], [`publish::s3`]). Library
//! modules never print: they report through [`report::Reporter`] and return errors that carry
//! what failed and where; the binary renders them. ARCHITECTURE.md maps the modules.

// The steps, in pipeline order.
pub mod recipe;
pub mod version;
pub mod plan;
pub mod fetch;
pub mod cache;
pub mod stack;
pub mod build;
pub mod package;
pub mod reproduce;
pub mod publish;
pub mod schedule;
pub mod pipeline;

// What the steps share.
pub mod arch;
pub mod checksum;
pub mod docker;
pub mod drop_cleanup;
pub mod egress;
pub mod error;
pub mod output_tail;
pub mod redact;
pub mod report;

// Parts of a build that tests and benches use directly, at the root as before.
pub use build::{archive, linkage, sandbox};
pub use error::Error;
