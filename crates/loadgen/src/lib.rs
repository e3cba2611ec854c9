//! Load generator for ws-proxy: measures a WebSocket relay against a direct baseline and a raw
//! byte relay, in one run, and reports the ratios.
//!
//! A run starts its own upstream ([`UpstreamServer`]: the simulated KubeVirt API of
//! `kubevirt-sim`, one VM per [`Mode`], accepting `plain.kubevirt.io`), then plays the same scenarios against up to four
//! [`Target`]s, scenario by scenario:
//!
//! - **direct**: straight at the upstream, on KubeVirt's VNC path (the baseline);
//! - **socat**: through `socat TCP-LISTEN:P,bind=127.0.0.1,reuseaddr,fork,nodelay TCP:127.0.0.1:UPSTREAM,nodelay`,
//!   the floor any relay process pays (skipped with a note when `socat` is not installed);
//! - **byte relay**: through [`byte_relay`], a TCP byte relay on tokio with the proxy's read size
//!   and runtime but no framing, token or HTTP: what any relay built like the proxy reaches on
//!   this host (the `byte-relay` binary beside `loadgen`; skipped with a note when it is missing);
//! - **proxy**: through the proxy under test, at a URL template such as
//!   `ws://127.0.0.1:5001/{token}/{vmi}`, with an HS256 token minted for the run. The proxy is
//!   either spawned by the run (`ws-proxy` configured by environment, like the Python image) or
//!   already running.
//!
//! The upstream picks what to do per connection from the VM name (see [`Mode`]): `echo`, `sink`,
//! `sink-BYTES` (acknowledges the byte count) and `source-MSGSIZE-BYTES` (streams as fast as it
//! can). It counts open connections, so a run checks that no upstream connection outlives its
//! session, whichever side ended it.
//!
//! Scenarios ([`ScenarioConfig`]), each bounded in count and in time: idle sessions held open
//! (proxy RSS before/after, bytes per session), throughput in both directions (1 KiB and 64 KiB
//! messages, 1 and 8 sessions), round-trip latency of 16-byte messages (p50/p99/p99.9 at 1 and
//! 100 sessions), and session set-up rate (handshake with token, one echo, close; 1 and 16
//! loops). Throughput, latency and set-up are played in rounds (3 in the full configuration), every
//! target back to back in each round and the order rotated each round, so that a ratio compares
//! runs made seconds apart on a host whose speed drifts. The [`Report`] renders as a Markdown
//! table (per-target medians, then the proxy's ratio to each other column: the median of the
//! round-by-round ratios, with the lowest and highest round) and as JSON with every round's value
//! and every count behind the numbers.
//!
//! The `loadgen` binary wraps [`run`]: it raises the open-file limit, pins itself to one CPU and
//! the proxy and the relays to another (`taskset`), and writes the table and the JSON. See the crate's
//! `README.md` for the command lines.
//!
//! # Example
//!
//! A quick run against the direct path and a proxy binary, printing the table:
//!
//! ```no_run
//! use loadgen::{ProxyChoice, RunOptions, ScenarioConfig, Secret};
//!
//! # async fn example() -> Result<(), loadgen::LoadgenError> {
//! let mut options = RunOptions::new(ScenarioConfig::quick(), Secret::new("benchmark-secret"));
//! options.proxy = ProxyChoice::Spawn {
//!     binary: "target/release/ws-proxy".into(),
//!     extra_env: Vec::new(),
//!     log_file: None,
//! };
//! options.relay_cpu = Some(0);
//! let report = loadgen::run(&options).await?;
//! println!("{}", report.to_markdown());
//! # Ok(())
//! # }
//! ```
//!
//! Or drive the pieces directly, here the baseline only:
//!
//! ```no_run
//! use std::net::SocketAddr;
//!
//! use loadgen::{ScenarioConfig, Target, UpstreamServer};
//!
//! # async fn example() -> Result<(), loadgen::LoadgenError> {
//! let config = ScenarioConfig::quick();
//! let vms = config.vmi_names();
//! let upstream = UpstreamServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), &vms).await?;
//! let targets = [Target::direct(&upstream.base_url())];
//! let report = loadgen::run_scenarios(&upstream, &targets, &config).await;
//! assert_eq!(report.rows.last().and_then(|row| row.median.direct), Some(0.0)); // nothing left open
//! # Ok(())
//! # }
//! ```

pub mod byte_relay;
pub mod counts;
mod error;
pub mod process;
mod report;
mod scenario;
mod target;
mod token;
mod upstream;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use error::LoadgenError;
pub use report::{
    Metric, Outcome, PerTarget, Report, Row, ScenarioRecord, TargetInfo, Unit, median,
};
pub use scenario::{
    ClassStartCase, LatencyCase, RECORDED_MIXES, ScenarioConfig, SetupCase, SingleScenario,
    SteadyCase, ThroughputCase, TrafficMix, percentile, play_single, run_scenarios,
    run_scenarios_on,
};
pub use target::{ClientSocket, KUBEVIRT_VNC_PATH, Target, TargetKind, class_namespace};
pub use token::{Secret, mint_console_token};
pub use upstream::{KUBEVIRT_SUBPROTOCOL, Mode, UpstreamServer, UpstreamStats};

use process::{ProxySpawn, free_port, on_path, start_byte_relay, start_socat};

/// How long minted tokens stay valid: longer than any bounded run.
const TOKEN_LIFETIME: Duration = Duration::from_secs(6 * 3600);

/// Which proxy, if any, fills the proxy column.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum ProxyChoice {
    /// No proxy column.
    #[default]
    None,
    /// Spawn this `ws-proxy` binary on a free port in front of the run's upstream.
    Spawn {
        /// Path of the binary.
        binary: PathBuf,
        /// Extra environment (tuning knobs under test).
        extra_env: Vec<(String, String)>,
        /// Where its output goes (discarded when `None`).
        log_file: Option<PathBuf>,
    },
    /// A proxy already running (configured with the run's upstream port and secret).
    External {
        /// URL template, e.g. `ws://127.0.0.1:5001/{token}/{vmi}`.
        url_template: String,
        /// Its process id, for memory readings.
        pid: Option<u32>,
    },
}

/// The in-cluster proxy's upstream TLS handshakes by kind, from its `/metrics`.
async fn tls_handshake_note(proxy: SocketAddr) -> String {
    let Some(metrics) = process::http_get(proxy, "/metrics").await else {
        return "proxy in-cluster: /metrics did not answer; TLS handshakes not counted".to_owned();
    };
    let count = |kind: &str| {
        let prefix = format!("ws_proxy_upstream_tls_handshakes_total{{kind=\"{kind}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    format!(
        "proxy in-cluster: {} full and {} resumed TLS handshakes with the API server",
        count("full"),
        count("resumed")
    )
}

/// The API server and service-account files of the in-cluster column: a TLS simulator and a
/// directory with its CA and the token it expects (removed on drop).
struct InClusterPod {
    upstream: UpstreamServer,
    secrets_dir: PathBuf,
}

/// The service-account token the in-cluster simulator expects (a test value, not a secret).
const SERVICE_ACCOUNT_TOKEN: &str = "loadgen-service-account-token";

impl InClusterPod {
    async fn start(vmi_names: &[String]) -> Result<InClusterPod, LoadgenError> {
        let upstream = UpstreamServer::start_in_cluster(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            vmi_names,
            SERVICE_ACCOUNT_TOKEN,
        )
        .await?;
        let secrets_dir =
            std::env::temp_dir().join(format!("loadgen-serviceaccount-{}", std::process::id()));
        let write_error = |path: &std::path::Path| {
            let path = path.to_owned();
            move |source| LoadgenError::WriteReport { path, source }
        };
        std::fs::create_dir_all(&secrets_dir).map_err(write_error(&secrets_dir))?;
        let pod = InClusterPod {
            upstream,
            secrets_dir,
        };
        pod.upstream.write_ca(&pod.ca_file())?;
        std::fs::write(pod.token_file(), SERVICE_ACCOUNT_TOKEN)
            .map_err(write_error(&pod.token_file()))?;
        Ok(pod)
    }

    fn ca_file(&self) -> PathBuf {
        self.secrets_dir.join("ca.crt")
    }

    fn token_file(&self) -> PathBuf {
        self.secrets_dir.join("token")
    }

    /// The environment of a proxy in a pod in front of this API server.
    fn proxy_env(&self) -> Vec<(String, String)> {
        let port = self.upstream.local_addr().port();
        [
            ("LOCAL_DEV_MODE", "false".to_owned()),
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_owned()),
            ("KUBERNETES_SERVICE_PORT", port.to_string()),
            ("WS_PROXY_CA_FILE", self.ca_file().display().to_string()),
            (
                "WS_PROXY_TOKEN_FILE",
                self.token_file().display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }
}

impl Drop for InClusterPod {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.secrets_dir);
    }
}

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// The scenarios and their bounds.
    pub scenarios: ScenarioConfig,
    /// The HS256 secret tokens are signed with (the proxy's `SECRET_KEY`).
    pub secret: Secret,
    /// Upstream port on 127.0.0.1 (0: any free port; fix it for an external proxy).
    pub upstream_port: u16,
    /// Whether to run the direct baseline.
    pub direct: bool,
    /// Whether to run through socat (skipped with a note when it is not installed).
    pub socat: bool,
    /// The `byte-relay` binary to run through ([`byte_relay`]); `None` skips the column.
    pub byte_relay: Option<PathBuf>,
    /// The websocat binary for the websocat column (it relays every connection to the echo VM,
    /// so it plays the echo scenarios only: idle, latency, set-up); `None` skips the column.
    pub websocat: Option<PathBuf>,
    /// The Python interpreter of a venv with `lab-orchestrator-ws-proxy==1.0.0` for the "python
    /// original" column; `None` skips it.
    pub python_original: Option<PathBuf>,
    /// The proxy column.
    pub proxy: ProxyChoice,
    /// With a spawned proxy: also spawn a second one in the pod's shape (`wss://` upstream, CA
    /// and token files) in front of a TLS upstream of its own, for the in-cluster column.
    pub in_cluster: bool,
    /// CPU the proxy, socat and the byte relay are pinned to (`taskset -c`), if any.
    pub relay_cpu: Option<usize>,
    /// CPU the load itself was pinned to by the caller, recorded in the report's notes.
    pub load_cpu: Option<usize>,
}

impl RunOptions {
    /// Direct and socat columns, no byte relay, no proxy, no pinning, any upstream port.
    pub fn new(scenarios: ScenarioConfig, secret: Secret) -> RunOptions {
        RunOptions {
            scenarios,
            secret,
            upstream_port: 0,
            direct: true,
            socat: true,
            byte_relay: None,
            websocat: None,
            python_original: None,
            proxy: ProxyChoice::None,
            in_cluster: false,
            relay_cpu: None,
            load_cpu: None,
        }
    }
}

/// The run's token for every VM of the scenarios, when `template` has a `{token}` place.
fn run_token(options: &RunOptions, template: &str) -> Result<Option<Secret>, LoadgenError> {
    if !template.contains("{token}") {
        return Ok(None);
    }
    mint_console_token(
        &options.secret,
        &options.scenarios.namespace,
        &options.scenarios.vmi_names(),
        TOKEN_LIFETIME,
    )
    .map(Some)
}

/// One token per user of the largest class-start case (each for its own namespace), when
/// `template` has a `{token}` place.
fn user_tokens(options: &RunOptions, template: &str) -> Result<Vec<Secret>, LoadgenError> {
    if !template.contains("{token}") {
        return Ok(Vec::new());
    }
    let users = options
        .scenarios
        .class_start
        .iter()
        .map(|case| case.browsers)
        .max()
        .unwrap_or(0);
    (0..users)
        .map(|user| {
            mint_console_token(
                &options.secret,
                &class_namespace(user),
                &[Mode::Rfb.to_string()],
                TOKEN_LIFETIME,
            )
        })
        .collect()
}

/// Spawns `binary` on a free port in front of `upstream_url` with `env` on top of the dev-mode
/// environment; returns the child, its target (with the run's tokens) and its address.
async fn spawn_proxy_target(
    options: &RunOptions,
    binary: &std::path::Path,
    upstream_url: String,
    env: Vec<(String, String)>,
    log_file: Option<PathBuf>,
) -> Result<(process::ChildProcess, Target, SocketAddr), LoadgenError> {
    let port = free_port()?;
    let mut spawn = ProxySpawn::new(
        binary.to_owned(),
        port,
        upstream_url,
        options.secret.clone(),
    );
    spawn.cpu = options.relay_cpu;
    spawn.extra_env = env;
    spawn.log_file = log_file;
    let proxy = spawn.start().await?;
    let template = format!("ws://127.0.0.1:{port}/{{token}}/{{vmi}}");
    let target = Target::proxy(template.clone(), run_token(options, &template)?)
        .with_user_tokens(user_tokens(options, &template)?)
        .with_pid(proxy.pid());
    Ok((proxy, target, SocketAddr::from((Ipv4Addr::LOCALHOST, port))))
}

/// Starts the upstream (and socat, the byte relay and the proxy, as asked), plays every scenario against every
/// target and returns the report. Children are stopped before it returns.
pub async fn run(options: &RunOptions) -> Result<Report, LoadgenError> {
    let upstream = UpstreamServer::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, options.upstream_port)),
        &options.scenarios.vmi_names(),
    )
    .await?;
    let upstream_port = upstream.local_addr().port();
    let mut notes = Vec::new();
    let mut targets = Vec::new();
    if options.direct {
        targets.push(Target::direct(&upstream.base_url()));
    }

    let _socat = if !options.socat {
        None
    } else if on_path("socat") {
        let port = free_port()?;
        let socat = start_socat(port, upstream_port, options.relay_cpu).await?;
        targets.push(Target::socat(&format!("ws://127.0.0.1:{port}")).with_pid(socat.pid()));
        Some(socat)
    } else {
        notes.push(
            "socat is not installed: socat column skipped (apt-get install -y socat)".to_owned(),
        );
        None
    };

    let _byte_relay = match &options.byte_relay {
        None => None,
        Some(binary) => {
            let port = free_port()?;
            let relay = start_byte_relay(binary, port, upstream_port, options.relay_cpu).await?;
            targets
                .push(Target::byte_relay(&format!("ws://127.0.0.1:{port}")).with_pid(relay.pid()));
            Some(relay)
        }
    };

    let _websocat = match &options.websocat {
        None => None,
        Some(binary) => {
            let port = free_port()?;
            let echo = Target::direct(&upstream.base_url())
                .session_url(&options.scenarios.namespace, &Mode::Echo.to_string());
            let websocat =
                process::start_websocat(binary, port, echo.expose(), options.relay_cpu).await?;
            targets
                .push(Target::websocat(&format!("ws://127.0.0.1:{port}")).with_pid(websocat.pid()));
            notes.push(format!(
                "websocat: `{} --binary --exit-on-eof ws-l:127.0.0.1:{port} <the echo VM's URL>`; it \
                 relays every connection to one URL and checks no token, so it plays the echo \
                 scenarios only (idle, latency, set-up)",
                binary.display()
            ));
            Some(websocat)
        }
    };
    let _python_original = match &options.python_original {
        None => None,
        Some(python) => {
            let port = free_port()?;
            let original = process::start_python_original(
                python,
                port,
                &upstream.base_url(),
                &options.secret,
                options.relay_cpu,
            )
            .await?;
            let template = format!("ws://127.0.0.1:{port}/{{token}}/{{vmi}}");
            targets.push(
                Target::python_original(template.clone(), run_token(options, &template)?)
                    .with_user_tokens(user_tokens(options, &template)?)
                    .with_pid(original.pid()),
            );
            notes.push(format!(
                "python original: `{} -m lab_orchestrator_ws_proxy` (lab-orchestrator-ws-proxy 1.0.0 \
                 on lab-orchestrator-ws-proxy-lib 1.0.0, websockets 10) in dev mode",
                python.display()
            ));
            Some(original)
        }
    };
    let _proxy = match &options.proxy {
        ProxyChoice::None => None,
        ProxyChoice::Spawn {
            binary,
            extra_env,
            log_file,
        } => {
            let (proxy, target, _) = spawn_proxy_target(
                options,
                binary,
                upstream.base_url(),
                extra_env.clone(),
                log_file.clone(),
            )
            .await?;
            targets.push(target);
            Some(proxy)
        }
        ProxyChoice::External { url_template, pid } => {
            let mut target = Target::proxy(url_template.clone(), run_token(options, url_template)?)
                .with_user_tokens(user_tokens(options, url_template)?);
            if let Some(pid) = pid {
                target = target.with_pid(*pid);
            }
            targets.push(target);
            None
        }
    };
    let in_cluster = match (&options.proxy, options.in_cluster) {
        (
            ProxyChoice::Spawn {
                binary,
                extra_env,
                log_file,
            },
            true,
        ) => {
            let pod = InClusterPod::start(&options.scenarios.vmi_names()).await?;
            let mut env = pod.proxy_env();
            env.extend(extra_env.iter().cloned());
            let log_file = log_file
                .as_ref()
                .map(|path| path.with_extension("in-cluster.log"));
            let (proxy, target, addr) =
                spawn_proxy_target(options, binary, pod.upstream.base_url(), env, log_file).await?;
            targets.push(target.in_cluster());
            Some((pod, proxy, addr))
        }
        (_, true) => {
            notes.push(
                "the in-cluster column needs a spawned proxy (--proxy-bin): skipped".to_owned(),
            );
            None
        }
        (_, false) => None,
    };

    match (options.relay_cpu, options.load_cpu) {
        (Some(relay), Some(load)) => notes.push(format!(
            "proxy and every relay pinned to CPU {relay} (taskset -c {relay}); load and upstream pinned to CPU {load}"
        )),
        (Some(relay), None) => notes.push(format!("proxy and every relay pinned to CPU {relay}; load not pinned")),
        (None, Some(load)) => notes.push(format!("load and upstream pinned to CPU {load}; proxy and relays not pinned")),
        (None, None) => notes.push("no CPU pinning".to_owned()),
    }
    // The relays' readiness probes opened upstream connections; let them close before measuring.
    upstream
        .wait_until_idle(options.scenarios.settle_limit)
        .await;

    let mut upstreams = vec![&upstream];
    if let Some((pod, _, _)) = &in_cluster {
        pod.upstream
            .wait_until_idle(options.scenarios.settle_limit)
            .await;
        upstreams.push(&pod.upstream);
        notes.push(format!(
            "proxy in-cluster: LOCAL_DEV_MODE=false, wss://127.0.0.1:{} (a second simulator with TLS \
             and a bearer-token check) with WS_PROXY_CA_FILE and WS_PROXY_TOKEN_FILE, as in a pod",
            pod.upstream.local_addr().port()
        ));
    }
    let mut report = run_scenarios_on(&upstreams, &targets, &options.scenarios).await;
    let stats = upstream.stats();
    report.note(format!(
        "upstream: {} connections accepted, {} handshakes, {} offered {KUBEVIRT_SUBPROTOCOL}, \
         {} refused or abandoned before the handshake",
        stats.accepted, stats.handshakes, stats.subprotocol_offered, stats.rejected
    ));
    if let Some((_, _, addr)) = &in_cluster {
        report.note(tls_handshake_note(*addr).await);
    }
    for note in notes {
        report.note(note);
    }
    Ok(report)
}
