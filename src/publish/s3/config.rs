//! How a store is configured: [`S3Options`] (the CLI's `--s3-*` options), the store URL, and
//! [`S3Store::open`], which reads the AWS configuration (region, credentials chain, endpoint,
//! retries and timeouts) the way the AWS CLI does.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};

use super::S3Store;
use crate::publish::PublishError;

/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part (5 GiB).
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// S3's most parts per upload: with [`MAX_PART_SIZE`], the largest object is ~48 TiB.
pub(super) const MAX_PARTS: u64 = 10_000;

/// Whether to send the flexible checksum headers (`x-amz-checksum-sha256`,
/// `x-amz-sdk-checksum-algorithm`, `x-amz-checksum-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChecksumMode {
    /// Always: the server verifies every byte against the sha256 (AWS, recent MinIO, Ceph…).
    #[default]
    Always,
    /// Only where an operation requires one: for stores that reject the newer headers. Every
    /// body then carries `Content-MD5` instead, which S3 and the S3-compatible stores verify (a
    /// body changed in transit is refused); the HEAD after the upload checks the size and the
    /// sha256 metadata.
    WhenRequired,
}

/// How the S3 store uploads. `Default` is what the CLI uses without options.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Size of a multipart part; files larger than one part are uploaded in parts. Clamped to
    /// S3's limits (5 MiB … 5 GiB, at most 10,000 parts). Default 16 MiB: the fastest of 8, 16, 32
    /// and 64 MiB in the upload bench (README, "Part size").
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
            part_size: 16 * 1024 * 1024,
            concurrency: 8,
            checksums: ChecksumMode::Always,
            acl: None,
            endpoint: None,
            force_path_style: None,
            public_url: None,
        }
    }
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
}
