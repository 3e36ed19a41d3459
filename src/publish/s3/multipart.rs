//! Large artifacts go up in parts: the file is read once, in order, on a blocking thread that
//! hashes each part (and the whole) and hands it to the uploads as soon as its hash is known;
//! the parts go `concurrency` at a time, each streamed from the file. The upload is a
//! [`PendingUpload`] until it completes: aborted on errors, and from `Drop` when the future is
//! dropped.

use std::path::Path;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType, CompletedPart, ObjectCannedAcl};
use futures_util::{StreamExt, TryStreamExt};
use sha2::Digest;

use super::config::{MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE};
use super::failure::{CallFailure, remote};
use super::object::{Body, Commit, b64, upload_timeout};
use super::{CONFLICT_ATTEMPTS, S3Options, S3Store};
use crate::publish::{PublishError, PublishOutcome, Upload};

/// A fresh HTTP client (its own connection pool), for work on another runtime.
fn fresh_http_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https()
}

/// A multipart upload that is aborted unless completed: explicitly on errors, and from `Drop`
/// when the future is dropped (Ctrl-C, a timeout) — through [`crate::drop_cleanup::run_blocking`],
/// on its own thread and runtime, with its own connections, so it works whatever state the
/// caller's runtime is in.
struct PendingUpload {
    /// The store client's configuration, to make a client on the abort thread.
    config: aws_sdk_s3::Config,
    /// Where the upload goes.
    bucket: String,
    /// The object key.
    key: String,
    /// The id CreateMultipartUpload gave.
    upload_id: String,
    /// Whether `Drop` aborts: cleared once completed or aborted explicitly.
    armed: bool,
}

impl PendingUpload {
    /// Aborts the upload now, on the caller's client, reporting errors (disarmed either way).
    async fn abort(mut self, client: &Client) -> Result<(), PublishError> {
        self.armed = false;
        abort_upload(client, &self.bucket, &self.key, &self.upload_id).await
    }

    /// The upload completed: nothing to abort.
    fn disarm(mut self) {
        self.armed = false;
    }
}

/// AbortMultipartUpload; an upload already gone (aborted, or completed by a retry) is not
/// an error.
async fn abort_upload(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), PublishError> {
    match client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let f = CallFailure::of(&e);
            // Already gone: aborted or completed by a retry.
            if f.status == Some(404) || f.code_is(&["NoSuchUpload"]) {
                return Ok(());
            }
            Err(remote(
                "abort the multipart upload of",
                &format!("s3://{bucket}/{key}"),
                &f,
                &S3Options::default(),
            ))
        }
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let config = self.config.clone();
        let (bucket, key, upload_id) = (
            std::mem::take(&mut self.bucket),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.upload_id),
        );
        crate::drop_cleanup::run_blocking(
            "packager-s3-abort",
            format!("abort the multipart upload of s3://{bucket}/{key}"),
            move || {
                // The caller's client may be bound to the runtime being shut down.
                let client =
                    Client::from_conf(config.to_builder().http_client(fresh_http_client()).build());
                Ok::<_, PublishError>(async move {
                    abort_upload(&client, &bucket, &key, &upload_id).await
                })
            },
        );
    }
}

/// One part of a multipart upload, as the hasher found it.
#[derive(Debug, Clone)]
struct PartPlan {
    /// S3's part number, from 1.
    number: i32,
    /// Where the part starts in the file.
    offset: u64,
    /// Its length (the part size, but for the last part).
    len: u64,
    /// Its sha256, sent as the part's checksum and hashed into the composite.
    sha256: [u8; 32],
    /// Its MD5, sent as `Content-MD5` with `--s3-checksums when-required`.
    md5: Option<[u8; 16]>,
}

impl S3Store {
    /// The part size for a file of `size` bytes: the configured one, raised so that the
    /// file fits in 10,000 parts, within S3's limits.
    pub(super) fn part_size(&self, size: u64) -> u64 {
        let min_for_count = size.div_ceil(MAX_PARTS);
        self.options
            .part_size
            .max(min_for_count)
            .clamp(MIN_PART_SIZE, MAX_PART_SIZE)
    }

    /// Uploads the parts of a multipart upload: a thread reads the file once in order, hashing
    /// each part and the whole, and each part is sent (streamed from the file) as soon as its
    /// hash is known, `concurrency` at a time. Returns the completed parts in order and the
    /// composite checksum.
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        a: &Upload,
        part_size: u64,
    ) -> Result<(Vec<CompletedPart>, String), PublishError> {
        let concurrency = self.options.concurrency.max(1);
        let (tx, rx) = tokio::sync::mpsc::channel::<PartPlan>(concurrency * 2);
        let (path, size, md5) = (a.path.clone(), a.size, !self.checksums());
        let hasher =
            tokio::task::spawn_blocking(move || hash_parts(&path, size, part_size, md5, &tx));
        let plans =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|p| (p, rx)) },
            );
        let uploads = plans
            .map(|p| self.upload_part(key, upload_id, a, p))
            .buffer_unordered(concurrency)
            .try_collect::<Vec<_>>();
        let uploaded = uploads.await;
        let uploaded_parts;
        // The hasher ends when the receiver is gone or the file is read.
        let whole = hasher.await.expect("hasher does not panic");
        let (whole, digests) = match (uploaded, whole) {
            (Err(e), _) => return Err(e),
            (Ok(_), Err(e)) => {
                return Err(PublishError::Artifact {
                    path: a.path.clone(),
                    message: e.to_string(),
                });
            }
            (Ok(done), Ok((whole, digests))) => {
                uploaded_parts = done;
                (whole, digests)
            }
        };
        let mut done = uploaded_parts;
        if whole != a.sha256 {
            return Err(PublishError::Artifact {
                path: a.path.clone(),
                message: format!(
                    "the file changed since it was built: its sha256 is {whole}, the build made {}",
                    a.sha256
                ),
            });
        }
        done.sort_by_key(|p| p.part_number());
        let mut all = sha2::Sha256::new();
        for d in &digests {
            all.update(d);
        }
        let composite = format!("{}-{}", b64(&all.finalize()), digests.len());
        Ok((done, composite))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        a: &Upload,
        p: PartPlan,
    ) -> Result<CompletedPart, PublishError> {
        let stream = super::file_body(&a.path, Some((p.offset, p.len))).await?;
        let checksum = b64(&p.sha256);
        let mut req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(p.number)
            .content_length(p.len as i64)
            .body(stream);
        if self.checksums() {
            req = req
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .checksum_sha256(&checksum);
        }
        if let Some(md5) = &p.md5 {
            req = req.content_md5(b64(md5));
        }
        let timeout = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_attempt_timeout(upload_timeout(p.len))
            .build();
        let out = req
            .customize()
            .config_override(aws_sdk_s3::config::Builder::default().timeout_config(timeout))
            .send()
            .await
            .map_err(|e| self.fail(&format!("upload part {} of", p.number), key, &e))?;
        let mut part = CompletedPart::builder()
            .part_number(p.number)
            .set_e_tag(out.e_tag().map(str::to_string));
        if self.checksums() {
            part = part.checksum_sha256(checksum);
        }
        Ok(part.build())
    }

    /// Uploads in parts and commits. The upload is aborted on every path but success — and on
    /// drop. A 409 on the completion (a concurrent conditional write) starts a new upload, a
    /// few times.
    pub(super) async fn publish_multipart(
        &self,
        a: &Upload,
        key: &str,
        force: bool,
        mut exclusive: bool,
    ) -> Result<(PublishOutcome, Option<String>), PublishError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.multipart_once(a, key, force, &mut exclusive).await? {
                Some(done) => return Ok(done),
                None if attempt < CONFLICT_ATTEMPTS => {
                    tracing::debug!(%key, attempt, "409 on completion: starting the upload again");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
                None => {
                    return Err(PublishError::Contended {
                        location: self.location(key),
                        attempts: attempt,
                    });
                }
            }
        }
    }

    /// One multipart upload from CreateMultipartUpload to its completion; `None` when the
    /// completion answered 409 (the upload is aborted, start again).
    async fn multipart_once(
        &self,
        a: &Upload,
        key: &str,
        force: bool,
        exclusive: &mut bool,
    ) -> Result<Option<(PublishOutcome, Option<String>)>, PublishError> {
        let part_size = self.part_size(a.size);
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(super::content_type(&a.path, &a.name).await)
            .set_metadata(Some(Self::object_metadata(a)));
        if self.checksums() {
            create = create
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .checksum_type(ChecksumType::Composite);
        }
        if let Some(acl) = &self.options.acl {
            create = create.acl(ObjectCannedAcl::from(acl.as_str()));
        }
        let created = create
            .send()
            .await
            .map_err(|e| self.fail("start the multipart upload of", key, &e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let pending = PendingUpload {
            config: self.client.config().clone(),
            bucket: self.bucket.clone(),
            key: key.to_string(),
            upload_id: upload_id.clone(),
            armed: true,
        };
        let result = async {
            let (parts, composite) = self.upload_parts(key, &upload_id, a, part_size).await?;
            let composite = self.checksums().then_some(composite);
            let body = Body::Multipart {
                upload_id: &upload_id,
                parts: &parts,
            };
            let mut outcome = if *exclusive {
                PublishOutcome::Published
            } else {
                PublishOutcome::Replaced
            };
            loop {
                match self.commit(key, &body, *exclusive).await? {
                    Commit::Written => return Ok(Some((outcome, composite))),
                    Commit::Restart => return Ok(None),
                    Commit::Exists => match self.resolve_existing(a, key, force).await? {
                        Some(o) => return Ok(Some((o, None))),
                        None => {
                            *exclusive = false;
                            outcome = PublishOutcome::Replaced;
                        }
                    },
                }
            }
        }
        .await;
        match &result {
            Ok(Some((PublishOutcome::Published | PublishOutcome::Replaced, _))) => pending.disarm(),
            // AlreadyPublished, a restart and errors: the parts are not needed.
            _ => {
                if let Err(e) = pending.abort(&self.client).await {
                    tracing::warn!(error = %e, "cannot abort the multipart upload");
                }
            }
        }
        result
    }
}

/// Reads `path` once in order: sends each part's sha256 (and its MD5 when `md5`) as soon as it
/// is known; returns the whole file's sha256 (hex) and the parts' digests.
fn hash_parts(
    path: &Path,
    size: u64,
    part_size: u64,
    md5: bool,
    tx: &tokio::sync::mpsc::Sender<PartPlan>,
) -> std::io::Result<(String, Vec<[u8; 32]>)> {
    use std::io::Read;
    let mut file = fs_err::File::open(path)?;
    let mut whole = sha2::Sha256::new();
    let mut digests = Vec::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut offset = 0u64;
    let mut number = 0;
    while offset < size {
        number += 1;
        let len = part_size.min(size - offset);
        let mut part = sha2::Sha256::new();
        let mut part_md5 = md5.then(md5::Md5::new);
        let mut left = len;
        while left > 0 {
            let want = (buf.len() as u64).min(left) as usize;
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} ends at byte {}, the artifact should have {size} bytes",
                        path.display(),
                        offset + (len - left)
                    ),
                ));
            }
            part.update(&buf[..n]);
            if let Some(m) = &mut part_md5 {
                md5::Digest::update(m, &buf[..n]);
            }
            whole.update(&buf[..n]);
            left -= n as u64;
        }
        let digest: [u8; 32] = part.finalize().into();
        digests.push(digest);
        let plan = PartPlan {
            number,
            offset,
            len,
            sha256: digest,
            md5: part_md5.map(|m| md5::Digest::finalize(m).into()),
        };
        if tx.blocking_send(plan).is_err() {
            // The uploads stopped (an error or cancellation): nothing more to do.
            return Err(std::io::Error::other("the upload stopped"));
        }
        offset += len;
    }
    Ok((hex::encode(whole.finalize()), digests))
}
