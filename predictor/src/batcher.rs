//! Dynamic batching: requests queue for one dedicated inference thread that
//! owns the libtorch module, concatenates queued samples into one forward
//! pass (up to `max_batch_size`), and answers each request with its rows.
//!
//! The queue is bounded: a full queue is refused at once (429) instead of
//! growing latency without bound. The thread waits up to `max_latency` for
//! more samples only while other requests are still being decoded, so a lone
//! request is never delayed for a batch that will not come.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tch::{CModule, Device, Kind, Tensor};
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::model;

/// Batching settings.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Most samples in one forward pass.
    pub max_batch_size: usize,
    /// Longest the first request of a batch waits for others.
    pub max_latency: Duration,
    /// Most requests waiting for the inference thread.
    pub queue_capacity: usize,
    /// Shape of one sample (without batch).
    pub sample_shape: Vec<i64>,
    /// Outputs per sample (classes).
    pub outputs_per_sample: usize,
    /// Where the module runs.
    pub device: Device,
}

/// The rows of one request's output, or why the forward pass failed.
pub type JobResult = Result<Vec<f32>, String>;

/// One request's samples waiting for a forward pass.
pub struct Job {
    /// `samples * sample_len` input values.
    pub input: Vec<f32>,
    /// Samples in `input`.
    pub samples: usize,
    /// After this instant nobody waits for the answer.
    pub deadline: Instant,
    /// Where the output rows go.
    pub reply: oneshot::Sender<JobResult>,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full.
    Full,
    /// The inference thread has stopped.
    Closed,
}

/// Counts requests that are being decoded and will soon be submitted; while
/// it is non-zero the inference thread waits briefly to batch them.
#[derive(Debug, Default)]
pub struct Arrivals(AtomicUsize);

/// A request being decoded; dropping it (on submit or on error) ends the arrival.
pub struct ArrivalGuard(Arc<Arrivals>);

impl Drop for ArrivalGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The handle requests use to reach the inference thread.
#[derive(Clone)]
pub struct Batcher {
    tx: SyncSender<Job>,
    arrivals: Arc<Arrivals>,
    metrics: Metrics,
}

impl Batcher {
    /// Starts the inference thread, which owns `module` until every
    /// [`Batcher`] clone is dropped; join the handle to wait for it.
    pub fn start(
        module: CModule,
        config: BatchConfig,
        metrics: Metrics,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(config.queue_capacity.max(1));
        let arrivals = Arc::new(Arrivals::default());
        let worker = Worker { module, config, rx, arrivals: arrivals.clone(), metrics: metrics.clone() };
        let handle = std::thread::Builder::new().name("inference".into()).spawn(move || worker.run())?;
        Ok((Self { tx, arrivals, metrics }, handle))
    }

    /// Marks a request as arriving: call before decoding its body.
    pub fn arriving(&self) -> ArrivalGuard {
        self.arrivals.0.fetch_add(1, Ordering::AcqRel);
        ArrivalGuard(self.arrivals.clone())
    }

    /// Queues a job without waiting; a full queue is an error at once.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        match self.tx.try_send(job) {
            Ok(()) => {
                self.metrics.queue_depth.inc();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        }
    }
}

struct Worker {
    module: CModule,
    config: BatchConfig,
    rx: Receiver<Job>,
    arrivals: Arc<Arrivals>,
    metrics: Metrics,
}

impl Worker {
    fn run(self) {
        let _no_grad = tch::no_grad_guard();
        let mut carry: Option<Job> = None;
        loop {
            let first = match carry.take() {
                Some(job) => job,
                None => match self.rx.recv() {
                    Ok(job) => self.dequeued(job),
                    Err(_) => return,
                },
            };
            let (batch, next) = self.collect(first);
            carry = next;
            self.run_batch(batch);
        }
    }

    fn dequeued(&self, job: Job) -> Job {
        self.metrics.queue_depth.dec();
        job
    }

    /// Gathers queued jobs after `first` up to the batch size; returns the
    /// batch and a job that did not fit, which starts the next batch.
    fn collect(&self, first: Job) -> (Vec<Job>, Option<Job>) {
        let max = self.config.max_batch_size.max(1);
        let window_end = Instant::now() + self.config.max_latency;
        let mut samples = first.samples;
        let mut batch = vec![first];
        while samples < max {
            let next = match self.rx.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= window_end || self.arrivals.0.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    // Others are still decoding: wait a little for them, in
                    // short steps so a request that gives up ends the wait.
                    match self.rx.recv_timeout((window_end - now).min(Duration::from_micros(500))) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let next = self.dequeued(next);
            if samples + next.samples > max {
                return (batch, Some(next));
            }
            samples += next.samples;
            batch.push(next);
        }
        (batch, None)
    }

    fn run_batch(&self, batch: Vec<Job>) {
        let now = Instant::now();
        // Nobody waits for a job past its deadline or whose caller left.
        let batch: Vec<Job> =
            batch.into_iter().filter(|j| j.deadline > now && !j.reply.is_closed()).collect();
        if batch.is_empty() {
            return;
        }
        let samples: usize = batch.iter().map(|j| j.samples).sum();
        let mut input = Vec::with_capacity(batch.iter().map(|j| j.input.len()).sum());
        for job in &batch {
            input.extend_from_slice(&job.input);
        }
        let mut shape = vec![samples as i64];
        shape.extend_from_slice(&self.config.sample_shape);
        let started = Instant::now();
        let result = self.forward(&input, &shape, samples);
        self.metrics.inference_duration.observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(samples as f64);
        match result {
            Ok(output) => {
                let per_sample = self.config.outputs_per_sample;
                let mut offset = 0;
                for job in batch {
                    let end = offset + job.samples * per_sample;
                    let rows =
                        output.get(offset..end).map(<[f32]>::to_vec).ok_or("output too short".to_owned());
                    offset = end;
                    // The caller may have timed out meanwhile; nothing to do then.
                    let _ = job.reply.send(rows);
                }
            }
            Err(message) => {
                for job in batch {
                    let _ = job.reply.send(Err(message.clone()));
                }
            }
        }
    }

    fn forward(&self, input: &[f32], shape: &[i64], samples: usize) -> Result<Vec<f32>, String> {
        let tensor = Tensor::from_slice(input).view(shape).to_device(self.config.device);
        let output = model::forward(&self.module, tensor).map_err(|e| e.to_string())?;
        let expected = [samples as i64, self.config.outputs_per_sample as i64];
        if output.size() != expected {
            return Err(format!("model returned shape {:?}, expected {expected:?}", output.size()));
        }
        let output = output.to_device(Device::Cpu).to_kind(Kind::Float).contiguous().view([-1]);
        Vec::<f32>::try_from(&output).map_err(|e| e.to_string())
    }
}
