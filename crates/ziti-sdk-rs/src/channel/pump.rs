//! The channel's two tasks: the writer batches queued messages into TLS writes; the
//! reader hands replies to their requests and everything else to the connection it names.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Decoder;

use super::flow::FlowConn;
use super::frame::{self, FrameCodec, Message};
use super::shared::{Closed, ConnKind, REJECTION_WINDOW, Route, Shared, WRITE_BATCH, lock};
use crate::edge;

/// Reads the next frame; `None` at a clean end of stream.
pub(super) async fn read_frame(
    reader: &mut ReadHalf<TlsStream<TcpStream>>,
    codec: &mut FrameCodec,
    buf: &mut BytesMut,
) -> Result<Option<Message>, frame::FrameError> {
    loop {
        if let Some(message) = codec.decode(buf)? {
            return Ok(Some(message));
        }
        if reader.read_buf(buf).await? == 0 {
            return codec.decode_eof(buf);
        }
    }
}

pub(super) async fn write_loop(
    shared: Arc<Shared>,
    mut writer: WriteHalf<TlsStream<TcpStream>>,
    mut outbound: mpsc::Receiver<Message>,
    mut control: mpsc::UnboundedReceiver<Message>,
) {
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => break,
            Some(message) = control.recv() => message,
            Some(message) = outbound.recv() => message,
            else => break,
        };
        // Control frames go ahead of data.
        fill_batch(&mut buf, first, || control.try_recv().ok().or_else(|| outbound.try_recv().ok()));
        let written = async {
            writer.write_all(&buf).await?;
            writer.flush().await
        };
        if let Err(err) = written.await {
            tracing::debug!(router = %shared.router, %err, "edge router channel write failed");
            // The reader sees the same failure and knows better why (e.g. a rejection).
            let _ = tokio::time::timeout(Duration::from_secs(5), shared.cancel.cancelled()).await;
            break;
        }
        buf.clear();
    }
    shutdown(&shared, Closed::Lost);
    let _ = writer.shutdown().await;
}

pub(super) async fn read_loop(
    shared: Arc<Shared>,
    mut reader: ReadHalf<TlsStream<TcpStream>>,
    mut codec: FrameCodec,
    mut buf: BytesMut,
    hello_at: Instant,
) {
    let outcome = tokio::select! {
        () = shared.cancel.cancelled() => None,
        result = async {
            // Flow-controlled connections whose payloads wait for their acknowledgement.
            let mut ack_due = Vec::new();
            loop {
                let message = match codec.decode(&mut buf)? {
                    Some(message) => message,
                    None => {
                        // All that was read is handled: acknowledge it before waiting.
                        acknowledge(&shared, &mut ack_due);
                        if reader.read_buf(&mut buf).await? > 0 {
                            continue;
                        }
                        match codec.decode_eof(&mut buf)? {
                            Some(message) => message,
                            None => break,
                        }
                    }
                };
                shared.received.fetch_add(1, Ordering::Relaxed);
                dispatch(&shared, message, &mut ack_due).await;
            }
            Ok::<_, frame::FrameError>(())
        } => Some(result),
    };
    let reason = match outcome {
        None => Closed::Lost,
        Some(result) => {
            match result {
                Ok(()) => tracing::debug!(router = %shared.router, "edge router closed the channel"),
                Err(err) => tracing::debug!(router = %shared.router, %err, "edge router channel read failed"),
            }
            close_reason(shared.received.load(Ordering::Relaxed), hello_at.elapsed())
        }
    };
    shutdown(&shared, reason);
}

/// Marks the channel closed (first reason wins) and tells every connection.
fn shutdown(shared: &Shared, reason: Closed) {
    lock(&shared.closed).get_or_insert(reason);
    shared.cancel.cancel();
    for (_, sink) in lock(&shared.sinks).drain() {
        sink.lose("edge router channel closed");
    }
    lock(&shared.pending).clear();
}

/// Sends the acknowledgements `ack_due` waits for.
fn acknowledge(shared: &Shared, ack_due: &mut Vec<Arc<FlowConn>>) {
    for flow in ack_due.drain(..) {
        flow.acknowledge(shared);
    }
}

async fn dispatch(shared: &Shared, message: Message, ack_due: &mut Vec<Arc<FlowConn>>) {
    tracing::trace!(?message, "received");
    let (conn_id, message) = match classify(message, |reply_for| lock(&shared.pending).remove(&reply_for)) {
        Inbound::Reply(waiter, message) => {
            let _ = waiter.send(message);
            return;
        }
        Inbound::Inspect(conn_id, message) => {
            let kind = conn_id.and_then(|id| lock(&shared.sinks).get(&id).map(|sink| sink.kind));
            let (conn_type, detail) = inspect_answer(kind);
            let reply = edge::inspect_response(&message, conn_type, detail);
            let _ = shared.control.send(Message { sequence: shared.sequence.fetch_add(1, Ordering::Relaxed), ..reply });
            return;
        }
        Inbound::Unaddressed(message) => {
            tracing::debug!(content_type = message.content_type, "ignoring a channel message without a connection");
            return;
        }
        Inbound::Conn(conn_id, message) => (conn_id, message),
    };
    let Some(route) = lock(&shared.sinks).get(&conn_id).map(|sink| sink.route.clone()) else {
        tracing::trace!(conn_id, content_type = message.content_type, "message for an unknown connection");
        return;
    };
    let sink = match route {
        Route::Flow(flow) => {
            if flow.on_message(shared, message) && !ack_due.iter().any(|due| Arc::ptr_eq(due, &flow)) {
                ack_due.push(flow);
            }
            return;
        }
        Route::Inbox(sink) => sink,
    };
    // The push below may wait for a slow reader: acknowledge first.
    acknowledge(shared, ack_due);
    if sink.push(message, shared.settings.stall).await.is_err() {
        tracing::warn!(conn_id, "connection made no progress reading; closing it");
        lock(&shared.sinks).remove(&conn_id);
        sink.lose("receive queue overflow: the application stopped reading");
        let closed = edge::state_closed(conn_id, "receiver stalled");
        let _ = shared.control.send(Message { sequence: shared.sequence.fetch_add(1, Ordering::Relaxed), ..closed });
    }
}

/// Encodes `first`, then what `next` yields, into `buf` until it holds a batch's worth.
fn fill_batch(buf: &mut BytesMut, first: Message, mut next: impl FnMut() -> Option<Message>) {
    let mut message = Some(first);
    while let Some(current) = message.take() {
        if let Err(err) = frame::encode_into(&current, buf) {
            tracing::warn!(%err, "dropping an unencodable message");
        }
        if buf.len() < WRITE_BATCH {
            message = next();
        }
    }
}

/// Why a channel whose reader ended closed: a router that hangs up soon after the hello
/// without sending anything refused our token.
fn close_reason(received: u64, since_hello: Duration) -> Closed {
    if received == 0 && since_hello < REJECTION_WINDOW { Closed::Rejected } else { Closed::Lost }
}

/// Where one inbound message goes; `W` is the waiter of a request.
#[derive(Debug)]
enum Inbound<W> {
    /// The reply a request waits for.
    Reply(W, Message),
    /// A ConnInspect request, about the connection it names if any.
    Inspect(Option<u32>, Message),
    /// A message for this connection.
    Conn(u32, Message),
    /// A message that names no connection.
    Unaddressed(Message),
}

/// Sorts an inbound message. `take_waiter` removes and returns the waiter for a request
/// sequence; a reply nobody waits for any more is routed like any other message.
fn classify<W>(message: Message, take_waiter: impl FnOnce(i32) -> Option<W>) -> Inbound<W> {
    if let Some(reply_for) = message.reply_for()
        && let Some(waiter) = take_waiter(reply_for)
    {
        return Inbound::Reply(waiter, message);
    }
    let conn_id = edge::conn_id(&message);
    if message.content_type == edge::content::CONN_INSPECT_REQUEST {
        return Inbound::Inspect(conn_id, message);
    }
    match conn_id {
        Some(conn_id) => Inbound::Conn(conn_id, message),
        None => Inbound::Unaddressed(message),
    }
}

/// The ConnInspect answer (connection type, detail) for what the id is registered as.
fn inspect_answer(kind: Option<ConnKind>) -> (u8, &'static str) {
    match kind {
        Some(ConnKind::Bind) => (edge::conn_type::BIND, "listening"),
        Some(ConnKind::Dial) => (edge::conn_type::DIAL, "connected"),
        None => (edge::conn_type::UNKNOWN, "unknown connection"),
    }
}

#[cfg(test)]
#[path = "pump_tests.rs"]
mod tests;
