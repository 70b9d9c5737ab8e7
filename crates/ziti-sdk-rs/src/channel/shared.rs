//! The state a channel's handle ([`super::Channel`]) and its reader and writer tasks
//! ([`super::pump`]) share: the registered connections, pending requests, the outbound
//! queues and why the channel closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::flow::FlowConn;
use super::frame::Message;
use super::inbox::InboxSender;

/// A router that closes this soon after the hello, having sent nothing, refused the token.
pub(super) const REJECTION_WINDOW: Duration = Duration::from_secs(30);
/// How many bytes the writer gathers into one TLS write.
pub(super) const WRITE_BATCH: usize = 256 * 1024;

/// What a registered connection id is, for ConnInspect answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnKind {
    Bind,
    Dial,
}

#[derive(Debug)]
pub(super) struct Sink {
    pub(super) kind: ConnKind,
    pub(super) route: Route,
}

/// Where a connection's messages go.
#[derive(Debug, Clone)]
pub(super) enum Route {
    /// The legacy data path: a queue the reader may have to wait on.
    Inbox(InboxSender),
    /// Flow control: handled at once, never waited on.
    Flow(Arc<FlowConn>),
}

impl Sink {
    pub(super) fn flow(&self) -> Option<&Arc<FlowConn>> {
        match &self.route {
            Route::Flow(flow) => Some(flow),
            Route::Inbox(_) => None,
        }
    }

    pub(super) fn lose(&self, reason: &'static str) {
        match &self.route {
            Route::Inbox(tx) => tx.lose(reason),
            Route::Flow(flow) => flow.lose(reason),
        }
    }
}

/// Why the channel closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Closed {
    Rejected,
    Lost,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) router: String,
    pub(super) router_id: String,
    pub(super) supports_bind_success: bool,
    pub(super) sequence: AtomicI32,
    pub(super) next_conn_id: AtomicU32,
    pub(super) pending: Mutex<HashMap<i32, oneshot::Sender<Message>>>,
    pub(super) sinks: Mutex<HashMap<u32, Sink>>,
    pub(super) outbound: mpsc::Sender<Message>,
    pub(super) control: mpsc::UnboundedSender<Message>,
    pub(super) cancel: CancellationToken,
    pub(super) closed: Mutex<Option<Closed>>,
    pub(super) received: AtomicU64,
    pub(super) settings: ChannelSettings,
    /// Whether the flow-control ticker runs (started with the first such connection).
    pub(super) ticking: AtomicBool,
}

impl Shared {
    /// The state of a new channel to `router`, as its hello settled it.
    pub(super) fn new(
        router: &str,
        hello: super::hello::HelloOutcome,
        outbound: mpsc::Sender<Message>,
        control: mpsc::UnboundedSender<Message>,
        settings: ChannelSettings,
    ) -> Self {
        Self {
            router: router.to_owned(),
            router_id: hello.router_id,
            supports_bind_success: hello.supports_bind_success,
            sequence: AtomicI32::new(1),
            next_conn_id: AtomicU32::new(0),
            pending: Mutex::default(),
            sinks: Mutex::default(),
            outbound,
            control,
            cancel: CancellationToken::new(),
            closed: Mutex::default(),
            received: AtomicU64::new(0),
            settings,
            ticking: AtomicBool::new(false),
        }
    }

    /// Queues `message` ahead of data, without waiting (acknowledgements, resends).
    pub(super) fn send_control(&self, message: Message) {
        let _ = self.control.send(Message { sequence: self.sequence.fetch_add(1, Ordering::Relaxed), ..message });
    }

    /// Queues `message` behind data unless the queue is full; says whether it was queued.
    pub(super) fn try_send(&self, message: Message) -> bool {
        let message = Message { sequence: self.sequence.fetch_add(1, Ordering::Relaxed), ..message };
        self.outbound.try_send(message).is_ok()
    }
}

/// Per-channel tunables.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelSettings {
    /// Bytes a connection may hold unread before the reader waits for it.
    pub budget: usize,
    /// How long a connection over budget may make no progress before it is cut off.
    pub stall: Duration,
    /// Latency probes (which also detect a dead router); `None` sends none.
    pub probe_interval: Option<Duration>,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
