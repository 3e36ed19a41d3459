//! The Docker engine, seen through our own small types.
//!
//! This is the only module that talks to the engine (through `bollard`); everything else uses
//! [`Docker`], [`ContainerSpec`], [`ExecSpec`], [`ContainerGuard`] and friends. No `bollard` type
//! appears in this module's public API: the library's errors reach callers only as the
//! [`EngineError`] source of a [`DockerError`].
//!
//! Rules this module enforces so callers cannot forget them:
//! - containers get an explicit environment only (the host environment never leaks in) and no
//!   network unless [`ContainerSpec::network`] asks for one;
//! - every container carries the [`MANAGED_LABEL`] label so a later run can remove orphans;
//! - a created container is owned by a [`ContainerGuard`], which removes it when dropped, even
//!   on Ctrl-C (see [`crate::drop_cleanup`]);
//! - [`Docker::exec`] returns an [`ExecResult`] that is `#[must_use]`; [`ExecResult::check`]
//!   turns a non-zero exit code into an error carrying the output tail.
//!
//! What lives where (all of it is re-exported here; the files are not public):
//! - `client`: [`Docker`] itself, connecting (`DOCKER_HOST`, API version negotiation, ping),
//!   [`EngineInfo`];
//! - `error`: [`DockerError`], [`EngineError`], their hints;
//! - `images`: inspecting, listing, removing, pulling, importing and building images;
//! - `containers`: [`ContainerSpec`] and [`Sandbox`], the container calls, [`ContainerGuard`];
//! - `exec`: [`ExecSpec`], running commands (collected or attached), splitting output in lines;
//! - `transfer`: tar streams into and out of a container.

mod client;
mod containers;
mod error;
mod exec;
mod images;
mod transfer;

pub use crate::arch::Arch;
pub use client::{DEFAULT_HOST, Docker, EngineInfo};
pub use containers::{BindMount, ContainerGuard, ContainerInfo, ContainerSpec, Limits, Sandbox};
pub use error::{DockerError, EngineError};
pub use exec::{
    AttachedExec, ExecHandle, ExecInput, ExecOutput, ExecResult, ExecSpec, OutputStream,
};
pub use images::{ImageBuildOptions, ImageInfo, ImportOptions};
pub use transfer::ByteStream;

/// Label put on every container this module creates; the value is always `"true"`.
pub const MANAGED_LABEL: &str = "packager.managed";

/// Name prefix of containers kept for debugging ([`ContainerGuard::keep_for_debugging`]);
/// orphan cleanups leave them alone.
pub const KEPT_PREFIX: &str = "packager-kept-";

/// How many output lines errors keep (build logs, exec output).
pub(crate) const TAIL_LINES: usize = 40;
