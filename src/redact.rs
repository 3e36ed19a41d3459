//! Redaction of secrets in anything displayed: credentials in URLs and signature query
//! parameters (presigned S3 URLs, tokens).

/// Query parameter names (compared case-insensitively, as substrings) whose values are
/// secrets.
const SECRET_PARAMS: &[&str] = &[
    "signature",
    "credential",
    "token",
    "secret",
    "password",
    "passwd",
    "auth",
    "key",
    "sig",
];

/// The placeholder shown instead of a secret.
pub const REDACTED: &str = "REDACTED";

/// `url` with its user info and the values of secret-looking query parameters replaced by
/// `REDACTED`. Text that is not a URL is returned as it is.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_string();
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let _ = parsed.set_username(REDACTED);
        let _ = parsed.set_password(None);
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let lower = k.to_ascii_lowercase();
                if SECRET_PARAMS.iter().any(|s| lower.contains(s)) {
                    (k.into_owned(), REDACTED.to_string())
                } else {
                    (k.into_owned(), v.into_owned())
                }
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_credentials_and_signatures() {
        let r = redact_url("https://user:hunter2@example.invalid/a.tar.gz");
        assert!(!r.contains("hunter2") && !r.contains("user:"), "{r}");
        let r = redact_url(
            "https://b.s3.example.invalid/x.tar.gz?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAXXX%2F2026&X-Amz-Signature=deadbeef&X-Amz-Security-Token=tok",
        );
        assert!(
            !r.contains("AKIAXXX") && !r.contains("deadbeef") && !r.contains("tok&"),
            "{r}"
        );
        assert!(r.contains("X-Amz-Algorithm=AWS4-HMAC-SHA256"), "{r}");
        assert_eq!(
            redact_url("http://127.0.0.1:8080/a.tgz"),
            "http://127.0.0.1:8080/a.tgz"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
