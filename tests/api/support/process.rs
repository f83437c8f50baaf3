//! The `orderflow` binary as a separate process, as an operator runs it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a process may take to start or stop before the test fails.
const PROCESS_DEADLINE: Duration = Duration::from_secs(60);

pub fn orderflow_command(workdir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orderflow"));
    // A clean environment: only what the test sets reaches the engine.
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "ORDERFLOW_CONFIG_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        )
        .current_dir(workdir);
    cmd
}

pub struct EngineProcess {
    child: Child,
    pub address: String,
    stdout_lines: mpsc::Receiver<String>,
    stderr_lines: mpsc::Receiver<String>,
}

impl EngineProcess {
    /// Starts `orderflow serve` and waits for its "listening on" line.
    pub fn start(mut cmd: Command) -> EngineProcess {
        let mut child = cmd
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning orderflow");
        let (addr_tx, addr_rx) = mpsc::channel();
        let (out_tx, stdout_lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("orderflow listening on ") {
                    let _ = addr_tx.send(address.trim().to_owned());
                }
                let _ = out_tx.send(line);
            }
        });
        let (err_tx, stderr_lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let address = match addr_rx.recv_timeout(PROCESS_DEADLINE) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                let errors: Vec<String> = stderr_lines.try_iter().collect();
                panic!(
                    "orderflow did not start listening; stderr:\n{}",
                    errors.join("\n")
                );
            }
        };
        EngineProcess {
            child,
            address,
            stdout_lines,
            stderr_lines,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, waits for the process to exit, and returns its exit
    /// status with everything it wrote to stdout and stderr.
    pub fn terminate_and_collect(self) -> (ExitStatus, Vec<String>, Vec<String>) {
        self.signal_and_collect("-TERM")
    }

    /// Like [`EngineProcess::terminate_and_collect`], with SIGINT (Ctrl-C).
    pub fn interrupt_and_collect(self) -> (ExitStatus, Vec<String>, Vec<String>) {
        self.signal_and_collect("-INT")
    }

    fn signal_and_collect(mut self, signal: &str) -> (ExitStatus, Vec<String>, Vec<String>) {
        let status = self.signal_and_wait(signal);
        // The reader threads end at EOF, once the process is gone.
        let stdout = self.stdout_lines.iter().collect();
        let stderr = self.stderr_lines.iter().collect();
        (status, stdout, stderr)
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal_and_wait("-TERM")
    }

    fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} failed");
        self.wait()
    }

    fn wait(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for orderflow") {
                return status;
            }
            if started.elapsed() > PROCESS_DEADLINE {
                let _ = self.child.kill();
                panic!("orderflow did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr_so_far(&self) -> String {
        self.stderr_lines.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a one-shot command (`migrate`, `user create`) to completion.
pub fn run_to_completion(mut cmd: Command) -> (ExitStatus, String, String) {
    let output = cmd.output().expect("running orderflow");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls `check` until it returns true, failing the test after `deadline`.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// This test binary run again as a child process that executes only the
/// (ignored) test `name`: how crash and multi-process tests get real engine
/// processes. The child's stdout is piped; what it prints is its report.
pub fn worker_process(name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    cmd
}
