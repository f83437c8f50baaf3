//! Actors that run their jobs one at a time: carts and order sagas.
//!
//! A [`SerialPool`] keeps one actor per id (through the [`Registry`], spread
//! over the arbiters). A job is an async function of the actor's state; the
//! actor runs it to completion before it looks at its next message, so every
//! change to one cart or one order is serialised in this process. (Across
//! processes, the database's version guards do that job.) Mailboxes are
//! bounded: a full one is [`ActorError::Overloaded`] at once. An idle actor
//! stops and drops its state; the next job starts a fresh one, which reloads.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mailbox::Mailboxes;
use actix::dev::SendError;
use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, Message,
    WrapFuture,
};
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::registry::{ArbiterPool, Registry};

/// How often an actor checks whether it has been idle long enough to stop.
const IDLE_CHECK: Duration = Duration::from_secs(1);
const SEND_ATTEMPTS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActorError {
    #[error("the actor's mailbox is full")]
    Overloaded,
    #[error("the actor could not be reached: {0}")]
    Unavailable(String),
}

type Job<S> = Box<dyn FnOnce(S) -> BoxFuture<'static, S> + Send>;

struct Run<S> {
    job: Job<S>,
    handled: Arc<AtomicBool>,
}

impl<S: 'static> Message for Run<S> {
    type Result = ();
}

pub(super) struct SerialActor<S> {
    state: Option<S>,
    idle_timeout: Duration,
    last_activity: Instant,
}

impl<S: Default + Send + Unpin + 'static> Actor for SerialActor<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(IDLE_CHECK, |actor, ctx| {
            if actor.last_activity.elapsed() >= actor.idle_timeout {
                ctx.stop();
            }
        });
    }
}

impl<S: Default + Send + Unpin + 'static> Handler<Run<S>> for SerialActor<S> {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, message: Run<S>, _ctx: &mut Context<Self>) -> Self::Result {
        message.handled.store(true, Ordering::SeqCst);
        let state = self.state.take().unwrap_or_default();
        let job = (message.job)(state);
        // Atomic: no other message (and no idle check) runs until it is done.
        AtomicResponse::new(Box::pin(job.into_actor(self).map(|state, actor, _ctx| {
            actor.state = Some(state);
            actor.last_activity = Instant::now();
        })))
    }
}

/// The handle on one kind of serial actor.
pub struct SerialPool<S: Default + Send + Unpin + 'static> {
    kind: &'static str,
    registry: Registry<SerialActor<S>>,
    capacity: usize,
    idle_timeout: Duration,
    /// Jobs sent and not yet finished, per id: the mailbox length.
    mailboxes: Arc<Mailboxes>,
}

impl<S: Default + Send + Unpin + 'static> SerialPool<S> {
    pub fn new(
        kind: &'static str,
        pool: Arc<ArbiterPool>,
        capacity: usize,
        idle_timeout: Duration,
    ) -> SerialPool<S> {
        SerialPool {
            kind,
            registry: Registry::new(kind, pool),
            capacity,
            idle_timeout,
            mailboxes: Mailboxes::new(capacity),
        }
    }

    /// Runs `job` on the actor for `id`, after the jobs before it, and
    /// returns its result. The job may run again on a fresh actor if the
    /// first one stopped before it started, never after it started.
    pub async fn run<R, F, Fut>(&self, id: &str, job: F) -> Result<R, ActorError>
    where
        R: Send + 'static,
        F: Fn(S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = (S, R)> + Send + 'static,
    {
        let job = Arc::new(job);
        for _ in 0..SEND_ATTEMPTS {
            let Some(slot) = self.mailboxes.take(id) else {
                metrics::counter!("actor_mailbox_rejections_total", "kind" => self.kind)
                    .increment(1);
                return Err(ActorError::Overloaded);
            };
            let (tx, rx) = oneshot::channel();
            let handled = Arc::new(AtomicBool::new(false));
            let job = job.clone();
            let message = Run {
                // The job carries its mailbox slot and gives it back before
                // answering, so a caller that sends again at once finds it
                // free; a message dropped unhandled gives it back too.
                job: Box::new(move |state: S| -> BoxFuture<'static, S> {
                    Box::pin(async move {
                        let (state, result) = job(state).await;
                        drop(slot);
                        let _ = tx.send(result);
                        state
                    })
                }),
                handled: handled.clone(),
            };
            let (capacity, idle) = (self.capacity, self.idle_timeout);
            let addr = self.registry.get_or_start(id, move |ctx| {
                ctx.set_mailbox_capacity(capacity);
                SerialActor {
                    state: None,
                    idle_timeout: idle,
                    last_activity: Instant::now(),
                }
            });
            match addr.try_send(message) {
                Ok(()) => match rx.await {
                    Ok(result) => return Ok(result),
                    Err(_) if !handled.load(Ordering::SeqCst) => {
                        self.registry.forget_if_stopped(id);
                    }
                    Err(_) => {
                        return Err(ActorError::Unavailable(
                            "the actor stopped while running the job".to_owned(),
                        ))
                    }
                },
                Err(SendError::Full(_)) => {
                    metrics::counter!("actor_mailbox_rejections_total", "kind" => self.kind)
                        .increment(1);
                    return Err(ActorError::Overloaded);
                }
                Err(SendError::Closed(_)) => self.registry.forget_if_stopped(id),
            }
        }
        Err(ActorError::Unavailable(format!(
            "the {} actor could not be reached",
            self.kind
        )))
    }

    pub fn is_live(&self, id: &str) -> bool {
        self.registry.is_live(id)
    }

    /// Jobs sent to `id` and not finished, including the one running.
    pub fn mailbox_len(&self, id: &str) -> usize {
        self.mailboxes.len(id)
    }

    /// Forgets stopped actors and publishes the live count.
    pub fn prune(&self) {
        self.registry.prune();
    }
}
