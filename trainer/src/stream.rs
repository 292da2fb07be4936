//! The data path of training images larger than memory: where decoded
//! pixels live ([`DataPath`]), the on-disk cache of decoded `uint8` samples
//! ([`PixelCache`]), and a pool of decode workers that prefetches batches
//! in order ([`Prefetch`]) with a bounded number of batches ahead and of
//! storage reads in flight.
//!
//! Bounds: the pool holds at most `2 x workers` decoded batches (queued or
//! being built), and at most `reads` requests to storage are in flight in
//! the whole process.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use futures::StreamExt;
use hone_storage::Location;
use tokio::sync::Semaphore;

use crate::dataset::{DataError, Dataset, sha256_hex};
use crate::images::decode;

/// Decoded images kept in memory at most, when the mode is `auto` and the
/// pod has no memory limit (with one: a quarter of it).
const AUTO_MEMORY_BUDGET: u64 = 1 << 30;
/// Storage reads in flight at most, by default.
const DEFAULT_READS: usize = 16;

/// Where training keeps decoded images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DataMode {
    /// In memory when the decoded dataset fits the memory budget, else streamed.
    #[default]
    Auto,
    /// All decoded images in memory (fastest; needs `N x C x H x W` bytes).
    Memory,
    /// Streamed batch by batch from the cache (`--data-cache`) or, without
    /// one, fetched and decoded again every epoch.
    Stream,
}

/// How training reads images.
#[derive(Clone, Debug)]
pub struct DataPath {
    /// Where decoded images live.
    pub mode: DataMode,
    /// Folder of the on-disk cache of decoded images (an emptyDir or a
    /// PVC); used when streaming.
    pub cache_dir: Option<PathBuf>,
    /// Decode workers (0: one per CPU the process may use).
    pub workers: usize,
    /// Storage reads in flight at most.
    pub reads: usize,
    /// Bytes of decoded images `auto` keeps in memory (0: a quarter of the
    /// memory limit, or 1 GiB without one).
    pub memory_budget: u64,
}

impl Default for DataPath {
    fn default() -> Self {
        Self { mode: DataMode::Auto, cache_dir: None, workers: 0, reads: DEFAULT_READS, memory_budget: 0 }
    }
}

/// Where the reading pass puts decoded pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Residency {
    /// Nowhere: only hashes and statistics are kept.
    Nothing,
    /// In memory.
    Memory,
    /// In a cache file in this folder.
    Cache(PathBuf),
}

impl DataPath {
    /// Where `samples` decoded images of `sample_bytes` each go.
    pub fn residency(&self, samples: usize, sample_bytes: usize) -> Residency {
        let stream = || self.cache_dir.clone().map_or(Residency::Nothing, Residency::Cache);
        match self.mode {
            DataMode::Memory => Residency::Memory,
            DataMode::Stream => stream(),
            DataMode::Auto => {
                let budget = if self.memory_budget > 0 {
                    self.memory_budget
                } else {
                    memory_limit().map_or(AUTO_MEMORY_BUDGET, |limit| limit / 4)
                };
                if (samples as u64).saturating_mul(sample_bytes as u64) <= budget {
                    Residency::Memory
                } else {
                    stream()
                }
            }
        }
    }

    /// Decode workers to run.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        // Honours the cgroup CPU quota (the pod's CPU limit).
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The memory limit of this process's cgroup (v2, then v1), if it has one.
pub fn memory_limit() -> Option<u64> {
    ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|s| s.trim().parse::<u64>().ok())
        // v1 writes a huge number for "no limit".
        .find(|&limit| limit < (1 << 60))
}

/// A file of decoded samples at fixed offsets (`index x sample_bytes`),
/// written by the reading pass and read by every epoch; removed when the
/// run ends.
#[derive(Debug)]
pub struct PixelCache {
    file: std::fs::File,
    path: PathBuf,
    sample_bytes: usize,
}

impl PixelCache {
    /// Creates (or truncates) the cache for `samples` samples in `dir`.
    pub fn create(dir: &Path, samples: usize, sample_bytes: usize) -> Result<Self, DataError> {
        let io = |e: std::io::Error| {
            DataError::Layout(format!(
                "data cache {}: {e} (is --data-cache a writable folder with {} free bytes?)",
                dir.display(),
                samples as u64 * sample_bytes as u64
            ))
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(format!("hone-pixels-{}.u8", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io)?;
        file.set_len(samples as u64 * sample_bytes as u64).map_err(io)?;
        Ok(Self { file, path, sample_bytes })
    }

    /// Stores sample `index`.
    pub fn write(&self, index: usize, pixels: &[u8]) -> Result<(), DataError> {
        self.file.write_all_at(pixels, (index * self.sample_bytes) as u64).map_err(|e| self.error(e))
    }

    /// Reads sample `index` into `out` (`sample_bytes` long).
    pub fn read(&self, index: usize, out: &mut [u8]) -> Result<(), DataError> {
        self.file.read_exact_at(out, (index * self.sample_bytes) as u64).map_err(|e| self.error(e))
    }

    fn error(&self, e: std::io::Error) -> DataError {
        DataError::Layout(format!("data cache {}: {e}", self.path.display()))
    }
}

impl Drop for PixelCache {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Images that stay in storage (and in the cache, when there is one).
#[derive(Clone, Debug)]
pub struct Stored {
    /// The dataset's source folder.
    pub root: Location,
    /// Decoded samples, when cached.
    pub cache: Option<Arc<PixelCache>>,
}

/// Reads batches of decoded images for training.
pub struct ImageStream {
    stored: Stored,
    paths: Vec<String>,
    sha256: Vec<String>,
    /// `[C, H, W]`.
    shape: [u32; 3],
    workers: usize,
    reads: Arc<Semaphore>,
    per_batch_reads: usize,
    handle: tokio::runtime::Handle,
}

impl ImageStream {
    /// The stream over `data`'s stored images; None when they are in memory.
    pub fn new(data: &Dataset, path: &DataPath) -> Option<Self> {
        let crate::dataset::Inputs::Stored(stored) = &data.inputs else { return None };
        let shape = [data.sample_shape[0] as u32, data.sample_shape[1] as u32, data.sample_shape[2] as u32];
        let workers = path.worker_count();
        let reads = path.reads.max(1);
        Some(Self {
            stored: stored.clone(),
            paths: data.sample_paths.clone(),
            sha256: data.sample_sha256.clone(),
            shape,
            workers,
            reads: Arc::new(Semaphore::new(reads)),
            per_batch_reads: reads.div_ceil(workers).max(1),
            handle: tokio::runtime::Handle::current(),
        })
    }

    /// Bytes of one decoded sample.
    pub fn sample_bytes(&self) -> usize {
        self.shape.iter().map(|&d| d as usize).product()
    }

    /// `[C, H, W]` of a sample.
    pub fn shape(&self) -> [u32; 3] {
        self.shape
    }

    /// The decoded samples `indices`, concatenated (blocking).
    pub fn read_batch(&self, indices: &[usize]) -> Result<Vec<u8>, DataError> {
        let sb = self.sample_bytes();
        let mut out = vec![0u8; indices.len() * sb];
        if let Some(cache) = &self.stored.cache {
            for (k, &i) in indices.iter().enumerate() {
                cache.read(i, &mut out[k * sb..(k + 1) * sb])?;
            }
            return Ok(out);
        }
        let fetched: Vec<_> = self.handle.block_on(
            futures::stream::iter(indices.iter().map(|&i| {
                let loc = self.stored.root.join(&self.paths[i]);
                let reads = self.reads.clone();
                async move {
                    let _permit = reads.acquire_owned().await.ok();
                    loc.read().await
                }
            }))
            .buffered(self.per_batch_reads)
            .collect(),
        );
        let [c, h, w] = self.shape;
        for ((k, &i), bytes) in indices.iter().enumerate().zip(fetched) {
            let bytes = bytes?;
            // The bytes must still be those the digest was taken over.
            if sha256_hex(&bytes) != self.sha256[i] {
                return Err(DataError::Changed { path: self.paths[i].clone() });
            }
            out[k * sb..(k + 1) * sb].copy_from_slice(&decode(&bytes, &self.paths[i], w, h, c)?);
        }
        Ok(out)
    }

    /// Starts the decode pool on `batches`; the returned iterator yields
    /// them in order.
    pub fn prefetch(self: &Arc<Self>, batches: Arc<Vec<Vec<usize>>>) -> Prefetch {
        let depth = 2 * self.workers;
        let shared = Arc::new(Shared {
            next: Mutex::new(0),
            consumed: Mutex::new(0),
            room: Condvar::new(),
            cancel: AtomicBool::new(false),
        });
        let (tx, rx) = sync_channel(depth);
        let handles = (0..self.workers.min(batches.len()).max(1))
            .map(|_| {
                let (stream, batches, shared, tx) =
                    (self.clone(), batches.clone(), shared.clone(), tx.clone());
                std::thread::spawn(move || worker(&stream, &batches, &shared, depth, &tx))
            })
            .collect();
        Prefetch { rx, shared, handles, pending: BTreeMap::new(), next: 0, total: batches.len() }
    }
}

/// State the consumer and the workers share.
struct Shared {
    /// The next batch a worker takes.
    next: Mutex<usize>,
    /// Batches handed to the consumer.
    consumed: Mutex<usize>,
    room: Condvar,
    cancel: AtomicBool,
}

type Built = (usize, Result<Vec<u8>, DataError>);

fn worker(
    stream: &ImageStream,
    batches: &[Vec<usize>],
    shared: &Shared,
    depth: usize,
    tx: &SyncSender<Built>,
) {
    loop {
        let j = {
            let Ok(mut next) = shared.next.lock() else { return };
            let j = *next;
            *next += 1;
            j
        };
        let Some(batch) = batches.get(j) else { return };
        // At most `depth` batches ahead of the consumer.
        {
            let Ok(mut consumed) = shared.consumed.lock() else { return };
            while j >= *consumed + depth && !shared.cancel.load(Ordering::Relaxed) {
                let Ok(c) = shared.room.wait(consumed) else { return };
                consumed = c;
            }
        }
        if shared.cancel.load(Ordering::Relaxed) {
            return;
        }
        let failed = {
            let built = stream.read_batch(batch);
            let failed = built.is_err();
            if tx.send((j, built)).is_err() {
                return;
            }
            failed
        };
        if failed {
            return;
        }
    }
}

/// Decoded batches in order, built ahead by the pool; dropping it stops
/// the workers.
pub struct Prefetch {
    rx: Receiver<Built>,
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    pending: BTreeMap<usize, Result<Vec<u8>, DataError>>,
    next: usize,
    total: usize,
}

impl Iterator for Prefetch {
    type Item = Result<Vec<u8>, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        loop {
            if let Some(built) = self.pending.remove(&self.next) {
                self.next += 1;
                if let Ok(mut consumed) = self.shared.consumed.lock() {
                    *consumed = self.next;
                }
                self.shared.room.notify_all();
                return Some(built);
            }
            match self.rx.recv() {
                Ok((j, built)) => {
                    self.pending.insert(j, built);
                }
                Err(_) => {
                    // Every worker stopped; one failed on an earlier batch.
                    self.next = self.total;
                    return Some(Err(DataError::Layout("the decode workers stopped".into())));
                }
            }
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.shared.cancel.store(true, Ordering::Relaxed);
        self.shared.room.notify_all();
        // Unblock workers waiting to send.
        while self.rx.try_recv().is_ok() {}
        for handle in self.handles.drain(..) {
            while !handle.is_finished() {
                while self.rx.try_recv().is_ok() {}
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::dataset::{DataOptions, Format};

    #[test]
    fn auto_keeps_in_memory_only_what_fits_the_budget() {
        let path = DataPath { memory_budget: 1000, ..Default::default() };
        assert_eq!(path.residency(10, 100), Residency::Memory);
        assert_eq!(path.residency(11, 100), Residency::Nothing);
        let cached = DataPath { cache_dir: Some("/c".into()), ..path.clone() };
        assert_eq!(cached.residency(11, 100), Residency::Cache("/c".into()));
        let memory = DataPath { mode: DataMode::Memory, ..cached.clone() };
        assert_eq!(memory.residency(1 << 20, 1 << 20), Residency::Memory);
        let stream = DataPath { mode: DataMode::Stream, ..cached };
        assert_eq!(stream.residency(1, 1), Residency::Cache("/c".into()));
        assert!(DataPath { workers: 3, ..Default::default() }.worker_count() == 3);
        assert!(DataPath::default().worker_count() >= 1);
    }

    /// Six 4x4 gray images, image `i` filled with `10 * i`, in two classes.
    fn dataset(dir: &Path) {
        for i in 0..6u8 {
            let class = dir.join(format!("c{}", i % 2));
            std::fs::create_dir_all(&class).unwrap();
            image::GrayImage::from_pixel(4, 4, image::Luma([10 * i]))
                .save(class.join(format!("{i}.png")))
                .unwrap();
        }
    }

    fn options(dir: &Path) -> DataOptions {
        DataOptions {
            source: format!("file://{}", dir.display()),
            format: Format::ImageFolder,
            label_column: String::new(),
            feature_columns: Vec::new(),
            width: 4,
            height: 4,
            channels: 1,
            validation: 0.0,
            test: 0.0,
            split_seed: 1,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prefetched_batches_come_in_order_and_a_changed_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        dataset(dir.path());
        for cache in [None, Some(dir.path().join("cache"))] {
            let path = DataPath {
                mode: DataMode::Stream,
                cache_dir: cache.clone(),
                workers: 3,
                ..Default::default()
            };
            let data = crate::dataset::load(&options(dir.path()), Some(&path)).await.unwrap();
            let stream = Arc::new(ImageStream::new(&data, &path).unwrap());
            let fill = |i: usize| {
                10 * data.sample_paths[i]
                    .trim_end_matches(".png")
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .parse::<u8>()
                    .unwrap()
            };
            let batches = vec![vec![5, 0], vec![3], vec![1, 2, 4], vec![0]];
            let got: Vec<Vec<u8>> = tokio::task::spawn_blocking({
                let (stream, batches) = (stream.clone(), Arc::new(batches.clone()));
                move || stream.prefetch(batches).map(Result::unwrap).collect()
            })
            .await
            .unwrap();
            assert_eq!(got.len(), batches.len());
            for (bytes, batch) in got.iter().zip(&batches) {
                let want: Vec<u8> = batch.iter().flat_map(|&i| [fill(i); 16]).collect();
                assert_eq!(bytes, &want, "batch {batch:?}");
            }
            // A dropped prefetch stops its workers.
            let early = tokio::task::spawn_blocking({
                let stream = stream.clone();
                move || stream.prefetch(Arc::new(vec![vec![0]; 100])).take(2).count()
            });
            assert_eq!(early.await.unwrap(), 2);
            if cache.is_none() {
                // Without a cache every epoch reads the source again, checked against its hash.
                let victim = dir.path().join(&data.sample_paths[2]);
                image::GrayImage::from_pixel(4, 4, image::Luma([255])).save(&victim).unwrap();
                let err =
                    tokio::task::spawn_blocking(move || stream.read_batch(&[2]).unwrap_err()).await.unwrap();
                assert!(
                    matches!(err, DataError::Changed { ref path } if *path == data.sample_paths[2]),
                    "{err}"
                );
                assert_eq!(err.category(), "DatasetChanged");
                // Put it back for the cached round.
                image::GrayImage::from_pixel(4, 4, image::Luma([fill(2)])).save(&victim).unwrap();
            }
        }
    }
}
