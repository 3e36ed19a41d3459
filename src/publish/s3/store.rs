//! [`Store`] for [`S3Store`]: publishing an artifact (a HEAD first, then one PutObject or a
//! multipart upload, then a HEAD to verify), looking up, listing and downloading artifacts,
//! the inventory documents, and the URLs buildpacks download from.

use std::time::Duration;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectCannedAcl};
use futures_util::{StreamExt, TryStreamExt};
use sha2::Digest;

use super::failure::{CallFailure, remote, scrub};
use super::object::{Body, Commit, b64, b64_of_hex};
use super::{CONFLICT_ATTEMPTS, S3Store};
use crate::publish::{
    PublishError, PublishOutcome, Published, Store, Stored, Tag, Upload, Written,
};

/// How many HEADs `list` sends at a time.
const LIST_CONCURRENCY: usize = 8;

impl Store for S3Store {
    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn publish(&self, a: &Upload, force: bool) -> Result<Published, PublishError> {
        let key = self.key(&format!("{}/{}", a.stack, a.name));
        let location = self.location(&key);
        // Look first: no need to send bytes the store has, or that it would refuse.
        let mut exclusive = true;
        if let Some(head) = self.head(&key).await? {
            let existing = self.sha256_of(&key, &head).await?;
            if let Some(outcome) =
                crate::publish::decide_existing(existing, a, force, || location.clone())?
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
                PublishOutcome::Published
            } else {
                PublishOutcome::Replaced
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
                            outcome = PublishOutcome::Replaced;
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
        self.confirm_stored(a, &key, expected_checksum.as_deref())
            .await?;
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
                    && super::super::is_artifact_name(name)
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
            .map_err(|e| remote("download", &location, &CallFailure::of(&e), &self.options))?;
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
                let f = CallFailure::of(&e);
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
            } else {
                req = req.content_md5(b64(&<md5::Md5 as md5::Digest>::digest(data)));
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
                Err(e) => CallFailure::of(&e),
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
    use crate::publish::S3Options;

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
