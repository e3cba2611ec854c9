//! The processes around a run: the proxy, socat and byte-relay children, CPU pinning, the open-file limit,
//! resident memory from `/proc`.

use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::LoadgenError;
use crate::token::Secret;

/// How long a spawned proxy or socat may take to start listening (under valgrind, seconds).
const READY_LIMIT: Duration = Duration::from_secs(60);

/// Logs to stderr, filtered by `LOADGEN_LOG` (default `info`, the simulator at `warn`): what
/// the binaries of this crate start with.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOADGEN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kubevirt_sim=warn")),
        )
        .init();
}

/// The single-threaded runtime the load runs on (client and upstream on one core).
pub fn load_runtime() -> Result<tokio::runtime::Runtime, LoadgenError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| LoadgenError::Spawn {
            program: "tokio runtime".to_owned(),
            source,
        })
}

/// Writes a report (`text`) to `path`.
pub fn write_report(path: &Path, text: &str) -> Result<(), LoadgenError> {
    std::fs::write(path, text).map_err(|source| LoadgenError::WriteReport {
        path: path.to_owned(),
        source,
    })
}

/// The resident set size of process `pid`, in bytes, from the `VmRSS` line of `/proc/PID/status`.
pub fn read_rss_bytes(pid: u32) -> Result<u64, LoadgenError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|source| LoadgenError::Rss { pid, source })?;
    parse_vm_rss(&status).ok_or_else(|| LoadgenError::Rss {
        pid,
        source: io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line in kB"),
    })
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?;
    let mut fields = line.split_whitespace();
    let kib: u64 = fields.next()?.parse().ok()?;
    (fields.next() == Some("kB")).then_some(kib * 1024)
}

/// CPU time process `pid` has used so far (user and system, all threads), from
/// `/proc/PID/stat` in clock ticks of `getconf CLK_TCK` (100 when that does not answer).
pub fn read_cpu_time(pid: u32) -> Result<Duration, LoadgenError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|source| LoadgenError::CpuTime { pid, source })?;
    let ticks = parse_cpu_ticks(&stat).ok_or_else(|| LoadgenError::CpuTime {
        pid,
        source: io::Error::new(io::ErrorKind::InvalidData, "no utime and stime fields"),
    })?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / clock_ticks_per_second() as f64,
    ))
}

/// utime + stime of a `/proc/PID/stat` line (fields 14 and 15; the command name in brackets may
/// contain spaces, so fields are counted after its closing bracket).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|ticks| *ticks > 0)
            .unwrap_or(100)
    })
}

/// Raises the soft open-file limit up to the hard limit; returns `(soft, hard)` afterwards.
pub fn raise_nofile_limit() -> Result<(u64, u64), LoadgenError> {
    rlimit::increase_nofile_limit(u64::MAX).map_err(LoadgenError::NofileLimit)?;
    rlimit::Resource::NOFILE
        .get()
        .map_err(LoadgenError::NofileLimit)
}

/// Pins the calling process to `cpu` with `taskset -p`.
///
/// Call it before starting any runtime: threads created afterwards inherit the affinity, threads
/// that exist already keep theirs.
pub fn pin_current_process(cpu: usize) -> Result<(), LoadgenError> {
    let status = Command::new("taskset")
        .args([
            "-p",
            "-c",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .map_err(|source| LoadgenError::Spawn {
            program: "taskset".to_owned(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(LoadgenError::HelperFailed {
            program: "taskset".to_owned(),
            status,
        })
    }
}

/// Whether `program` is found on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (bound, read and released; another process could take it first).
pub fn free_port() -> Result<u16, LoadgenError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let bind_error = |source| LoadgenError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = StdTcpListener::bind(addr).map_err(bind_error)?;
    Ok(listener.local_addr().map_err(bind_error)?.port())
}

/// A child process that is killed and reaped when this value is dropped.
#[derive(Debug)]
pub struct ChildProcess {
    name: &'static str,
    child: Child,
}

impl ChildProcess {
    /// The child's process id (with `taskset -c` in front, still the program's: taskset execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit; returns its exit status.
    pub async fn terminate(&mut self, limit: Duration) -> Result<ExitStatus, LoadgenError> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .map_err(|source| LoadgenError::Spawn {
                program: "kill".to_owned(),
                source,
            })?;
        if !status.success() {
            return Err(LoadgenError::HelperFailed {
                program: "kill".to_owned(),
                status,
            });
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(LoadgenError::DidNotExit {
                    program: self.name,
                    after: limit,
                });
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    fn spawn(name: &'static str, mut command: Command) -> Result<ChildProcess, LoadgenError> {
        let child = command.spawn().map_err(|source| LoadgenError::Spawn {
            program: name.to_owned(),
            source,
        })?;
        Ok(ChildProcess { name, child })
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Already-exited children make kill fail; either way, reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        tracing::debug!(program = self.name, "child stopped");
    }
}

/// `wrapper... program args...`, prefixed with `taskset -c CPU` when `cpu` is set. A wrapper
/// (e.g. `valgrind --tool=callgrind`) runs the program under it; empty runs it as it is.
fn pinned_command(
    wrapper: &[OsString],
    program: &Path,
    args: &[OsString],
    cpu: Option<usize>,
) -> Command {
    let mut words: Vec<OsString> = Vec::new();
    if let Some(cpu) = cpu {
        words.extend(["taskset".into(), "-c".into(), cpu.to_string().into()]);
    }
    words.extend(wrapper.iter().cloned());
    words.push(program.as_os_str().to_owned());
    let mut command = Command::new(&words[0]);
    command.args(&words[1..]).args(args);
    command
}

/// How to start the proxy binary.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxySpawn {
    /// Path of the `ws-proxy` binary.
    pub binary: PathBuf,
    /// Port it listens on (127.0.0.1).
    pub port: u16,
    /// The upstream base URL, e.g. `ws://127.0.0.1:9000` (its `WS_REMOTE_URL`).
    pub upstream_url: String,
    /// Its `SECRET_KEY`.
    pub secret: Secret,
    /// CPU to pin it to.
    pub cpu: Option<usize>,
    /// Extra environment, e.g. tuning knobs under test.
    pub extra_env: Vec<(String, String)>,
    /// Where its stdout and stderr go (discarded when `None`).
    pub log_file: Option<PathBuf>,
    /// A command to run it under, e.g. `valgrind --tool=callgrind` (empty: none).
    pub wrapper: Vec<OsString>,
}

impl ProxySpawn {
    /// Defaults for `binary` on `port` in front of `upstream_url`: not pinned, no extra env, no log.
    pub fn new(binary: PathBuf, port: u16, upstream_url: String, secret: Secret) -> ProxySpawn {
        ProxySpawn {
            binary,
            port,
            upstream_url,
            secret,
            cpu: None,
            extra_env: Vec::new(),
            log_file: None,
            wrapper: Vec::new(),
        }
    }

    /// Starts the proxy configured like the Python image (`SECRET_KEY`, `LOCAL_DEV_MODE=true`,
    /// `WS_REMOTE_URL`, `HOST=127.0.0.1`, `PORT`) and waits until `GET /healthz` answers 200.
    pub async fn start(&self) -> Result<ChildProcess, LoadgenError> {
        let mut command = pinned_command(&self.wrapper, &self.binary, &[], self.cpu);
        command
            .env("SECRET_KEY", self.secret.expose())
            .env("LOCAL_DEV_MODE", "true")
            .env("WS_REMOTE_URL", &self.upstream_url)
            .env("HOST", "127.0.0.1")
            .env("PORT", self.port.to_string())
            .envs(self.extra_env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null());
        match &self.log_file {
            Some(path) => {
                let log_error = |source| LoadgenError::WriteReport {
                    path: path.clone(),
                    source,
                };
                let file = std::fs::File::create(path).map_err(log_error)?;
                let copy = file.try_clone().map_err(log_error)?;
                command.stdout(file).stderr(copy);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let mut proxy = ChildProcess::spawn("ws-proxy", command)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + READY_LIMIT;
        while Instant::now() < deadline {
            if !proxy.is_running() {
                return Err(LoadgenError::ExitedBeforeReady {
                    program: "ws-proxy",
                });
            }
            if healthz_ok(addr).await {
                return Ok(proxy);
            }
            sleep(Duration::from_millis(50)).await;
        }
        Err(LoadgenError::NotReady {
            what: "proxy /healthz",
            after: READY_LIMIT,
        })
    }
}

/// Whether `GET /healthz` on `addr` answers with status 200 within a second.
pub async fn healthz_ok(addr: SocketAddr) -> bool {
    get_ok(addr, "/healthz", Duration::from_secs(1))
        .await
        .is_some()
}

/// The body of `GET path` on `addr` if it answers 200 within 5 s, or `None`.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    get_ok(addr, path, Duration::from_secs(5)).await
}

/// `GET path` on `addr` with `Connection: close`, read to the end within `limit`: the body if
/// the status is 200.
async fn get_ok(addr: SocketAddr, path: &str, limit: Duration) -> Option<String> {
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<Vec<u8>, io::Error>(response)
    };
    let response = timeout(limit, fetch).await.ok()?.ok()?;
    let text = String::from_utf8(response).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")).then(|| body.to_owned())
}

/// Starts `socat TCP-LISTEN:PORT,reuseaddr,fork,nodelay TCP:127.0.0.1:UPSTREAM,nodelay` (optionally
/// pinned to `cpu`) and waits until it accepts connections.
pub async fn start_socat(
    port: u16,
    upstream_port: u16,
    cpu: Option<usize>,
) -> Result<ChildProcess, LoadgenError> {
    let args = [
        OsString::from(format!(
            "TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay"
        )),
        OsString::from(format!("TCP:127.0.0.1:{upstream_port},nodelay")),
    ];
    start_relay_child(
        "socat",
        pinned_command(&[], Path::new("socat"), &args, cpu),
        port,
    )
    .await
}

/// Starts the `byte-relay` binary at `binary` (see [`crate::byte_relay`]) on `port` in front of
/// `upstream_port` (optionally pinned to `cpu`) and waits until it accepts connections.
pub async fn start_byte_relay(
    binary: &Path,
    port: u16,
    upstream_port: u16,
    cpu: Option<usize>,
) -> Result<ChildProcess, LoadgenError> {
    start_byte_relay_under(&[], binary, port, upstream_port, cpu).await
}

/// [`start_byte_relay`] under `wrapper` (e.g. `valgrind --tool=callgrind`).
pub async fn start_byte_relay_under(
    wrapper: &[OsString],
    binary: &Path,
    port: u16,
    upstream_port: u16,
    cpu: Option<usize>,
) -> Result<ChildProcess, LoadgenError> {
    let args = [
        OsString::from("--listen-port"),
        OsString::from(port.to_string()),
        OsString::from("--upstream-port"),
        OsString::from(upstream_port.to_string()),
    ];
    start_relay_child(
        "byte-relay",
        pinned_command(wrapper, binary, &args, cpu),
        port,
    )
    .await
}

/// Starts the Python original (`python -m lab_orchestrator_ws_proxy`, from a venv with
/// `lab-orchestrator-ws-proxy==1.0.0`) in dev mode on `port` in front of `upstream_url`, with its
/// image's environment, and waits until it accepts connections.
pub async fn start_python_original(
    python: &Path,
    port: u16,
    upstream_url: &str,
    secret: &Secret,
    cpu: Option<usize>,
) -> Result<ChildProcess, LoadgenError> {
    let args = [
        OsString::from("-m"),
        OsString::from("lab_orchestrator_ws_proxy"),
    ];
    let mut command = pinned_command(&[], python, &args, cpu);
    command
        .env("SECRET_KEY", secret.expose())
        .env("LOCAL_DEV_MODE", "true")
        .env("WS_REMOTE_URL", upstream_url)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        // Read even in dev mode; unused there.
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", "443");
    start_relay_child("python original", command, port).await
}

/// Starts websocat relaying every WebSocket connection on `port` to `upstream_url` (message by
/// message, binary) and waits until it accepts connections.
pub async fn start_websocat(
    binary: &Path,
    port: u16,
    upstream_url: &str,
    cpu: Option<usize>,
) -> Result<ChildProcess, LoadgenError> {
    let args = [
        OsString::from("--binary"),
        OsString::from("--exit-on-eof"),
        OsString::from(format!("ws-l:127.0.0.1:{port}")),
        OsString::from(upstream_url),
    ];
    start_relay_child("websocat", pinned_command(&[], binary, &args, cpu), port).await
}

/// Where `loadgen`'s sibling binary `byte-relay` is: next to the running executable.
pub fn sibling_byte_relay() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.join("byte-relay");
    candidate.is_file().then_some(candidate)
}

/// Spawns a relay `program` listening on `port` and waits until it accepts a connection.
///
/// The probe connection makes the relay dial the upstream once; the run waits for that to close.
async fn start_relay_child(
    name: &'static str,
    mut command: Command,
    port: u16,
) -> Result<ChildProcess, LoadgenError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut relay = ChildProcess::spawn(name, command)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + READY_LIMIT;
    while Instant::now() < deadline {
        if !relay.is_running() {
            return Err(LoadgenError::ExitedBeforeReady { program: name });
        }
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(relay);
        }
        sleep(Duration::from_millis(20)).await;
    }
    Err(LoadgenError::NotReady {
        what: name,
        after: READY_LIMIT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_line_is_parsed_in_bytes() {
        let status = "Name:\tws-proxy\nVmPeak:\t  9000 kB\nVmRSS:\t    4321 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(4321 * 1024));
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "4242 (ws proxy) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 31 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(281));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1"), None);
        assert!(read_cpu_time(std::process::id()).is_ok());
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(read_rss_bytes(std::process::id()).unwrap() > 0);
    }
}
