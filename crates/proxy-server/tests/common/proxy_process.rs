//! The real `ws-proxy` binary as a child process, its log lines collected.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{KubevirtUpstream, SECRET};

pub const BINARY: &str = env!("CARGO_BIN_EXE_ws-proxy");

/// A running `ws-proxy` whose stderr is collected line by line.
pub struct ProxyProcess {
    pub child: Child,
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    new_lines: mpsc::Receiver<String>,
}

impl ProxyProcess {
    /// Starts the binary in dev mode in front of `upstream` with the fixture secret and
    /// `extra` environment.
    pub fn start(upstream: &KubevirtUpstream, extra: &[(&str, &str)]) -> Self {
        Self::start_with(
            upstream,
            &[[("SECRET_KEY", SECRET)].as_slice(), extra].concat(),
        )
    }

    /// Starts the binary in dev mode in front of `upstream` with `extra` environment only.
    pub fn start_with(upstream: &KubevirtUpstream, extra: &[(&str, &str)]) -> Self {
        Self::start_with_url(&upstream.url(), extra)
    }

    /// Starts the binary in dev mode in front of the console server at `url` with `extra`
    /// environment only.
    pub fn start_with_url(url: &str, extra: &[(&str, &str)]) -> Self {
        Self::start_wrapped(&[], url, extra)
    }

    /// [`start_with_url`](Self::start_with_url) with the binary run by `wrapper` (a program
    /// that execs it, keeping the process id: `ip netns exec NAME`, `prlimit --nofile=N`).
    pub fn start_wrapped(wrapper: &[&str], url: &str, extra: &[(&str, &str)]) -> Self {
        let mut command = match wrapper.split_first() {
            None => Command::new(BINARY),
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(BINARY);
                command
            }
        };
        command
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("LOCAL_DEV_MODE", "yes")
            .env("WS_REMOTE_URL", url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in extra {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (sender, new_lines) = mpsc::channel();
        for output in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let (lines, sender) = (Arc::clone(&lines), sender.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines() {
                    let Ok(line) = line else { return };
                    lines.lock().unwrap().push(line.clone());
                    let _ = sender.send(line);
                }
            });
        }
        let mut process = Self {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            lines,
            new_lines,
        };
        let listening = process.wait_for_line("listening for console connections");
        process.addr = address_in(&listening);
        process
    }

    /// The admin listener's address (started with `WS_PROXY_ADMIN_ADDR=127.0.0.1:0`).
    pub fn admin_addr(&mut self) -> SocketAddr {
        address_in(&self.wait_for_line("listening for health and metrics requests"))
    }

    /// Waits (bounded) for a line containing `needle` and returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        if let Some(line) = self
            .lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
        {
            return line.clone();
        }
        loop {
            match self.new_lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!(
                    "no log line with {needle:?}; got:\n{}",
                    self.lines.lock().unwrap().join("\n")
                ),
            }
        }
    }

    pub fn send_sigterm(&self) {
        super::send_sigterm(&self.child);
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        super::wait_for_exit(&mut self.child, "ws-proxy")
    }

    /// Sends SIGTERM and waits (bounded, off the runtime's thread) for a clean exit.
    pub async fn stop_with_sigterm(mut self) {
        self.send_sigterm();
        let status = tokio::task::spawn_blocking(move || self.wait())
            .await
            .unwrap();
        assert!(status.success(), "{status:?}");
    }

    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `address` field of a log line.
fn address_in(line: &str) -> SocketAddr {
    line.split("address")
        .nth(1)
        .unwrap()
        .trim_start_matches(['=', '"', ':'])
        .split(['"', ' ', ','])
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
