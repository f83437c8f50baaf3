//! How the queue forms batches. What a batch writes is tested against both
//! backends in the integration tests (`tests/api/pipeline.rs`).

use super::*;
use crate::db::carts::{CartWrite, LineWrite};
use crate::db::inventory::StockWrite;

fn shared(capacity: usize, max_batch: usize) -> Shared {
    Shared {
        queue: Mutex::new(Queue::default()),
        capacity,
        max_batch,
    }
}

fn push(
    shared: &Shared,
    set: WriteSet,
    admit: Admit,
) -> oneshot::Receiver<Result<Receipt, WriteError>> {
    let (reply, answer) = oneshot::channel();
    let mut queue = shared.queue.lock().unwrap();
    if admit == Admit::New {
        queue.new += 1;
    }
    queue.jobs.push_back(Job {
        set,
        admit,
        queued_at: Instant::now(),
        reply,
    });
    answer
}

fn stock(sku: &str) -> WriteSet {
    WriteSet::stock(StockWrite::new(sku))
}

fn line(cart: &str) -> WriteSet {
    WriteSet::cart(CartWrite::Line {
        cart_id: cart.to_owned(),
        version: 1,
        change: LineWrite::Delete {
            sku: "x".to_owned(),
        },
    })
}

fn skus(batch: &[Job]) -> Vec<String> {
    batch
        .iter()
        .flat_map(|j| j.set.stock.iter().map(|s| s.sku.clone()))
        .collect()
}

#[test]
fn a_batch_takes_every_waiting_write_set_in_order() {
    let s = shared(10, 10);
    let _a = push(&s, stock("a"), Admit::New);
    let _b = push(&s, stock("b"), Admit::Always);
    let _c = push(&s, line("cart-1"), Admit::New);
    let batch = take_batch(&s);
    assert_eq!(batch.len(), 3);
    assert_eq!(skus(&batch), ["a", "b"]);
    assert_eq!(s.queue.lock().unwrap().new, 0);
    assert!(take_batch(&s).is_empty());
}

#[test]
fn two_changes_of_one_row_never_share_a_batch() {
    let s = shared(10, 10);
    let _a1 = push(&s, stock("a"), Admit::Always);
    let _b = push(&s, stock("b"), Admit::Always);
    let _a2 = push(&s, stock("a"), Admit::Always);
    let _c1 = push(&s, line("cart-1"), Admit::New);
    let _c2 = push(&s, line("cart-1"), Admit::New);
    let first = take_batch(&s);
    assert_eq!(skus(&first), ["a", "b"]);
    assert_eq!(first.len(), 3);
    let second = take_batch(&s);
    assert_eq!(skus(&second), ["a"]);
    assert_eq!(second.len(), 2);
    assert_eq!(s.queue.lock().unwrap().new, 0);
}

#[test]
fn a_batch_holds_at_most_max_batch_write_sets_and_keeps_the_order() {
    let s = shared(10, 2);
    let _x: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|sku| push(&s, stock(sku), Admit::New))
        .collect();
    assert_eq!(skus(&take_batch(&s)), ["a", "b"]);
    assert_eq!(s.queue.lock().unwrap().new, 1);
    assert_eq!(skus(&take_batch(&s)), ["c"]);
}

#[tokio::test]
async fn new_work_beyond_the_capacity_is_refused_at_once_and_finishing_work_is_not() {
    // A pipeline whose writer never runs: no runtime task, only the queue.
    let pipeline = Pipeline {
        shared: Arc::new(shared(2, 10)),
        wake: Arc::new(Notify::new()),
    };
    let queued = {
        let p = pipeline.clone();
        tokio::spawn(async move {
            p.write_together(vec![stock("a"), stock("b")], Admit::New)
                .await
        })
    };
    while pipeline.shared.queue.lock().unwrap().jobs.len() < 2 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        pipeline.write(stock("c"), Admit::New).await.unwrap_err(),
        WriteError::Overloaded
    );
    let always = {
        let p = pipeline.clone();
        tokio::spawn(async move { p.write(stock("d"), Admit::Always).await })
    };
    while pipeline.shared.queue.lock().unwrap().jobs.len() < 3 {
        tokio::task::yield_now().await;
    }
    // Dropping the queued jobs answers their callers: the pipeline stopped.
    pipeline.shared.queue.lock().unwrap().jobs.clear();
    assert!(matches!(
        always.await.unwrap(),
        Err(WriteError::Unavailable(_))
    ));
    assert!(queued
        .await
        .unwrap()
        .iter()
        .all(|r| matches!(r, Err(WriteError::Unavailable(_)))));
}
