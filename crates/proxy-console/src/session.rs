//! What the proxy does inside a console's stream when a session asks for it: the input of an
//! observer taken out of what its client sends ([`proxy_rfb`]), and the session recorded
//! ([`Recorder`]). Sessions that need neither relay the transports untouched.
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use proxy_core::{CloseFrame, Frame, TransportError, close_code};
use proxy_rfb::{ClientChunk, RfbConnection, RfbError};

use crate::metrics::ConsoleMetrics;
use crate::recording::{Recorder, RecordingConfig, RecordingError};

/// A transport whose received data frames pass through `inspect` first: it may let a frame
/// through, replace it, swallow it (`None`) or end the session with an error.
pub struct Inspected<T, F> {
    inner: T,
    inspect: F,
}

impl<T, F> Inspected<T, F> {
    /// `inner`, whose received data frames pass through `inspect`.
    pub fn new(inner: T, inspect: F) -> Self {
        Self { inner, inspect }
    }
}

impl<T, F> Stream for Inspected<T, F>
where
    T: Stream<Item = Result<Frame, TransportError>> + Unpin,
    F: FnMut(Frame) -> Result<Option<Frame>, TransportError> + Unpin,
{
    type Item = Result<Frame, TransportError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) if frame.is_data() => match (this.inspect)(frame) {
                    Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                    Ok(None) => continue,
                    Err(error) => return Poll::Ready(Some(Err(error))),
                },
                other => return other,
            }
        }
    }
}

impl<T, F> Sink<Frame> for Inspected<T, F>
where
    T: Sink<Frame, Error = TransportError> + Unpin,
    F: Unpin,
{
    type Error = TransportError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        Pin::new(&mut self.get_mut().inner).start_send(frame)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// What one session does inside its stream, shared by its two inspectors.
pub struct ConsoleSession {
    /// Followed when the session is an observer's.
    rfb: Option<Mutex<RfbConnection>>,
    recorder: Option<Recorder>,
    strict_recording: bool,
    metrics: ConsoleMetrics,
    dropped_input: std::sync::atomic::AtomicU64,
}

/// What a session asks of its console stream.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleRequest<'a> {
    /// This replica's number of the session (part of a recording's file name).
    pub session_id: u64,
    /// The VM's namespace.
    pub namespace: &'a str,
    /// The VM.
    pub vmi_name: &'a str,
    /// Whether the token is an observer's: its input never reaches the VM.
    pub observer: bool,
    /// Whether the token asks for a recording (`"console": {"record": true}`).
    pub record_requested: bool,
}

/// Why a session cannot have the console stream it must have.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// The deployment is strict and the session's recording cannot start.
    #[error("the session must be recorded and its recording cannot start")]
    RecordingUnavailable(#[source] RecordingError),
}

impl ConsoleSession {
    /// What `request`'s session does inside its stream: an observer's input filter, a recording
    /// (when `recording` is configured and records this session), both, or (`None`) neither. A
    /// recording that cannot start refuses a strict deployment's session and is left out
    /// otherwise (logged and counted).
    pub fn open(
        recording: Option<&RecordingConfig>,
        request: &ConsoleRequest<'_>,
        metrics: &ConsoleMetrics,
    ) -> Result<Option<Arc<Self>>, ConsoleError> {
        let recording = recording.filter(|recording| recording.records(request.record_requested));
        let recorder = match recording {
            None => None,
            Some(recording) => match Recorder::start(
                recording,
                request.session_id,
                request.namespace,
                request.vmi_name,
                Arc::new(metrics.clone()),
            ) {
                Ok(recorder) => {
                    tracing::info!(path = %recorder.path.display(), "recording the session");
                    Some(recorder)
                }
                Err(error) => {
                    metrics.recording_not_started();
                    tracing::warn!(error = %proxy_core::ErrorChain(&error), strict = recording.strict, "the session recording cannot start");
                    if recording.strict {
                        return Err(ConsoleError::RecordingUnavailable(error));
                    }
                    None
                }
            },
        };
        if request.observer {
            metrics.observer_session();
            tracing::info!("observer session: keyboard, pointer and clipboard do not reach the VM");
        }
        if !request.observer && recorder.is_none() {
            return Ok(None);
        }
        let strict = recording.is_some_and(|recording| recording.strict);
        Ok(Some(Self::new(
            request.observer,
            recorder,
            strict,
            metrics.clone(),
        )))
    }

    /// A session that follows the stream as an observer's (when `observer`) and records it
    /// with `recorder` (ending the session when a `strict_recording` stops).
    pub fn new(
        observer: bool,
        recorder: Option<Recorder>,
        strict_recording: bool,
        metrics: ConsoleMetrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            rfb: observer.then(|| Mutex::new(RfbConnection::new())),
            recorder,
            strict_recording,
            metrics,
            dropped_input: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Logs what the session's inspection did, when it ends.
    pub fn log_end(&self) {
        if self.is_observer() {
            tracing::info!(
                dropped_input = self.dropped_input(),
                "observer session ended"
            );
        }
        if let Some(recorder) = self.recording() {
            tracing::info!(
                path = %recorder.path.display(),
                complete = !recorder.stopped(),
                "session recording closed"
            );
        }
    }

    /// Whether the session is an observer's.
    pub fn is_observer(&self) -> bool {
        self.rfb.is_some()
    }

    /// Input messages taken out of the observer's stream so far.
    pub fn dropped_input(&self) -> u64 {
        self.dropped_input
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The recording's file, if the session is recorded.
    pub fn recording(&self) -> Option<&Recorder> {
        self.recorder.as_ref()
    }

    /// Inspects what the client sends.
    pub fn inspect_client_frame(&self, frame: Frame) -> Result<Option<Frame>, TransportError> {
        let Some(rfb) = &self.rfb else {
            if let Some(recorder) = self
                .recorder
                .as_ref()
                .filter(|r| r.records_client_messages())
                && let Some(bytes) = binary_payload(&frame)
            {
                self.check_recording(recorder.client_message(&bytes))?;
            }
            return Ok(Some(frame));
        };
        let bytes = observed_bytes(frame)?;
        let chunk = rfb
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .client_sent_as_observer(&bytes)
            .map_err(|error| violation(&error))?;
        let forwarded = match chunk {
            ClientChunk::Unchanged => bytes,
            ClientChunk::Filtered { kept, dropped } => {
                for message in dropped {
                    let before = self
                        .dropped_input
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if before == 0 {
                        tracing::info!(
                            message = message.label(),
                            "observer session: input is not passed to the VM"
                        );
                    }
                    self.metrics.observer_input_dropped(message.label());
                }
                if kept.is_empty() {
                    return Ok(None);
                }
                Bytes::from(kept)
            }
        };
        if let Some(recorder) = self
            .recorder
            .as_ref()
            .filter(|r| r.records_client_messages())
        {
            self.check_recording(recorder.client_message(&forwarded))?;
        }
        Ok(Some(Frame::Binary(forwarded)))
    }

    /// Inspects what the upstream (the VM's VNC server) sends.
    pub fn inspect_upstream_frame(&self, frame: Frame) -> Result<Option<Frame>, TransportError> {
        let Some(rfb) = &self.rfb else {
            if let Some(recorder) = &self.recorder
                && let Frame::Binary(bytes) = &frame
            {
                self.check_recording(recorder.server_message(bytes))?;
            }
            return Ok(Some(frame));
        };
        let bytes = observed_bytes(frame)?;
        rfb.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .server_sent(&bytes)
            .map_err(|error| violation(&error))?;
        if let Some(recorder) = &self.recorder {
            self.check_recording(recorder.server_message(&bytes))?;
        }
        Ok(Some(Frame::Binary(bytes)))
    }

    fn check_recording(&self, still_recording: bool) -> Result<(), TransportError> {
        if still_recording || !self.strict_recording {
            return Ok(());
        }
        Err(TransportError::Violation(CloseFrame::new(
            close_code::INTERNAL_ERROR,
            "the session recording failed",
        )))
    }
}

/// The payload of an observed session's data frame; a text frame is refused (the console
/// protocol is binary, and an observer's input must not pass unfollowed).
fn observed_bytes(frame: Frame) -> Result<Bytes, TransportError> {
    match frame {
        Frame::Binary(bytes) => Ok(bytes),
        Frame::MaskedBinary(payload) => Ok(payload.unmask()),
        Frame::Text(_) => Err(TransportError::Violation(CloseFrame::new(
            close_code::POLICY_VIOLATION,
            "observer consoles need binary WebSocket messages",
        ))),
        // Only data frames are inspected.
        other => Err(TransportError::Protocol(
            format!("not a data frame: {other:?}").into(),
        )),
    }
}

/// A copy of a binary frame's payload for the recording; text frames are not recorded.
fn binary_payload(frame: &Frame) -> Option<Bytes> {
    match frame {
        Frame::Binary(bytes) => Some(bytes.clone()),
        Frame::MaskedBinary(payload) => Some(payload.clone().unmask()),
        _ => None,
    }
}

/// The close for a console stream the proxy cannot follow; the reason names the problem.
fn violation(error: &RfbError) -> TransportError {
    let mut reason = error.to_string();
    // A close reason is at most 123 bytes.
    reason.truncate(123);
    TransportError::Violation(CloseFrame::new(close_code::POLICY_VIOLATION, reason))
}
