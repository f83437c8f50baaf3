//! Actors driven by their own state machine (the inventory SKU actor): the
//! actor handles one message at a time, starts async work and hears its
//! result back as one more event, ticks on a timer, and says when it may
//! stop. It never names the actor framework: [`Driven`] is the whole
//! contract, and [`Cx`] the only handle on its context.
//!
//! [`DrivenActors`] keeps one such actor per id, spread over the arbiters by
//! the [`Registry`], with a bounded mailbox each; a send to a full mailbox
//! fails at once ([`SendFailure::Full`]) and one to an actor that has
//! stopped fails as [`SendFailure::Closed`], so the caller can start a fresh
//! one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::dev::SendError;
use actix::fut::wrap_future;
use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, Running,
};

use super::registry::{ArbiterPool, Registry};

/// An actor's behaviour, as events in, effects through [`Cx`].
pub trait Driven: Sized + Unpin + 'static {
    type Message: Send + 'static;
    /// What its async work yields back to it.
    type Done: 'static;
    /// How often [`Driven::tick`] runs.
    const TICK: Duration;

    fn started(&mut self, cx: &mut Cx<'_, Self>);
    fn handle(&mut self, message: Self::Message, cx: &mut Cx<'_, Self>);
    /// Work started with [`Cx::spawn`] or [`Cx::wait`] finished.
    fn done(&mut self, done: Self::Done, cx: &mut Cx<'_, Self>);
    fn tick(&mut self, cx: &mut Cx<'_, Self>);
    /// Asked when the actor is about to stop (idle, or [`Cx::stop`]): false
    /// keeps it running, for instance while it holds unanswered work.
    fn may_stop(&self) -> bool;
}

/// The actor's handle on its own context.
pub struct Cx<'a, A: Driven> {
    ctx: &'a mut Context<Host<A>>,
}

impl<A: Driven> Cx<'_, A> {
    /// Runs `work` beside the actor: messages keep being handled, and the
    /// result arrives through [`Driven::done`].
    pub fn spawn(&mut self, work: impl Future<Output = A::Done> + 'static) {
        self.ctx.spawn(
            wrap_future::<_, Host<A>>(work)
                .map(|done, host, ctx| host.0.done(done, &mut Cx { ctx })),
        );
    }

    /// Runs `work` with the mailbox held: no message is handled until it has
    /// finished and [`Driven::done`] has run.
    pub fn wait(&mut self, work: impl Future<Output = A::Done> + 'static) {
        self.ctx.wait(
            wrap_future::<_, Host<A>>(work)
                .map(|done, host, ctx| host.0.done(done, &mut Cx { ctx })),
        );
    }

    /// Asks the actor to stop; [`Driven::may_stop`] still decides.
    pub fn stop(&mut self) {
        self.ctx.stop();
    }
}

/// The framework's actor around a [`Driven`] one.
pub struct Host<A>(A);

/// One message in a mailbox.
struct Envelope<M>(M);

impl<M: 'static> Message for Envelope<M> {
    type Result = ();
}

impl<A: Driven> Actor for Host<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.0.started(&mut Cx { ctx });
        ctx.run_interval(A::TICK, |host, ctx| host.0.tick(&mut Cx { ctx }));
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        if self.0.may_stop() {
            Running::Stop
        } else {
            Running::Continue
        }
    }
}

impl<A: Driven> Handler<Envelope<A::Message>> for Host<A> {
    type Result = ();

    fn handle(&mut self, message: Envelope<A::Message>, ctx: &mut Context<Self>) {
        self.0.handle(message.0, &mut Cx { ctx });
    }
}

/// Why a message did not reach an actor's mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// The mailbox is full: the caller is told at once.
    Full,
    /// The actor stopped; a fresh one may be started.
    Closed,
}

/// One [`Driven`] actor per id.
pub struct DrivenActors<A: Driven> {
    registry: Registry<Host<A>>,
    mailbox_capacity: usize,
}

impl<A: Driven> DrivenActors<A> {
    pub fn new(
        kind: &'static str,
        pool: Arc<ArbiterPool>,
        mailbox_capacity: usize,
    ) -> DrivenActors<A> {
        DrivenActors {
            registry: Registry::new(kind, pool),
            mailbox_capacity,
        }
    }

    /// Puts `message` in the mailbox of the actor for `id`, started with
    /// `make` on its arbiter if none is live.
    pub fn try_send(
        &self,
        id: &str,
        make: impl FnOnce() -> A + Send + 'static,
        message: A::Message,
    ) -> Result<(), SendFailure> {
        let capacity = self.mailbox_capacity;
        let addr = self.registry.get_or_start(id, move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            Host(make())
        });
        addr.try_send(Envelope(message)).map_err(|e| match e {
            SendError::Full(_) => SendFailure::Full,
            SendError::Closed(_) => SendFailure::Closed,
        })
    }

    pub fn prune(&self) {
        self.registry.prune();
    }

    pub fn forget(&self, id: &str) {
        self.registry.forget(id);
    }

    pub fn forget_if_stopped(&self, id: &str) {
        self.registry.forget_if_stopped(id);
    }

    pub fn pool(&self) -> Arc<ArbiterPool> {
        self.registry.pool()
    }

    pub fn is_live(&self, id: &str) -> bool {
        self.registry.is_live(id)
    }
}
