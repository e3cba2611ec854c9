//! The `ws-proxy` command line: flags with environment fallbacks (the Python image's names, and
//! `WS_PROXY_*` for settings it did not have), turned into a [`WebsocketProxy`].
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proxy_auth::{Algorithm, KeyFamily, VerificationKey, Verifier};
use proxy_core::{Keepalive, RelayConfig};
use proxy_upstream::{
    DEFAULT_API_PATH, DEFAULT_LOCAL_DEV_URL, DEFAULT_SUBPROTOCOL, KubeVirtConnectorBuilder,
    SERVICE_ACCOUNT_CA_PATH, SERVICE_ACCOUNT_TOKEN_PATH,
};
use proxy_wire::WireLimits;

use proxy_console::{RecordSessions, RecordingConfig};
use proxy_keys::{
    AdminToken, AdminTokenError, JwksUrl, KeyRing, KeyRingError, ServerTls, TlsFiles,
};
use proxy_share::ShareConfig;

use crate::config::{Limits, OriginAllowList, ServerConfig};
use crate::facade::{BuildError, WebsocketProxy};
use crate::logging::LogFormat;
use crate::path::PathPrefix;
use crate::reject::RejectStyle;
use crate::token_source::{TokenSource, TokenSources};
use proxy_control::store::{
    MemoryStateStore, OnOutage, RedisSettings, RedisSettingsError, RedisStateStore, SessionLimits,
    StateStore, StorePolicy,
};

/// Parses the command line into `T`, or exits with clap's message (exit code 2 for a bad
/// value). When the refused value came from an environment variable rather than a flag, the
/// message names the variable: the Python image is configured through the environment, and
/// "invalid value for '--local-dev-mode'" would send an operator looking for a flag nobody set.
pub fn parse_command_line<T: clap::Parser>() -> T {
    let error = match T::try_parse() {
        Ok(parsed) => return parsed,
        Err(error) => error,
    };
    let command = T::command();
    let Some(variable) = environment_source(&error, &command) else {
        error.exit()
    };
    let rendered = error.render().to_string();
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or_default();
    eprintln!("{first} (from the environment variable {variable})");
    for line in lines {
        eprintln!("{line}");
    }
    std::process::exit(error.exit_code())
}

/// The environment variable a refused value came from: the refused argument has one, it is
/// set, and its flag is not on the command line.
fn environment_source(error: &clap::Error, command: &clap::Command) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(invalid)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let argument = command.get_arguments().find(|argument| {
        argument
            .get_long()
            .is_some_and(|long| invalid.starts_with(&format!("--{long}")))
    })?;
    let variable = argument.get_env()?;
    std::env::var_os(variable)?;
    let flag = format!("--{}", argument.get_long()?);
    let on_command_line = std::env::args_os().any(|given| {
        given
            .to_str()
            .is_some_and(|given| given == flag || given.starts_with(&format!("{flag}=")))
    });
    (!on_command_line).then(|| variable.to_string_lossy().into_owned())
}

/// What `--help` says first: the one setting without a default, and a command that runs.
pub const MUST_SET: &str = "\
Set a token key: SECRET_KEY (the Python image's HS256 secret), or --secret-key-file,
--public-key-file, --jwks-file or --jwks-url. In a pod that is all (the Kubernetes API server
and the service account are found by themselves); outside a cluster add LOCAL_DEV_MODE=true to
reach `kubectl proxy` on ws://localhost:8001.

Example: SECRET_KEY=change-me LOCAL_DEV_MODE=true HOST=127.0.0.1 ws-proxy
         (consoles at ws://127.0.0.1:5001/{token}/{vmi}; every setting: docs/configuration.md)";

/// `--help` headings: the settings by topic, as `docs/configuration.md` explains them.
const HEADING_LISTENER: &str = "Listener and refusals";
const HEADING_TOKENS: &str = "Console tokens";
const HEADING_UPSTREAM: &str = "Upstream (KubeVirt API server)";
const HEADING_SESSIONS: &str = "Limits, timers and drain";
const HEADING_LOGGING: &str = "Logging";
const HEADING_RECORDING: &str = "Session recording";
const HEADING_OPERATORS: &str = "Admin API, per-user limits and the shared state store";
const HEADING_SHARING: &str = "Shared consoles";

/// Every setting of `ws-proxy serve`. Flags win over environment variables.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(help_heading = HEADING_LISTENER, long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Port to listen on.
    #[arg(help_heading = HEADING_LISTENER, long, env = "PORT", default_value_t = 5001)]
    pub port: u16,
    /// HS256 secret the tokens are signed with. Prefer --secret-key-file.
    #[arg(help_heading = HEADING_TOKENS, long, env = "SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// File holding the HS256 secret (trailing newline ignored).
    #[arg(help_heading = HEADING_TOKENS, long, env = "SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// PEM public key files (RSA, EC or Ed25519) for asymmetric tokens; comma-separated in the
    /// environment, repeatable as a flag.
    #[arg(
        help_heading = HEADING_TOKENS,
        long = "public-key-file",
        env = "WS_PROXY_PUBLIC_KEY_FILES",
        value_delimiter = ','
    )]
    pub public_key_files: Vec<PathBuf>,
    /// Accepted JWT algorithms, comma-separated (e.g. HS256,RS256). Default: HS256 for a secret,
    /// RS256 / ES256 / EdDSA for RSA / EC / Ed25519 public keys.
    #[arg(help_heading = HEADING_TOKENS, long, env = "WS_PROXY_ALGORITHMS", value_delimiter = ',')]
    pub algorithms: Vec<String>,
    /// A JWK Set file (RFC 7517: {"keys": [...]}, kty RSA, EC, OKP or oct) with verification
    /// keys; a token whose header names a `kid` is checked with that key only.
    #[arg(help_heading = HEADING_TOKENS, long, env = "WS_PROXY_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// An HTTPS URL serving a JWK Set (a lab backend's, an OIDC provider's `jwks_uri`), fetched
    /// at start, every --jwks-refresh-interval and when a token names an unknown `kid`.
    #[arg(help_heading = HEADING_TOKENS, long, env = "WS_PROXY_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// PEM CA certificates to check the JWK Set URL's server with (default: the system's).
    #[arg(help_heading = HEADING_TOKENS, long, env = "WS_PROXY_JWKS_CA_FILE")]
    pub jwks_ca_file: Option<PathBuf>,
    /// How often the JWK Set URL is fetched.
    #[arg(help_heading = HEADING_TOKENS, long, env = "WS_PROXY_JWKS_REFRESH_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub jwks_refresh_interval: Duration,
    /// The shortest time between two fetches for tokens with an unknown `kid` (such a token
    /// waits for the fetch, then is checked again).
    #[arg(help_heading = HEADING_TOKENS, long, env = "WS_PROXY_JWKS_MIN_REFETCH_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub jwks_min_refetch_interval: Duration,
    /// Where console tokens may come from, comma-separated: path (/{prefix}/{token}/{vmi}),
    /// subprotocol (Sec-WebSocket-Protocol `base64url.bearer.authorization.k8s.io.TOKEN`),
    /// header (Authorization: Bearer), cookie, query. Without a path token the console URL is
    /// /{prefix}/{vmi}. A token in two places is refused.
    #[arg(help_heading = HEADING_TOKENS, long, env = "WS_PROXY_TOKEN_SOURCES", value_delimiter = ',', default_value = "path,subprotocol,header")]
    pub token_sources: Vec<TokenSource>,
    /// The cookie that holds the token (with the cookie source).
    #[arg(help_heading = HEADING_TOKENS, long, env = "WS_PROXY_TOKEN_COOKIE", default_value = "ws_proxy_token")]
    pub token_cookie: String,
    /// The query parameter that holds the token (with the query source).
    #[arg(help_heading = HEADING_TOKENS, long, env = "WS_PROXY_TOKEN_QUERY_PARAM", default_value = "token")]
    pub token_query_param: String,
    /// Browser origins allowed to open consoles, comma-separated: exact
    /// (`https://lab.example.com`) or wildcard (`https://*.example.com`). A browser from another origin gets 403 "origin not
    /// allowed"; requests without an Origin header (not browsers) pass. Default: not checked.
    #[arg(help_heading = HEADING_TOKENS, long, env = "WS_PROXY_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Single-use tokens: a token must carry a `jti`, and it opens one session; a second use is
    /// refused with 401 "token already used" (remembered until the token expires).
    #[arg(
        help_heading = HEADING_TOKENS,
        long,
        env = "WS_PROXY_SINGLE_USE_TOKENS",
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_strtobool,
    )]
    pub single_use_tokens: bool,
    /// Record sessions (the VM's screen, in noVNC's playback format) into this existing
    /// directory. Default: nothing is recorded.
    #[arg(help_heading = HEADING_RECORDING, long, env = "WS_PROXY_RECORD_DIR")]
    pub record_dir: Option<PathBuf>,
    /// Which sessions are recorded: those whose token asks for it (`"console": {"record":
    /// true}`) or all.
    #[arg(help_heading = HEADING_RECORDING, long, env = "WS_PROXY_RECORD", value_enum, default_value = "token")]
    pub record: RecordSessions,
    /// The largest recording (bytes); the session goes on, its recording is closed as
    /// incomplete.
    #[arg(help_heading = HEADING_RECORDING, long, env = "WS_PROXY_RECORD_MAX_BYTES", default_value_t = RecordingConfig::new("").max_bytes)]
    pub record_max_bytes: u64,
    /// Recording stops (incomplete) when the directory has less free space (bytes).
    #[arg(help_heading = HEADING_RECORDING, long, env = "WS_PROXY_RECORD_MIN_FREE_BYTES", default_value_t = RecordingConfig::new("").min_free_bytes)]
    pub record_min_free_bytes: u64,
    /// Exams: refuse a session whose recording cannot start (503 "recording unavailable") and
    /// end one whose recording fails.
    #[arg(
        help_heading = HEADING_RECORDING,
        long,
        env = "WS_PROXY_RECORD_STRICT",
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_strtobool,
    )]
    pub record_strict: bool,
    /// Also record what the client sends, keystrokes included (they hold passwords).
    #[arg(
        help_heading = HEADING_RECORDING,
        long,
        env = "WS_PROXY_RECORD_CLIENT_INPUT",
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_strtobool,
    )]
    pub record_client_input: bool,
    /// Dev mode: plain ws:// to WS_REMOTE_URL (kubectl proxy), no TLS, no bearer token.
    /// Python strtobool words: y/yes/t/true/on/1, n/no/f/false/off/0.
    #[arg(
        help_heading = HEADING_UPSTREAM,
        long,
        env = "LOCAL_DEV_MODE",
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_strtobool,
    )]
    pub local_dev_mode: bool,
    /// Upstream base URL in dev mode.
    #[arg(help_heading = HEADING_UPSTREAM, long, env = "WS_REMOTE_URL", default_value = DEFAULT_LOCAL_DEV_URL)]
    pub remote_url: String,
    /// API server host in cluster mode (set by Kubernetes in every pod).
    #[arg(help_heading = HEADING_UPSTREAM, long, env = "KUBERNETES_SERVICE_HOST")]
    pub kubernetes_service_host: Option<String>,
    /// API server port in cluster mode (set by Kubernetes in every pod).
    #[arg(help_heading = HEADING_UPSTREAM, long, env = "KUBERNETES_SERVICE_PORT")]
    pub kubernetes_service_port: Option<String>,
    /// Service-account token file sent as bearer in cluster mode (re-read as it rotates).
    #[arg(help_heading = HEADING_UPSTREAM, long, env = "WS_PROXY_TOKEN_FILE", default_value = SERVICE_ACCOUNT_TOKEN_PATH)]
    pub token_file: PathBuf,
    /// CA bundle trusted for the API server in cluster mode.
    #[arg(help_heading = HEADING_UPSTREAM, long, env = "WS_PROXY_CA_FILE", default_value = SERVICE_ACCOUNT_CA_PATH)]
    pub ca_file: PathBuf,
    /// VNC subresource path template with {namespace} and {vmi_name}.
    #[arg(help_heading = HEADING_UPSTREAM, long, env = "WS_PROXY_API_PATH", default_value = DEFAULT_API_PATH)]
    pub api_path: String,
    /// Subprotocols offered to the upstream, comma-separated.
    #[arg(
        help_heading = HEADING_UPSTREAM,
        long,
        env = "WS_PROXY_UPSTREAM_SUBPROTOCOLS",
        value_delimiter = ',',
        default_value = DEFAULT_SUBPROTOCOL
    )]
    pub upstream_subprotocols: Vec<String>,
    /// Ask KubeVirt to refuse a console already in use instead of taking it over.
    #[arg(
        help_heading = HEADING_UPSTREAM,
        long,
        env = "WS_PROXY_PRESERVE_SESSION",
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_strtobool,
    )]
    pub preserve_session: bool,
    /// Limit for connecting TCP to the upstream.
    #[arg(help_heading = HEADING_UPSTREAM, long, env = "WS_PROXY_UPSTREAM_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub upstream_connect_timeout: Duration,
    /// Limit for the upstream TLS handshake.
    #[arg(help_heading = HEADING_UPSTREAM, long, env = "WS_PROXY_UPSTREAM_TLS_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub upstream_tls_timeout: Duration,
    /// Limit for the upstream's answer to the WebSocket upgrade.
    #[arg(help_heading = HEADING_UPSTREAM, long, env = "WS_PROXY_UPSTREAM_UPGRADE_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub upstream_upgrade_timeout: Duration,
    /// URL prefix: console URLs become /{prefix}/{token}/{vmi}. Slashes optional; several
    /// segments allowed (a/b).
    #[arg(help_heading = HEADING_LISTENER, long, env = "HOST_PATH_PREFIX")]
    pub host_path_prefix: Option<String>,
    /// How refused requests are answered: `auto` (browsers, i.e. requests with an Origin
    /// header, as `close`, other clients as `http`), `http` (status + one-line reason before the
    /// upgrade) or `close` (the Python original: upgrade, then close with 4xxx and its reasons).
    #[arg(
        help_heading = HEADING_LISTENER,
        long,
        env = "WS_PROXY_REJECT_STYLE",
        value_enum,
        default_value = "auto"
    )]
    pub reject_style: RejectStyleArg,
    /// Serve wss:// on the console port with this PEM certificate chain (with --tls-key-file);
    /// re-read when it changes. Without it the port serves ws:// (TLS at the ingress).
    #[arg(help_heading = HEADING_LISTENER, long, env = "WS_PROXY_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of --tls-cert-file.
    #[arg(help_heading = HEADING_LISTENER, long, env = "WS_PROXY_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Require client certificates signed by the CA in this PEM file (mutual TLS).
    #[arg(help_heading = HEADING_LISTENER, long, env = "WS_PROXY_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Serve /healthz, /readyz and /metrics on this separate address (e.g. 0.0.0.0:9090)
    /// instead of the main port.
    #[arg(help_heading = HEADING_LISTENER, long, env = "WS_PROXY_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Time a client has to send its request head.
    #[arg(help_heading = HEADING_SESSIONS, long, env = "WS_PROXY_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// Largest request head accepted (bytes).
    #[arg(help_heading = HEADING_SESSIONS, long, env = "WS_PROXY_MAX_HEADER_BYTES", default_value_t = Limits::default().max_header_bytes)]
    pub max_header_bytes: usize,
    /// Most concurrent console sessions (503 beyond).
    #[arg(help_heading = HEADING_SESSIONS, long, env = "WS_PROXY_MAX_SESSIONS", default_value_t = Limits::default().max_sessions)]
    pub max_sessions: usize,
    /// Most concurrent sessions of one user (the token's `id`), across replicas with
    /// --state-url; 429 "too many sessions for this user" beyond. Default: no limit.
    #[arg(help_heading = HEADING_OPERATORS, long, env = "WS_PROXY_MAX_SESSIONS_PER_USER")]
    pub max_sessions_per_user: Option<usize>,
    /// Most concurrent sessions of one lab instance; 429 beyond. Default: no limit.
    #[arg(help_heading = HEADING_OPERATORS, long, env = "WS_PROXY_MAX_SESSIONS_PER_LAB_INSTANCE")]
    pub max_sessions_per_lab_instance: Option<usize>,
    /// Most concurrent sessions of one VM (namespace/name); 429 beyond. Default: no limit.
    #[arg(help_heading = HEADING_OPERATORS, long, env = "WS_PROXY_MAX_SESSIONS_PER_VM")]
    pub max_sessions_per_vm: Option<usize>,
    /// File with the admin API's bearer token (at least 16 bytes; re-read when it changes).
    /// Turns on /api/v1/ on the admin listener (--admin-addr, required).
    #[arg(help_heading = HEADING_OPERATORS, long, env = "WS_PROXY_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Share sessions, limits, revocations and single-use tokens between replicas through
    /// Redis: redis://host:port[/db] or rediss://… Default: kept in this process.
    #[arg(help_heading = HEADING_OPERATORS, long, env = "WS_PROXY_STATE_URL")]
    pub state_url: Option<String>,
    /// PEM CA certificates for a rediss:// state URL (default: the system's).
    #[arg(help_heading = HEADING_OPERATORS, long, env = "WS_PROXY_STATE_CA_FILE")]
    pub state_ca_file: Option<PathBuf>,
    /// Redis ACL user name.
    #[arg(help_heading = HEADING_OPERATORS, long, env = "WS_PROXY_STATE_USERNAME")]
    pub state_username: Option<String>,
    /// File holding the Redis password.
    #[arg(help_heading = HEADING_OPERATORS, long, env = "WS_PROXY_STATE_PASSWORD_FILE")]
    pub state_password_file: Option<PathBuf>,
    /// Prefix of every Redis key of this deployment.
    #[arg(help_heading = HEADING_OPERATORS, long, env = "WS_PROXY_STATE_KEY_PREFIX", default_value = "ws-proxy:")]
    pub state_key_prefix: String,
    /// How long a session counts in the store without renewal (a dead replica's sessions
    /// stop counting after it); renewed every third of it.
    #[arg(help_heading = HEADING_OPERATORS, long, env = "WS_PROXY_STATE_LEASE", default_value = "15s", value_parser = parse_duration)]
    pub state_lease: Duration,
    /// Per-user / lab-instance / VM limits while the store is down: open (let sessions in) or
    /// closed (503).
    #[arg(help_heading = HEADING_OPERATORS, long, env = "WS_PROXY_STATE_OUTAGE_LIMITS", value_enum, default_value = "open")]
    pub state_outage_limits: OnOutage,
    /// Single-use tokens while the store is down: closed (503) or open (accept unchecked).
    #[arg(help_heading = HEADING_OPERATORS, long, env = "WS_PROXY_STATE_OUTAGE_SINGLE_USE", value_enum, default_value = "closed")]
    pub state_outage_single_use: OnOutage,
    /// Revocations while the store is down and the last copy is older than two leases:
    /// closed (503) or open (accept with the last copy).
    #[arg(help_heading = HEADING_OPERATORS, long, env = "WS_PROXY_STATE_OUTAGE_REVOCATIONS", value_enum, default_value = "closed")]
    pub state_outage_revocations: OnOutage,
    /// Shared consoles: every session of one VM on this replica joins one hub with one
    /// upstream connection, and the proxy speaks RFB to each viewer (an instructor can watch
    /// without taking the student's console). Off by default, as the Python original.
    #[arg(
        help_heading = HEADING_SHARING,
        long,
        env = "WS_PROXY_SHARE_CONSOLES",
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_strtobool,
    )]
    pub share_consoles: bool,
    /// How long a shared console keeps its upstream after the last viewer left.
    #[arg(help_heading = HEADING_SHARING, long, env = "WS_PROXY_SHARE_LINGER", default_value = "5s", value_parser = parse_duration)]
    pub share_linger: Duration,
    /// Most viewers of one shared console; 429 "too many viewers for this vm" beyond.
    #[arg(help_heading = HEADING_SHARING, long, env = "WS_PROXY_SHARE_MAX_VIEWERS", default_value_t = ShareConfig::default().max_viewers)]
    pub share_max_viewers: usize,
    /// File with the VNC password a shared console answers a VM's VNC authentication with
    /// (KubeVirt's consoles ask for none).
    #[arg(help_heading = HEADING_SHARING, long, env = "WS_PROXY_SHARE_VNC_PASSWORD_FILE")]
    pub share_vnc_password_file: Option<PathBuf>,
    /// This replica's name in session ids and the admin API. Default: HOSTNAME (the pod).
    #[arg(help_heading = HEADING_OPERATORS, long, env = "WS_PROXY_REPLICA_NAME")]
    pub replica_name: Option<String>,
    /// Largest WebSocket message, each direction (bytes).
    #[arg(help_heading = HEADING_SESSIONS, long, env = "WS_PROXY_MAX_MESSAGE_BYTES", default_value_t = Limits::default().max_message_bytes)]
    pub max_message_bytes: usize,
    /// How long sessions may continue after SIGTERM before being closed with 1001.
    #[arg(help_heading = HEADING_SESSIONS, long, env = "WS_PROXY_DRAIN_TIMEOUT", default_value = "25s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Ping the client after this much quiet (0 = no keepalive).
    #[arg(help_heading = HEADING_SESSIONS, long, env = "WS_PROXY_KEEPALIVE_INTERVAL", default_value = "20s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,
    /// Close the session when a keepalive ping is not answered within this.
    #[arg(help_heading = HEADING_SESSIONS, long, env = "WS_PROXY_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,
    /// Ping the upstream (the API server's VNC stream) after this much quiet, as the Python
    /// original's `websockets` client did; a console whose host vanished is noticed within
    /// interval + timeout (0 = off).
    #[arg(help_heading = HEADING_SESSIONS, long, env = "WS_PROXY_UPSTREAM_KEEPALIVE_INTERVAL", default_value = "20s", value_parser = parse_duration)]
    pub upstream_keepalive_interval: Duration,
    /// Close the session (1011 `upstream keepalive ping timeout` to the client) when the
    /// upstream does not answer a ping within this.
    #[arg(help_heading = HEADING_SESSIONS, long, env = "WS_PROXY_UPSTREAM_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub upstream_keepalive_timeout: Duration,
    /// End sessions without data in either direction for this long (0 = never).
    #[arg(help_heading = HEADING_SESSIONS, long, env = "WS_PROXY_IDLE_TIMEOUT", default_value = "0", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// End sessions after this long regardless of activity (0 = never).
    #[arg(help_heading = HEADING_SESSIONS, long, env = "WS_PROXY_MAX_SESSION_LIFETIME", default_value = "0", value_parser = parse_duration)]
    pub max_session_lifetime: Duration,
    /// How long a closing handshake may take before the connection is dropped.
    #[arg(help_heading = HEADING_SESSIONS, long, env = "WS_PROXY_CLOSE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub close_timeout: Duration,
    /// Close live sessions when their token expires (client: 4001 "token expired"). Off by
    /// default, as the Python original, which checks the token only when a session opens.
    #[arg(
        help_heading = HEADING_TOKENS,
        long,
        env = "WS_PROXY_CLOSE_ON_TOKEN_EXPIRY",
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_strtobool,
    )]
    pub close_on_token_expiry: bool,
    /// Accept permessage-deflate when a browser offers it: messages of 128 bytes or more are
    /// compressed one by one (no per-session compression state). On by default, as the Python
    /// original.
    #[arg(
        long,
        help_heading = HEADING_LISTENER,
        env = "WS_PROXY_PERMESSAGE_DEFLATE",
        default_value = "true",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_strtobool,
    )]
    pub permessage_deflate: bool,
    /// Log level: Python names (CRITICAL, ERROR, WARNING, INFO, DEBUG, NOTSET) or numbers.
    /// RUST_LOG, when set, takes precedence.
    #[arg(help_heading = HEADING_LOGGING, long, env = "LOGLEVEL", default_value = "INFO")]
    pub loglevel: String,
    /// Log line format.
    #[arg(help_heading = HEADING_LOGGING, long, env = "WS_PROXY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// The `--reject-style` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum RejectStyleArg {
    /// `close` for browsers (an Origin header), `http` for other clients.
    Auto,
    /// HTTP status and a one-line reason before the upgrade.
    Http,
    /// The Python original: upgrade, then a 4xxx close code and reason.
    Close,
}

/// A setting that is missing, contradictory or unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No token key at all.
    #[error("SECRET_KEY (or SECRET_KEY_FILE, public key files, a JWKS file or URL) is required")]
    NoTokenKey,
    /// Both ways of giving the secret were used.
    #[error("set only one of SECRET_KEY and SECRET_KEY_FILE")]
    TwoSecrets,
    /// The secret file could not be read.
    #[error("cannot read SECRET_KEY_FILE {path}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An algorithm name is unknown.
    #[error("unknown JWT algorithm {0:?}")]
    UnknownAlgorithm(String),
    /// A key could not be loaded.
    #[error("invalid token key")]
    Key(#[source] proxy_auth::KeyError),
    /// Keys and algorithms do not fit together.
    #[error("invalid token verification settings")]
    Verifier(#[source] proxy_auth::ConfigError),
    /// Cluster mode without the Kubernetes service variables.
    #[error(
        "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are required unless LOCAL_DEV_MODE is set"
    )]
    NoKubernetesService,
    /// A TLS certificate without a key, a key without a certificate, or a client CA without both.
    #[error(
        "WS_PROXY_TLS_CERT_FILE and WS_PROXY_TLS_KEY_FILE go together (and a client CA needs both)"
    )]
    TlsIncomplete,
    /// The TLS certificate, key or client CA is unusable.
    #[error("cannot serve TLS")]
    Tls(#[source] proxy_keys::TlsError),
    /// The recordings directory does not exist.
    #[error("WS_PROXY_RECORD_DIR {} is not a directory", .0.display())]
    RecordDir(PathBuf),
    /// The JWKS URL settings are unusable.
    #[error("invalid WS_PROXY_JWKS_URL settings")]
    JwksUrl(#[source] proxy_keys::JwksUrlError),
    /// The JWKS URL could not be fetched at start.
    #[error("cannot load the token keys")]
    KeyRing(#[source] Box<KeyRingError<ConfigError>>),
    /// The proxy rejected the settings.
    #[error("invalid settings")]
    Build(#[source] BuildError),
    /// Dev mode's upstream URL is unusable.
    #[error(
        "invalid WS_REMOTE_URL {url:?} (dev mode dials e.g. ws://localhost:8001, `kubectl proxy`)"
    )]
    RemoteUrl {
        /// The URL as given.
        url: String,
        /// Why.
        #[source]
        source: proxy_upstream::RemoteUrlError,
    },
    /// `SECRET_KEY` (or the secret file) is there but empty.
    #[error("{0} is empty: set it to the secret the console tokens are signed with")]
    EmptySecret(String),
    /// Shared sessions are not recorded: asking for both would lose recordings silently.
    #[error(
        "WS_PROXY_SHARE_CONSOLES and WS_PROXY_RECORD_DIR do not go together: shared sessions are not recorded"
    )]
    SharingWithRecording,
    /// The shared consoles' VNC password file could not be read.
    #[error("cannot read WS_PROXY_SHARE_VNC_PASSWORD_FILE {}", path.display())]
    VncPasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The admin API needs its own listener: it never shares the console port.
    #[error(
        "WS_PROXY_ADMIN_TOKEN_FILE needs WS_PROXY_ADMIN_ADDR (the admin API is never served on the console port)"
    )]
    AdminApiWithoutAdminListener,
    /// The admin token file is unusable.
    #[error("invalid admin token")]
    AdminToken(#[source] AdminTokenError),
    /// The state store settings are unusable.
    #[error("invalid state store settings")]
    StateStore(#[source] RedisSettingsError),
}

/// Parses Python's `distutils.util.strtobool` words, in any case.
pub fn parse_strtobool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "t" | "true" | "on" | "1" => Ok(true),
        "n" | "no" | "f" | "false" | "off" | "0" => Ok(false),
        other => Err(format!(
            "{other:?} is not a truth value (y, yes, t, true, on, 1, n, no, f, false, off, 0)"
        )),
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h` or a bare number of seconds (`0` turns optional timers off).
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a duration (like 500ms, 10s, 2m, 1h)"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{value:?} is out of range"))
}

fn optional(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

impl ServeArgs {
    /// The `host:port` to listen on.
    pub fn listen_address(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// The token keys from the secret, public key and JWKS settings, re-read as their files
    /// change and fetched again from the JWKS URL (a secret given directly in `SECRET_KEY`
    /// cannot change).
    pub fn key_ring(&self) -> Result<KeyRing, ConfigError> {
        let files: Vec<PathBuf> = self
            .secret_key_file
            .iter()
            .chain(&self.public_key_files)
            .chain(&self.jwks_file)
            .cloned()
            .collect();
        let args = self.clone();
        KeyRing::from_sources(files, self.jwks_url()?, move |fetched| {
            args.verifier_with(fetched)
        })
        .map_err(|error| match error {
            KeyRingError::Load(error) => error,
            other => ConfigError::KeyRing(Box::new(other)),
        })
    }

    /// The JWK Set URL settings, if a URL is set.
    pub fn jwks_url(&self) -> Result<Option<JwksUrl>, ConfigError> {
        let Some(url) = &self.jwks_url else {
            return Ok(None);
        };
        let mut url = JwksUrl::parse(url)
            .and_then(|url| url.refresh_interval(self.jwks_refresh_interval))
            .and_then(|url| url.min_refetch_interval(self.jwks_min_refetch_interval))
            .map_err(ConfigError::JwksUrl)?;
        if let Some(path) = &self.jwks_ca_file {
            url = url.ca_file(path);
        }
        Ok(Some(url))
    }

    /// Builds the token verifier from the secret, public key and JWKS file settings.
    pub fn verifier(&self) -> Result<Verifier, ConfigError> {
        self.verifier_with(&[])
    }

    /// Builds the token verifier from the key settings and keys `fetched` from the JWKS URL.
    pub fn verifier_with(&self, fetched: &[VerificationKey]) -> Result<Verifier, ConfigError> {
        let secret = match (&self.secret_key, &self.secret_key_file) {
            (Some(_), Some(_)) => return Err(ConfigError::TwoSecrets),
            (Some(secret), None) if secret.is_empty() => {
                return Err(ConfigError::EmptySecret("SECRET_KEY".to_owned()));
            }
            (Some(secret), None) => Some(secret.clone()),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                        path: path.clone(),
                        source,
                    })?;
                let secret = text.trim_end_matches(['\r', '\n']);
                if secret.is_empty() {
                    return Err(ConfigError::EmptySecret(format!(
                        "SECRET_KEY_FILE {}",
                        path.display()
                    )));
                }
                Some(secret.to_owned())
            }
            (None, None) => None,
        };
        let mut keys = Vec::new();
        if let Some(secret) = secret {
            keys.push(VerificationKey::hmac_secret(secret.as_bytes()).map_err(ConfigError::Key)?);
        }
        for path in &self.public_key_files {
            keys.push(VerificationKey::from_public_key_file(path).map_err(ConfigError::Key)?);
        }
        if let Some(path) = &self.jwks_file {
            keys.extend(VerificationKey::from_jwk_set_file(path).map_err(ConfigError::Key)?);
        }
        keys.extend(fetched.iter().cloned());
        if keys.is_empty() {
            return Err(ConfigError::NoTokenKey);
        }
        let algorithms = if self.algorithms.is_empty() {
            let mut defaults = Vec::new();
            for key in &keys {
                let algorithm = match key.family() {
                    KeyFamily::Hmac => Algorithm::HS256,
                    KeyFamily::Rsa => Algorithm::RS256,
                    KeyFamily::Ec => Algorithm::ES256,
                    _ => Algorithm::EdDSA,
                };
                if !defaults.contains(&algorithm) {
                    defaults.push(algorithm);
                }
            }
            defaults
        } else {
            self.algorithms
                .iter()
                .map(|name| {
                    name.trim()
                        .parse::<Algorithm>()
                        .map_err(|_| ConfigError::UnknownAlgorithm(name.clone()))
                })
                .collect::<Result<_, _>>()?
        };
        keys.into_iter()
            .fold(Verifier::builder(), |builder, key| builder.key(key))
            .algorithms(algorithms)
            .build()
            .map_err(ConfigError::Verifier)
    }

    /// Builds the upstream connector settings (dev mode or in cluster).
    pub fn upstream(&self) -> Result<KubeVirtConnectorBuilder, ConfigError> {
        let builder = if self.local_dev_mode {
            KubeVirtConnectorBuilder::local_dev().remote_url(&self.remote_url)
        } else {
            let (Some(host), Some(port)) =
                (&self.kubernetes_service_host, &self.kubernetes_service_port)
            else {
                return Err(ConfigError::NoKubernetesService);
            };
            KubeVirtConnectorBuilder::in_cluster_at(host, port)
                .map_err(|error| ConfigError::Build(BuildError::Upstream(error)))?
                .bearer_token_file(&self.token_file)
                .ca_file(&self.ca_file)
        };
        Ok(builder
            .api_path(&self.api_path)
            .subprotocols(
                self.upstream_subprotocols
                    .iter()
                    .map(|p| p.trim().to_owned()),
            )
            .preserve_session(self.preserve_session)
            .connect_timeout(self.upstream_connect_timeout)
            .tls_handshake_timeout(self.upstream_tls_timeout)
            .upgrade_timeout(self.upstream_upgrade_timeout)
            .limits(WireLimits::max_message(self.max_message_bytes)))
    }

    /// The console port's TLS, when its files are given (read once here: an unusable pair is a
    /// configuration error at start).
    pub fn server_tls(&self) -> Result<Option<ServerTls>, ConfigError> {
        match (
            &self.tls_cert_file,
            &self.tls_key_file,
            &self.tls_client_ca_file,
        ) {
            (None, None, None) => Ok(None),
            (Some(certificate), Some(private_key), client_ca) => ServerTls::load(TlsFiles {
                certificate: certificate.clone(),
                private_key: private_key.clone(),
                client_ca: client_ca.clone(),
            })
            .map(Some)
            .map_err(ConfigError::Tls),
            _ => Err(ConfigError::TlsIncomplete),
        }
    }

    /// The front's settings.
    pub fn server_config(&self) -> Result<ServerConfig, ConfigError> {
        Ok(ServerConfig {
            path_prefix: self
                .host_path_prefix
                .as_deref()
                .map_or_else(PathPrefix::none, PathPrefix::new),
            reject_style: match self.reject_style {
                RejectStyleArg::Auto => RejectStyle::Auto,
                RejectStyleArg::Http => RejectStyle::HttpStatus,
                RejectStyleArg::Close => RejectStyle::CloseFrame,
            },
            limits: Limits {
                handshake_timeout: self.handshake_timeout,
                max_header_bytes: self.max_header_bytes,
                max_sessions: self.max_sessions,
                max_message_bytes: self.max_message_bytes,
            },
            relay: RelayConfig {
                keepalive: optional(self.keepalive_interval).map(|interval| Keepalive {
                    interval,
                    timeout: self.keepalive_timeout,
                }),
                upstream_keepalive: optional(self.upstream_keepalive_interval).map(|interval| {
                    Keepalive {
                        interval,
                        timeout: self.upstream_keepalive_timeout,
                    }
                }),
                idle_timeout: optional(self.idle_timeout),
                max_lifetime: optional(self.max_session_lifetime),
                deadline: None,
                close_timeout: self.close_timeout,
            },
            drain_timeout: self.drain_timeout,
            admin_on_main_port: self.admin_addr.is_none(),
            close_on_token_expiry: self.close_on_token_expiry,
            permessage_deflate: self.permessage_deflate,
            tls: self.server_tls()?.map(Arc::new),
            token_sources: TokenSources {
                enabled: self.token_sources.clone(),
                cookie_name: self.token_cookie.clone(),
                query_name: self.token_query_param.clone(),
            },
            allowed_origins: (!self.allowed_origins.is_empty())
                .then(|| OriginAllowList::new(&self.allowed_origins)),
            single_use_tokens: self.single_use_tokens,
            state: self.state_store()?,
            store_policy: StorePolicy {
                lease: self.state_lease.max(Duration::from_secs(3)),
                limits: self.state_outage_limits,
                single_use: self.state_outage_single_use,
                revocations: self.state_outage_revocations,
            },
            session_limits: SessionLimits {
                per_user: self.max_sessions_per_user,
                per_lab_instance: self.max_sessions_per_lab_instance,
                per_vm: self.max_sessions_per_vm,
            },
            admin_token: self.admin_token()?.map(Arc::new),
            replica: self
                .replica_name
                .clone()
                .unwrap_or_else(proxy_control::replica_name),
            share_consoles: self.share_config()?,
            recording: self.recording()?.map(Arc::new),
        })
    }

    /// The shared consoles' settings, when they are on (the VNC password file is read now).
    pub fn share_config(&self) -> Result<Option<ShareConfig>, ConfigError> {
        if !self.share_consoles {
            return Ok(None);
        }
        if self.record_dir.is_some() {
            return Err(ConfigError::SharingWithRecording);
        }
        let upstream_password = match &self.share_vnc_password_file {
            None => None,
            Some(path) => {
                let text = std::fs::read(path).map_err(|source| ConfigError::VncPasswordFile {
                    path: path.clone(),
                    source,
                })?;
                Some(text.trim_ascii_end().to_vec().into())
            }
        };
        Ok(Some(ShareConfig {
            linger: self.share_linger,
            max_viewers: self.share_max_viewers.max(1),
            upstream_password,
            upstream_keepalive: optional(self.upstream_keepalive_interval).map(|interval| {
                Keepalive {
                    interval,
                    timeout: self.upstream_keepalive_timeout,
                }
            }),
        }))
    }

    /// The shared state store: Redis with --state-url, else this process's memory.
    pub fn state_store(&self) -> Result<Arc<dyn StateStore>, ConfigError> {
        let Some(url) = &self.state_url else {
            return Ok(Arc::new(MemoryStateStore::default()));
        };
        let settings = RedisSettings {
            ca_file: self.state_ca_file.clone(),
            username: self.state_username.clone(),
            password_file: self.state_password_file.clone(),
            key_prefix: self.state_key_prefix.clone(),
            ..RedisSettings::new(url)
        };
        Ok(Arc::new(
            RedisStateStore::new(&settings).map_err(ConfigError::StateStore)?,
        ))
    }

    /// The admin API token, if a file is given (it needs the admin listener).
    pub fn admin_token(&self) -> Result<Option<AdminToken>, ConfigError> {
        let Some(path) = &self.admin_token_file else {
            return Ok(None);
        };
        if self.admin_addr.is_none() {
            return Err(ConfigError::AdminApiWithoutAdminListener);
        }
        AdminToken::from_file(path)
            .map(Some)
            .map_err(ConfigError::AdminToken)
    }

    /// The recording settings, if a directory is set (it must exist).
    pub fn recording(&self) -> Result<Option<RecordingConfig>, ConfigError> {
        let Some(directory) = &self.record_dir else {
            return Ok(None);
        };
        if !directory.is_dir() {
            return Err(ConfigError::RecordDir(directory.clone()));
        }
        Ok(Some(RecordingConfig {
            sessions: self.record,
            max_bytes: self.record_max_bytes,
            min_free_bytes: self.record_min_free_bytes,
            strict: self.record_strict,
            client_messages: self.record_client_input,
            ..RecordingConfig::new(directory)
        }))
    }

    /// Builds the proxy: keys loaded, credential files read, every setting checked.
    pub fn build(&self) -> Result<WebsocketProxy, ConfigError> {
        WebsocketProxy::builder()
            .key_ring(self.key_ring()?)
            .upstream(self.upstream()?)
            .server_config(self.server_config()?)
            .build()
            .map_err(|error| match error {
                BuildError::Upstream(proxy_upstream::BuildError::RemoteUrl(source))
                    if self.local_dev_mode =>
                {
                    ConfigError::RemoteUrl {
                        url: self.remote_url.clone(),
                        source,
                    }
                }
                other => ConfigError::Build(other),
            })
    }

    /// The effective settings as one log-friendly line: no secret, only whether one is set.
    pub fn summary(&self) -> String {
        let upstream = if self.local_dev_mode {
            format!("dev mode {}", self.remote_url)
        } else {
            format!(
                "in cluster {}:{}",
                self.kubernetes_service_host.as_deref().unwrap_or("?"),
                self.kubernetes_service_port.as_deref().unwrap_or("?")
            )
        };
        format!(
            "listen {}:{}, upstream {upstream}, api_path {}, host_path_prefix {:?}, \
             secret {}, public keys {}, jwks {}, algorithms {}, reject style {:?}, admin {}, \
             max sessions {}, handshake timeout {:?}, drain timeout {:?}, keepalive {:?}, \
             close on token expiry {}, tls {}, token sources {}, allowed origins {}, recording {}",
            self.host,
            self.port,
            self.api_path,
            self.host_path_prefix.as_deref().unwrap_or(""),
            if self.secret_key.is_some() || self.secret_key_file.is_some() {
                "set"
            } else {
                "not set"
            },
            self.public_key_files.len(),
            match (&self.jwks_file, &self.jwks_url) {
                (None, None) => "none".to_owned(),
                (Some(file), None) => file.display().to_string(),
                (None, Some(url)) => url.clone(),
                (Some(file), Some(url)) => format!("{} and {url}", file.display()),
            },
            if self.algorithms.is_empty() {
                "by key type".to_owned()
            } else {
                self.algorithms.join(",")
            },
            self.reject_style,
            self.admin_addr
                .map_or_else(|| "on the main port".to_owned(), |a| a.to_string()),
            self.max_sessions,
            self.handshake_timeout,
            self.drain_timeout,
            self.keepalive_interval,
            self.close_on_token_expiry,
            match (&self.tls_cert_file, &self.tls_client_ca_file) {
                (None, _) => "off (ws://)".to_owned(),
                (Some(certificate), None) => format!("wss:// with {}", certificate.display()),
                (Some(certificate), Some(_)) => {
                    format!(
                        "wss:// with {}, client certificates required",
                        certificate.display()
                    )
                }
            },
            self.token_sources
                .iter()
                .map(|source| source.label())
                .collect::<Vec<_>>()
                .join(","),
            if self.allowed_origins.is_empty() {
                "not checked".to_owned()
            } else {
                self.allowed_origins.join(",")
            },
            match &self.record_dir {
                None => "off".to_owned(),
                Some(directory) => format!(
                    "{:?} sessions into {}{}",
                    self.record,
                    directory.display(),
                    if self.record_strict { ", strict" } else { "" }
                ),
            },
        )
    }
}

/// Exit code for a missing or invalid setting (as clap uses for bad flags).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure at run time (the runtime cannot start or serve).
pub const EXIT_RUNTIME: u8 = 1;

/// An error and its sources on one line.
pub fn one_line(error: &dyn std::error::Error) -> String {
    proxy_core::ErrorChain(error).to_string()
}

/// Runs `ws-proxy serve`: sets up logging, raises the open-file limit, builds the proxy, listens,
/// serves until SIGTERM/SIGINT and drains. Returns the process exit code: 0 after a clean stop,
/// [`EXIT_CONFIG`] for a bad setting (before anything listens; an address already in use is
/// one), [`EXIT_RUNTIME`] otherwise. Each error is printed once, naming what to change.
pub fn serve_main(args: &ServeArgs) -> std::process::ExitCode {
    use std::process::ExitCode;

    let config_error = |message: String| {
        eprintln!("ws-proxy: error: {message}");
        ExitCode::from(EXIT_CONFIG)
    };
    if let Err(error) = crate::logging::init_logging(args.log_format, &args.loglevel) {
        return config_error(one_line(&error));
    }
    let proxy = match args.build() {
        Ok(proxy) => proxy,
        Err(error) => return config_error(one_line(&error)),
    };
    let (host, port) = args.listen_address();
    let shown = format!("{host}:{port}");
    let listener = match bind((host, port), shown, "HOST and PORT (--host, --port)") {
        Ok(listener) => listener,
        Err(message) => return config_error(message),
    };
    let admin = args.admin_addr.map(|address| {
        bind(
            address,
            address.to_string(),
            "WS_PROXY_ADMIN_ADDR (--admin-addr)",
        )
    });
    let admin = match admin {
        Some(Err(message)) => return config_error(message),
        Some(Ok(admin)) => Some(admin),
        None => None,
    };
    raise_open_file_limit();
    tracing::info!(config = %args.summary(), "starting ws-proxy {}", env!("CARGO_PKG_VERSION"));
    if args.allowed_origins.is_empty() {
        tracing::info!(
            "no Origin allow-list: any web page may open a console WebSocket with a token it \
             holds; set WS_PROXY_ALLOWED_ORIGINS to the lab platform's origins"
        );
    }
    let runtime = match crate::runtime::build_runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ws-proxy: error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let served = runtime.block_on(serve_listeners(&proxy, listener, admin));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ws-proxy: error: cannot serve: {error}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Binds `address` as [`WebsocketProxy::run`] does; the error names the `setting` to change.
fn bind(
    address: impl std::net::ToSocketAddrs,
    shown: String,
    setting: &str,
) -> Result<std::net::TcpListener, String> {
    crate::facade::bind_shown(address, shown)
        .map_err(|error| format!("{}; change {setting}", one_line(&error)))
}

/// Serves the console listener until SIGTERM/SIGINT, and the admin listener until the console
/// listener has drained.
async fn serve_listeners(
    proxy: &WebsocketProxy,
    listener: std::net::TcpListener,
    admin: Option<std::net::TcpListener>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let admin = admin.map(tokio::net::TcpListener::from_std).transpose()?;
    let (main_done, main_done_signal) = tokio::sync::oneshot::channel::<()>();
    let admin_task = admin.map(|admin| {
        let engine = proxy.engine().clone();
        tokio::spawn(async move {
            engine
                .serve_admin(admin, async {
                    let _ = main_done_signal.await;
                })
                .await;
        })
    });
    proxy
        .serve(listener, crate::signal::shutdown_signal())
        .await;
    let _ = main_done.send(());
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard limit (each session holds two sockets).
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(open_file_limit = limit, "raised the open-file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtobool_accepts_the_python_words() {
        for word in ["y", "YES", "t", "True", "on", "1"] {
            assert_eq!(parse_strtobool(word), Ok(true), "{word}");
        }
        for word in ["n", "No", "f", "FALSE", "off", "0"] {
            assert_eq!(parse_strtobool(word), Ok(false), "{word}");
        }
        assert!(parse_strtobool("maybe").is_err());
    }

    #[derive(Debug, clap::Parser)]
    struct TestCommand {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn close_on_token_expiry(flags: &[&str]) -> bool {
        use clap::Parser as _;
        let args = ["ws-proxy", "--secret-key", "s"].iter().chain(flags);
        let command = TestCommand::try_parse_from(args).unwrap();
        assert_eq!(
            command.serve.server_config().unwrap().close_on_token_expiry,
            command.serve.close_on_token_expiry
        );
        command.serve.close_on_token_expiry
    }

    #[test]
    fn permessage_deflate_is_on_by_default_and_can_be_turned_off() {
        use clap::Parser as _;
        let parse = |flags: &[&str]| {
            let args = ["ws-proxy", "--secret-key", "s"].iter().chain(flags);
            let command = TestCommand::try_parse_from(args).unwrap();
            command.serve.server_config().unwrap().permessage_deflate
        };
        assert!(parse(&[]));
        assert!(!parse(&["--permessage-deflate=off"]));
        assert!(parse(&["--permessage-deflate"]));
        assert!(ServerConfig::default().permessage_deflate);
    }

    #[test]
    fn close_on_token_expiry_is_off_by_default_and_takes_strtobool_words() {
        assert!(!close_on_token_expiry(&[]));
        assert!(close_on_token_expiry(&["--close-on-token-expiry"]));
        assert!(close_on_token_expiry(&["--close-on-token-expiry=yes"]));
        assert!(!close_on_token_expiry(&["--close-on-token-expiry=off"]));
        assert!(!ServerConfig::default().close_on_token_expiry);
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
