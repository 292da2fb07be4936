//! Dynamic batching: requests queue for one dedicated inference thread that
//! owns the model (libtorch or ONNX Runtime), concatenates queued samples into one forward
//! pass (up to `max_batch_size`), and answers each request with its rows.
//!
//! The queue is bounded: a full queue is refused at once (429) instead of
//! growing latency without bound. The thread waits up to `max_latency` for
//! more samples only while other requests are still being decoded, so a lone
//! request is never delayed for a batch that will not come.
//!
//! A forward pass that fails is retried one request at a time, so one poison
//! input fails only its own request. A panic ends the thread: every waiting
//! request is answered, and the owner is told (the server then fails its
//! health checks and exits) instead of queueing requests nobody will run.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tch::Device;
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::runtime::{self, Model};

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
    /// Injected fault (tests and drills only).
    pub fault: Option<Fault>,
}

/// A fault injected on purpose, to prove that the server fails loudly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Panic in the inference thread on a sample whose first value is this.
    PanicOn(f32),
}

impl Fault {
    /// Parses `inference-panic-on=<value>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.strip_prefix("inference-panic-on=")
            .and_then(|v| v.parse().ok())
            .map(Self::PanicOn)
            .ok_or_else(|| format!("unknown fault {text:?}: the one fault is inference-panic-on=<value>"))
    }
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
    /// [`Batcher`] clone is dropped; join the handle to wait for it. When the
    /// thread ends, `on_exit` gets `None` (every handle was dropped) or the
    /// message of the panic that ended it.
    pub fn start(
        module: Model,
        config: BatchConfig,
        metrics: Metrics,
        on_exit: impl FnOnce(Option<String>) + Send + 'static,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let (tx, rx) = sync_channel(config.queue_capacity.max(1));
        let arrivals = Arc::new(Arrivals::default());
        let worker = Worker { module, config, rx, arrivals: arrivals.clone(), metrics: metrics.clone() };
        let handle = std::thread::Builder::new().name("inference".into()).spawn(move || {
            // Unwinding drops the worker: the batch in hand and the queue, so
            // every waiting request gets its answer (the channel closed).
            let failure = std::panic::catch_unwind(AssertUnwindSafe(|| worker.run())).err().map(|payload| {
                payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned())
            });
            on_exit(failure);
        })?;
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
    module: Model,
    config: BatchConfig,
    rx: Receiver<Job>,
    arrivals: Arc<Arrivals>,
    metrics: Metrics,
}

impl Worker {
    fn run(mut self) {
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

    fn run_batch(&mut self, batch: Vec<Job>) {
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
        let started = Instant::now();
        let result = self.forward(&input, samples);
        self.metrics.inference_duration.observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(samples as f64);
        match result {
            Ok(output) => self.answer(batch, &output),
            Err(message) if batch.len() == 1 => {
                tracing::debug!(error = %message, "forward pass failed");
                for job in batch {
                    let _ = job.reply.send(Err(message.clone()));
                }
            }
            Err(message) => {
                // One input may be poison: run each request alone, so only
                // the ones that fail by themselves get an error.
                tracing::info!(requests = batch.len(), error = %message, "batched forward pass failed; retrying one request at a time");
                self.metrics.batch_splits.inc();
                for job in batch {
                    let result = self.forward(&job.input, job.samples);
                    let _ = job.reply.send(result);
                }
            }
        }
    }

    /// Hands each job its rows of `output`.
    fn answer(&self, batch: Vec<Job>, output: &[f32]) {
        let per_sample = self.config.outputs_per_sample;
        let mut offset = 0;
        for job in batch {
            let end = offset + job.samples * per_sample;
            let rows = output.get(offset..end).map(<[f32]>::to_vec).ok_or("output too short".to_owned());
            offset = end;
            // The caller may have timed out meanwhile; nothing to do then.
            let _ = job.reply.send(rows);
        }
    }

    fn forward(&mut self, input: &[f32], samples: usize) -> Result<Vec<f32>, String> {
        if let Some(Fault::PanicOn(value)) = self.config.fault {
            let sample_len = input.len() / samples.max(1);
            if input.chunks(sample_len.max(1)).any(|s| s.first() == Some(&value)) {
                // The injected fault: a panic, as a libtorch binding bug or a
                // device failure would cause.
                #[allow(clippy::panic)]
                {
                    panic!("injected fault: inference-panic-on={value}");
                }
            }
        }
        runtime::forward_logits(
            &mut self.module,
            input,
            samples,
            &self.config.sample_shape,
            self.config.outputs_per_sample,
            self.config.device,
        )
    }
}
