//! Files in and out of a container, as tar streams (what `docker cp` does): an upload is
//! extracted by the engine, a download is consumed as it comes.

use std::pin::Pin;

use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};

use super::{Docker, DockerError};

/// A stream of bytes coming out of the engine (e.g. a tar archive from [`Docker::download`]).
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, DockerError>> + Send>>;

impl Docker {
    /// Extracts a tar stream into `path` (an existing directory) in the container.
    pub async fn upload<S>(&self, id: &str, path: &str, tar: S) -> Result<(), DockerError>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let options = UploadToContainerOptionsBuilder::default()
            .path(path)
            .build();
        self.client
            .upload_to_container(id, Some(options), bollard::body_try_stream(tar))
            .await
            .map_err(|e| DockerError::container(id, format!("upload to `{path}`"), e))
    }

    /// Downloads `path` from the container as a tar stream, consumed incrementally.
    ///
    /// Like `docker cp`, the archive's top-level entry is the last component of `path`.
    pub fn download(&self, id: &str, path: &str) -> ByteStream {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let id_owned = id.to_owned();
        let path_owned = path.to_owned();
        self.client
            .download_from_container(id, Some(options))
            .map_err(move |e| {
                DockerError::container(&id_owned, format!("download `{path_owned}`"), e)
            })
            .boxed()
    }
}
