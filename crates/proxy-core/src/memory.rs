//! An in-memory [`FrameTransport`](crate::FrameTransport) pair, for tests, benchmarks and fakes.
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures_util::{Sink, Stream};

use crate::{Frame, TransportError};

/// One end of an in-memory, bounded, frame-level connection made by [`MemoryTransport::pair`].
///
/// It behaves like a WebSocket for the relay: frames sent are buffered until flushed (at most
/// `capacity` unflushed frames, then `poll_ready` pushes them out or waits), the peer sees them
/// in order, each direction holds at most `capacity` frames in flight (a peer that does not read
/// stalls the writer), closing the sink ends the peer's stream, and dropping an end makes the
/// peer's stream end and its sends fail with [`TransportError::ConnectionLost`]. It does not
/// answer pings: a test that needs pongs sends them.
#[derive(Debug)]
pub struct MemoryTransport {
    incoming: Arc<Mutex<Queue>>,
    outgoing: Arc<Mutex<Queue>>,
    unflushed: VecDeque<Frame>,
    capacity: usize,
    sink_closed: bool,
}

/// One direction of a pair: the frames flushed by the writer and not yet read.
#[derive(Debug)]
struct Queue {
    frames: VecDeque<Frame>,
    capacity: usize,
    reader_waker: Option<Waker>,
    writer_waker: Option<Waker>,
    writer_gone: bool,
    reader_gone: bool,
}

impl Queue {
    fn new(capacity: usize) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Queue {
            frames: VecDeque::with_capacity(capacity),
            capacity,
            reader_waker: None,
            writer_waker: None,
            writer_gone: false,
            reader_gone: false,
        }))
    }
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // A panic while holding the lock cannot leave a queue half-updated; keep going.
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryTransport {
    /// Two connected ends; each direction holds at most `capacity` frames in flight plus
    /// `capacity` unflushed frames at the writer (a capacity of 0 is treated as 1).
    pub fn pair(capacity: usize) -> (MemoryTransport, MemoryTransport) {
        let capacity = capacity.max(1);
        let a_to_b = Queue::new(capacity);
        let b_to_a = Queue::new(capacity);
        let end = |incoming: &Arc<Mutex<Queue>>, outgoing: &Arc<Mutex<Queue>>| MemoryTransport {
            incoming: Arc::clone(incoming),
            outgoing: Arc::clone(outgoing),
            unflushed: VecDeque::with_capacity(capacity),
            capacity,
            sink_closed: false,
        };
        (end(&b_to_a, &a_to_b), end(&a_to_b, &b_to_a))
    }

    /// Moves unflushed frames into the peer's queue as far as it has room.
    fn push_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let mut queue = lock(&self.outgoing);
        if queue.reader_gone {
            return Poll::Ready(Err(TransportError::ConnectionLost));
        }
        let mut moved = false;
        while queue.frames.len() < queue.capacity {
            let Some(frame) = self.unflushed.pop_front() else {
                break;
            };
            queue.frames.push_back(frame);
            moved = true;
        }
        if moved && let Some(waker) = queue.reader_waker.take() {
            waker.wake();
        }
        if self.unflushed.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            queue.writer_waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

impl Stream for MemoryTransport {
    type Item = Result<Frame, TransportError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut queue = lock(&self.incoming);
        if let Some(frame) = queue.frames.pop_front() {
            if let Some(waker) = queue.writer_waker.take() {
                waker.wake();
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        if queue.writer_gone {
            return Poll::Ready(None);
        }
        queue.reader_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Sink<Frame> for MemoryTransport {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.sink_closed {
            return Poll::Ready(Err(TransportError::AlreadyClosed));
        }
        if self.unflushed.len() < self.capacity {
            return Poll::Ready(Ok(()));
        }
        match self.push_out(cx) {
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            _ if self.unflushed.len() < self.capacity => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        if self.sink_closed {
            return Err(TransportError::AlreadyClosed);
        }
        if lock(&self.outgoing).reader_gone {
            return Err(TransportError::ConnectionLost);
        }
        self.unflushed.push_back(frame);
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.unflushed.is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.push_out(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.sink_closed {
            return Poll::Ready(Ok(()));
        }
        if let Poll::Ready(Err(error)) = self.push_out(cx) {
            return Poll::Ready(Err(error));
        }
        if !self.unflushed.is_empty() {
            return Poll::Pending;
        }
        self.sink_closed = true;
        let mut queue = lock(&self.outgoing);
        queue.writer_gone = true;
        if let Some(waker) = queue.reader_waker.take() {
            waker.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        let mut outgoing = lock(&self.outgoing);
        outgoing.writer_gone = true;
        if let Some(waker) = outgoing.reader_waker.take() {
            waker.wake();
        }
        drop(outgoing);
        let mut incoming = lock(&self.incoming);
        incoming.reader_gone = true;
        if let Some(waker) = incoming.writer_waker.take() {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};

    use super::*;

    #[tokio::test]
    async fn frames_arrive_in_order_after_flush_and_close_ends_the_stream() {
        let (mut a, mut b) = MemoryTransport::pair(2);
        for i in 0..10u8 {
            let sent = a.send(Frame::Binary(Bytes::from(vec![i])));
            let received = b.next();
            let (sent, received) = tokio::join!(sent, received);
            sent.unwrap();
            assert_eq!(
                received.unwrap().unwrap(),
                Frame::Binary(Bytes::from(vec![i]))
            );
        }
        a.close().await.unwrap();
        assert!(b.next().await.is_none());
    }

    #[tokio::test]
    async fn dropping_an_end_fails_the_peers_sends_and_ends_its_stream() {
        let (a, mut b) = MemoryTransport::pair(1);
        drop(a);
        assert!(b.next().await.is_none());
        let error = b
            .send(Frame::Text(Bytes::from_static(b"x")))
            .await
            .unwrap_err();
        assert!(matches!(error, TransportError::ConnectionLost));
    }
}
