//! The inventory actors on their own, without HTTP: an actix system on a
//! thread of its own, as an engine process runs them. Two of these on one
//! database behave like two engine processes.

use std::thread::JoinHandle;

use orderflow::config::Settings;
use orderflow::db::pipeline::Pipeline;
use orderflow::db::Database;
use orderflow::inventory::Inventory;
use secrecy::SecretString;

use super::app::test_settings;

pub struct ActorEngine {
    pub inventory: Inventory,
    pub db: Database,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ActorEngine {
    /// Starts the actors against `database_url`, with test settings changed by `customize`.
    pub async fn start(database_url: &str, customize: impl FnOnce(&mut Settings)) -> ActorEngine {
        let mut settings = test_settings();
        settings.database.url = Some(SecretString::from(database_url.to_owned()));
        customize(&mut settings);
        let db = Database::connect(&settings.database).expect("pool");
        db.migrate().await.expect("migrations");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let engine_db = db.clone();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let cache =
                    orderflow::cache::ProductCache::new(None, std::time::Duration::from_secs(30));
                let pipeline = Pipeline::start(engine_db.clone(), &settings.pipeline);
                let inventory = Inventory::start(
                    engine_db,
                    pipeline,
                    cache,
                    &settings.actors,
                    &settings.inventory,
                );
                let _ = ready_tx.send(inventory);
                let _ = stop_rx.await;
            });
        });
        let inventory = ready_rx.await.expect("the actor system started");
        ActorEngine {
            inventory,
            db,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for ActorEngine {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
