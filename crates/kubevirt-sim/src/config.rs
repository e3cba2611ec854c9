//! What the simulator serves: listen address, TLS, bearer check and the VMs with their behaviours.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::ServerConfig;

use crate::rfb::RfbOptions;

/// What the simulated VM console does once a client's WebSocket upgrade succeeded
/// (or which error the simulated API answers instead of upgrading).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmBehavior {
    /// A built-in RFB 3.8 server (security type None, Raw encoding) showing a test pattern,
    /// the typed keys and the pointer position. All sessions to one VM share its screen.
    Rfb,
    /// Relays WebSocket binary frames to and from a real VNC server's TCP port
    /// (QEMU's `-vnc`, x11vnc, ...). The TCP connection is dialled before the upgrade, as
    /// `virt-api` dials `virt-handler` before upgrading; a failed dial answers 500.
    TcpBridge(SocketAddr),
    /// Sends every received message back unchanged (after the [greeting](SimConfig::greeting),
    /// if one is set).
    Echo,
    /// Sends the [greeting](SimConfig::greeting), if one is set, then closes the session with
    /// this code and reason, as a console whose VM shut down does.
    Closes {
        /// The close code (1000 or 3000–4999).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Reads and discards everything (counted in [`SimStats::bytes_from_clients`](crate::SimStats)).
    Sink,
    /// Sends binary messages of `chunk_bytes` bytes as fast as the client reads them,
    /// `total_bytes` in all (then a normal close) or until the client closes when `None`.
    Source {
        /// Size of each binary message.
        chunk_bytes: usize,
        /// How many bytes to send before closing normally; `None` sends until the client closes.
        total_bytes: Option<u64>,
    },
    /// Reads and discards everything; once `ack_after` payload bytes arrived, answers one text
    /// message with the count received so far (a load tool's end-of-upload marker).
    CountingSink {
        /// Bytes after which the count is sent.
        ack_after: u64,
    },
    /// Waits for the client's first data message (a start signal, so that many sessions start
    /// together), then sends `total_bytes` in binary messages of `chunk_bytes` as fast as the
    /// client reads them and closes with 1000 "source done".
    SourceOnRequest {
        /// Size of each binary message (the last one may be shorter).
        chunk_bytes: usize,
        /// How many bytes to send in all.
        total_bytes: u64,
    },
    /// A console in use, for steady-state load: a framebuffer update of `update_bytes` every
    /// `update_every` (the screen changing on its own), and for every key press the client
    /// sends (an RFB KeyEvent or a QEMU extended key event with the down flag) at once an update
    /// of `echo_bytes` (the typed character drawn); other client messages (update requests, key
    /// releases) are read and dropped. Both are
    /// shaped like RFB FramebufferUpdate messages (type 0); the padding byte after the type
    /// says which is which, 0 for an update and 1 for an echo, so a load tool can time the echo.
    ConsoleTraffic {
        /// Interval of the updates the VM sends on its own (zero: none).
        update_every: Duration,
        /// Bytes of each such update (at least 2).
        update_bytes: usize,
        /// Bytes of the update each client message is answered with (at least 2).
        echo_bytes: usize,
    },
    /// The VMI exists but is not running: answered like `virt-api` does, HTTP 400 with a
    /// Kubernetes `Status` whose message is `VMI is not running`.
    NotRunning,
    /// The caller is authenticated but not allowed (RBAC): HTTP 403 with a Kubernetes `Status`
    /// saying the service account cannot get `virtualmachineinstances/vnc`.
    Forbidden,
}

/// Default message size of [`VmBehavior::Source`] when parsed from `source` without a size.
pub const DEFAULT_SOURCE_CHUNK_BYTES: usize = 16 * 1024;

/// Largest message size [`VmBehavior::Source`] accepts from the command line (bounded memory).
pub const MAX_SOURCE_CHUNK_BYTES: usize = 16 * 1024 * 1024;

/// Why a `--vm` behaviour string could not be parsed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseVmError {
    /// The text is not `NAME=BEHAVIOR`.
    #[error("expected NAME=BEHAVIOR or NAMESPACE/NAME=BEHAVIOR, got {0:?}")]
    MissingEquals(String),
    /// The VM name is empty.
    #[error("the VM name is empty")]
    EmptyName,
    /// The behaviour word is not one of the known ones.
    #[error(
        "unknown VM behaviour {0:?}; expected rfb, bridge:HOST:PORT, echo, sink, source[:CHUNK[:TOTAL]], console:MS:UPDATE:ECHO, not-running or forbidden"
    )]
    UnknownBehavior(String),
    /// `bridge:` is not followed by a socket address.
    #[error("bridge target {text:?} is not an IP:PORT socket address")]
    BridgeAddress {
        /// The text after `bridge:`.
        text: String,
        /// Why it did not parse.
        #[source]
        source: std::net::AddrParseError,
    },
    /// A `source:` size is not a number.
    #[error("source size {text:?} is not a number")]
    SourceSize {
        /// The offending text.
        text: String,
        /// Why it did not parse.
        #[source]
        source: std::num::ParseIntError,
    },
    /// A `source:` chunk size is zero or above [`MAX_SOURCE_CHUNK_BYTES`].
    #[error("source chunk size {0} must be between 1 and {MAX_SOURCE_CHUNK_BYTES}")]
    SourceChunkOutOfRange(usize),
    /// `console:` is not followed by three numbers, or a message size is below 2 or above
    /// [`MAX_SOURCE_CHUNK_BYTES`].
    #[error(
        "console shape {0:?} is not MS:UPDATE:ECHO (milliseconds, then two message sizes from 2 to {MAX_SOURCE_CHUNK_BYTES} bytes)"
    )]
    ConsoleShape(String),
    /// A `closes:` code that is not 1000 or 3000–4999.
    #[error("close code {0:?} is not 1000 or 3000-4999")]
    CloseCode(String),
}

impl FromStr for VmBehavior {
    type Err = ParseVmError;

    /// Parses `rfb`, `bridge:127.0.0.1:5900`, `echo`, `sink`, `source`, `source:CHUNK`,
    /// `source:CHUNK:TOTAL`, `console:MS:UPDATE:ECHO` (an update of UPDATE bytes every MS
    /// milliseconds, an echo of ECHO bytes per key), `closes:CODE` (reason "console ended"),
    /// `not-running` or `forbidden`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (word, rest) = match text.split_once(':') {
            Some((word, rest)) => (word, Some(rest)),
            None => (text, None),
        };
        match (word, rest) {
            ("rfb", None) => Ok(Self::Rfb),
            ("echo", None) => Ok(Self::Echo),
            ("sink", None) => Ok(Self::Sink),
            ("not-running", None) => Ok(Self::NotRunning),
            ("forbidden", None) => Ok(Self::Forbidden),
            ("bridge", Some(addr)) => {
                addr.parse()
                    .map(Self::TcpBridge)
                    .map_err(|source| ParseVmError::BridgeAddress {
                        text: addr.to_owned(),
                        source,
                    })
            }
            ("source", sizes) => parse_source(sizes),
            ("console", Some(shape)) => parse_console(shape),
            ("closes", Some(code)) => match code.parse::<u16>() {
                Ok(code @ (1000 | 3000..=4999)) => Ok(Self::Closes {
                    code,
                    reason: "console ended".to_owned(),
                }),
                _ => Err(ParseVmError::CloseCode(code.to_owned())),
            },
            _ => Err(ParseVmError::UnknownBehavior(text.to_owned())),
        }
    }
}

fn parse_source(sizes: Option<&str>) -> Result<VmBehavior, ParseVmError> {
    fn number<T: FromStr<Err = std::num::ParseIntError>>(text: &str) -> Result<T, ParseVmError> {
        text.parse().map_err(|source| ParseVmError::SourceSize {
            text: text.to_owned(),
            source,
        })
    }
    let (chunk_bytes, total_bytes) = match sizes {
        None => (DEFAULT_SOURCE_CHUNK_BYTES, None),
        Some(sizes) => match sizes.split_once(':') {
            None => (number(sizes)?, None),
            Some((chunk, total)) => (number(chunk)?, Some(number(total)?)),
        },
    };
    if chunk_bytes == 0 || chunk_bytes > MAX_SOURCE_CHUNK_BYTES {
        return Err(ParseVmError::SourceChunkOutOfRange(chunk_bytes));
    }
    Ok(VmBehavior::Source {
        chunk_bytes,
        total_bytes,
    })
}

fn parse_console(shape: &str) -> Result<VmBehavior, ParseVmError> {
    let invalid = || ParseVmError::ConsoleShape(shape.to_owned());
    let numbers: Vec<usize> = shape
        .split(':')
        .map(|part| part.parse().map_err(|_| invalid()))
        .collect::<Result<_, _>>()?;
    let [every_ms, update_bytes, echo_bytes] = numbers.as_slice() else {
        return Err(invalid());
    };
    let sizes = 2..=MAX_SOURCE_CHUNK_BYTES;
    if !sizes.contains(update_bytes) || !sizes.contains(echo_bytes) {
        return Err(invalid());
    }
    Ok(VmBehavior::ConsoleTraffic {
        update_every: Duration::from_millis(*every_ms as u64),
        update_bytes: *update_bytes,
        echo_bytes: *echo_bytes,
    })
}

/// One `--vm` entry: an optional namespace, a VMI name and its behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Namespace the VMI lives in; `None` serves the VMI in every namespace.
    pub namespace: Option<String>,
    /// The VMI name.
    pub name: String,
    /// What the VMI does.
    pub behavior: VmBehavior,
}

impl FromStr for VmSpec {
    type Err = ParseVmError;

    /// Parses `NAME=BEHAVIOR` or `NAMESPACE/NAME=BEHAVIOR`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (target, behavior) = text
            .split_once('=')
            .ok_or_else(|| ParseVmError::MissingEquals(text.to_owned()))?;
        let (namespace, name) = match target.split_once('/') {
            Some((namespace, name)) => (Some(namespace.to_owned()), name),
            None => (None, target),
        };
        if name.is_empty() || namespace.as_deref() == Some("") {
            return Err(ParseVmError::EmptyName);
        }
        Ok(Self {
            namespace,
            name: name.to_owned(),
            behavior: behavior.parse()?,
        })
    }
}

/// The bearer token the simulated API server expects in `Authorization: Bearer ...`.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum BearerCheck {
    /// No check: every request is authenticated (like `kubectl proxy`).
    #[default]
    None,
    /// This exact token.
    Token(String),
    /// The token in this file, re-read for every request so a test can rotate it
    /// (surrounding whitespace is ignored, as Kubernetes clients do). Several tokens, one per
    /// line, are all accepted, as an API server accepts a bound token's predecessor until it
    /// expires.
    TokenFile(PathBuf),
}

impl fmt::Debug for BearerCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::TokenFile(path) => f.debug_tuple("TokenFile").field(path).finish(),
        }
    }
}

/// How the simulator serves TLS.
#[derive(Debug, Clone)]
pub(crate) enum TlsSetting {
    /// Plain `ws://`.
    Off,
    /// A CA and a server certificate generated at start.
    Generated,
    /// The caller's server configuration.
    Given(Arc<ServerConfig>),
}

/// Settings of a [`KubevirtSim`](crate::KubevirtSim); build with the chained setters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) tls: TlsSetting,
    pub(crate) greeting: Option<Vec<u8>>,
    pub(crate) path_prefix: String,
    pub(crate) bearer: BearerCheck,
    pub(crate) vms: Vec<VmSpec>,
    pub(crate) max_sessions: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) record_limit: usize,
    pub(crate) rfb: RfbOptions,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: TlsSetting::Off,
            greeting: None,
            path_prefix: String::new(),
            bearer: BearerCheck::None,
            vms: Vec::new(),
            max_sessions: 1024,
            handshake_timeout: Duration::from_secs(10),
            record_limit: 4096,
            rfb: RfbOptions::default(),
        }
    }
}

impl SimConfig {
    /// Plain `ws://` on `127.0.0.1:0`, no bearer check, no VMs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Address to listen on (port 0 picks a free port; read it back with
    /// [`KubevirtSim::local_addr`](crate::KubevirtSim::local_addr)).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Serve `wss://` with a CA and a server certificate for `127.0.0.1`, `::1` and `localhost`
    /// generated at start.
    pub fn tls(mut self, enabled: bool) -> Self {
        self.tls = if enabled {
            TlsSetting::Generated
        } else {
            TlsSetting::Off
        };
        self
    }

    /// Serve `wss://` with this server configuration: a certificate from a CA the caller owns
    /// (a wrong CA, a second server of the same CA). [`KubevirtSim::ca_pem`](crate::KubevirtSim::ca_pem)
    /// is then `None`: the caller has the CA.
    pub fn tls_server_config(mut self, config: Arc<ServerConfig>) -> Self {
        self.tls = TlsSetting::Given(config);
        self
    }

    /// Serve the API under this base path (`/k8s/clusters/c-1`, as an API server behind
    /// Rancher's proxy is reached); requests outside it answer 404. Default: the root.
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.path_prefix = prefix.into().trim_end_matches('/').to_owned();
        self
    }

    /// What [`VmBehavior::Echo`] and [`VmBehavior::Closes`] consoles send first, as an RFB
    /// server sends its version (`RFB 003.008\n`). Default: nothing.
    pub fn greeting(mut self, greeting: impl Into<Vec<u8>>) -> Self {
        self.greeting = Some(greeting.into());
        self
    }

    /// Expect this bearer token.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer = BearerCheck::Token(token.into());
        self
    }

    /// Expect the bearer token stored in this file, re-read on every request.
    pub fn bearer_token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.bearer = BearerCheck::TokenFile(path.into());
        self
    }

    /// Set the bearer check directly.
    pub fn bearer(mut self, check: BearerCheck) -> Self {
        self.bearer = check;
        self
    }

    /// Serve a VMI of this name in every namespace.
    pub fn vm(self, name: impl Into<String>, behavior: VmBehavior) -> Self {
        self.vm_spec(VmSpec {
            namespace: None,
            name: name.into(),
            behavior,
        })
    }

    /// Serve a VMI of this name in this namespace only (other namespaces answer 404).
    pub fn vm_in_namespace(
        self,
        namespace: impl Into<String>,
        name: impl Into<String>,
        behavior: VmBehavior,
    ) -> Self {
        self.vm_spec(VmSpec {
            namespace: Some(namespace.into()),
            name: name.into(),
            behavior,
        })
    }

    /// Add a parsed [`VmSpec`]; a later entry for the same namespace and name replaces an earlier one.
    pub fn vm_spec(mut self, spec: VmSpec) -> Self {
        self.vms
            .retain(|known| !(known.name == spec.name && known.namespace == spec.namespace));
        self.vms.push(spec);
        self
    }

    /// Most sessions open at once; further upgrades answer 503 (default 1024).
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max;
        self
    }

    /// Time a client gets to finish the TLS and HTTP upgrade handshake (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How many recent requests [`KubevirtSim::requests`](crate::KubevirtSim::requests) keeps (default 4096).
    pub fn record_limit(mut self, limit: usize) -> Self {
        self.record_limit = limit;
        self
    }

    /// Screen size of the built-in RFB consoles.
    pub fn rfb_options(mut self, options: RfbOptions) -> Self {
        self.rfb = options;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_behaviour_word() {
        assert_eq!("rfb".parse::<VmBehavior>().unwrap(), VmBehavior::Rfb);
        assert_eq!(
            "console:50:4000:300".parse::<VmBehavior>().unwrap(),
            VmBehavior::ConsoleTraffic {
                update_every: Duration::from_millis(50),
                update_bytes: 4000,
                echo_bytes: 300,
            }
        );
        assert!("console:50:4000".parse::<VmBehavior>().is_err());
        assert!("console:50:1:300".parse::<VmBehavior>().is_err());
        assert_eq!("echo".parse::<VmBehavior>().unwrap(), VmBehavior::Echo);
        assert_eq!("sink".parse::<VmBehavior>().unwrap(), VmBehavior::Sink);
        assert_eq!(
            "not-running".parse::<VmBehavior>().unwrap(),
            VmBehavior::NotRunning
        );
        assert_eq!(
            "forbidden".parse::<VmBehavior>().unwrap(),
            VmBehavior::Forbidden
        );
        assert_eq!(
            "bridge:127.0.0.1:5900".parse::<VmBehavior>().unwrap(),
            VmBehavior::TcpBridge("127.0.0.1:5900".parse().unwrap())
        );
        assert_eq!(
            "source".parse::<VmBehavior>().unwrap(),
            VmBehavior::Source {
                chunk_bytes: DEFAULT_SOURCE_CHUNK_BYTES,
                total_bytes: None
            }
        );
        assert_eq!(
            "source:100:1000".parse::<VmBehavior>().unwrap(),
            VmBehavior::Source {
                chunk_bytes: 100,
                total_bytes: Some(1000)
            }
        );
    }

    #[test]
    fn rejects_malformed_behaviours() {
        assert!(matches!(
            "bridge:nowhere".parse::<VmBehavior>(),
            Err(ParseVmError::BridgeAddress { .. })
        ));
        assert!(matches!(
            "source:0".parse::<VmBehavior>(),
            Err(ParseVmError::SourceChunkOutOfRange(0))
        ));
        assert!(matches!(
            "teleport".parse::<VmBehavior>(),
            Err(ParseVmError::UnknownBehavior(_))
        ));
    }

    #[test]
    fn parses_vm_specs_with_and_without_namespace() {
        let spec: VmSpec = "ubuntu=rfb".parse().unwrap();
        assert_eq!(spec.namespace, None);
        assert_eq!(spec.name, "ubuntu");
        let spec: VmSpec = "lab-1/stopped=not-running".parse().unwrap();
        assert_eq!(spec.namespace.as_deref(), Some("lab-1"));
        assert_eq!(spec.behavior, VmBehavior::NotRunning);
        assert!(matches!(
            "ubuntu".parse::<VmSpec>(),
            Err(ParseVmError::MissingEquals(_))
        ));
        assert!(matches!(
            "=rfb".parse::<VmSpec>(),
            Err(ParseVmError::EmptyName)
        ));
    }

    #[test]
    fn debug_output_redacts_the_token() {
        let config = SimConfig::new().bearer_token("very-secret-token");
        assert!(!format!("{config:?}").contains("very-secret-token"));
    }

    #[test]
    fn later_vm_entry_replaces_earlier_one() {
        let config = SimConfig::new()
            .vm("a", VmBehavior::Rfb)
            .vm("a", VmBehavior::Echo);
        assert_eq!(config.vms.len(), 1);
        assert_eq!(config.vms[0].behavior, VmBehavior::Echo);
    }
}
