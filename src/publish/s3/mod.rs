//! The S3 store (`s3://BUCKET[/PREFIX]`), on AWS or any S3-compatible server. This is the only
//! module that talks to aws-sdk-s3 / aws-config; the rest of the code sees [`Store`].
//!
//! Guarantees and what they rely on:
//! - never overwrite: writes carry `If-None-Match: *` (PutObject, CompleteMultipartUpload); a
//!   HEAD before uploading also refuses a known conflict without sending the bytes;
//! - integrity: the sha256 goes as `x-amz-checksum-sha256` (per part and as the composite for
//!   multipart uploads) so the server checks the bytes; after the upload a HEAD must show it;
//! - documents (inventories) are written with `If-Match: <ETag>` / `If-None-Match: *`;
//! - an interrupted multipart upload is aborted, on errors and when the future is dropped.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart, ObjectCannedAcl,
};
use base64::Engine as _;
use futures_util::{StreamExt, TryStreamExt};
use sha2::Digest;

use super::{Artifact, Outcome, PublishError, Published, Store, Stored, Tag, Written};

/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's most parts per upload.
const MAX_PARTS: u64 = 10_000;
/// The metadata key of the artifact's sha256 (`x-amz-meta-sha256`).
const SHA256_KEY: &str = "sha256";
/// How often a conditional write is retried on 409 ConditionalRequestConflict.
const CONFLICT_ATTEMPTS: u32 = 5;
/// The content type of artifacts.
const GZIP: &str = "application/gzip";
/// How many HEADs `list` sends at a time.
const LIST_CONCURRENCY: usize = 8;
/// Read buffer of file bodies.
const READ_BUFFER: usize = 256 * 1024;

/// Whether to send the flexible checksum headers (`x-amz-checksum-sha256`,
/// `x-amz-sdk-checksum-algorithm`, `x-amz-checksum-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChecksumMode {
    /// Always: the server verifies every byte against the sha256 (AWS, recent MinIO, Ceph…).
    #[default]
    Always,
    /// Only where an operation requires one: for stores that reject the newer headers.
    /// Integrity then rests on TLS and the size and sha256 metadata checked after upload.
    WhenRequired,
}

/// How the S3 store uploads. `Default` is what the CLI uses without options.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Size of a multipart part; files larger than one part are uploaded in parts. Clamped to
    /// S3's limits (5 MiB … 5 GiB, at most 10,000 parts). Default 64 MiB.
    pub part_size: u64,
    /// Parts uploaded at the same time. Default 8.
    pub concurrency: usize,
    /// Whether to send the newer checksum headers.
    pub checksums: ChecksumMode,
    /// A canned ACL for artifacts (`public-read`); none by default (locked-down IAM policies
    /// often lack s3:PutObjectAcl, and buckets often disable ACLs).
    pub acl: Option<String>,
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); else `AWS_ENDPOINT_URL[_S3]`, else AWS.
    pub endpoint: Option<String>,
    /// Path-style addressing (`ENDPOINT/BUCKET/KEY`); default: on with a custom endpoint.
    pub force_path_style: Option<bool>,
    /// Base URL buildpacks download from (the bucket's root); default derived from the bucket.
    pub public_url: Option<String>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            part_size: 64 * 1024 * 1024,
            concurrency: 8,
            checksums: ChecksumMode::Always,
            acl: None,
            endpoint: None,
            force_path_style: None,
            public_url: None,
        }
    }
}

/// A store in an S3 bucket, under an optional prefix.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    url: String,
    bucket: String,
    prefix: String,
    options: S3Options,
    /// The custom endpoint, if any (explicit or from the environment).
    endpoint: Option<String>,
    path_style: bool,
    region: String,
}

/// Splits `s3://BUCKET[/PREFIX]` into the bucket and the prefix (no leading or trailing `/`).
pub fn parse_url(url: &str) -> Result<(String, String), PublishError> {
    let bad = || PublishError::BadUrl(url.to_string());
    let rest = url.strip_prefix("s3://").ok_or_else(bad)?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !bucket.contains("..");
    if !bucket_ok {
        return Err(bad());
    }
    let prefix = prefix.trim_end_matches('/');
    if !prefix.is_empty()
        && prefix
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || s.contains(['?', '#', '\\']))
    {
        return Err(bad());
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// A HEAD of an object.
#[derive(Debug, Clone)]
struct Head {
    size: u64,
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

/// How a failed SDK call is classified.
#[derive(Debug)]
struct Failure {
    status: Option<u16>,
    code: Option<String>,
    text: String,
    kind: FailureKind,
}

#[derive(Debug, PartialEq, Eq)]
enum FailureKind {
    /// The server answered with an error.
    Service,
    /// No credentials could be found.
    NoCredentials,
    /// The endpoint could not be reached (connect, DNS, TLS, timeout).
    Unreachable,
    /// Anything else.
    Other,
}

impl Failure {
    fn of<E>(err: &SdkError<E, HttpResponse>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let chain = scrub(&DisplayErrorContext(err).to_string());
        match err {
            SdkError::ServiceError(ctx) => {
                let e = ctx.err();
                let code = e.code().map(str::to_string);
                let text = match (e.code(), e.message()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.to_string(),
                    (None, Some(m)) => m.to_string(),
                    (None, None) => match status {
                        // A HEAD has no body to say more.
                        Some(s) if !(200..300).contains(&s) => format!("HTTP {s}"),
                        _ => chain,
                    },
                };
                Failure {
                    status,
                    code,
                    text: scrub(&text),
                    kind: FailureKind::Service,
                }
            }
            SdkError::TimeoutError(_) => Failure {
                status,
                code: None,
                text: "timed out".into(),
                kind: FailureKind::Unreachable,
            },
            SdkError::DispatchFailure(d) => {
                let lower = chain.to_ascii_lowercase();
                let kind = if lower.contains("credential") || lower.contains("identity") {
                    FailureKind::NoCredentials
                } else if d.is_io() || d.is_timeout() || lower.contains("connect") {
                    FailureKind::Unreachable
                } else {
                    FailureKind::Other
                };
                Failure {
                    status,
                    code: None,
                    text: chain,
                    kind,
                }
            }
            _ => Failure {
                status,
                code: None,
                text: chain,
                kind: FailureKind::Other,
            },
        }
    }

    fn code_is(&self, codes: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|c| codes.contains(&c))
    }

    /// 412: the condition of a conditional write does not hold.
    fn precondition_failed(&self) -> bool {
        self.status == Some(412) || self.code_is(&["PreconditionFailed"])
    }

    /// 409: a concurrent conditional write is in progress.
    fn conditional_conflict(&self) -> bool {
        self.status == Some(409) || self.code_is(&["ConditionalRequestConflict"])
    }

    fn not_found(&self) -> bool {
        self.kind == FailureKind::Service
            && (self.code_is(&["NoSuchKey", "NotFound"])
                || (self.status == Some(404) && !self.code_is(&["NoSuchBucket"])))
    }
}

/// Removes secrets that could appear in a message: the values of the credential variables and
/// signature parameters of URLs.
fn scrub(text: &str) -> String {
    let mut out = text.to_string();
    for var in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if let Ok(secret) = std::env::var(var)
            && secret.len() >= 4
        {
            out = out.replace(&secret, crate::redact::REDACTED);
        }
    }
    out.split(' ')
        .map(|w| {
            if w.contains("://") {
                crate::redact::redact_url(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

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
/// when the future is dropped (Ctrl-C, a timeout) — on its own thread and runtime, with its own
/// connections, so it works whatever state the caller's runtime is in.
struct PendingUpload {
    config: aws_sdk_s3::Config,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl PendingUpload {
    async fn abort(mut self, client: &Client) -> Result<(), PublishError> {
        self.armed = false;
        abort_upload(client, &self.bucket, &self.key, &self.upload_id).await
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

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
            let f = Failure::of(&e);
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
        let aborter = std::thread::Builder::new()
            .name("packager-s3-abort".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| tracing::warn!(error = %e, "cannot start the abort runtime"))
                    .ok()?;
                let client =
                    Client::from_conf(config.to_builder().http_client(fresh_http_client()).build());
                let result = runtime.block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(30),
                        abort_upload(&client, &bucket, &key, &upload_id),
                    )
                    .await
                });
                match result {
                    Ok(Ok(())) => tracing::debug!(%key, "aborted the multipart upload on drop"),
                    Ok(Err(e)) => {
                        tracing::warn!(%key, error = %e, "cannot abort the multipart upload")
                    }
                    Err(_) => tracing::warn!(%key, "timed out aborting the multipart upload"),
                }
                Some(())
            });
        match aborter {
            Ok(handle) => {
                let _ = handle.join();
            }
            Err(e) => tracing::warn!(error = %e, "cannot spawn the multipart abort thread"),
        }
    }
}

/// Builds the user-facing error of a failed call: what, where, what the store said, and a hint.
fn remote(action: &str, location: &str, f: &Failure, options: &S3Options) -> PublishError {
    let lower = f.text.to_ascii_lowercase();
    let checksum_hint = "this store may not implement the x-amz-checksum-sha256 headers: pass --s3-checksums when-required (PACKAGER_S3_CHECKSUMS=when-required)";
    let hint: Option<String> = match f.kind {
        FailureKind::NoCredentials => Some(
            "no AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, pick a profile with AWS_PROFILE (`aws sso login` for SSO), or run with an instance role".into(),
        ),
        FailureKind::Unreachable => Some(
            "cannot reach the S3 endpoint: check --endpoint-url / AWS_ENDPOINT_URL, AWS_REGION, proxies and the network".into(),
        ),
        FailureKind::Other => None,
        FailureKind::Service => {
            if f.code_is(&["NoSuchBucket"]) {
                Some("the bucket does not exist: create it, or check the bucket name, AWS_REGION and the endpoint".into())
            } else if f.code_is(&[
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "ExpiredToken",
                "InvalidToken",
                "TokenRefreshRequired",
                "InvalidSecurity",
            ]) {
                Some("the store rejected the credentials: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE (`aws sso login` renews SSO sessions); `aws sts get-caller-identity` shows who you are".into())
            } else if f.code_is(&["AccessDenied", "AllAccessDisabled"]) || f.status == Some(403) {
                let acl = if options.acl.is_some() {
                    ", s3:PutObjectAcl (for --acl)"
                } else {
                    ""
                };
                Some(format!(
                    "the credentials may not do this: they need s3:PutObject, s3:GetObject, s3:ListBucket, s3:AbortMultipartUpload{acl} on the bucket and prefix (AWS_PROFILE picks other credentials)"
                ))
            } else if f.code_is(&[
                "PermanentRedirect",
                "AuthorizationHeaderMalformed",
                "IllegalLocationConstraintException",
            ]) || f.status == Some(301)
            {
                Some("the bucket is in another region: set AWS_REGION (or the profile's region) to the bucket's".into())
            } else if f.code_is(&["BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest"]) {
                Some(format!(
                    "the bytes the store received do not match the sha256: the file changed or was corrupted in transit; if it persists, {checksum_hint}"
                ))
            } else if (lower.contains("checksum") || lower.contains("x-amz-sdk"))
                && (f.code_is(&["InvalidArgument", "InvalidRequest", "NotImplemented"])
                    || matches!(f.status, Some(400 | 501)))
            {
                Some(checksum_hint.into())
            } else if f.code_is(&["NotImplemented"]) && (lower.contains("if-none-match") || lower.contains("if-match") || lower.contains("conditional")) {
                Some("this store does not implement conditional writes (If-None-Match / If-Match), which packager needs to never overwrite and to keep inventories consistent".into())
            } else if f.code_is(&["EntityTooSmall"]) {
                Some("parts must be at least 5 MiB: raise --s3-part-size".into())
            } else if f.code_is(&["SlowDown", "ServiceUnavailable", "InternalError"]) || f.status.is_some_and(|s| s >= 500) {
                Some("the store is overloaded or failing; packager already retried with backoff: try again later or lower --s3-concurrency".into())
            } else {
                None
            }
        }
    };
    let message = match (f.kind == FailureKind::Service, f.status) {
        (true, Some(s)) if !f.text.contains(&s.to_string()) => format!("{} (HTTP {s})", f.text),
        _ => f.text.clone(),
    };
    PublishError::Remote {
        action: action.to_string(),
        location: location.to_string(),
        message,
        hint,
    }
}

fn b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The base64 S3 checksum of a lowercase hex sha256.
fn b64_of_hex(hex_digest: &str) -> Result<String, PublishError> {
    let raw = hex::decode(hex_digest).map_err(|_| PublishError::BadDocument {
        location: hex_digest.to_string(),
        what: "sha256",
        message: "not hexadecimal".into(),
    })?;
    Ok(b64(&raw))
}

/// One part of a multipart upload, as the hasher found it.
#[derive(Debug, Clone)]
struct PartPlan {
    number: i32,
    offset: u64,
    len: u64,
    sha256: [u8; 32],
}

/// What a commit (the write that makes the object visible) did.
enum Commit {
    Written,
    /// `If-None-Match: *` failed: the object exists.
    Exists,
    /// 409 on CompleteMultipartUpload: a concurrent conditional write; the upload must start
    /// again from CreateMultipartUpload (the store may have dropped this one).
    Restart,
}

/// The upload to commit.
enum Body<'a> {
    /// One PutObject of the whole file.
    Single(&'a Artifact),
    /// CompleteMultipartUpload of uploaded parts.
    Multipart {
        upload_id: &'a str,
        parts: &'a [CompletedPart],
    },
}

/// A time limit for one attempt of sending `len` bytes: generous (2 minutes plus 64 KiB/s).
fn upload_timeout(len: u64) -> Duration {
    Duration::from_secs(120 + len / (64 * 1024))
}

impl S3Store {
    /// Opens `s3://BUCKET[/PREFIX]`: reads the AWS configuration (credentials are resolved
    /// lazily, on the first request) and applies `options`.
    pub async fn open(url: &str, options: S3Options) -> Result<Self, PublishError> {
        let (bucket, prefix) = parse_url(url)?;
        let region = RegionProviderChain::default_provider().or_else(Region::new("us-east-1"));
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(5)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(10)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            )
            .load()
            .await;
        let ignore_env = std::env::var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        let endpoint = options
            .endpoint
            .clone()
            .or_else(|| {
                (!ignore_env)
                    .then(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
                    .flatten()
            })
            .or_else(|| sdk.endpoint_url().map(str::to_string))
            .filter(|e| !e.is_empty())
            .map(|e| e.trim_end_matches('/').to_string());
        if let Some(e) = &endpoint {
            let ok = url::Url::parse(e)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(PublishError::BadUrl(crate::redact::redact_url(e)));
            }
        }
        let path_style = options.force_path_style.unwrap_or(endpoint.is_some());
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(path_style);
        if let Some(e) = &endpoint {
            builder = builder.endpoint_url(e);
        }
        if options.checksums == ChecksumMode::WhenRequired {
            builder = builder
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        let config = builder.build();
        let region = config
            .region()
            .map_or_else(|| "us-east-1".to_string(), |r| r.to_string());
        Ok(S3Store {
            client: Client::from_conf(config),
            url: url.trim_end_matches('/').to_string(),
            bucket,
            prefix,
            options,
            endpoint,
            path_style,
            region,
        })
    }

    /// The bucket.
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

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn fail<E>(&self, action: &str, key: &str, err: &SdkError<E, HttpResponse>) -> PublishError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let location = if key.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            self.location(key)
        };
        remote(action, &location, &Failure::of(err), &self.options)
    }

    fn checksums(&self) -> bool {
        self.options.checksums == ChecksumMode::Always
    }

    async fn head(&self, key: &str) -> Result<Option<Head>, PublishError> {
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
                let f = Failure::of(&e);
                if f.not_found() {
                    return Ok(None);
                }
                // A HEAD error has no body, so no code (a bare 403 is bad credentials or
                // missing permission): ask again with a GET of one byte, which says which.
                let f = if f.kind == FailureKind::Service && f.code.is_none() {
                    match self
                        .client
                        .get_object()
                        .bucket(&self.bucket)
                        .key(key)
                        .range("bytes=0-0")
                        .send()
                        .await
                    {
                        Err(e) if Failure::of(&e).code.is_some() => Failure::of(&e),
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
    async fn sha256_of(&self, key: &str, head: &Head) -> Result<String, PublishError> {
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

    fn stored(head: Head, sha256: String) -> Stored {
        let mut metadata = head.metadata;
        metadata.remove(SHA256_KEY);
        Stored {
            sha256,
            size: head.size,
            metadata,
        }
    }

    fn object_metadata(a: &Artifact) -> std::collections::HashMap<String, String> {
        let mut m: std::collections::HashMap<String, String> = a
            .metadata
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        m.insert(SHA256_KEY.into(), a.sha256.clone());
        m
    }

    fn part_size(&self, size: u64) -> u64 {
        let min_for_count = size.div_ceil(MAX_PARTS);
        self.options
            .part_size
            .max(min_for_count)
            .clamp(MIN_PART_SIZE, MAX_PART_SIZE)
    }

    /// Writes the object (PutObject, or CompleteMultipartUpload), with `If-None-Match: *`
    /// when `exclusive`; retries a 409 (a concurrent conditional write) a few times.
    async fn commit(
        &self,
        key: &str,
        body: &Body<'_>,
        exclusive: bool,
    ) -> Result<Commit, PublishError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match body {
                Body::Single(a) => {
                    let stream = ByteStream::read_from()
                        .path(&a.path)
                        .buffer_size(READ_BUFFER)
                        .build()
                        .await
                        .map_err(|e| PublishError::Artifact {
                            path: a.path.clone(),
                            message: DisplayErrorContext(&e).to_string(),
                        })?;
                    let mut req = self
                        .client
                        .put_object()
                        .bucket(&self.bucket)
                        .key(key)
                        .body(stream)
                        .content_length(a.size as i64)
                        .content_type(GZIP)
                        .set_metadata(Some(Self::object_metadata(a)));
                    if self.checksums() {
                        req = req
                            .checksum_algorithm(ChecksumAlgorithm::Sha256)
                            .checksum_sha256(b64_of_hex(&a.sha256)?);
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
                        Err(e) => Failure::of(&e),
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
                            let f = Failure::of(&e);
                            // The server said 2xx but its body does not parse (moto 5.x names
                            // the root element CompleteMultipartUploadResponse): it completed;
                            // the HEAD that follows checks the object.
                            if f.kind == FailureKind::Service
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

    /// Uploads the parts of a multipart upload: a thread reads the file once in order, hashing
    /// each part and the whole, and each part is sent (streamed from the file) as soon as its
    /// hash is known, `concurrency` at a time. Returns the completed parts in order and the
    /// composite checksum.
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        a: &Artifact,
        part_size: u64,
    ) -> Result<(Vec<CompletedPart>, String), PublishError> {
        let concurrency = self.options.concurrency.max(1);
        let (tx, rx) = tokio::sync::mpsc::channel::<PartPlan>(concurrency * 2);
        let (path, size) = (a.path.clone(), a.size);
        let hasher = tokio::task::spawn_blocking(move || hash_parts(&path, size, part_size, &tx));
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
        a: &Artifact,
        p: PartPlan,
    ) -> Result<CompletedPart, PublishError> {
        let stream = ByteStream::read_from()
            .path(&a.path)
            .offset(p.offset)
            .length(Length::Exact(p.len))
            .buffer_size(READ_BUFFER)
            .build()
            .await
            .map_err(|e| PublishError::Artifact {
                path: a.path.clone(),
                message: DisplayErrorContext(&e).to_string(),
            })?;
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
    async fn publish_multipart(
        &self,
        a: &Artifact,
        key: &str,
        force: bool,
        mut exclusive: bool,
    ) -> Result<(Outcome, Option<String>), PublishError> {
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
        a: &Artifact,
        key: &str,
        force: bool,
        exclusive: &mut bool,
    ) -> Result<Option<(Outcome, Option<String>)>, PublishError> {
        let part_size = self.part_size(a.size);
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(GZIP)
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
                Outcome::Published
            } else {
                Outcome::Replaced
            };
            loop {
                match self.commit(key, &body, *exclusive).await? {
                    Commit::Written => return Ok(Some((outcome, composite))),
                    Commit::Restart => return Ok(None),
                    Commit::Exists => match self.resolve_existing(a, key, force).await? {
                        Some(o) => return Ok(Some((o, None))),
                        None => {
                            *exclusive = false;
                            outcome = Outcome::Replaced;
                        }
                    },
                }
            }
        }
        .await;
        match &result {
            Ok(Some((Outcome::Published | Outcome::Replaced, _))) => pending.disarm(),
            // AlreadyPublished, a restart and errors: the parts are not needed.
            _ => {
                if let Err(e) = pending.abort(&self.client).await {
                    tracing::warn!(error = %e, "cannot abort the multipart upload");
                }
            }
        }
        result
    }

    /// The object exists: `Some(AlreadyPublished)` when it has our bytes, a `Conflict` error
    /// when not (unless `force`: then `None`, replace it).
    async fn resolve_existing(
        &self,
        a: &Artifact,
        key: &str,
        force: bool,
    ) -> Result<Option<Outcome>, PublishError> {
        let Some(head) = self.head(key).await? else {
            // Deleted meanwhile: write it unconditionally would race; ask to retry.
            return Err(PublishError::Contended {
                location: self.location(key),
                attempts: 1,
            });
        };
        let existing = self.sha256_of(key, &head).await?;
        super::decide_existing(existing, a, force, || self.location(key))
    }

    /// Checks with a HEAD that the object has the artifact's size and sha256 (and, when the
    /// store returns one, the checksum we sent).
    async fn verify(
        &self,
        a: &Artifact,
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

/// Reads `path` once in order: sends each part's sha256 as soon as it is known; returns the
/// whole file's sha256 (hex) and the parts' digests.
fn hash_parts(
    path: &Path,
    size: u64,
    part_size: u64,
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
        };
        if tx.blocking_send(plan).is_err() {
            // The uploads stopped (an error or cancellation): nothing more to do.
            return Err(std::io::Error::other("the upload stopped"));
        }
        offset += len;
    }
    Ok((hex::encode(whole.finalize()), digests))
}

impl Store for S3Store {
    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn publish(&self, a: &Artifact, force: bool) -> Result<Published, PublishError> {
        let key = self.key(&format!("{}/{}", a.stack, a.name));
        let location = self.location(&key);
        // Look first: no need to send bytes the store has, or that it would refuse.
        let mut exclusive = true;
        if let Some(head) = self.head(&key).await? {
            let existing = self.sha256_of(&key, &head).await?;
            if let Some(outcome) = super::decide_existing(existing, a, force, || location.clone())?
            {
                return Ok(Published { location, outcome });
            }
            exclusive = false;
        }
        let (outcome, expected_checksum) = if a.size > self.part_size(a.size) {
            self.publish_multipart(a, &key, force, exclusive).await?
        } else {
            let body = Body::Single(a);
            let mut outcome = if exclusive {
                Outcome::Published
            } else {
                Outcome::Replaced
            };
            loop {
                match self.commit(&key, &body, exclusive).await? {
                    // Only a multipart completion asks for a restart.
                    Commit::Written | Commit::Restart => break,
                    Commit::Exists => match self.resolve_existing(a, &key, force).await? {
                        Some(o) => {
                            outcome = o;
                            break;
                        }
                        None => {
                            exclusive = false;
                            outcome = Outcome::Replaced;
                        }
                    },
                }
            }
            let want = self
                .checksums()
                .then(|| b64_of_hex(&a.sha256))
                .transpose()?;
            (outcome, want)
        };
        self.verify(a, &key, expected_checksum.as_deref()).await?;
        Ok(Published { location, outcome })
    }

    async fn lookup(&self, stack: &str, name: &str) -> Result<Option<Stored>, PublishError> {
        let key = self.key(&format!("{stack}/{name}"));
        let Some(head) = self.head(&key).await? else {
            return Ok(None);
        };
        let sha256 = self.sha256_of(&key, &head).await?;
        Ok(Some(Self::stored(head, sha256)))
    }

    async fn list(&self, stack: &str) -> Result<Vec<(String, Stored)>, PublishError> {
        let dir = format!("{}/", self.key(stack));
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&dir)
                .delimiter("/")
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.fail("list", &dir, &e))?;
            for o in out.contents() {
                if let Some(name) = o.key().and_then(|k| k.strip_prefix(&dir))
                    && name.ends_with(".tar.gz")
                    && !name.starts_with('.')
                {
                    names.push(name.to_string());
                }
            }
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        names.sort();
        let found = futures_util::stream::iter(names)
            .map(|name| async move {
                let stored = self.lookup(stack, &name).await?;
                Ok::<_, PublishError>(stored.map(|s| (name, s)))
            })
            .buffered(LIST_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn download(
        &self,
        stack: &str,
        name: &str,
        dest: &std::path::Path,
    ) -> Result<(), PublishError> {
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        let key = self.key(&format!("{stack}/{name}"));
        let location = self.location(&key);
        let want = self
            .lookup(stack, name)
            .await?
            .ok_or_else(|| PublishError::Remote {
                action: "download".into(),
                location: location.clone(),
                message: "no such artifact".into(),
                hint: Some("build it first (`packager build` builds what a job requires)".into()),
            })?
            .sha256;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| remote("download", &location, &Failure::of(&e), &self.options))?;
        let io = |source: std::io::Error| PublishError::Io {
            path: dest.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut body = out.body;
        let mut hasher = sha2::Sha256::new();
        while let Some(chunk) = body.try_next().await.map_err(|e| PublishError::Remote {
            action: "download".into(),
            location: location.clone(),
            message: scrub(&DisplayErrorContext(&e).to_string()),
            hint: None,
        })? {
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        let got = hex::encode(hasher.finalize());
        if got != want {
            let _ = tokio::fs::remove_file(dest).await;
            return Err(PublishError::BadDocument {
                location,
                what: "artifact",
                message: format!("its sha256 is {got}, the store records {want}"),
            });
        }
        Ok(())
    }

    async fn read_doc(&self, key: &str) -> Result<Option<(Vec<u8>, Tag)>, PublishError> {
        let key = self.key(key);
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let f = Failure::of(&e);
                if f.not_found() {
                    return Ok(None);
                }
                return Err(remote("read", &self.location(&key), &f, &self.options));
            }
        };
        let tag = Tag(out.e_tag().unwrap_or_default().to_string());
        let data = out.body.collect().await.map_err(|e| PublishError::Remote {
            action: "read".into(),
            location: self.location(&key),
            message: scrub(&DisplayErrorContext(&e).to_string()),
            hint: None,
        })?;
        Ok(Some((data.into_bytes().to_vec(), tag)))
    }

    async fn write_doc(
        &self,
        key: &str,
        data: &[u8],
        expected: Option<&Tag>,
    ) -> Result<Written, PublishError> {
        let key = self.key(key);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_type(if key.ends_with(".toml") {
                    "application/toml"
                } else {
                    "application/octet-stream"
                })
                .body(ByteStream::from(data.to_vec()));
            if self.checksums() {
                req = req
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .checksum_sha256(b64(&sha2::Sha256::digest(data)));
            }
            if let Some(acl) = &self.options.acl {
                req = req.acl(ObjectCannedAcl::from(acl.as_str()));
            }
            req = match expected {
                Some(tag) => req.if_match(&tag.0),
                None => req.if_none_match("*"),
            };
            let f = match req.send().await {
                Ok(_) => return Ok(Written::Done),
                Err(e) => Failure::of(&e),
            };
            if f.precondition_failed() {
                return Ok(Written::Conflict);
            }
            // If-Match on a document deleted meanwhile: it changed.
            if expected.is_some() && f.not_found() {
                return Ok(Written::Conflict);
            }
            if f.conditional_conflict() {
                if attempt < CONFLICT_ATTEMPTS {
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                    continue;
                }
                return Ok(Written::Conflict);
            }
            return Err(remote("write", &self.location(&key), &f, &self.options));
        }
    }

    fn public_url(&self, stack: &str, name: &str) -> String {
        let key = self.key(&format!("{stack}/{name}"));
        let segments: Vec<&str> = key.split('/').collect();
        let base = match (&self.options.public_url, &self.endpoint) {
            (Some(base), _) => base.trim_end_matches('/').to_string(),
            (None, Some(endpoint)) if self.path_style => {
                format!("{endpoint}/{}", self.bucket)
            }
            (None, Some(endpoint)) => match url::Url::parse(endpoint) {
                Ok(u) => {
                    let mut v = u.clone();
                    let host = format!("{}.{}", self.bucket, u.host_str().unwrap_or_default());
                    let _ = v.set_host(Some(&host));
                    v.to_string().trim_end_matches('/').to_string()
                }
                Err(_) => format!("{endpoint}/{}", self.bucket),
            },
            // Dotted bucket names do not match the wildcard certificate: path style.
            (None, None) if self.bucket.contains('.') || self.path_style => {
                format!("https://s3.{}.amazonaws.com/{}", self.region, self.bucket)
            }
            (None, None) => format!("https://{}.s3.{}.amazonaws.com", self.bucket, self.region),
        };
        match url::Url::parse(&format!("{base}/")) {
            Ok(mut u) => {
                if let Ok(mut path) = u.path_segments_mut() {
                    path.pop_if_empty().extend(segments);
                }
                u.to_string()
            }
            Err(_) => format!("{base}/{key}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_urls() {
        assert_eq!(
            parse_url("s3://my-bucket").unwrap(),
            ("my-bucket".into(), "".into())
        );
        assert_eq!(
            parse_url("s3://my-bucket/").unwrap(),
            ("my-bucket".into(), "".into())
        );
        assert_eq!(
            parse_url("s3://my.bucket/a/b/").unwrap(),
            ("my.bucket".into(), "a/b".into())
        );
        for bad in [
            "s3://",
            "s3://ab",
            "s3://My-Bucket",
            "s3://-bucket",
            "s3://bucket/a//b",
            "s3://bucket/../x",
            "s3://bu_cket",
            "https://bucket",
            "s3:/bucket",
        ] {
            assert!(
                matches!(parse_url(bad), Err(PublishError::BadUrl(_))),
                "{bad}"
            );
        }
    }

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

    #[test]
    fn rejections_of_checksum_headers_point_to_when_required() {
        let f = Failure {
            status: Some(400),
            code: Some("InvalidArgument".into()),
            text: "InvalidArgument: x-amz-checksum-sha256 is not supported".into(),
            kind: FailureKind::Service,
        };
        let e = remote("upload", "s3://b/k", &f, &S3Options::default());
        assert!(e.to_string().contains("s3://b/k"), "{e}");
        assert!(
            e.hint().unwrap().contains("--s3-checksums when-required"),
            "{e:?}"
        );
        let f = Failure {
            status: Some(501),
            code: Some("NotImplemented".into()),
            text: "NotImplemented: A header you provided implies functionality that is not implemented (If-None-Match)".into(),
            kind: FailureKind::Service,
        };
        let hint = remote("upload", "s3://b/k", &f, &S3Options::default())
            .hint()
            .unwrap();
        assert!(hint.contains("conditional writes"), "{hint}");
    }

    #[test]
    fn scrubs_secrets() {
        let text = scrub("see https://u:p@h.invalid/x?X-Amz-Signature=abc now");
        assert!(!text.contains("abc") && !text.contains("u:p"), "{text}");
    }

    async fn store(url: &str, options: S3Options) -> S3Store {
        S3Store::open(url, options).await.unwrap()
    }

    #[tokio::test]
    async fn public_urls() {
        let s = store(
            "s3://bkt/pre",
            S3Options {
                endpoint: Some("http://127.0.0.1:9000/".into()),
                ..S3Options::default()
            },
        )
        .await;
        assert_eq!(
            s.public_url("bookworm", "ruby-3.2.8+1.tar.gz"),
            "http://127.0.0.1:9000/bkt/pre/bookworm/ruby-3.2.8+1.tar.gz"
        );
        let s = store(
            "s3://bkt",
            S3Options {
                endpoint: Some("https://objects.example.invalid".into()),
                force_path_style: Some(false),
                ..S3Options::default()
            },
        )
        .await;
        assert_eq!(
            s.public_url("bookworm", "a b.tar.gz"),
            "https://bkt.objects.example.invalid/bookworm/a%20b.tar.gz"
        );
        let s = store(
            "s3://bkt/p",
            S3Options {
                public_url: Some("https://cdn.example.invalid/".into()),
                ..S3Options::default()
            },
        )
        .await;
        assert_eq!(
            s.public_url("st", "x.tar.gz"),
            "https://cdn.example.invalid/p/st/x.tar.gz"
        );
    }
}
