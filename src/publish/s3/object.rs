//! Single objects: HEADs (with the sha256 an object claims), downloads to hash an object put
//! there by hand, the conditional writes that make an object visible (PutObject, or the
//! completion of a multipart upload), and the check after an upload.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart, ObjectCannedAcl,
};
use base64::Engine as _;
use sha2::Digest;

use super::failure::{CallFailure, CallFailureKind, remote, scrub};
use super::{CONFLICT_ATTEMPTS, S3Store, SHA256_KEY};
use crate::publish::{PublishError, PublishOutcome, Stored, Upload};

/// What a HEAD of an object says: enough to tell whether it has our bytes.
#[derive(Debug, Clone)]
pub(super) struct Head {
    /// `Content-Length`.
    size: u64,
    /// `x-amz-meta-*`, ours ([`SHA256_KEY`]) and the artifact's.
    metadata: BTreeMap<String, String>,
    /// `x-amz-checksum-sha256` as returned (`<b64>` or `<b64>-<parts>`).
    checksum: Option<String>,
    /// Whether the store says that checksum is a composite (of the parts' checksums).
    composite: bool,
}

impl Head {
    /// The sha256 the object claims: our metadata, else a full-object checksum.
    fn sha256(&self) -> Option<String> {
        if let Some(s) = self.metadata.get(SHA256_KEY)
            && s.len() == 64
            && s.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Some(s.to_ascii_lowercase());
        }
        let c = self.checksum.as_deref()?;
        if self.composite || c.contains('-') {
            return None; // a composite: a hash of the parts' hashes
        }
        let raw = base64::engine::general_purpose::STANDARD.decode(c).ok()?;
        (raw.len() == 32).then(|| hex::encode(raw))
    }
}

/// Standard base64, as S3 writes checksums.
pub(super) fn b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The base64 S3 checksum of a lowercase hex sha256.
pub(super) fn b64_of_hex(hex_digest: &str) -> Result<String, PublishError> {
    let raw = hex::decode(hex_digest).map_err(|_| PublishError::BadDocument {
        location: hex_digest.to_string(),
        what: "sha256",
        message: "not hexadecimal".into(),
    })?;
    Ok(b64(&raw))
}

/// What a commit (the write that makes the object visible) did.
pub(super) enum Commit {
    /// The object is written.
    Written,
    /// `If-None-Match: *` failed: the object exists.
    Exists,
    /// 409 on CompleteMultipartUpload: a concurrent conditional write; the upload must start
    /// again from CreateMultipartUpload (the store may have dropped this one).
    Restart,
}

/// What [`S3Store::commit`] writes.
pub(super) enum Body<'a> {
    /// One PutObject of the whole file.
    Single(&'a Upload),
    /// CompleteMultipartUpload of uploaded parts.
    Multipart {
        /// The upload's id, from CreateMultipartUpload.
        upload_id: &'a str,
        /// The parts, in order, with their ETags and checksums.
        parts: &'a [CompletedPart],
    },
}

/// A time limit for one attempt of sending `len` bytes: generous (2 minutes plus 64 KiB/s).
pub(super) fn upload_timeout(len: u64) -> Duration {
    Duration::from_secs(120 + len / (64 * 1024))
}

impl S3Store {
    /// HEADs `key`: `None` when there is no such object.
    pub(super) async fn head(&self, key: &str) -> Result<Option<Head>, PublishError> {
        let mut req = self.client.head_object().bucket(&self.bucket).key(key);
        if self.checksums() {
            req = req.checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled);
        }
        match req.send().await {
            Ok(h) => Ok(Some(Head {
                size: h.content_length().unwrap_or(0).max(0) as u64,
                metadata: h
                    .metadata()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
                checksum: h.checksum_sha256().map(str::to_string),
                composite: h.checksum_type() == Some(&ChecksumType::Composite),
            })),
            Err(e) => {
                let f = CallFailure::of(&e);
                if f.not_found() {
                    return Ok(None);
                }
                // A HEAD error has no body, so no code (a bare 403 is bad credentials or
                // missing permission): ask again with a GET of one byte, which says which.
                let f = if f.kind == CallFailureKind::Service && f.code.is_none() {
                    match self
                        .client
                        .get_object()
                        .bucket(&self.bucket)
                        .key(key)
                        .range("bytes=0-0")
                        .send()
                        .await
                    {
                        Err(e) if CallFailure::of(&e).code.is_some() => CallFailure::of(&e),
                        _ => f,
                    }
                } else {
                    f
                };
                Err(remote("HEAD", &self.location(key), &f, &self.options))
            }
        }
    }

    /// The sha256 of a stored object: from its metadata or checksum, else by downloading it
    /// (an object put there by hand).
    pub(super) async fn sha256_of(&self, key: &str, head: &Head) -> Result<String, PublishError> {
        if let Some(s) = head.sha256() {
            return Ok(s);
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.fail("download", key, &e))?;
        let mut body = out.body;
        let mut hasher = sha2::Sha256::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| PublishError::Remote {
                action: "download".into(),
                location: self.location(key),
                message: scrub(&DisplayErrorContext(&e).to_string()),
                hint: None,
            })?;
            hasher.update(&chunk);
        }
        Ok(hex::encode(hasher.finalize()))
    }

    /// What the store says of an artifact, our own sha256 metadata left out.
    pub(super) fn stored(head: Head, sha256: String) -> Stored {
        let mut metadata = head.metadata;
        metadata.remove(SHA256_KEY);
        Stored {
            sha256,
            size: head.size,
            metadata,
        }
    }

    /// The object's `x-amz-meta-*`: the artifact's metadata (lowercase keys, as S3 keeps
    /// them) and its sha256.
    pub(super) fn object_metadata(a: &Upload) -> std::collections::HashMap<String, String> {
        let mut m: std::collections::HashMap<String, String> = a
            .metadata
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        m.insert(SHA256_KEY.into(), a.sha256.clone());
        m
    }

    /// Writes the object (PutObject, or CompleteMultipartUpload), with `If-None-Match: *`
    /// when `exclusive`; retries a 409 (a concurrent conditional write) a few times.
    pub(super) async fn commit(
        &self,
        key: &str,
        body: &Body<'_>,
        exclusive: bool,
    ) -> Result<Commit, PublishError> {
        // Without the sha256 headers, the body still carries a checksum the store verifies.
        let md5 = match body {
            Body::Single(a) if !self.checksums() => Some(super::file_md5(&a.path).await?),
            _ => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match body {
                Body::Single(a) => {
                    let stream = super::file_body(&a.path, None).await?;
                    let mut req = self
                        .client
                        .put_object()
                        .bucket(&self.bucket)
                        .key(key)
                        .body(stream)
                        .content_length(a.size as i64)
                        .content_type(super::content_type(&a.path, &a.name).await)
                        .set_metadata(Some(Self::object_metadata(a)));
                    if self.checksums() {
                        req = req
                            .checksum_algorithm(ChecksumAlgorithm::Sha256)
                            .checksum_sha256(b64_of_hex(&a.sha256)?);
                    }
                    if let Some(md5) = &md5 {
                        req = req.content_md5(md5);
                    }
                    if let Some(acl) = &self.options.acl {
                        req = req.acl(ObjectCannedAcl::from(acl.as_str()));
                    }
                    if exclusive {
                        req = req.if_none_match("*");
                    }
                    let timeout = TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(10))
                        .operation_attempt_timeout(upload_timeout(a.size))
                        .build();
                    match req
                        .customize()
                        .config_override(
                            aws_sdk_s3::config::Builder::default().timeout_config(timeout),
                        )
                        .send()
                        .await
                    {
                        Ok(_) => return Ok(Commit::Written),
                        Err(e) => CallFailure::of(&e),
                    }
                }
                Body::Multipart { upload_id, parts } => {
                    let mut req = self
                        .client
                        .complete_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(*upload_id)
                        .multipart_upload(
                            CompletedMultipartUpload::builder()
                                .set_parts(Some(parts.to_vec()))
                                .build(),
                        );
                    // No whole-object `x-amz-checksum-sha256`: the parts list carries every
                    // part's checksum, so the store verifies every byte, and stores that are
                    // not AWS refuse the composite (`<b64>-<parts>`) in that header (400
                    // InvalidRequest). The composite is compared with the store's after.
                    if exclusive {
                        req = req.if_none_match("*");
                    }
                    match req.send().await {
                        Ok(_) => return Ok(Commit::Written),
                        Err(e) => {
                            let f = CallFailure::of(&e);
                            // The server said 2xx but its body does not parse (moto 5.x names
                            // the root element CompleteMultipartUploadResponse): it completed;
                            // the HEAD that follows checks the object.
                            if f.kind == CallFailureKind::Service
                                && f.code.is_none()
                                && f.status.is_some_and(|s| (200..300).contains(&s))
                            {
                                tracing::debug!(%key, "unparsable 2xx completion, verifying with HEAD");
                                return Ok(Commit::Written);
                            }
                            f
                        }
                    }
                }
            };
            if exclusive && failure.precondition_failed() {
                return Ok(Commit::Exists);
            }
            if failure.conditional_conflict() && matches!(body, Body::Multipart { .. }) {
                return Ok(Commit::Restart);
            }
            if failure.conditional_conflict() && attempt < CONFLICT_ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                continue;
            }
            let action = match body {
                Body::Single(_) => "upload",
                Body::Multipart { .. } => "complete the multipart upload of",
            };
            return Err(remote(action, &self.location(key), &failure, &self.options));
        }
    }

    /// The object exists: `Some(AlreadyPublished)` when it has our bytes, a `Conflict` error
    /// when not (unless `force`: then `None`, replace it).
    pub(super) async fn resolve_existing(
        &self,
        a: &Upload,
        key: &str,
        force: bool,
    ) -> Result<Option<PublishOutcome>, PublishError> {
        let Some(head) = self.head(key).await? else {
            // Deleted meanwhile: write it unconditionally would race; ask to retry.
            return Err(PublishError::Contended {
                location: self.location(key),
                attempts: 1,
            });
        };
        let existing = self.sha256_of(key, &head).await?;
        crate::publish::decide_existing(existing, a, force, || self.location(key))
    }

    /// Checks with a HEAD that the object has the artifact's size and sha256 (and, when the
    /// store returns one, the checksum we sent).
    pub(super) async fn confirm_stored(
        &self,
        a: &Upload,
        key: &str,
        expected_checksum: Option<&str>,
    ) -> Result<(), PublishError> {
        let location = self.location(key);
        let mismatch = |message: String| {
            PublishError::Remote {
            action: "verify".into(),
            location: location.clone(),
            message,
            hint: Some(
                "another publisher may have replaced it with --force at the same time; publish again to check".into(),
            ),
        }
        };
        let Some(head) = self.head(key).await? else {
            return Err(mismatch(
                "the object is missing right after the upload".into(),
            ));
        };
        if head.size != a.size {
            return Err(mismatch(format!(
                "the store has {} bytes, the artifact has {}",
                head.size, a.size
            )));
        }
        match head.sha256() {
            Some(s) if s == a.sha256 => {}
            Some(s) => {
                return Err(mismatch(format!(
                    "the store has sha256:{s}, the artifact has sha256:{}",
                    a.sha256
                )));
            }
            None => return Err(mismatch("the object has no sha256 metadata".into())),
        }
        // Stores may return a composite without its `-<parts>` suffix (moto's HEAD does).
        if let (Some(want), Some(got)) = (expected_checksum, head.checksum.as_deref())
            && want != got
            && want.split_once('-').map(|(w, _)| w) != Some(got)
        {
            return Err(mismatch(format!(
                "the store's x-amz-checksum-sha256 is {got}, expected {want}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_from_metadata_or_full_object_checksum() {
        let hex_digest = hex::encode(sha2::Sha256::digest(b"x"));
        let mut head = Head {
            size: 1,
            metadata: BTreeMap::new(),
            checksum: Some(b64_of_hex(&hex_digest).unwrap()),
            composite: false,
        };
        assert_eq!(head.sha256().as_deref(), Some(hex_digest.as_str()));
        head.checksum = Some(format!("{}-2", b64_of_hex(&hex_digest).unwrap()));
        assert_eq!(head.sha256(), None, "a composite is not the file's sha256");
        head.metadata.insert(SHA256_KEY.into(), hex_digest.clone());
        assert_eq!(head.sha256().as_deref(), Some(hex_digest.as_str()));
    }
}
