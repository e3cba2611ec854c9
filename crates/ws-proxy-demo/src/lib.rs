//! `ws-proxy-demo`: see a VM console through the proxy without a cluster.
//!
//! Test tooling, in its own crate so that the production `ws-proxy` binary links neither the
//! simulator nor its certificate generator (CI checks the production tree).
//!
//! Starts, in one process, the simulated KubeVirt API ([`kubevirt_sim`]) in in-cluster shape (TLS
//! with a freshly generated CA, a bearer token file, both in a temporary directory) with RFB test
//! consoles, and the proxy engine pointed at it exactly as in a pod (CA file + token file). It mints
//! a console token for the simulated VMs, prints the `ws://` console URLs and, when the noVNC
//! assets are installed (`npm ci --prefix e2e`), serves a small noVNC page over HTTP and prints a
//! link to paste into a browser. SIGINT (Ctrl-C) or SIGTERM stops everything.
//!
//! With `--page-only --proxy-url ws://127.0.0.1:5001 --secret S`, it starts no simulator and no
//! proxy: it serves only the noVNC page and prints, per `--vm`, a link that opens that VM through
//! a proxy already running (dev mode against `kubectl proxy`, or any other), with a token it
//! mints with the proxy's secret.
//!
//! ```no_run
//! use clap::Parser;
//! use ws_proxy_demo::{DemoArgs, DemoError, run_demo};
//!
//! #[derive(Parser)]
//! struct Demo {
//!     #[command(flatten)]
//!     args: DemoArgs,
//! }
//!
//! # async fn example() -> Result<(), DemoError> {
//! let demo = Demo::parse_from(["demo", "--listen", "127.0.0.1:0", "--vm", "ubuntu"]);
//! run_demo(&demo.args, proxy_server::shutdown_signal(), |banner| print!("{banner}")).await
//! # }
//! ```
use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kubevirt_sim::{KubevirtSim, SimConfig, SimError, VmBehavior};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use proxy_server::KubeVirtConnectorBuilder;
use proxy_server::proxy_auth::{self, Expiry, LabInstance, SigningKey};
use proxy_server::proxy_upstream;
use proxy_server::proxy_wire::{HeadError, read_request_head};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use proxy_server::cli::{EXIT_CONFIG, EXIT_RUNTIME, one_line, parse_duration};
use proxy_server::logging::{LogFormat, LoggingError};
use proxy_server::{BuildError, PathPrefix, WebsocketProxy};

/// The noVNC page: loads `./novnc/core/rfb.js` and connects to the `?url=` query parameter.
const NOVNC_PAGE: &str = include_str!("../page/index.html");

/// Where `npm ci --prefix e2e` installs noVNC, relative to the workspace root.
const NOVNC_PACKAGE_DIR: &str = "e2e/node_modules/@novnc/novnc";

/// The one command that installs the noVNC assets the demo page needs.
pub const NOVNC_INSTALL_COMMAND: &str = "npm ci --prefix e2e";

/// What must be escaped in a query parameter value (`:` and `/` may stay, keeping URLs readable).
const QUERY_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'>')
    .add(b'=')
    .add(b'`');

/// How long an HTTP client of the page server has to send its request head.
const PAGE_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head the page server reads.
const PAGE_MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most page requests served at once; more are dropped.
const PAGE_MAX_CONNECTIONS: usize = 64;
/// How long console sessions may continue after Ctrl-C before they are closed.
const DEMO_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The settings of `ws-proxy-demo`.
#[derive(Clone, clap::Args)]
#[non_exhaustive]
pub struct DemoArgs {
    /// Address the proxy listens on.
    #[arg(long, default_value = "127.0.0.1:5001")]
    pub listen: SocketAddr,
    /// Address of the noVNC page server. Default: the proxy's host and the next port (any free
    /// port when --listen uses port 0).
    #[arg(long)]
    pub page_listen: Option<SocketAddr>,
    /// URL prefix: console URLs become /{prefix}/{token}/{vmi}.
    #[arg(long)]
    pub prefix: Option<String>,
    /// HS256 secret the console token is signed with. Default: a random secret for this run.
    #[arg(long)]
    pub secret: Option<String>,
    /// How long the minted console token is valid (e.g. 30m, 1h, 2h).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub token_ttl: Duration,
    /// Simulated VMs (RFB test consoles), repeatable.
    #[arg(long = "vm", default_values = ["ubuntu", "kali"])]
    pub vms: Vec<String>,
    /// Namespace of the simulated VMs.
    #[arg(long, default_value = "demo-lab")]
    pub namespace: String,
    /// The noVNC package directory (with core/rfb.js). Default: e2e/node_modules/@novnc/novnc
    /// under the current directory or the workspace root.
    #[arg(long)]
    pub novnc_dir: Option<PathBuf>,
    /// Log level: Python names (CRITICAL, ERROR, WARNING, INFO, DEBUG) or numbers. RUST_LOG wins.
    #[arg(long, default_value = "INFO")]
    pub loglevel: String,
    /// Serve only the noVNC page, for a proxy already running at --proxy-url (needs --secret,
    /// the proxy's SECRET_KEY, to mint the tokens).
    #[arg(long, requires_all = ["proxy_url", "secret"])]
    pub page_only: bool,
    /// With --page-only: the running proxy's console base URL, e.g. ws://127.0.0.1:5001 (its
    /// --host-path-prefix goes in --prefix).
    #[arg(long, requires = "page_only")]
    pub proxy_url: Option<String>,
}

impl fmt::Debug for DemoArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoArgs")
            .field("listen", &self.listen)
            .field("page_listen", &self.page_listen)
            .field("prefix", &self.prefix)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("token_ttl", &self.token_ttl)
            .field("vms", &self.vms)
            .field("namespace", &self.namespace)
            .field("novnc_dir", &self.novnc_dir)
            .field("loglevel", &self.loglevel)
            .field("page_only", &self.page_only)
            .field("proxy_url", &self.proxy_url)
            .finish()
    }
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// Logging could not be set up.
    #[error("cannot set up logging")]
    Logging(#[source] LoggingError),
    /// `--novnc-dir` does not hold the noVNC package.
    #[error("--novnc-dir {0} has no core/rfb.js (install noVNC with `npm ci --prefix e2e`)")]
    NoVncMissing(PathBuf),
    /// No VM was asked for.
    #[error("at least one --vm is needed")]
    NoVms,
    /// `--page-only` serves noVNC, which is not installed.
    #[error(
        "--page-only serves the noVNC page, which is not installed: run `{NOVNC_INSTALL_COMMAND}` once"
    )]
    NoNoVnc,
    /// `--page-only` without the proxy to point at or the secret to mint with.
    #[error("--page-only needs --proxy-url (the running proxy) and --secret (its SECRET_KEY)")]
    PageOnlyNeedsProxy,
    /// The system's random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// The async runtime could not be started.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The temporary directory for the CA and token files could not be made.
    #[error("cannot create a temporary directory")]
    TempDir(#[source] std::io::Error),
    /// The simulated API's bearer token file could not be written.
    #[error("cannot write the bearer token file {path}")]
    WriteTokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The simulated KubeVirt API could not start or hand out its CA.
    #[error("cannot start the simulated KubeVirt API")]
    Simulator(#[source] SimError),
    /// The upstream connector settings were refused.
    #[error("invalid upstream settings")]
    Upstream(#[source] proxy_upstream::BuildError),
    /// The proxy could not be built.
    #[error("cannot build the proxy")]
    Proxy(#[source] BuildError),
    /// The signing secret was refused.
    #[error("invalid signing secret")]
    SigningKey(#[source] proxy_auth::KeyError),
    /// The console token could not be minted (for example an invalid VM or namespace name).
    #[error("cannot mint the console token")]
    Mint(#[source] proxy_auth::IssueError),
    /// A listener could not be bound.
    #[error("cannot listen on {address}")]
    Listen {
        /// The address asked for.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl DemoError {
    /// The process exit code for this error: [`EXIT_CONFIG`] for bad flags, else [`EXIT_RUNTIME`].
    pub fn exit_code(&self) -> u8 {
        match self {
            DemoError::NoVncMissing(_)
            | DemoError::NoVms
            | DemoError::NoNoVnc
            | DemoError::PageOnlyNeedsProxy
            | DemoError::SigningKey(_)
            | DemoError::Mint(_)
            | DemoError::Logging(_) => EXIT_CONFIG,
            _ => EXIT_RUNTIME,
        }
    }
}

/// Runs `ws-proxy-demo` until SIGINT or SIGTERM and returns the process exit code
/// (0 after a clean stop).
pub fn demo_main(args: &DemoArgs) -> std::process::ExitCode {
    let result = proxy_server::logging::init_logging(LogFormat::Text, &args.loglevel)
        .map_err(DemoError::Logging)
        .and_then(|()| proxy_server::build_runtime().map_err(DemoError::Runtime))
        .and_then(|runtime| {
            let announce = |banner: &str| {
                let mut stdout = std::io::stdout().lock();
                // A closed stdout only loses the banner; the demo keeps serving.
                let _ = stdout.write_all(banner.as_bytes());
                let _ = stdout.flush();
            };
            let shutdown = proxy_server::shutdown_signal();
            if args.page_only {
                runtime.block_on(run_page_only(args, shutdown, announce))
            } else {
                runtime.block_on(run_demo(args, shutdown, announce))
            }
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ws-proxy-demo: error: {}", one_line(&error));
            std::process::ExitCode::from(error.exit_code())
        }
    }
}

/// Starts the simulated API, the proxy and (with noVNC assets) the page server, hands the banner
/// text to `announce`, serves until `shutdown` resolves, then stops everything.
pub async fn run_demo(
    args: &DemoArgs,
    shutdown: impl Future<Output = ()> + Send,
    announce: impl FnOnce(&str),
) -> Result<(), DemoError> {
    if args.vms.is_empty() {
        return Err(DemoError::NoVms);
    }
    let novnc_dir = resolve_novnc_dir(args.novnc_dir.as_deref())?;
    let secret = match &args.secret {
        Some(secret) => secret.clone(),
        None => random_hex(32)?,
    };
    let token = mint_demo_token(args, &secret)?;

    let credentials = tempfile::Builder::new()
        .prefix("ws-proxy-demo-")
        .tempdir()
        .map_err(DemoError::TempDir)?;
    let token_file = credentials.path().join("token");
    let ca_file = credentials.path().join("ca.crt");
    std::fs::write(&token_file, random_hex(32)?).map_err(|source| DemoError::WriteTokenFile {
        path: token_file.clone(),
        source,
    })?;

    let sim_config = args.vms.iter().fold(
        SimConfig::new()
            .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
            .tls(true)
            .bearer_token_file(&token_file),
        |config, vm| config.vm_in_namespace(args.namespace.as_str(), vm, VmBehavior::Rfb),
    );
    let sim = KubevirtSim::start(sim_config)
        .await
        .map_err(DemoError::Simulator)?;
    sim.write_ca_pem(&ca_file).map_err(DemoError::Simulator)?;

    let upstream =
        KubeVirtConnectorBuilder::in_cluster_at("127.0.0.1", &sim.local_addr().port().to_string())
            .map_err(DemoError::Upstream)?
            .bearer_token_file(&token_file)
            .ca_file(&ca_file);
    let mut proxy_builder = WebsocketProxy::builder()
        .secret_key(secret)
        .upstream(upstream)
        .drain_timeout(DEMO_DRAIN_TIMEOUT);
    if let Some(prefix) = &args.prefix {
        proxy_builder = proxy_builder.host_path_prefix(prefix);
    }
    let proxy = proxy_builder.build().map_err(DemoError::Proxy)?;

    let proxy_listener = bind(args.listen).await?;
    let proxy_address = local_address(&proxy_listener, args.listen)?;
    let page = match novnc_dir {
        Some(dir) => {
            let requested = args.page_listen.unwrap_or_else(|| {
                let port = match args.listen.port() {
                    0 => 0,
                    port => port.checked_add(1).unwrap_or(0),
                };
                SocketAddr::new(args.listen.ip(), port)
            });
            let listener = bind(requested).await?;
            let address = local_address(&listener, requested)?;
            Some((listener, address, dir))
        }
        None => None,
    };

    let console_urls = console_urls(args, &format!("ws://{proxy_address}"), &token);

    let (stop_sender, stop_receiver) = watch::channel(false);
    let page_address = page.as_ref().map(|(_, address, _)| *address);
    let page_server = page.map(|(listener, _, dir)| {
        tokio::spawn(serve_page(listener, Arc::new(dir), stop_receiver.clone()))
    });

    announce(&banner(
        &args.namespace,
        &console_urls,
        &token,
        args.token_ttl,
        sim.local_addr(),
        page_address,
    ));

    let mut proxy_stop = stop_receiver.clone();
    let proxy_run = proxy.serve(proxy_listener, async move {
        let _ = proxy_stop.wait_for(|stopped| *stopped).await;
    });
    tokio::pin!(proxy_run);
    tokio::select! {
        () = shutdown => {
            tracing::info!("stopping the demo");
            let _ = stop_sender.send(true);
            proxy_run.await;
        }
        () = &mut proxy_run => {
            let _ = stop_sender.send(true);
        }
    }
    if let Some(page_server) = page_server {
        let _ = page_server.await;
    }
    sim.shutdown().await;
    drop(credentials);
    Ok(())
}

/// Serves only the noVNC page for the proxy at `--proxy-url`, hands the links (tokens minted with
/// `--secret` for each `--vm` in `--namespace`) to `announce`, and serves until `shutdown`.
pub async fn run_page_only(
    args: &DemoArgs,
    shutdown: impl Future<Output = ()> + Send,
    announce: impl FnOnce(&str),
) -> Result<(), DemoError> {
    if args.vms.is_empty() {
        return Err(DemoError::NoVms);
    }
    let novnc_dir = resolve_novnc_dir(args.novnc_dir.as_deref())?.ok_or(DemoError::NoNoVnc)?;
    let (Some(secret), Some(proxy_url)) = (&args.secret, &args.proxy_url) else {
        return Err(DemoError::PageOnlyNeedsProxy);
    };
    let token = mint_demo_token(args, secret)?;
    let requested = args
        .page_listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5002)));
    let listener = bind(requested).await?;
    let page_address = local_address(&listener, requested)?;
    let base = proxy_url.trim_end_matches('/');
    let console_urls = console_urls(args, base, &token);
    let mut text = format!(
        "\nThe noVNC page for the proxy at {base} is served on http://{page_address}; Ctrl-C \
         stops it. The tokens below are valid for {ttl}, for VMs {vms} in namespace {namespace}.\n",
        ttl = human_duration(args.token_ttl),
        vms = args.vms.join(", "),
        namespace = args.namespace,
    );
    text.push_str(&browser_links(&console_urls, &token, page_address));
    text.push('\n');
    let (stop_sender, stop_receiver) = watch::channel(false);
    let page_server = tokio::spawn(serve_page(listener, Arc::new(novnc_dir), stop_receiver));
    announce(&text);
    shutdown.await;
    let _ = stop_sender.send(true);
    let _ = page_server.await;
    Ok(())
}

/// A console token for `--vm`s in `--namespace`, valid for `--token-ttl`, signed with `secret`.
fn mint_demo_token(args: &DemoArgs, secret: &str) -> Result<String, DemoError> {
    let signing_key = SigningKey::hs256(secret).map_err(DemoError::SigningKey)?;
    let lab_instance = LabInstance::new(
        "demo-lab",
        "demo-lab-instance",
        args.namespace.as_str(),
        args.vms.iter().map(String::as_str),
    );
    proxy_auth::issue(
        "demo-user",
        lab_instance,
        Expiry::In(args.token_ttl),
        &signing_key,
    )
    .map_err(DemoError::Mint)
}

/// Each `--vm`'s console URLs at the proxy `base` (`ws://host:port`), behind `--prefix`.
fn console_urls(args: &DemoArgs, base: &str, token: &str) -> Vec<ConsoleUrls> {
    let prefix = args
        .prefix
        .as_deref()
        .map_or_else(PathPrefix::none, PathPrefix::new);
    args.vms
        .iter()
        .map(|vm| ConsoleUrls {
            vm: vm.clone(),
            with_token: format!("{base}{prefix}/{token}/{vm}"),
            without_token: format!("{base}{prefix}/{vm}"),
        })
        .collect()
}

/// One VM's console URLs: the Python original's, with the token in the path, and the one that
/// names only the VM (the token then travels in the bearer subprotocol).
struct ConsoleUrls {
    vm: String,
    with_token: String,
    without_token: String,
}

/// The text printed once everything listens.
fn banner(
    namespace: &str,
    console_urls: &[ConsoleUrls],
    token: &str,
    token_ttl: Duration,
    sim_address: SocketAddr,
    page_address: Option<SocketAddr>,
) -> String {
    let vm_names: Vec<&str> = console_urls.iter().map(|urls| urls.vm.as_str()).collect();
    let mut text = format!(
        "\nws-proxy-demo is running; Ctrl-C stops it.\n\
         Simulated KubeVirt API: https://{sim_address} (TLS with a demo CA, bearer token), \
         namespace {namespace}, VMs {vms}.\n\
         The console token below is valid for {ttl} and opens these VMs only.\n\n\
         VNC over WebSocket (open one in a VNC web client such as noVNC; no VNC password):\n",
        vms = vm_names.join(", "),
        ttl = human_duration(token_ttl),
    );
    for urls in console_urls {
        text.push_str(&format!("  {:<10} {}\n", urls.vm, urls.with_token));
    }
    text.push('\n');
    match page_address {
        Some(page_address) => text.push_str(&browser_links(console_urls, token, page_address)),
        None => text.push_str(&format!(
            "For a browser page with noVNC, install it once from the workspace root and run the \
             demo again:\n  {NOVNC_INSTALL_COMMAND}\n"
        )),
    }
    text.push('\n');
    text
}

/// The page links, one per VM: the token rides in the WebSocket subprotocol (the page reads it
/// from the fragment, which the browser never sends), not in the console URL.
fn browser_links(console_urls: &[ConsoleUrls], token: &str, page_address: SocketAddr) -> String {
    let mut text = String::from(
        "In a browser (noVNC page served by the demo; the token rides in the WebSocket \
         subprotocol, not in the console URL):\n",
    );
    for urls in console_urls {
        let query = utf8_percent_encode(&urls.without_token, QUERY_VALUE);
        text.push_str(&format!(
            "  {:<10} http://{page_address}/vnc.html?url={query}#token={token}\n",
            urls.vm
        ));
    }
    text
}

/// `1h`, `30m`, `90s` style, for the banner.
fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds > 0 && seconds.is_multiple_of(3600) {
        format!("{}h", seconds / 3600)
    } else if seconds > 0 && seconds.is_multiple_of(60) {
        format!("{}m", seconds / 60)
    } else {
        format!("{:?}", duration)
    }
}

/// The noVNC package directory to serve: the flag (which must hold `core/rfb.js`) or the first
/// default location that does; `None` when there is none.
fn resolve_novnc_dir(flag: Option<&Path>) -> Result<Option<PathBuf>, DemoError> {
    if let Some(dir) = flag {
        return if has_novnc(dir) {
            Ok(Some(dir.to_path_buf()))
        } else {
            Err(DemoError::NoVncMissing(dir.to_path_buf()))
        };
    }
    let workspace_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates = [
        std::env::current_dir()
            .ok()
            .map(|dir| dir.join(NOVNC_PACKAGE_DIR)),
        Some(workspace_root.join(NOVNC_PACKAGE_DIR)),
    ];
    Ok(candidates.into_iter().flatten().find(|dir| has_novnc(dir)))
}

fn has_novnc(dir: &Path) -> bool {
    dir.join("core").join("rfb.js").is_file()
}

/// `bytes` random bytes from the system generator, hex-encoded.
fn random_hex(bytes: usize) -> Result<String, DemoError> {
    let mut buffer = vec![0u8; bytes];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut buffer)
        .map_err(|_| DemoError::Random)?;
    Ok(buffer.iter().map(|byte| format!("{byte:02x}")).collect())
}

async fn bind(address: SocketAddr) -> Result<TcpListener, DemoError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| DemoError::Listen { address, source })
}

fn local_address(listener: &TcpListener, requested: SocketAddr) -> Result<SocketAddr, DemoError> {
    listener.local_addr().map_err(|source| DemoError::Listen {
        address: requested,
        source,
    })
}

/// Serves the noVNC page at `/` and `/vnc.html` and the noVNC package under `/novnc/` until
/// `stop` turns true.
async fn serve_page(
    listener: TcpListener,
    novnc_dir: Arc<PathBuf>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(PAGE_MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "page server: accept failed");
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let novnc_dir = Arc::clone(&novnc_dir);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                PAGE_REQUEST_TIMEOUT,
                answer_page_request(stream, &novnc_dir),
            )
            .await;
            drop(slot);
        });
    }
}

/// Reads one request head and answers it; the connection is closed afterwards.
async fn answer_page_request(mut stream: TcpStream, novnc_dir: &Path) -> std::io::Result<()> {
    let (method, target) = match read_request_head(&mut stream, PAGE_MAX_HEAD_BYTES).await {
        Ok((head, _)) => (head.method, head.target),
        Err(HeadError::Incomplete | HeadError::Io(_)) => return Ok(()),
        Err(_) => {
            return respond(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                b"bad request\n",
                true,
            )
            .await;
        }
    };
    let send_body = method == "GET";
    if !send_body && method != "HEAD" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n",
            true,
        )
        .await;
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if path == "/" || path == "/vnc.html" || path == "/index.html" {
        return respond(
            &mut stream,
            "200 OK",
            "text/html; charset=utf-8",
            NOVNC_PAGE.as_bytes(),
            send_body,
        )
        .await;
    }
    let file = path
        .strip_prefix("/novnc/")
        .and_then(|relative| safe_join(novnc_dir, relative));
    match file {
        Some(file) => match tokio::fs::read(&file).await {
            Ok(body) => respond(&mut stream, "200 OK", content_type(&file), &body, send_body).await,
            Err(_) => {
                respond(
                    &mut stream,
                    "404 Not Found",
                    "text/plain",
                    b"not found\n",
                    send_body,
                )
                .await
            }
        },
        None => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                b"not found\n",
                send_body,
            )
            .await
        }
    }
}

/// `base` joined with a URL path of plain segments; `None` for anything that could leave `base`
/// (`..`, `.`, empty segments, backslashes, percent escapes).
fn safe_join(base: &Path, relative: &str) -> Option<PathBuf> {
    let mut path = base.to_path_buf();
    for segment in relative.split('/') {
        let plain = !segment.is_empty()
            && segment != "."
            && segment != ".."
            && !segment.contains(['\\', '%', '\0', ':']);
        if !plain {
            return None;
        }
        path.push(segment);
    }
    Some(path)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|extension| extension.to_str()) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    send_body: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if send_body {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_join_keeps_paths_inside_the_base() {
        let base = Path::new("/srv/novnc");
        assert_eq!(
            safe_join(base, "core/rfb.js"),
            Some(PathBuf::from("/srv/novnc/core/rfb.js"))
        );
        for escape in [
            "../secret",
            "core/../../x",
            "core//rfb.js",
            "./core",
            "%2e%2e/x",
            "a\\b",
            "",
        ] {
            assert_eq!(safe_join(base, escape), None, "{escape}");
        }
    }

    #[test]
    fn es_modules_are_served_as_javascript() {
        assert!(content_type(Path::new("core/rfb.js")).starts_with("text/javascript"));
        assert_eq!(content_type(Path::new("x.bin")), "application/octet-stream");
    }

    fn ubuntu() -> Vec<ConsoleUrls> {
        vec![ConsoleUrls {
            vm: "ubuntu".to_owned(),
            with_token: "ws://127.0.0.1:5001/t/ubuntu".to_owned(),
            without_token: "ws://127.0.0.1:5001/ubuntu".to_owned(),
        }]
    }

    #[test]
    fn banner_without_novnc_names_the_install_command() {
        let text = banner(
            "demo-lab",
            &ubuntu(),
            "t",
            Duration::from_secs(3600),
            SocketAddr::from(([127, 0, 0, 1], 6443)),
            None,
        );
        assert!(text.contains("ws://127.0.0.1:5001/t/ubuntu"));
        assert!(text.contains(NOVNC_INSTALL_COMMAND));
        assert!(text.contains("valid for 1h"));
        assert!(!text.contains("http://"));
    }

    #[test]
    fn banner_with_novnc_links_the_page_with_the_encoded_url() {
        let text = banner(
            "demo-lab",
            &ubuntu(),
            "t",
            Duration::from_secs(1800),
            SocketAddr::from(([127, 0, 0, 1], 6443)),
            Some(SocketAddr::from(([127, 0, 0, 1], 5002))),
        );
        assert!(
            text.contains("http://127.0.0.1:5002/vnc.html?url=ws://127.0.0.1:5001/ubuntu#token=t")
        );
        assert!(text.contains("ws://127.0.0.1:5001/t/ubuntu"));
        assert!(!text.contains(NOVNC_INSTALL_COMMAND));
    }
}
