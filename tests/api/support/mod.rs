//! Test support: spawning the engine with its own database, a typed HTTP
//! client, and helpers for processes and outages.

pub mod actors;
pub mod app;
pub mod backends;
pub mod process;
pub mod proxy;
pub mod receiver;
pub mod shop;
pub mod smtp;

pub use app::TestApp;
pub use backends::Backend;

/// Declares one test per database backend. The body runs with `$app` bound to
/// a freshly spawned [`TestApp`]: `postgres` (with Redis) and `sqlite`
/// (embedded, Redis disabled).
#[macro_export]
macro_rules! backend_test {
    ($(#[$meta:meta])* async fn $name:ident($app:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let $app = $crate::support::TestApp::spawn($crate::support::Backend::Postgres).await;
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $app = $crate::support::TestApp::spawn($crate::support::Backend::Sqlite).await;
                $body
            }
        }
    };
}

/// Declares a `postgres` and a `sqlite` test that call `$name(Backend)`, for
/// tests that need more control than `backend_test!` gives (their own
/// database handle, several engines, custom settings).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::Backend::Postgres).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await
            }
        }
    )*};
}
