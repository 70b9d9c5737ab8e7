//! Drives one flow-controlled connection's [`Circuit`] from the channel: the reader
//! hands it what the router sends (never waiting, so no connection can hold up the
//! channel), the connection reads and writes through it, and a per-channel ticker
//! resends what was not acknowledged and finishes circuits whose connection was dropped.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::connection::Channel;
use super::frame::Message;
use super::shared::{Shared, lock};
use super::xgress::{self, Ack, Circuit, Delivery, Payload};
use crate::edge;

/// How often the ticker looks for payloads to resend.
pub(super) const TICK: Duration = Duration::from_millis(50);
/// How long a dropped connection waits for its last data to be acknowledged before
/// its circuit is ended regardless.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// Why a flow-controlled connection can no longer be used.
pub(crate) type Lost = &'static str;

#[derive(Debug)]
struct State {
    circuit: Circuit,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// The router ended the connection (StateClosed): its circuit is gone.
    peer_closed: bool,
    lost: Option<Lost>,
    /// Set when the application dropped the connection: finish by then.
    closing_until: Option<Instant>,
}

impl State {
    fn wake(&mut self) {
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }
}

/// A flow-controlled connection's shared state.
#[derive(Debug)]
pub(crate) struct FlowConn {
    state: Mutex<State>,
}

impl FlowConn {
    pub(crate) fn new(circuit: Circuit) -> Arc<FlowConn> {
        Arc::new(FlowConn {
            state: Mutex::new(State {
                circuit,
                reader: None,
                writer: None,
                peer_closed: false,
                lost: None,
                closing_until: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wall-clock milliseconds: round trips are measured against the router's stamps.
    fn now(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
    }

    /// The dialer's first payload.
    pub(crate) fn start(&self) -> Vec<Message> {
        let now = self.now();
        self.lock().circuit.start(now)
    }

    /// What the router sent for this connection. Never waits. Returns whether payloads
    /// wait for their acknowledgement ([`FlowConn::acknowledge`]).
    pub(super) fn on_message(&self, shared: &Shared, message: Message) -> bool {
        let now = self.now();
        let mut state = self.lock();
        match message.content_type {
            xgress::content::PAYLOAD => match Payload::from_message(message) {
                Ok(payload) => {
                    for out in state.circuit.accept_payload(payload, now) {
                        shared.send_control(out);
                    }
                    if state.closing_until.is_some() {
                        state.circuit.discard_received();
                    } else if let Some(waker) = state.reader.take() {
                        waker.wake();
                    }
                    return true;
                }
                Err(err) => {
                    tracing::debug!(%err, "unreadable flow-control payload; dropping the connection");
                    state.lost = Some("the router sent an unreadable flow-control payload");
                    state.wake();
                }
            },
            xgress::content::ACKNOWLEDGEMENT => match Ack::from_message(&message) {
                Ok(ack) => {
                    let (writable, lost) = state.circuit.on_ack(&ack, now);
                    if !lost.is_empty() {
                        tracing::trace!(payloads = lost.len(), "resending payloads later ones overtook");
                    }
                    for message in lost {
                        // A full queue skips this resend; the resend timeout tries again.
                        shared.try_send(message);
                    }
                    if writable && let Some(waker) = state.writer.take() {
                        waker.wake();
                    }
                }
                Err(err) => tracing::debug!(%err, "ignoring an unreadable acknowledgement"),
            },
            edge::content::STATE_CLOSED => {
                tracing::debug!(reason = %message.body_text(), "router closed a flow-controlled connection");
                state.peer_closed = true;
                state.wake();
            }
            // Trace routes: answering them is optional.
            xgress::content::CONTROL => tracing::trace!("ignoring an xgress control message"),
            other => tracing::trace!(content_type = other, "ignoring a message on a flow-controlled connection"),
        }
        false
    }

    /// Sends one acknowledgement for the payloads kept since the last.
    pub(super) fn acknowledge(&self, shared: &Shared) {
        if let Some(ack) = self.lock().circuit.acknowledgement() {
            shared.send_control(ack);
        }
    }

    /// The channel is gone.
    pub(super) fn lose(&self, reason: Lost) {
        let mut state = self.lock();
        state.lost.get_or_insert(reason);
        state.wake();
    }

    /// The next delivery; `Ok(None)` once the router closed the connection and all that
    /// arrived before was read.
    pub(crate) fn poll_read(&self, channel: &Channel, cx: &mut Context<'_>) -> Poll<Result<Option<Delivery>, Lost>> {
        let mut state = self.lock();
        if let Some(delivery) = state.circuit.next_delivery() {
            if let Some(update) = state.circuit.window_update() {
                channel.send_control(update);
            }
            return Poll::Ready(Ok(Some(delivery)));
        }
        if let Some(reason) = state.lost {
            return Poll::Ready(Err(reason));
        }
        if state.peer_closed {
            return Poll::Ready(Ok(None));
        }
        state.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Ready when the windows allow one more payload.
    pub(crate) fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<Result<(), Lost>> {
        let mut state = self.lock();
        if let Some(reason) = state.lost {
            return Poll::Ready(Err(reason));
        }
        if state.peer_closed {
            return Poll::Ready(Err("connection closed by the peer"));
        }
        if state.circuit.writable() {
            return Poll::Ready(Ok(()));
        }
        state.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Numbers `data` (or a half-close) as the next payload; the message to send now,
    /// if the circuit has started.
    pub(crate) fn send(&self, data: Bytes, fin: bool) -> Option<Message> {
        let now = self.now();
        self.lock().circuit.send(data, fin, now)
    }

    /// The application dropped the connection: end our side once what we sent is
    /// acknowledged. Returns true when nothing is left to do (deregister now).
    pub(crate) fn close(&self, channel: &Channel) -> bool {
        let now = self.now();
        let mut state = self.lock();
        if state.peer_closed || state.lost.is_some() {
            return true;
        }
        state.closing_until = Some(Instant::now() + CLOSE_WAIT);
        state.circuit.discard_received();
        if let Some(end) = state.circuit.send_end(now) {
            channel.send_control(end);
        }
        false
    }

    /// Resends what is due; ends the circuit of a dropped connection once it is done.
    /// Returns true when the connection is finished (deregister it).
    pub(super) fn tick(&self, shared: &Shared) -> bool {
        let now = self.now();
        let mut state = self.lock();
        if state.lost.is_some() {
            return true;
        }
        let resend = state.circuit.retransmit(now);
        if !resend.is_empty() {
            tracing::debug!(payloads = resend.len(), "resending unacknowledged payloads");
        }
        for message in resend {
            // A full queue skips this resend; the next pass tries again.
            shared.try_send(message);
        }
        let Some(until) = state.closing_until else { return false };
        if state.peer_closed {
            return true;
        }
        if state.circuit.all_acked() || Instant::now() >= until {
            let end = state.circuit.circuit_end(now);
            shared.send_control(end);
            shared.send_control(xgress::close_message(state.circuit.circuit_id()));
            return true;
        }
        false
    }
}

/// The ticker of one channel: runs while the channel is open.
pub(super) async fn tick_loop(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let flows: Vec<(u32, Arc<FlowConn>)> =
            lock(&shared.sinks).iter().filter_map(|(id, sink)| sink.flow().map(|flow| (*id, flow.clone()))).collect();
        for (id, flow) in flows {
            if flow.tick(&shared) {
                let mut sinks = lock(&shared.sinks);
                if sinks.get(&id).and_then(|sink| sink.flow()).is_some_and(|current| Arc::ptr_eq(current, &flow)) {
                    sinks.remove(&id);
                }
            }
        }
    }
}
