//! The one error type of the crate.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio_tungstenite::tungstenite;

use crate::target::TargetKind;

/// What went wrong while setting up or running a load run.
///
/// Errors never carry a URL with a token in it, nor the signing secret: a target is named by its
/// [`TargetKind`] and the VM name only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadgenError {
    /// The simulated KubeVirt upstream could not start.
    #[error("cannot start the simulated KubeVirt upstream")]
    Upstream(#[source] kubevirt_sim::SimError),
    /// The upstream server (or a probe socket) could not bind its listening address.
    #[error("cannot bind {addr}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },
    /// A URL template does not describe a `ws://host:port/...` address.
    #[error("the {target} URL template is not a usable ws:// URL")]
    InvalidUrl {
        /// The target whose template is wrong.
        target: TargetKind,
    },
    /// The TCP connection to a target could not be opened.
    #[error("cannot connect to the {target} target (vmi {vmi})")]
    Connect {
        /// The target dialled.
        target: TargetKind,
        /// The VM name (upstream mode) of the session.
        vmi: String,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },
    /// The WebSocket opening handshake with a target failed.
    #[error("WebSocket handshake with the {target} target failed (vmi {vmi})")]
    Handshake {
        /// The target dialled.
        target: TargetKind,
        /// The VM name (upstream mode) of the session.
        vmi: String,
        /// The tungstenite error (an HTTP rejection carries the response status).
        #[source]
        source: Box<tungstenite::Error>,
    },
    /// Reading or writing an established WebSocket session failed.
    #[error("WebSocket session failed")]
    Session(#[source] Box<tungstenite::Error>),
    /// The peer sent something the scenario does not expect at this point.
    #[error("unexpected message: expected {expected}")]
    UnexpectedMessage {
        /// What the scenario waited for.
        expected: &'static str,
    },
    /// The peer closed the session before the scenario was done with it.
    #[error("the session ended early while waiting for {waiting_for}")]
    EndedEarly {
        /// What the scenario waited for.
        waiting_for: &'static str,
    },
    /// The scenario's time limit passed before a session step finished.
    #[error("the time limit passed while waiting for {waiting_for}")]
    TimeLimit {
        /// What the scenario waited for.
        waiting_for: &'static str,
    },
    /// A VM name does not name an upstream mode.
    #[error(
        "`{name}` is not an upstream mode (echo, rfb, sink, sink-BYTES, source-MSGSIZE-BYTES, console-MS-UPDATE-ECHO)"
    )]
    UnknownMode {
        /// The name that was given.
        name: String,
    },
    /// The signing secret is not usable as an HS256 key.
    #[error("the token signing secret is not usable")]
    SigningKey(#[source] proxy_auth::KeyError),
    /// Minting a console token failed.
    #[error("cannot mint a console token")]
    Mint(#[source] proxy_auth::IssueError),
    /// A helper program (proxy, socat, taskset) could not be started.
    #[error("cannot start {program}")]
    Spawn {
        /// The program that failed to start.
        program: String,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },
    /// A helper program ran but reported failure.
    #[error("{program} exited with {status}")]
    HelperFailed {
        /// The program that failed.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// A spawned process exited before it became ready.
    #[error("{program} exited before it was ready")]
    ExitedBeforeReady {
        /// Which process (e.g. `ws-proxy`, `socat`).
        program: &'static str,
    },
    /// A spawned process did not become ready in time.
    #[error("{what} was not ready after {after:?}")]
    NotReady {
        /// What was waited for (e.g. `proxy /healthz`).
        what: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// A spawned process was asked to stop (SIGTERM) and had not exited in time.
    #[error("{program} had not exited {after:?} after SIGTERM")]
    DidNotExit {
        /// Which process.
        program: &'static str,
        /// How long it was given.
        after: Duration,
    },
    /// A callgrind output file could not be read or has no `totals:` line.
    #[error("cannot read the instruction count from {path}")]
    CallgrindOutput {
        /// The file callgrind was told to write.
        path: PathBuf,
        /// The underlying error (`InvalidData` when the totals line is missing or malformed).
        #[source]
        source: io::Error,
    },
    /// A scenario played for an instruction count did not complete cleanly.
    #[error("the {workload} run of {units} units through the {relay} failed: {reason}")]
    CountRunFailed {
        /// The workload (e.g. `session set-up`).
        workload: String,
        /// Its size in units (sessions or MiB).
        units: u64,
        /// The relay counted.
        relay: TargetKind,
        /// The first error, or what was left incomplete.
        reason: String,
    },
    /// `/proc/PID/status` could not be read or has no `VmRSS` line.
    #[error("cannot read the resident set size of process {pid}")]
    Rss {
        /// The process asked about.
        pid: u32,
        /// The underlying error (`InvalidData` when the line is missing or malformed).
        #[source]
        source: io::Error,
    },
    /// `/proc/PID/stat` could not be read or has no CPU time fields.
    #[error("cannot read the CPU time of process {pid}")]
    CpuTime {
        /// The process asked about.
        pid: u32,
        /// The underlying error (`InvalidData` when the fields are missing or malformed).
        #[source]
        source: io::Error,
    },
    /// The open-file limit could not be raised.
    #[error("cannot raise the open-file limit")]
    NofileLimit(#[source] io::Error),
    /// Writing a report file failed.
    #[error("cannot write {path}")]
    WriteReport {
        /// The file written.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },
    /// Serialising the JSON report failed.
    #[error("cannot serialise the report")]
    Json(#[source] serde_json::Error),
}

impl LoadgenError {
    pub(crate) fn session(error: tungstenite::Error) -> Self {
        LoadgenError::Session(Box::new(error))
    }
}
