//! A TCP proxy the test can cut, to simulate a database outage without
//! stopping the shared PostgreSQL server other tests are using.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct TcpProxy {
    pub port: u16,
    down: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept_loop: AbortHandle,
}

impl TcpProxy {
    /// Forwards 127.0.0.1:<port> to `upstream` (host:port).
    pub async fn start(upstream: String) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let down = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (down_flag, conns) = (down.clone(), connections.clone());
        let accept_loop = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if down_flag.load(Ordering::SeqCst) {
                    drop(inbound); // refused, as a dead server would
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().expect("proxy lock").push(task.abort_handle());
            }
        })
        .abort_handle();
        TcpProxy {
            port,
            down,
            connections,
            accept_loop,
        }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        for conn in self.connections.lock().expect("proxy lock").drain(..) {
            conn.abort();
        }
    }

    pub fn come_back(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.go_down();
        self.accept_loop.abort();
    }
}

pub struct SplitUrl {
    pub before_host: String,
    pub after_host: String,
    pub upstream: String,
}

/// Splits `postgres://user@host:port/db` around `host:port`.
pub fn url_without_host(url: &str) -> SplitUrl {
    let (scheme, rest) = url.split_once("://").expect("URL has a scheme");
    let (userinfo, hostpart) = match rest.rsplit_once('@') {
        Some((user, host)) => (format!("{user}@"), host),
        None => (String::new(), rest),
    };
    let end = hostpart.find(['/', '?']).unwrap_or(hostpart.len());
    let upstream = hostpart[..end].to_owned();
    let upstream = if upstream.contains(':') {
        upstream
    } else {
        format!("{upstream}:5432")
    };
    SplitUrl {
        before_host: format!("{scheme}://{userinfo}"),
        after_host: hostpart[end..].to_owned(),
        upstream,
    }
}

/// `schema`'s database on the PostgreSQL server of the tests, reached
/// through `proxy` instead of directly.
pub fn postgres_through(proxy: &TcpProxy, schema: &str) -> String {
    let admin = url_without_host(&super::backends::postgres_admin_url());
    super::backends::with_search_path(
        &format!(
            "{}127.0.0.1:{}{}",
            admin.before_host, proxy.port, admin.after_host
        ),
        schema,
    )
}
