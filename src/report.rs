//! Progress and warnings from library code go through a [`Reporter`]; the CLI decides how
//! (and whether) to show them. Library code never prints.

/// Receives progress events. Every method has an empty default, so an implementation only
/// overrides what it shows.
pub trait Reporter: Send + Sync {
    /// A download of `url` (already redacted) started; `total` is its size when known.
    fn download_started(&self, _id: u64, _url: &str, _total: Option<u64>) {}
    /// `bytes` more bytes of download `id` arrived.
    fn download_progress(&self, _id: u64, _bytes: u64) {}
    /// Download `id` ended, well or not.
    fn download_finished(&self, _id: u64) {}
    /// Something the user should know that is not an error.
    fn warn(&self, _message: &str) {}
    /// A line of ordinary progress.
    fn info(&self, _message: &str) {}
    /// Job `job` (`lua 5.4.4`) entered a step (`stack`, `fetch`, `configure`, `test`, …).
    fn step_started(&self, _job: &str, _step: &str) {}
    /// Job `job` finished a step, which took `elapsed`.
    fn step_finished(&self, _job: &str, _step: &str, _elapsed: std::time::Duration) {}
    /// One line of output of a command that job `job` runs in a container.
    fn output(&self, _job: &str, _line: &str) {}
    /// Job `job` put its artifact in the store and its inventory.
    fn artifact(&self, _job: &str, _made: &crate::schedule::Made) {}
}

/// A reporter that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {}
