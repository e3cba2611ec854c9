//! Test transports and scripted peers shared by the relay tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use proxy_core::{CloseFrame, Frame, MemoryTransport, TransportError};

/// Wraps a transport and makes its operations return `Pending` (after waking the task) whenever
/// the next entry of a cyclic schedule says so: random readiness and random stalls. Each
/// operation (read, ready, flush) walks the schedule on its own, and the schedule always ends
/// with a "go", so every operation makes progress eventually.
pub struct Chaos<T> {
    inner: T,
    schedule: Vec<bool>,
    positions: [usize; 3],
}

const READ: usize = 0;
const READY: usize = 1;
const FLUSH: usize = 2;

impl<T> Chaos<T> {
    pub fn new(inner: T, mut schedule: Vec<bool>) -> Self {
        schedule.push(false);
        Chaos {
            inner,
            schedule,
            positions: [0; 3],
        }
    }

    fn stall(&mut self, operation: usize, cx: &mut Context<'_>) -> bool {
        let position = &mut self.positions[operation];
        let stall = self.schedule[*position % self.schedule.len()];
        *position += 1;
        if stall {
            cx.waker().wake_by_ref();
        }
        stall
    }
}

impl<T: Stream + Unpin> Stream for Chaos<T> {
    type Item = T::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T::Item>> {
        if self.stall(READ, cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<T: Sink<Frame> + Unpin> Sink<Frame> for Chaos<T> {
    type Error = T::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        if self.stall(READY, cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Frame) -> Result<(), T::Error> {
        Pin::new(&mut self.inner).start_send(frame)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        if self.stall(FLUSH, cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), T::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A handle that makes a [`Faulty`] transport fail its next read or write.
#[derive(Clone, Default)]
pub struct FaultSwitch {
    read: Arc<Mutex<Option<TransportError>>>,
    write: Arc<Mutex<Option<TransportError>>>,
}

impl FaultSwitch {
    pub fn fail_next_read(&self, error: TransportError) {
        *self.read.lock().unwrap() = Some(error);
    }

    pub fn fail_next_write(&self, error: TransportError) {
        *self.write.lock().unwrap() = Some(error);
    }
}

/// A [`MemoryTransport`] whose reads or writes fail on demand (see [`FaultSwitch`]).
pub struct Faulty {
    inner: MemoryTransport,
    switch: FaultSwitch,
}

impl Faulty {
    pub fn new(inner: MemoryTransport) -> (Self, FaultSwitch) {
        let switch = FaultSwitch::default();
        (
            Faulty {
                inner,
                switch: switch.clone(),
            },
            switch,
        )
    }
}

impl Stream for Faulty {
    type Item = Result<Frame, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(error) = self.switch.read.lock().unwrap().take() {
            return Poll::Ready(Some(Err(error)));
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl Sink<Frame> for Faulty {
    type Error = TransportError;

    fn poll_ready(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), TransportError>> {
        if let Some(error) = self.switch.write.lock().unwrap().take() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Frame) -> Result<(), TransportError> {
        Pin::new(&mut self.inner).start_send(frame)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), TransportError>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), TransportError>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Reads from a peer end until a close frame arrives, answering pings and collecting data
/// frames; returns the data and the close (`None` if the stream ended without one).
pub async fn read_until_close(
    peer: &mut MemoryTransport,
) -> (Vec<Frame>, Option<Option<CloseFrame>>) {
    let mut data = Vec::new();
    while let Some(frame) = peer.next().await {
        match frame.unwrap() {
            Frame::Close(close) => return (data, Some(close)),
            Frame::Ping(payload) => peer.send(Frame::Pong(payload)).await.unwrap(),
            Frame::Pong(_) => {}
            frame => data.push(frame),
        }
    }
    (data, None)
}

/// Reads until a close frame arrives, echoes it back (completing the handshake) and returns it.
pub async fn answer_close(peer: &mut MemoryTransport) -> Option<CloseFrame> {
    let (_, close) = read_until_close(peer).await;
    let close = close.expect("the relay sent a close frame");
    peer.send(Frame::Close(close.clone())).await.unwrap();
    close
}

/// Asserts that the peer's stream ends with nothing more on it.
pub async fn assert_ends(peer: &mut MemoryTransport) {
    let next = peer.next().await;
    assert!(
        next.is_none(),
        "expected the end of the stream, got {next:?}"
    );
}

pub fn close(code: u16, reason: &str) -> CloseFrame {
    CloseFrame::new(code, reason)
}
