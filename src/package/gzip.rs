//! Deterministic parallel gzip.
//!
//! The input is cut into fixed-size blocks; each block is deflated on a worker thread as its own
//! raw deflate stream, primed with the last 32 KiB of the previous block as dictionary (as pigz
//! does), and ended with a sync flush (the last block with a final block instead). The results
//! are written in order, so they concatenate into one valid deflate stream inside one gzip member.
//! The output depends only on the input bytes, the level, the block size and the deflate
//! implementation — never on the number of threads or on scheduling.
//!
//! The gzip header carries no file name, no extra fields, modification time 0 and OS "unknown".

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Bytes of input per independently compressed block.
pub(crate) const BLOCK_SIZE: usize = 256 * 1024;
/// Deflate's window: how much of the previous block primes the next one.
const DICT_SIZE: usize = 32 * 1024;

/// gzip member header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown.
pub(crate) const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

type Reply = io::Result<Vec<u8>>;

struct Job {
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
    reply: mpsc::SyncSender<Reply>,
}

/// A gzip writer compressing fixed-size blocks on worker threads; see the module docs.
///
/// [`Write::flush`] does not force out a partial block (that would make the output depend on
/// when the caller flushes); data is written at block boundaries and by [`Self::finish`].
pub(crate) struct ParallelGzEncoder<W: Write> {
    inner: Option<W>,
    buf: Vec<u8>,
    dict: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u32,
    pending: VecDeque<mpsc::Receiver<Reply>>,
    max_pending: usize,
    jobs: Option<mpsc::SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl<W: Write> ParallelGzEncoder<W> {
    /// Writes the gzip header to `inner` and starts `threads` (at least one) workers.
    pub(crate) fn new(mut inner: W, level: u32, threads: usize) -> io::Result<Self> {
        inner.write_all(&GZIP_HEADER)?;
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            let worker = std::thread::Builder::new()
                .name(format!("gzip-{i}"))
                .spawn(move || work(&queue, level))?;
            workers.push(worker);
        }
        Ok(Self {
            inner: Some(inner),
            buf: Vec::with_capacity(BLOCK_SIZE),
            dict: Vec::new(),
            crc: crc32fast::Hasher::new(),
            len: 0,
            pending: VecDeque::new(),
            max_pending: 2 * threads,
            jobs: Some(jobs),
            workers,
        })
    }

    /// Compresses what is left, writes the gzip trailer and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        let mut inner = self.inner.take().expect("finish is only called once");
        let crc = std::mem::take(&mut self.crc).finalize();
        inner.write_all(&crc.to_le_bytes())?;
        inner.write_all(&self.len.to_le_bytes())?;
        self.stop_workers();
        Ok(inner)
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK_SIZE));
        let dict = std::mem::take(&mut self.dict);
        if data.len() >= DICT_SIZE {
            self.dict = data[data.len() - DICT_SIZE..].to_vec();
        } else {
            let keep = dict.len().min(DICT_SIZE - data.len());
            self.dict = [&dict[dict.len() - keep..], &data[..]].concat();
        }
        let (reply, receive) = mpsc::sync_channel(1);
        let job = Job {
            data,
            dict,
            last,
            reply,
        };
        self.jobs
            .as_ref()
            .expect("workers run until finish")
            .send(job)
            .map_err(|_| worker_failed())?;
        self.pending.push_back(receive);
        while self.pending.len() > self.max_pending {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let receive = self.pending.pop_front().expect("a block is pending");
        let block = receive.recv().map_err(|_| worker_failed())??;
        self.inner
            .as_mut()
            .expect("inner is present until finish")
            .write_all(&block)
    }

    fn stop_workers(&mut self) {
        self.jobs = None;
        self.pending.clear();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let take = data.len().min(BLOCK_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..take]);
        self.crc.update(&data[..take]);
        self.len = self.len.wrapping_add(take as u32);
        if self.buf.len() == BLOCK_SIZE {
            self.submit(false)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGzEncoder<W> {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

fn worker_failed() -> io::Error {
    io::Error::other("a gzip compression thread failed")
}

fn work(queue: &Mutex<mpsc::Receiver<Job>>, level: u32) {
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let result = deflate_block(level, &job.dict, &job.data, job.last);
        if job.reply.send(result).is_err() {
            return;
        }
    }
}

/// Deflates one block as a raw stream primed with `dict`, ending it with a sync flush, or with a
/// final block when `last`.
///
/// Every block gets a fresh compressor: `Compress::reset` does not clear the match-chain and
/// window memory (zlib-rs 0.6), and with a preset dictionary the stale state changes the output,
/// which made it depend on which blocks a worker had compressed before.
pub(crate) fn deflate_block(
    level: u32,
    dict: &[u8],
    data: &[u8],
    last: bool,
) -> io::Result<Vec<u8>> {
    let mut compress = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        compress.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let start = compress.total_in();
    loop {
        let consumed = usize::try_from(compress.total_in() - start).map_err(io::Error::other)?;
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(1024));
        }
        let status = compress
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let consumed = usize::try_from(compress.total_in() - start).map_err(io::Error::other)?;
        let done = if last {
            status == Status::StreamEnd
        } else {
            consumed == data.len() && out.len() < out.capacity()
        };
        if done {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    use crate::package::test_sample as sample;

    fn compress(data: &[u8], level: u32, threads: usize, piece: usize) -> Vec<u8> {
        let mut enc = ParallelGzEncoder::new(Vec::new(), level, threads).unwrap();
        for chunk in data.chunks(piece.max(1)) {
            enc.write_all(chunk).unwrap();
        }
        enc.finish().unwrap()
    }

    #[test]
    fn round_trips_and_is_independent_of_threads_and_write_sizes() {
        for len in [
            0,
            1,
            DICT_SIZE - 1,
            BLOCK_SIZE - 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            3 * BLOCK_SIZE + 12345,
        ] {
            let data = sample(len);
            let one = compress(&data, 6, 1, 4096);
            let many = compress(&data, 6, 3, 100_000);
            assert_eq!(one, many, "len {len}");
            assert_eq!(&one[..10], &GZIP_HEADER);
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded, data, "len {len}");
        }
    }

    #[test]
    fn dictionary_keeps_ratio_close_to_single_stream() {
        let data = sample(8 * BLOCK_SIZE);
        let ours = compress(&data, 6, 2, 65536);
        let mut single = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        single.write_all(&data).unwrap();
        let single = single.finish().unwrap();
        // Sync-flush markers and block starts cost a little, but well under 1%.
        assert!(
            ours.len() * 100 < single.len() * 101,
            "{} vs {}",
            ours.len(),
            single.len()
        );
    }

    #[test]
    fn level_changes_output() {
        let data = sample(BLOCK_SIZE);
        assert_ne!(compress(&data, 1, 2, 8192), compress(&data, 9, 2, 8192));
    }
}
