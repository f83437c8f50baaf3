//! A fake SMTP server for tests: speaks enough of RFC 5321 for lettre,
//! refuses the first `failures` messages with a transient 451, and records
//! the messages it accepts.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

#[derive(Default)]
struct State {
    failures_left: usize,
    refused: usize,
    accepted: Vec<Mail>,
}

pub struct SmtpServer {
    pub port: u16,
    state: Arc<Mutex<State>>,
    accept_loop: AbortHandle,
}

impl SmtpServer {
    pub async fn start(failures: usize) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            failures_left: failures,
            ..State::default()
        }));
        let shared = state.clone();
        let accept_loop = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = session(stream, state).await;
                });
            }
        })
        .abort_handle();
        SmtpServer {
            port,
            state,
            accept_loop,
        }
    }

    pub fn accepted(&self) -> Vec<Mail> {
        self.state.lock().unwrap().accepted.clone()
    }

    pub fn refused(&self) -> usize {
        self.state.lock().unwrap().refused
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn session(stream: tokio::net::TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 fake ESMTP\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            write.write_all(b"250-fake\r\n250 8BITMIME\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = line[10..].trim().to_owned();
            to.clear();
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(line[8..].trim().to_owned());
            write.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            write.write_all(b"354 go on\r\n").await?;
            let mut data = String::new();
            while let Some(line) = lines.next_line().await? {
                if line == "." {
                    break;
                }
                data.push_str(&line);
                data.push('\n');
            }
            let refuse = {
                let mut state = state.lock().unwrap();
                if state.failures_left > 0 {
                    state.failures_left -= 1;
                    state.refused += 1;
                    true
                } else {
                    state.accepted.push(Mail {
                        from: from.clone(),
                        to: to.clone(),
                        data,
                    });
                    false
                }
            };
            if refuse {
                write.write_all(b"451 try again later\r\n").await?;
            } else {
                write.write_all(b"250 queued\r\n").await?;
            }
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            write.write_all(b"250 OK\r\n").await?;
        } else {
            write.write_all(b"502 not implemented\r\n").await?;
        }
    }
    Ok(())
}
