//! The write pipeline: one per process. Actors do not open transactions;
//! they hand typed write-sets ([`WriteSet`]) to [`Pipeline::write`], which
//! queues them. One writer takes everything waiting, merges it into one
//! transaction of multi-row statements ([`commit`]), commits, and then
//! answers each write-set; while a batch commits, the next one fills. So the
//! SKU actors' group commits and the carts' writes share transactions, and a
//! busy engine pays one fsync for many actors' writes.
//!
//! Rules (design.md, "The write pipeline"):
//! - nothing is answered before the commit that records it, and a commit
//!   whose outcome is unknown is looked up before anyone is answered;
//! - a refused part refuses only its own write-set ([`Refusal`]);
//! - two write-sets that change the same row by a delta or a version guard
//!   never share a batch;
//! - the queue is bounded for new work ([`Admit::New`]: beyond
//!   `pipeline.queue_capacity`, [`WriteError::Overloaded`] at once), while
//!   work that finishes a movement of stock or money is always admitted
//!   ([`Admit::Always`]);
//! - the writer holds a pooled connection only while its transaction runs.

mod commit;
mod statements;
mod writeset;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

use super::{Database, DbError};
use crate::config::PipelineSettings;
pub use writeset::{OrderWrite, Receipt, Refusal, WriteSet};

/// How often committed batch ids are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(60);
/// Batch ids older than this are forgotten.
const FORGET_AFTER_S: i64 = 600;
/// How long an idle writer waits before it looks whether its pipeline is
/// still in use.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Whether a write-set may be turned away when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// New work (a cart line, a new reservation): refused when the queue is
    /// full, so that the engine sheds load instead of queueing without end.
    New,
    /// Work that finishes what was admitted before (a stock commit or
    /// release, a compensation): always queued.
    Always,
}

/// Why a write-set was not (known to be) written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Refused(Refusal),
    /// The queue is full: 503 `overloaded`.
    #[error("the write pipeline is full")]
    Overloaded,
    /// The database could not be reached, or a commit's outcome could not
    /// be learned: 503 `unavailable`. The writer's actor reloads.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A statement failed: a fault, not an outage.
    #[error("write failed: {0}")]
    Failed(String),
}

impl WriteError {
    fn from_db(e: &DbError) -> WriteError {
        if e.is_unavailable() {
            WriteError::Unavailable(e.to_string())
        } else {
            WriteError::Failed(e.to_string())
        }
    }
}

impl Refusal {
    /// The label of `pipeline_refused_total`.
    fn reason(&self) -> &'static str {
        match self {
            Refusal::StockChanged { .. } => "stock_changed",
            Refusal::DuplicateEvent => "duplicate_event",
            Refusal::CartChanged { .. } => "cart_changed",
            Refusal::OrderChanged { .. } => "order_changed",
            Refusal::LeaseLost { .. } => "lease_lost",
            Refusal::KeyLost => "key_lost",
        }
    }
}

struct Job {
    set: WriteSet,
    admit: Admit,
    queued_at: Instant,
    reply: oneshot::Sender<Result<Receipt, WriteError>>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Of them, queued as [`Admit::New`]: counted against the capacity.
    new: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    capacity: usize,
    max_batch: usize,
}

/// The process's write pipeline; cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    shared: Arc<Shared>,
    wake: Arc<Notify>,
}

impl Pipeline {
    /// Starts the writer on the current runtime. It stops once every handle
    /// is dropped and the queue is empty.
    pub fn start(db: Database, settings: &PipelineSettings) -> Pipeline {
        let pipeline = Pipeline {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                capacity: settings.queue_capacity.max(1),
                max_batch: settings.max_batch.max(1),
            }),
            wake: Arc::new(Notify::new()),
        };
        tokio::spawn(writer(
            db,
            Arc::downgrade(&pipeline.shared),
            pipeline.wake.clone(),
        ));
        pipeline
    }

    /// Queues `set` and waits until its batch committed (or it was refused).
    pub async fn write(&self, set: WriteSet, admit: Admit) -> Result<Receipt, WriteError> {
        self.write_together(vec![set], admit)
            .await
            .pop()
            .expect("one answer per write-set")
    }

    /// Queues `sets` at once, so that they ride in one batch (unless they
    /// change the same row, or exceed `pipeline.max_batch`), and waits for
    /// every answer, in order. Each is still refused or written on its own.
    pub async fn write_together(
        &self,
        sets: Vec<WriteSet>,
        admit: Admit,
    ) -> Vec<Result<Receipt, WriteError>> {
        let mut answers = Vec::with_capacity(sets.len());
        {
            let mut queue = self.shared.queue.lock().expect("pipeline queue poisoned");
            if admit == Admit::New {
                if queue.new + sets.len() > self.shared.capacity {
                    metrics::counter!("pipeline_refused_total", "reason" => "overloaded")
                        .increment(sets.len() as u64);
                    return sets.iter().map(|_| Err(WriteError::Overloaded)).collect();
                }
                queue.new += sets.len();
            }
            for set in sets {
                let (reply, answer) = oneshot::channel();
                queue.jobs.push_back(Job {
                    set,
                    admit,
                    queued_at: Instant::now(),
                    reply,
                });
                answers.push(answer);
            }
            metrics::gauge!("pipeline_queue_depth").set(queue.jobs.len() as f64);
        }
        self.wake.notify_one();
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            out.push(answer.await.unwrap_or_else(|_| {
                Err(WriteError::Unavailable(
                    "the write pipeline stopped".to_owned(),
                ))
            }));
        }
        out
    }
}

async fn writer(db: Database, shared: Weak<Shared>, wake: Arc<Notify>) {
    let mut last_forget = Instant::now();
    loop {
        let batch = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            take_batch(&shared)
        };
        if batch.is_empty() {
            // Woken by a new write-set, or now and then to notice that the
            // pipeline is no longer used.
            let _ = tokio::time::timeout(IDLE_CHECK, wake.notified()).await;
            continue;
        }
        run_batch(&db, batch).await;
        if last_forget.elapsed() >= FORGET_EVERY {
            last_forget = Instant::now();
            commit::forget_old_batches(&db, chrono::Duration::seconds(FORGET_AFTER_S)).await;
        }
    }
}

/// Takes up to `max_batch` queued write-sets in order, leaving for the next
/// batch any that changes a row an earlier one in this batch changes.
fn take_batch(shared: &Shared) -> Vec<Job> {
    let mut queue = shared.queue.lock().expect("pipeline queue poisoned");
    let jobs = &mut queue.jobs;
    let mut taken: Vec<Job> = Vec::new();
    let mut left: VecDeque<Job> = VecDeque::new();
    {
        let mut rows: HashSet<(u8, String)> = HashSet::new();
        while let Some(job) = jobs.pop_front() {
            if taken.len() >= shared.max_batch {
                left.push_back(job);
                left.extend(jobs.drain(..));
                break;
            }
            let keys: Vec<(u8, String)> = job
                .set
                .keys()
                .map(|k| match k {
                    writeset::RowKey::Sku(s) => (0, s.to_owned()),
                    writeset::RowKey::Cart(c) => (1, c.to_owned()),
                    writeset::RowKey::Order(o) => (2, o.to_owned()),
                })
                .collect();
            if keys.iter().any(|k| rows.contains(k)) {
                left.push_back(job);
            } else {
                rows.extend(keys);
                taken.push(job);
            }
        }
    }
    *jobs = left;
    metrics::gauge!("pipeline_queue_depth").set(jobs.len() as f64);
    queue.new -= taken.iter().filter(|j| j.admit == Admit::New).count();
    taken
}

async fn run_batch(db: &Database, batch: Vec<Job>) {
    let started = Instant::now();
    let (sets, replies): (Vec<WriteSet>, Vec<_>) = batch
        .into_iter()
        .map(|job| {
            metrics::histogram!("pipeline_queue_wait_seconds")
                .record(job.queued_at.elapsed().as_secs_f64());
            (job.set, job.reply)
        })
        .unzip();
    metrics::histogram!("pipeline_batch_size").record(sets.len() as f64);
    let answers = commit::commit(db, &sets).await;
    metrics::histogram!("pipeline_commit_duration_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("pipeline_batches_total").increment(1);
    for (reply, answer) in replies.into_iter().zip(answers) {
        // The caller may have given up waiting: not an error here.
        let _ = reply.send(answer);
    }
}

#[cfg(test)]
mod tests;
