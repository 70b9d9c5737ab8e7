//! Per-connection receive queues. The channel reader appends to a connection's queue
//! without waiting while the queue is under its byte budget, so a connection that reads
//! a little slowly does not hold up the others. Over budget, the reader waits for that
//! connection to make progress (the legacy data path has no other flow control: this is
//! what pushes back on the sender through TCP); a connection that makes no progress for
//! the stall limit is cut off so that the channel moves on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::frame::Message;

/// What a connection receives from the channel.
#[derive(Debug)]
pub(crate) enum Event {
    Message(Message),
    /// The connection can receive nothing more: the channel closed, or the queue overflowed.
    Lost(&'static str),
}

#[derive(Debug)]
struct Level {
    buffered: AtomicUsize,
    drained: Notify,
    /// Set as soon as the peer's StateClosed is queued, so writers fail fast.
    peer_closed: AtomicBool,
}

/// Whether a body of `len` bytes may be queued now, with `buffered` bytes unread against
/// `budget`. Empty bodies (FIN, StateClosed) and an empty queue always admit, so a
/// message larger than the budget still gets through, one at a time.
pub(crate) fn admits(budget: usize, buffered: usize, len: usize) -> bool {
    len == 0 || buffered == 0 || buffered.saturating_add(len) <= budget
}

/// The channel's end of a connection's queue.
#[derive(Debug, Clone)]
pub(crate) struct InboxSender {
    tx: mpsc::UnboundedSender<Event>,
    level: Arc<Level>,
    budget: usize,
}

/// The connection made no progress for the stall limit (or its receiver is gone).
#[derive(Debug)]
pub(crate) struct Overflow;

impl InboxSender {
    /// Queues `message`, waiting (up to `stall_limit` without progress) while the queue
    /// is over budget. A message always fits an empty queue, however large.
    pub(crate) async fn push(&self, message: Message, stall_limit: Duration) -> Result<(), Overflow> {
        if message.content_type == crate::edge::content::STATE_CLOSED {
            self.level.peer_closed.store(true, Ordering::Release);
        }
        let len = message.body.len();
        loop {
            let drained = self.level.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if admits(self.budget, self.level.buffered.load(Ordering::Acquire), len) {
                break;
            }
            if self.tx.is_closed() {
                return Err(Overflow);
            }
            if tokio::time::timeout(stall_limit, drained).await.is_err() {
                return Err(Overflow);
            }
        }
        self.level.buffered.fetch_add(len, Ordering::AcqRel);
        self.tx.send(Event::Message(message)).map_err(|_| Overflow)
    }

    pub(crate) fn lose(&self, reason: &'static str) {
        // The receiver may already be gone; then nobody needs to know.
        let _ = self.tx.send(Event::Lost(reason));
    }
}

/// The connection's end of its queue.
#[derive(Debug)]
pub(crate) struct Inbox {
    rx: mpsc::UnboundedReceiver<Event>,
    level: Arc<Level>,
}

impl Inbox {
    /// A queue holding up to `budget` bytes of unread bodies before the sender waits.
    pub(crate) fn new(budget: usize) -> (InboxSender, Inbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let level = Arc::new(Level {
            buffered: AtomicUsize::new(0),
            drained: Notify::new(),
            peer_closed: AtomicBool::new(false),
        });
        (InboxSender { tx, level: level.clone(), budget }, Inbox { rx, level })
    }

    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let event = std::task::ready!(self.rx.poll_recv(cx));
        if let Some(Event::Message(message)) = &event
            && !message.body.is_empty()
        {
            self.level.buffered.fetch_sub(message.body.len(), Ordering::AcqRel);
            self.level.drained.notify_waiters();
        }
        Poll::Ready(event)
    }

    /// Whether the peer has closed the connection (possibly not yet read).
    pub(crate) fn peer_closed(&self) -> bool {
        self.level.peer_closed.load(Ordering::Acquire)
    }

    pub(crate) async fn recv(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // Wake a sender waiting for room: it will find the queue closed.
        self.rx.close();
        self.level.drained.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_millis(200);

    fn data(len: usize) -> Message {
        Message::new(60786, vec![0u8; len])
    }

    #[test]
    fn a_body_is_admitted_while_it_fits_the_budget() {
        assert!(admits(100, 60, 40), "exactly at the budget");
        assert!(!admits(100, 60, 41), "one byte over the budget");
        assert!(!admits(100, usize::MAX, 1), "an overflowing sum");
    }

    #[test]
    fn an_empty_queue_admits_any_body() {
        assert!(admits(100, 0, 1000));
    }

    #[test]
    fn an_empty_body_is_always_admitted() {
        assert!(admits(100, 1000, 0), "a FIN or StateClosed waited behind data");
    }

    #[tokio::test]
    async fn under_budget_never_waits() {
        let (tx, _rx) = Inbox::new(100);
        tx.push(data(60), Duration::ZERO).await.unwrap();
        tx.push(data(40), Duration::ZERO).await.unwrap();
        tx.push(data(0), Duration::ZERO).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn over_budget_waits_for_progress() {
        let (tx, mut rx) = Inbox::new(100);
        tx.push(data(100), STALL).await.unwrap();
        let push = tx.push(data(60), STALL);
        tokio::pin!(push);

        // Still waiting just short of the stall limit (the paused clock jumps there).
        let waited = tokio::time::timeout(STALL - Duration::from_millis(1), &mut push).await;
        assert!(waited.is_err(), "the push went over budget without waiting: {waited:?}");

        // The reader takes the first message: the push completes with no more time passing.
        assert!(matches!(rx.recv().await, Some(Event::Message(m)) if m.body.len() == 100));
        let progress_at = tokio::time::Instant::now();
        push.await.expect("the push fails after progress");
        assert_eq!(tokio::time::Instant::now(), progress_at, "the push did not complete on progress");
        assert!(matches!(rx.recv().await, Some(Event::Message(m)) if m.body.len() == 60));
    }

    #[tokio::test]
    async fn no_progress_within_the_stall_limit_overflows() {
        let (tx, _rx) = Inbox::new(100);
        tx.push(data(1000), STALL).await.unwrap();
        assert!(tx.push(data(1), STALL).await.is_err());
    }

    #[tokio::test]
    async fn a_dropped_reader_releases_a_waiting_sender() {
        let (tx, rx) = Inbox::new(10);
        tx.push(data(10), STALL).await.unwrap();
        drop(rx);
        let started = std::time::Instant::now();
        assert!(tx.push(data(10), Duration::from_secs(30)).await.is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
