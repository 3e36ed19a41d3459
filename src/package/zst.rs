//! Deterministic multithreaded zstd.
//!
//! zstd's multithreaded mode cuts the input into jobs whose size depends only on the
//! compression parameters (the level's window), compresses each on a worker with the end of
//! the previous job as its prefix, and writes the results in order; its output is documented to
//! be the same for every `nbWorkers >= 1`. It differs from the single-threaded mode
//! (`nbWorkers = 0`), so even one thread uses one worker: the bytes depend on the level, never
//! on the thread count.
//!
//! The frame carries a content checksum (as the `zstd` command line writes), no content size
//! (the stream's length is not known up front) and no dictionary id.

use std::io::{self, Write};

/// A zstd writer in multithreaded mode; see the module docs.
///
/// [`Write::flush`] does nothing: zstd's flush ends the current block (and job) early, which
/// would make the output depend on when the caller flushes.
pub(crate) struct ZstdEncoder<W: Write> {
    inner: zstd::stream::write::Encoder<'static, W>,
}

impl<W: Write> ZstdEncoder<W> {
    /// A frame at `level` compressed by `threads` (at least one) workers.
    pub(crate) fn new(inner: W, level: u32, threads: usize) -> io::Result<Self> {
        let level = i32::try_from(level).map_err(io::Error::other)?;
        let mut inner = zstd::stream::write::Encoder::new(inner, level)?;
        let workers = u32::try_from(threads.max(1)).unwrap_or(u32::MAX);
        inner.multithread(workers)?;
        inner.include_checksum(true)?;
        Ok(Self { inner })
    }

    /// Ends the frame and returns the inner writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        self.inner.finish()
    }
}

impl<W: Write> Write for ZstdEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.inner.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    use crate::package::test_sample as sample;

    fn compress(data: &[u8], level: u32, threads: usize, piece: usize) -> Vec<u8> {
        let mut enc = ZstdEncoder::new(Vec::new(), level, threads).unwrap();
        for chunk in data.chunks(piece.max(1)) {
            enc.write_all(chunk).unwrap();
            enc.flush().unwrap();
        }
        enc.finish().unwrap()
    }

    /// zstd's single-threaded mode with our other settings: what `nbWorkers = 0` writes.
    fn single_threaded(data: &[u8], level: i32) -> Vec<u8> {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), level).unwrap();
        enc.include_checksum(true).unwrap();
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn round_trips_and_is_independent_of_threads_write_sizes_and_flushes() {
        // Level 1's jobs are 2 MiB (four times its 512 KiB window): 9 MB makes five, so the
        // workers really share the work. Level 19's are 32 MiB: one job, other parameters.
        for (level, len) in [(1, 9_000_000), (19, 600_000), (19, 0)] {
            let data = sample(len);
            let one = compress(&data, level, 1, 4096);
            for (threads, piece) in [(2, 100_000), (4, 1_000_003)] {
                assert!(
                    one == compress(&data, level, threads, piece),
                    "level {level}, {len} bytes: 1 thread and {threads} threads differ"
                );
            }
            let mut decoded = Vec::new();
            zstd::stream::read::Decoder::new(&one[..])
                .unwrap()
                .read_to_end(&mut decoded)
                .unwrap();
            assert!(decoded == data, "level {level}, {len} bytes round trip");
        }
    }

    #[test]
    fn one_thread_is_multithreaded_mode() {
        // Single-threaded zstd writes other bytes for the same input (no job boundaries): one
        // thread must still use a worker, or the thread count would change the artifact.
        let data = sample(9_000_000);
        let ours = compress(&data, 1, 1, 65536);
        assert_eq!(&ours[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        assert!(ours != single_threaded(&data, 1));
    }

    #[test]
    fn level_changes_output() {
        let data = sample(300_000);
        assert_ne!(compress(&data, 1, 2, 8192), compress(&data, 19, 2, 8192));
    }
}
