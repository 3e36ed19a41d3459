//! Downloads into the cache, verified by checksum. The only module that speaks HTTP.
//!
//! For each download: take the entry's lock (so N processes or tasks fetching one file make one
//! download), reuse the entry if it re-hashes right (a corrupted one is evicted), else try in
//! turn `{mirror}/{algo}/{hex}` for every configured mirror, the recipe's URL, then the recipe's
//! mirrors. Each attempt streams into a temp file in the entry's folder while hashing; only a
//! file whose hash matches is fsynced and renamed into place. 404 and other client errors move
//! on to the next URL at once; connection errors, cut bodies, 5xx and 429 are retried with
//! exponential backoff first. Every URL shown is redacted.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;

use crate::cache::{Cache, TMP_PREFIX, safe_file_name};
use crate::checksum::{Algo, Checksum, hash_file};
use crate::recipe::{Recipe, url_file_name};
use crate::redact::redact_url;
use crate::report::Reporter;

/// How hard to try each URL.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per URL for transient failures (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub base_delay: Duration,
    /// Upper bound of one wait.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based) before the next one: `base_delay`,
    /// doubled for each attempt after the first, never more than `max_delay`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        self.base_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }

    /// Whether a transient failure of attempt `attempt` (1-based) is tried again: `attempts`
    /// counts as at least 1.
    fn retries_after(&self, attempt: u32) -> bool {
        attempt < self.attempts.max(1)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

/// One file to download: where from, what it must hash to, and its name in the cache.
#[derive(Debug, Clone)]
pub struct Download {
    /// The recipe's URL first, then its mirrors.
    pub urls: Vec<String>,
    /// A file kept with the recipes (`[[resources]] path`): read instead of `urls`.
    pub local: Option<PathBuf>,
    /// What the file must hash to.
    pub checksum: Checksum,
    /// The name to store it under.
    pub file_name: String,
}

impl Download {
    /// A download of the file at `url` (then `mirrors`) pinned by `checksum`.
    pub fn new(url: &str, mirrors: &[String], checksum: &Checksum) -> Self {
        let mut urls = vec![url.to_string()];
        urls.extend(mirrors.iter().cloned());
        Download {
            urls,
            local: None,
            checksum: checksum.clone(),
            file_name: safe_file_name(url_file_name(url)),
        }
    }

    /// The source and every resource of a recipe.
    pub fn for_recipe(recipe: &Recipe) -> Vec<Download> {
        let mut all = vec![Download::new(
            &recipe.source.url,
            &recipe.source.mirrors,
            &recipe.source.checksum,
        )];
        for r in &recipe.resources {
            let mut d = Download::new(&r.url, &r.mirrors, &r.checksum);
            d.local.clone_from(&r.local);
            all.push(d);
        }
        all
    }
}

/// A file in the cache, verified.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its path in the cache.
    pub path: PathBuf,
    /// The checksum it was verified against.
    pub checksum: Checksum,
    /// Its size in bytes.
    pub size: u64,
    /// The (redacted) URL it was downloaded from, or `None` when the cache already had it.
    pub downloaded_from: Option<String>,
}

/// Why one URL did not give the file.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The URL, redacted.
    pub url: String,
    /// What happened.
    pub reason: String,
}

/// What went wrong fetching.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Every URL failed; nothing was cached.
    #[error(
        "could not download {file_name} ({expected}); nothing was cached{}",
        list(attempts)
    )]
    AllFailed {
        /// The file.
        file_name: String,
        /// Its expected checksum.
        expected: Checksum,
        /// What each URL did.
        attempts: Vec<Attempt>,
    },
    /// The cache could not be read or written.
    #[error("cache error in {}", path.display())]
    Cache {
        /// The folder or file.
        path: PathBuf,
        /// The io error.
        #[source]
        source: std::io::Error,
    },
    /// A download that is not stored (`packager checksum URL`) failed.
    #[error("could not download {url}: {reason}")]
    Url {
        /// The URL, redacted.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
}

fn list(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("\n  {}: {}", a.url, a.reason))
        .collect()
}

impl FetchError {
    /// What the user can do, when there is something.
    pub fn hint(&self) -> Option<String> {
        match self {
            FetchError::AllFailed { attempts, .. } => {
                if attempts
                    .iter()
                    .any(|a| a.reason.starts_with("checksum mismatch"))
                {
                    Some("if upstream re-published the file, check the new checksum against an authoritative source before changing the recipe".into())
                } else {
                    Some("check the URL and your network, or add a mirror with --mirror / PACKAGER_MIRROR".into())
                }
            }
            _ => None,
        }
    }

    /// Whether the user has to fix the command line or a recipe: never. A download that
    /// fails everywhere (even by a checksum mismatch, which may be upstream's doing), a cache
    /// that cannot be written and an HTTP client that cannot be set up are failures of the
    /// network, the host or upstream; so is a URL given to `packager checksum` that does not
    /// download.
    pub fn is_usage(&self) -> bool {
        match self {
            FetchError::AllFailed { .. }
            | FetchError::Cache { .. }
            | FetchError::Url { .. }
            | FetchError::Client(_) => false,
        }
    }
}

/// How one attempt at one URL ended.
enum AttemptOutcome {
    /// The file is complete and matches.
    Done(u64),
    /// Try this URL again after a pause.
    Retry(String),
    /// Move on to the next URL.
    Next(String),
}

/// Downloads into a [`Cache`].
pub struct Fetcher {
    client: reqwest::Client,
    cache: Cache,
    mirrors: Vec<String>,
    retry: RetryPolicy,
    reporter: Arc<dyn Reporter>,
    next_id: AtomicU64,
}

impl Fetcher {
    /// A fetcher over `cache`, trying `mirrors` (content-addressed: `{mirror}/{algo}/{hex}`)
    /// before each recipe's own URLs.
    pub fn new(
        cache: Cache,
        mirrors: Vec<String>,
        retry: RetryPolicy,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("packager/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(FetchError::Client)?;
        Ok(Fetcher {
            client,
            cache,
            mirrors: mirrors
                .into_iter()
                .map(|m| m.trim_end_matches('/').to_string())
                .filter(|m| !m.is_empty())
                .collect(),
            retry,
            reporter,
            next_id: AtomicU64::new(0),
        })
    }

    /// The cache this fetcher fills.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    fn cache_err(path: PathBuf) -> impl FnOnce(std::io::Error) -> FetchError {
        move |source| FetchError::Cache { path, source }
    }

    /// Makes sure the file is in the cache and verified; downloads it if needed.
    pub async fn fetch(&self, d: &Download) -> Result<Fetched, FetchError> {
        let root = self.cache.root().to_path_buf();
        self.cache.init().map_err(Self::cache_err(root.clone()))?;
        let cache = self.cache.clone();
        let sum = d.checksum.clone();
        let lock = tokio::task::spawn_blocking(move || cache.lock_entry(&sum))
            .await
            .expect("lock task does not panic")
            .map_err(Self::cache_err(self.cache.entry_dir(&d.checksum)))?;
        let dir = lock.dir().to_path_buf();

        if let Some(existing) = self
            .cache
            .entry_file(&lock)
            .map_err(Self::cache_err(dir.clone()))?
        {
            let algo = d.checksum.algo();
            let path = existing.clone();
            let (hex, size) = tokio::task::spawn_blocking(move || hash_file(algo, &path))
                .await
                .expect("hash task does not panic")
                .map_err(Self::cache_err(existing.clone()))?;
            if hex == d.checksum.hex() {
                return Ok(Fetched {
                    path: existing,
                    checksum: d.checksum.clone(),
                    size,
                    downloaded_from: None,
                });
            }
            self.reporter.warn(&format!(
                "cache entry {} is corrupted (expected {}, found {}:{hex}); removed, downloading again",
                existing.display(),
                d.checksum,
                algo
            ));
            fs_err::tokio::remove_file(&existing)
                .await
                .map_err(Self::cache_err(existing.clone()))?;
        }
        let stale = self
            .cache
            .remove_stale_temps(&lock)
            .map_err(Self::cache_err(dir.clone()))?;
        if stale > 0 {
            self.reporter.info(&format!(
                "removed {stale} stale temp file(s) of an interrupted download in {}",
                dir.display()
            ));
        }

        let mut urls: Vec<String> = self
            .mirrors
            .iter()
            .map(|m| format!("{m}/{}/{}", d.checksum.algo(), d.checksum.hex()))
            .collect();
        let mirrored = urls.len();
        match &d.local {
            // A file kept with the recipes: its own URL names it, nothing is downloaded.
            Some(_) => urls.extend(d.urls.first().cloned()),
            None => urls.extend(d.urls.iter().cloned()),
        }

        let target = dir.join(&d.file_name);
        let mut attempts = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            let local = d.local.as_deref().filter(|_| i >= mirrored);
            let shown = redact_url(url);
            let mut try_no = 0;
            loop {
                try_no += 1;
                let tmp = dir.join(format!(
                    "{TMP_PREFIX}{}-{}",
                    std::process::id(),
                    self.next_id.fetch_add(1, Ordering::Relaxed)
                ));
                let outcome = self
                    .attempt(url, local, &shown, &tmp, Some(&d.checksum))
                    .await;
                match outcome {
                    Ok(AttemptOutcome::Done(size)) => {
                        fs_err::tokio::rename(&tmp, &target)
                            .await
                            .map_err(Self::cache_err(target.clone()))?;
                        sync_dir(&dir).map_err(Self::cache_err(dir.clone()))?;
                        drop(lock);
                        return Ok(Fetched {
                            path: target,
                            checksum: d.checksum.clone(),
                            size,
                            downloaded_from: Some(shown),
                        });
                    }
                    Ok(AttemptOutcome::Retry(reason)) if self.retry.retries_after(try_no) => {
                        let _ = fs_err::tokio::remove_file(&tmp).await;
                        let delay = self.retry.delay(try_no);
                        self.reporter.warn(&format!(
                            "{shown}: {reason}; retrying in {:.1}s (attempt {}/{})",
                            delay.as_secs_f64(),
                            try_no + 1,
                            self.retry.attempts
                        ));
                        tokio::time::sleep(delay).await;
                    }
                    Ok(AttemptOutcome::Retry(reason)) | Ok(AttemptOutcome::Next(reason)) => {
                        let _ = fs_err::tokio::remove_file(&tmp).await;
                        let reason = if try_no > 1 {
                            format!("{reason} (after {try_no} attempts)")
                        } else {
                            reason
                        };
                        attempts.push(Attempt {
                            url: shown.clone(),
                            reason,
                        });
                        break;
                    }
                    Err(e) => {
                        let _ = fs_err::tokio::remove_file(&tmp).await;
                        return Err(e);
                    }
                }
            }
        }
        Err(FetchError::AllFailed {
            file_name: d.file_name.clone(),
            expected: d.checksum.clone(),
            attempts,
        })
    }

    /// One GET of `url` (or a copy of `local`, a file kept with the recipes) into `tmp`,
    /// hashing as it streams. With `expected`, the hash is checked and the file fsynced.
    async fn attempt(
        &self,
        url: &str,
        local: Option<&std::path::Path>,
        shown: &str,
        tmp: &std::path::Path,
        expected: Option<&Checksum>,
    ) -> Result<AttemptOutcome, FetchError> {
        let algo = expected.map_or(Algo::Sha256, Checksum::algo);
        let mut sink = HashSink::new(algo, Some(tmp))?;
        let read = match local {
            Some(path) => copy_local(path, &mut sink).await,
            None => self.stream(url, shown, &mut sink).await,
        };
        if let Err(o) = read {
            return Ok(o);
        }
        let (hex, size) = sink.finish()?;
        match expected {
            Some(want) if want.hex() != hex => Ok(AttemptOutcome::Next(format!(
                "checksum mismatch: expected {want}, got {algo}:{hex} ({size} bytes)"
            ))),
            _ => Ok(AttemptOutcome::Done(size)),
        }
    }

    /// Streams the body of `url` into `sink`; the error is how the attempt ended.
    async fn stream(
        &self,
        url: &str,
        shown: &str,
        sink: &mut HashSink,
    ) -> Result<(), AttemptOutcome> {
        let response = match self.client.get(url).send().await {
            Ok(r) => r,
            Err(e) if e.is_builder() => {
                return Err(AttemptOutcome::Next(format!(
                    "unusable URL: {}",
                    describe(&e)
                )));
            }
            Err(e) => return Err(AttemptOutcome::Retry(describe(&e))),
        };
        let status = response.status();
        if !status.is_success() {
            let reason = format!("HTTP {status}");
            return Err(
                if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    AttemptOutcome::Retry(reason)
                } else {
                    AttemptOutcome::Next(reason)
                },
            );
        }
        let total = response.content_length();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.reporter.download_started(id, shown, total);
        let mut body = response.bytes_stream();
        let mut got = 0u64;
        let result = loop {
            match body.next().await {
                None => break Ok(()),
                Some(Ok(chunk)) => {
                    got += chunk.len() as u64;
                    if let Err(e) = sink.write(&chunk) {
                        break Err(AttemptOutcome::Next(format!("writing the download: {e}")));
                    }
                    self.reporter.download_progress(id, chunk.len() as u64);
                }
                Some(Err(e)) => {
                    break Err(AttemptOutcome::Retry(format!(
                        "connection failed after {got} bytes: {}",
                        describe(&e)
                    )));
                }
            }
        };
        self.reporter.download_finished(id);
        if result.is_ok()
            && let Some(total) = total
            && got != total
        {
            return Err(AttemptOutcome::Retry(format!(
                "body ended after {got} of {total} bytes"
            )));
        }
        result
    }

    /// Downloads `url` without storing it and returns its sha256 and size (for recipe
    /// authors: `packager checksum URL`).
    pub async fn checksum_url(&self, url: &str) -> Result<(String, u64), FetchError> {
        let shown = redact_url(url);
        let mut try_no = 0;
        loop {
            try_no += 1;
            let mut sink = HashSink::new(Algo::Sha256, None)?;
            match self.stream(url, &shown, &mut sink).await {
                Ok(()) => return sink.finish(),
                Err(AttemptOutcome::Retry(reason)) if self.retry.retries_after(try_no) => {
                    self.reporter.warn(&format!("{shown}: {reason}; retrying"));
                    tokio::time::sleep(self.retry.delay(try_no)).await;
                }
                Err(AttemptOutcome::Retry(reason)) | Err(AttemptOutcome::Next(reason)) => {
                    return Err(FetchError::Url { url: shown, reason });
                }
                Err(AttemptOutcome::Done(_)) => unreachable!("stream never reports Done"),
            }
        }
    }

    /// Fetches several downloads, at most `parallel` at once, in order of the input.
    pub async fn fetch_all(
        &self,
        downloads: &[Download],
        parallel: usize,
    ) -> Vec<Result<Fetched, FetchError>> {
        // A semaphore and join_all (rather than a buffered stream of closures) keeps this
        // future `Send` for callers that spawn it.
        let permits = tokio::sync::Semaphore::new(parallel.max(1));
        let all = downloads.iter().map(|d| {
            let permits = &permits;
            async move {
                let _permit = permits
                    .acquire()
                    .await
                    .expect("the semaphore is never closed");
                self.fetch(d).await
            }
        });
        futures_util::future::join_all(all).await
    }
}

/// A `file://` resource (a file kept with the recipes) read into `sink`: hashed and stored as
/// a download is, so the build sees only what the checksum pins.
async fn copy_local(path: &std::path::Path, sink: &mut HashSink) -> Result<(), AttemptOutcome> {
    use tokio::io::AsyncReadExt;
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => return Err(AttemptOutcome::Next(format!("{}: {e}", path.display()))),
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if let Err(e) = sink.write(&buf[..n]) {
                    return Err(AttemptOutcome::Next(format!("writing the copy: {e}")));
                }
            }
            Err(e) => {
                return Err(AttemptOutcome::Next(format!(
                    "reading {}: {e}",
                    path.display()
                )));
            }
        }
    }
}

/// reqwest's error with its causes, which is where the useful part is.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_body() || e.is_decode() {
        "reading the body failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&redact_url(&s.to_string()));
        source = s.source();
    }
    text
}

/// Hashes what is written, and writes it to a file when there is one.
struct HashSink {
    hasher: crate::checksum::Hasher,
    file: Option<(std::io::BufWriter<fs_err::File>, PathBuf)>,
    size: u64,
}

impl HashSink {
    fn new(algo: Algo, path: Option<&std::path::Path>) -> Result<Self, FetchError> {
        let file = match path {
            Some(p) => {
                let f = fs_err::File::create(p).map_err(Fetcher::cache_err(p.to_path_buf()))?;
                Some((
                    std::io::BufWriter::with_capacity(256 * 1024, f),
                    p.to_path_buf(),
                ))
            }
            None => None,
        };
        Ok(HashSink {
            hasher: algo.hasher(),
            file,
            size: 0,
        })
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        if let Some((f, _)) = &mut self.file {
            f.write_all(data)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<(String, u64), FetchError> {
        if let Some((f, path)) = self.file {
            let f = f.into_inner().map_err(|e| FetchError::Cache {
                path: path.clone(),
                source: e.into_error(),
            })?;
            f.sync_all().map_err(Fetcher::cache_err(path))?;
        }
        Ok((self.hasher.finish_hex(), self.size))
    }
}

fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    fs_err::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            attempts: 40,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(3),
        };
        let secs: Vec<f64> = (1..=5).map(|a| policy.delay(a).as_secs_f64()).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 3.0, 3.0]);
        // Far beyond the cap nothing overflows.
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(3));
        assert_eq!(policy.delay(0), Duration::from_millis(500));
    }

    #[test]
    fn at_least_one_attempt() {
        let none = RetryPolicy {
            attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(!none.retries_after(1));
        let two = RetryPolicy {
            attempts: 2,
            ..RetryPolicy::default()
        };
        assert!(two.retries_after(1));
        assert!(!two.retries_after(2));
    }
}
