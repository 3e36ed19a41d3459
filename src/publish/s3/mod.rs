//! The S3 store (`s3://BUCKET[/PREFIX]`), on AWS or any S3-compatible server. This is the only
//! module that talks to aws-sdk-s3 / aws-config; the rest of the code sees [`Store`].
//!
//! Guarantees and what they rely on:
//! - never overwrite: writes carry `If-None-Match: *` (PutObject, CompleteMultipartUpload); a
//!   HEAD before uploading also refuses a known conflict without sending the bytes;
//! - integrity: the sha256 goes as `x-amz-checksum-sha256` (per part for multipart uploads) so
//!   the server checks the bytes; after the upload a HEAD must show it. With
//!   `--s3-checksums when-required` every body (object, part, document) carries `Content-MD5`
//!   instead, which S3 and the S3-compatible stores check;
//! - documents (inventories) are written with `If-Match: <ETag>` / `If-None-Match: *`;
//! - an interrupted multipart upload is aborted, on errors and when the future is dropped.
//!
//! What lives where (the files are not public; what callers use is re-exported here):
//! - `config`: [`S3Options`], [`parse_url`] and [`S3Store::open`] (the AWS configuration);
//! - `failure`: how a failed SDK call is classified and turned into a [`PublishError`] with a
//!   hint, with secrets scrubbed from the store's messages;
//! - `object`: HEADs, the sha256 of stored objects, the conditional writes that make an object
//!   visible, and the check after an upload;
//! - `multipart`: uploading a large artifact in parts, and aborting the upload unless it
//!   completes;
//! - `store`: the [`Store`] implementation that puts these together.
//!
//! [`Store`]: super::Store
//! [`PublishError`]: super::PublishError

mod config;
mod failure;
mod multipart;
mod object;
mod store;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

pub use config::{ChecksumMode, MAX_PART_SIZE, MIN_PART_SIZE, S3Options, parse_url};

use super::PublishError;
use failure::{CallFailure, remote};

/// The metadata key of the artifact's sha256 (`x-amz-meta-sha256`).
const SHA256_KEY: &str = "sha256";
/// How often a conditional write is retried on 409 ConditionalRequestConflict.
const CONFLICT_ATTEMPTS: u32 = 5;
/// Read buffer of file bodies: large, as uploads stream from disk.
const READ_BUFFER: usize = 256 * 1024;

/// The content type of an artifact (`application/gzip`, `application/zstd`), so browsers and
/// CDNs do not guess: by the first bytes of the file at `path`, else by the extension of
/// `name`, else `application/octet-stream` (a file that cannot be read: the upload says why).
async fn content_type(path: &std::path::Path, name: &str) -> &'static str {
    use crate::package::ArtifactFormat;
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 4];
    let mut n = 0;
    if let Ok(mut file) = tokio::fs::File::open(path).await {
        while n < head.len() {
            match file.read(&mut head[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
    }
    ArtifactFormat::detect(&head[..n])
        .or_else(|| ArtifactFormat::from_name(name))
        .map_or("application/octet-stream", ArtifactFormat::content_type)
}

/// The request body of an upload: the artifact file, or `(offset, len)` of it for one part,
/// streamed from disk. A file that cannot be opened is an error naming it.
async fn file_body(
    path: &std::path::Path,
    range: Option<(u64, u64)>,
) -> Result<aws_sdk_s3::primitives::ByteStream, PublishError> {
    let mut body = aws_sdk_s3::primitives::ByteStream::read_from()
        .path(path)
        .buffer_size(READ_BUFFER);
    if let Some((offset, len)) = range {
        body = body
            .offset(offset)
            .length(aws_sdk_s3::primitives::Length::Exact(len));
    }
    body.build().await.map_err(|e| PublishError::Artifact {
        path: path.to_path_buf(),
        message: aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
    })
}

/// The `Content-MD5` of the file at `path` (base64 of its MD5), read on a blocking thread: the
/// checksum every S3-compatible store verifies, sent with `--s3-checksums when-required`.
async fn file_md5(path: &std::path::Path) -> Result<String, PublishError> {
    let owned = path.to_path_buf();
    let digest = tokio::task::spawn_blocking(move || {
        use md5::Digest;
        use std::io::Read;
        let mut file = fs_err::File::open(&owned)?;
        let mut md5 = md5::Md5::new();
        let mut buf = vec![0u8; READ_BUFFER];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok::<_, std::io::Error>(md5.finalize());
            }
            md5.update(&buf[..n]);
        }
    })
    .await
    .expect("the md5 task does not panic")
    .map_err(|e| PublishError::Artifact {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(object::b64(&digest))
}

/// A store in an S3 bucket, under an optional prefix.
#[derive(Debug, Clone)]
pub struct S3Store {
    /// The SDK client, configured once by [`S3Store::open`].
    client: Client,
    /// The store's URL as given, without a trailing `/` (what [`Store::describe`] says).
    ///
    /// [`Store::describe`]: super::Store::describe
    url: String,
    /// The bucket name.
    bucket: String,
    /// The key prefix, without leading or trailing `/` (empty at the bucket's root).
    prefix: String,
    /// How to upload: part size, concurrency, checksums, ACL, public URL.
    options: S3Options,
    /// The custom endpoint, if any (explicit or from the environment).
    endpoint: Option<String>,
    /// Whether requests address the bucket in the path (`ENDPOINT/BUCKET/KEY`).
    path_style: bool,
    /// The region requests are signed for, for the AWS public URLs.
    region: String,
}

impl S3Store {
    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The prefix (no leading or trailing `/`; empty for the bucket's root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The object key of a path of the store (`<stack>/<name>`).
    pub fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    /// `s3://BUCKET/KEY`, for messages.
    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// The error of a failed call doing `action` on `key` (the bucket itself when empty).
    fn fail<E>(&self, action: &str, key: &str, err: &SdkError<E, HttpResponse>) -> PublishError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let location = if key.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            self.location(key)
        };
        remote(action, &location, &CallFailure::of(err), &self.options)
    }

    /// Whether to send (and ask for) the sha256 checksum headers.
    fn checksums(&self) -> bool {
        self.options.checksums == ChecksumMode::Always
    }
}
