//! Clean-up that must finish when a guard is dropped (a container to remove, a multipart upload
//! to abort), even while the async runtime that owned the guard is shutting down after Ctrl-C.
//!
//! A `Drop` cannot await, and the dropping runtime may not poll anything any more, so the work
//! runs to completion on a thread of its own with a current-thread runtime, within a time
//! limit; `drop` waits for it. Failures are logged (`tracing`), never printed.

use std::future::Future;
use std::time::Duration;

/// How long a drop clean-up may take before it is given up (and logged).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the future that `make` returns on a thread named `thread` with its own runtime, waits
/// for it at most [`TIMEOUT`], and returns once it is done. `what` names the work in the logs
/// (`remove container 3f2a…`). `make` runs on that thread, so it may build clients that need
/// a runtime.
pub fn run_blocking<F, Fut, E>(thread: &str, what: String, make: F)
where
    F: FnOnce() -> Result<Fut, E> + Send + 'static,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
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
                Err(e) => tracing::warn!(error = %e, "on drop: cannot {what}"),
            }
        });
    match worker {
        Ok(handle) => {
            let _ = handle.join();
        }
        Err(e) => tracing::warn!(error = %e, "cannot spawn the thread to {shown}"),
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
}
