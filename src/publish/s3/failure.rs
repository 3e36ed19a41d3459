//! What went wrong, in words a user can act on: a failed SDK call is classified once
//! ([`CallFailure`]: status, error code, text, kind) and turned into a [`PublishError::Remote`] that
//! says what was done, where, what the store said and — when there is one — a hint.
//! Credentials and URL signatures never reach a message ([`scrub`]).

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::S3Options;
use crate::publish::PublishError;

/// How a failed SDK call is classified.
#[derive(Debug)]
pub(super) struct CallFailure {
    /// The HTTP status, when the store answered.
    pub(super) status: Option<u16>,
    /// The S3 error code (`NoSuchBucket`, `PreconditionFailed`…), when the answer had a body.
    pub(super) code: Option<String>,
    /// What to tell the user: `code: message`, or the SDK's whole chain, scrubbed.
    pub(super) text: String,
    /// Who failed, which decides the hint.
    pub(super) kind: CallFailureKind,
}

/// Who failed: the server, the credentials chain, the network, or something else.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CallFailureKind {
    /// The server answered with an error.
    Service,
    /// No credentials could be found.
    NoCredentials,
    /// The endpoint could not be reached (connect, DNS, TLS, timeout).
    Unreachable,
    /// Anything else (a request that could not be built, a body that does not parse…).
    Other,
}

impl CallFailure {
    /// Classifies a failed call; the text is scrubbed of secrets.
    pub(super) fn of<E>(err: &SdkError<E, HttpResponse>) -> CallFailure
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
                CallFailure {
                    status,
                    code,
                    text: scrub(&text),
                    kind: CallFailureKind::Service,
                }
            }
            SdkError::TimeoutError(_) => CallFailure {
                status,
                code: None,
                text: "timed out".into(),
                kind: CallFailureKind::Unreachable,
            },
            SdkError::DispatchFailure(d) => {
                let lower = chain.to_ascii_lowercase();
                let kind = if lower.contains("credential") || lower.contains("identity") {
                    CallFailureKind::NoCredentials
                } else if d.is_io() || d.is_timeout() || lower.contains("connect") {
                    CallFailureKind::Unreachable
                } else {
                    CallFailureKind::Other
                };
                CallFailure {
                    status,
                    code: None,
                    text: chain,
                    kind,
                }
            }
            _ => CallFailure {
                status,
                code: None,
                text: chain,
                kind: CallFailureKind::Other,
            },
        }
    }

    /// Whether the S3 error code is one of `codes`.
    pub(super) fn code_is(&self, codes: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|c| codes.contains(&c))
    }

    /// 412: the condition of a conditional write does not hold.
    pub(super) fn precondition_failed(&self) -> bool {
        self.status == Some(412) || self.code_is(&["PreconditionFailed"])
    }

    /// 409: a concurrent conditional write is in progress.
    pub(super) fn conditional_conflict(&self) -> bool {
        self.status == Some(409) || self.code_is(&["ConditionalRequestConflict"])
    }

    /// 404 for the object (not for the bucket: a missing bucket is an error).
    pub(super) fn not_found(&self) -> bool {
        self.kind == CallFailureKind::Service
            && (self.code_is(&["NoSuchKey", "NotFound"])
                || (self.status == Some(404) && !self.code_is(&["NoSuchBucket"])))
    }
}

/// Removes secrets that could appear in a message: the values of the credential variables and
/// signature parameters of URLs.
pub(super) fn scrub(text: &str) -> String {
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

/// Builds the user-facing error of a failed call: what, where, what the store said, and a hint.
pub(super) fn remote(
    action: &str,
    location: &str,
    f: &CallFailure,
    options: &S3Options,
) -> PublishError {
    let lower = f.text.to_ascii_lowercase();
    let checksum_hint = "this store may not implement the x-amz-checksum-sha256 headers: pass --s3-checksums when-required (PACKAGER_S3_CHECKSUMS=when-required)";
    let hint: Option<String> = match f.kind {
        CallFailureKind::NoCredentials => Some(
            "no AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, pick a profile with AWS_PROFILE (`aws sso login` for SSO), or run with an instance role".into(),
        ),
        CallFailureKind::Unreachable => Some(
            "cannot reach the S3 endpoint: check --endpoint-url / AWS_ENDPOINT_URL, AWS_REGION, proxies and the network".into(),
        ),
        CallFailureKind::Other => None,
        CallFailureKind::Service => {
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
                Some(if options.checksums == super::ChecksumMode::WhenRequired {
                    "the bytes the store received do not match their Content-MD5: the file changed or was corrupted in transit (the network, a proxy); nothing was published, publish again".into()
                } else {
                    format!(
                        "the bytes the store received do not match the sha256: the file changed or was corrupted in transit (the network, a proxy); nothing was published, publish again; if it persists, {checksum_hint}"
                    )
                })
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
    let message = match (f.kind == CallFailureKind::Service, f.status) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_of_checksum_headers_point_to_when_required() {
        let f = CallFailure {
            status: Some(400),
            code: Some("InvalidArgument".into()),
            text: "InvalidArgument: x-amz-checksum-sha256 is not supported".into(),
            kind: CallFailureKind::Service,
        };
        let e = remote("upload", "s3://b/k", &f, &S3Options::default());
        assert!(e.to_string().contains("s3://b/k"), "{e}");
        assert!(
            e.hint().unwrap().contains("--s3-checksums when-required"),
            "{e:?}"
        );
        let f = CallFailure {
            status: Some(501),
            code: Some("NotImplemented".into()),
            text: "NotImplemented: A header you provided implies functionality that is not implemented (If-None-Match)".into(),
            kind: CallFailureKind::Service,
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
}
