//! Clean-up that must finish when a guard is dropped (a container to remove, a multipart upload
//! to abort), even while the async runtime that owned the guard is shutting down after Ctrl-C.
//!
//! A `Drop` cannot await, and the dropping runtime may not poll anything any more, so the work
//! runs to completion on a thread of its own with a current-thread runtime, within a time
//! limit; `drop` waits for it. Failures are logged (`tracing`) with their whole chain of
//! causes, never printed.

use std::future::Future;
use std::time::Duration;

/// How long a drop clean-up may take before it is given up (and logged).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the future that `make` returns on a thread named `thread` with its own runtime, waits
/// for it at most [`TIMEOUT`], and returns once it is done. `what` names the work and what it
/// works on in the logs (`remove container 3f2a…`, `abort the multipart upload of s3://…`).
/// `make` runs on that thread, inside its runtime, so it may build the clients the work needs
/// (the caller's may be bound to the dying runtime); the time limit starts after it.
pub fn run_blocking<F, Fut, E>(thread: &str, what: String, make: F)
where
    F: FnOnce() -> Result<Fut, E> + Send + 'static,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error,
{
    let shown = what.clone();
    let worker = std::thread::Builder::new()
        .name(thread.to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return tracing::warn!(error = %e, "cannot start a runtime to {what}"),
            };
            let result = runtime.block_on(async {
                let work = make()?;
                match tokio::time::timeout(TIMEOUT, work).await {
                    Ok(r) => r.map(|()| true),
                    Err(_) => Ok(false),
                }
            });
            match result {
                Ok(true) => tracing::debug!("on drop: {what}: done"),
                Ok(false) => tracing::warn!("on drop: {what}: timed out"),
                Err(e) => tracing::warn!(error = %Chain(&e), "on drop: cannot {what}"),
            }
        });
    match worker {
        Ok(handle) => {
            let _ = handle.join();
        }
        Err(e) => tracing::warn!(error = %e, "cannot spawn the thread to {shown}"),
    }
}

/// An error and its sources, `: `-separated: a log line has no `caused by:` lines.
struct Chain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn the_work_is_done_before_it_returns_even_inside_a_runtime() {
        let done = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let flag = done.clone();
        runtime.block_on(async move {
            run_blocking("test-cleanup", "set a flag".into(), move || {
                Ok::<_, std::io::Error>(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    flag.store(true, Ordering::SeqCst);
                    Ok(())
                })
            });
        });
        assert!(done.load(Ordering::SeqCst));
    }

    #[test]
    fn the_log_shows_every_cause() {
        let e = Wrapped(std::io::Error::other("connection refused"));
        assert_eq!(Chain(&e).to_string(), "cannot remove: connection refused");
    }

    /// An error that says what failed and returns the reason as its source.
    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cannot remove")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
