//! The upstream the load runs against: [`kubevirt_sim`], the project's simulated KubeVirt API,
//! serving one VM per [`Mode`] the run uses.
//!
//! A VM's name is its mode, so a proxy that dials
//! `{remote_url}/apis/subresources.kubevirt.io/v1alpha3/namespaces/{namespace}/virtualmachineinstances/{vmi}/vnc`
//! reaches the mode named by `{vmi}` (in any namespace). The simulator agrees to the
//! `plain.kubevirt.io` subprotocol whenever a client offers it and counts open TCP connections,
//! so a run can check that no upstream connection outlives its session.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use kubevirt_sim::{KubevirtSim, SimConfig, VmBehavior};

use crate::LoadgenError;

/// The WebSocket subprotocol KubeVirt's VNC endpoint speaks.
pub const KUBEVIRT_SUBPROTOCOL: &str = proxy_wire::subprotocol::KUBEVIRT_PLAIN;

/// Sessions the simulator holds at once: past the idle scenario's 9,900.
const MAX_UPSTREAM_SESSIONS: usize = 1 << 20;

/// What the upstream does with one connection, chosen by the VM name.
///
/// | VM name | behaviour |
/// |---|---|
/// | `echo` | sends every data message back |
/// | `rfb` | the simulator's RFB 3.8 server: sends `RFB 003.008\n` at once |
/// | `sink` | counts received bytes, never answers |
/// | `sink-BYTES` | counts received bytes; once `BYTES` arrived, answers one text message with the count |
/// | `source-MSGSIZE-BYTES` | waits for any first data message, then sends `BYTES` in `MSGSIZE`-byte binary messages as fast as it can, then closes with 1000 |
/// | `console-MS-UPDATE-ECHO` | a console in use: an `UPDATE`-byte update every `MS` milliseconds, an `ECHO`-byte echo per client message (see [`VmBehavior::ConsoleTraffic`]) |
///
/// All names are valid DNS-1123 names, so a proxy's VM-name validation lets them through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Send every data message back.
    Echo,
    /// The simulator's RFB 3.8 server: sends its version at once, as a VM's VNC server does.
    Rfb,
    /// Count received bytes; with `ack_after`, answer the count once that many bytes arrived.
    Sink {
        /// Bytes after which one text message with the count is sent back.
        ack_after: Option<u64>,
    },
    /// A console in use: an update every `update_ms` milliseconds and an echo per key.
    Console {
        /// Milliseconds between updates (0: none).
        update_ms: u64,
        /// Bytes per update.
        update_bytes: usize,
        /// Bytes of the echo of each key.
        echo_bytes: usize,
    },
    /// After the client's first data message, send `total_bytes` in `message_size`-byte messages, then close.
    Source {
        /// Payload bytes per message (the last one may be shorter).
        message_size: usize,
        /// Payload bytes in all.
        total_bytes: u64,
    },
}

impl Mode {
    /// What the simulated VM of this mode does.
    pub fn behavior(&self) -> VmBehavior {
        match *self {
            Mode::Echo => VmBehavior::Echo,
            Mode::Rfb => VmBehavior::Rfb,
            Mode::Console {
                update_ms,
                update_bytes,
                echo_bytes,
            } => VmBehavior::ConsoleTraffic {
                update_every: Duration::from_millis(update_ms),
                update_bytes,
                echo_bytes,
            },
            Mode::Sink { ack_after: None } => VmBehavior::Sink,
            Mode::Sink {
                ack_after: Some(ack_after),
            } => VmBehavior::CountingSink { ack_after },
            Mode::Source {
                message_size,
                total_bytes,
            } => VmBehavior::SourceOnRequest {
                chunk_bytes: message_size,
                total_bytes,
            },
        }
    }
}

impl FromStr for Mode {
    type Err = LoadgenError;

    fn from_str(name: &str) -> Result<Mode, LoadgenError> {
        let unknown = || LoadgenError::UnknownMode {
            name: name.to_owned(),
        };
        let mut parts = name.split('-');
        let mode = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("echo"), None, None, None) => Mode::Echo,
            (Some("rfb"), None, None, None) => Mode::Rfb,
            (Some("sink"), None, None, None) => Mode::Sink { ack_after: None },
            (Some("sink"), Some(bytes), None, None) => Mode::Sink {
                ack_after: Some(bytes.parse().map_err(|_| unknown())?),
            },
            (Some("console"), Some(every), Some(update), Some(echo)) => {
                let size = |text: &str| match text.parse::<usize>() {
                    Ok(bytes) if bytes >= 2 => Ok(bytes),
                    _ => Err(unknown()),
                };
                if parts.next().is_some() {
                    return Err(unknown());
                }
                Mode::Console {
                    update_ms: every.parse().map_err(|_| unknown())?,
                    update_bytes: size(update)?,
                    echo_bytes: size(echo)?,
                }
            }
            (Some("source"), Some(size), Some(bytes), None) => {
                let message_size: usize = size.parse().map_err(|_| unknown())?;
                if message_size == 0 {
                    return Err(unknown());
                }
                Mode::Source {
                    message_size,
                    total_bytes: bytes.parse().map_err(|_| unknown())?,
                }
            }
            _ => return Err(unknown()),
        };
        Ok(mode)
    }
}

impl fmt::Display for Mode {
    /// The VM name that selects this mode.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Echo => f.write_str("echo"),
            Mode::Rfb => f.write_str("rfb"),
            Mode::Console {
                update_ms,
                update_bytes,
                echo_bytes,
            } => write!(f, "console-{update_ms}-{update_bytes}-{echo_bytes}"),
            Mode::Sink { ack_after: None } => f.write_str("sink"),
            Mode::Sink {
                ack_after: Some(bytes),
            } => write!(f, "sink-{bytes}"),
            Mode::Source {
                message_size,
                total_bytes,
            } => write!(f, "source-{message_size}-{total_bytes}"),
        }
    }
}

/// A snapshot of the upstream's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct UpstreamStats {
    /// TCP connections accepted since start.
    pub accepted: u64,
    /// TCP connections currently open (accepted and not yet dropped).
    pub open: u64,
    /// Completed WebSocket handshakes.
    pub handshakes: u64,
    /// Upgrades refused (unknown mode, at capacity).
    pub rejected: u64,
    /// Handshakes whose client offered `plain.kubevirt.io`.
    pub subprotocol_offered: u64,
    /// Data payload bytes received, all modes.
    pub bytes_received: u64,
    /// Data payload bytes sent, all modes.
    pub bytes_sent: u64,
}

/// The running upstream; dropping it stops the simulator and closes all its connections.
#[derive(Debug)]
pub struct UpstreamServer {
    sim: KubevirtSim,
}

impl UpstreamServer {
    /// Starts the simulator on `addr` (use port 0 for any free port) with one VM per mode name in
    /// `vmi_names`, in every namespace; other names answer 404, as KubeVirt does.
    pub async fn start(
        addr: SocketAddr,
        vmi_names: &[String],
    ) -> Result<UpstreamServer, LoadgenError> {
        Self::start_with(SimConfig::new().listen(addr), vmi_names).await
    }

    /// The same VMs served like the API server to a pod: `wss://` with a CA generated at start
    /// ([`UpstreamServer::write_ca`]), and every request must carry `Authorization: Bearer
    /// {bearer_token}`.
    pub async fn start_in_cluster(
        addr: SocketAddr,
        vmi_names: &[String],
        bearer_token: &str,
    ) -> Result<UpstreamServer, LoadgenError> {
        let config = SimConfig::new()
            .listen(addr)
            .tls(true)
            .bearer_token(bearer_token);
        Self::start_with(config, vmi_names).await
    }

    async fn start_with(
        config: SimConfig,
        vmi_names: &[String],
    ) -> Result<UpstreamServer, LoadgenError> {
        let mut config = config.max_sessions(MAX_UPSTREAM_SESSIONS);
        for name in vmi_names {
            let mode: Mode = name.parse()?;
            config = config.vm(name.as_str(), mode.behavior());
        }
        let sim = KubevirtSim::start(config)
            .await
            .map_err(LoadgenError::Upstream)?;
        Ok(UpstreamServer { sim })
    }

    /// Writes the CA of a [`UpstreamServer::start_in_cluster`] server to `path`.
    pub fn write_ca(&self, path: &std::path::Path) -> Result<(), LoadgenError> {
        self.sim.write_ca_pem(path).map_err(LoadgenError::Upstream)
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.sim.local_addr()
    }

    /// The `ws://` base URL of the server, e.g. for a proxy's `WS_REMOTE_URL`.
    pub fn base_url(&self) -> String {
        self.sim.base_url()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> UpstreamStats {
        let stats = self.sim.stats();
        UpstreamStats {
            accepted: stats.connections_accepted,
            open: stats.connections_open,
            handshakes: stats.sessions_opened,
            rejected: stats.upgrades_refused,
            subprotocol_offered: stats.subprotocol_selected,
            bytes_received: stats.bytes_from_clients,
            bytes_sent: stats.bytes_to_clients,
        }
    }

    /// Waits until no connection is open or `limit` passed; returns how many are still open.
    pub async fn wait_until_idle(&self, limit: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let open = self.sim.stats().connections_open;
            if open == 0 || tokio::time::Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_round_trip() {
        for mode in [
            Mode::Echo,
            Mode::Sink { ack_after: None },
            Mode::Sink {
                ack_after: Some(1 << 30),
            },
            Mode::Source {
                message_size: 65536,
                total_bytes: 1 << 30,
            },
            Mode::Console {
                update_ms: 40,
                update_bytes: 6_000,
                echo_bytes: 300,
            },
        ] {
            assert_eq!(mode.to_string().parse::<Mode>().unwrap(), mode);
        }
    }

    #[test]
    fn malformed_mode_names_are_refused() {
        for name in [
            "",
            "echo-1",
            "sink-x",
            "source-0-10",
            "source-10",
            "source-1-2-3",
            "console-40-6000",
            "console-40-1-300",
            "console-40-6000-300-1",
            "vnc",
        ] {
            assert!(name.parse::<Mode>().is_err(), "{name} should be refused");
        }
    }
}
