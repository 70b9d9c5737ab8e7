//! One overlay connection (dialed or accepted) as a byte stream: tokio `AsyncRead` +
//! `AsyncWrite`, with end-to-end encryption when the service requires it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::PollSender;

use crate::channel::flow::FlowConn;
use crate::channel::frame::Message;
use crate::channel::xgress::Windows;
use crate::channel::{Channel, Event, Inbox};
use crate::context::{ContextOptions, ZitiContext};
use crate::crypto::{HEADER_LEN, Opener, Sealer, SessionKeys};
use crate::edge;
use crate::peer::DialerIdentity;

/// Plaintext bytes per Data message.
const MAX_CHUNK: usize = 32 * 1024;

/// How received Data is read.
enum Receive {
    Plain,
    /// Encrypted; the peer's first Data is its 24-byte stream header.
    AwaitHeader(SessionKeys),
    Open(Opener),
}

/// How a connection's data travels.
pub(crate) enum DataPath {
    /// Edge Data messages, no flow control (routers that do not offer it, or turned off).
    Legacy(Inbox),
    /// Per-circuit flow control.
    Flow(Arc<FlowConn>),
}

/// The flow-control windows `options` ask for.
pub(crate) fn flow_windows(options: &ContextOptions) -> Windows {
    let window = u32::try_from(options.flow_window).unwrap_or(u32::MAX);
    Windows { send: window, receive: window }
}

/// Everything a connection is made of, assembled by dial or accept.
pub(crate) struct ConnParts {
    pub context: ZitiContext,
    pub channel: Channel,
    pub conn_id: u32,
    pub service: String,
    pub dialer: Option<DialerIdentity>,
    pub circuit_id: Option<String>,
    pub path: DataPath,
    /// Our sending stream (its header already sent) and the keys to open the peer's.
    pub crypto: Option<(Sealer, SessionKeys)>,
}

/// A connection over the overlay. Dropping it closes it.
pub struct ZitiConn {
    _context: ZitiContext,
    channel: Channel,
    conn_id: u32,
    service: String,
    dialer: Option<DialerIdentity>,
    circuit_id: Option<String>,
    path: DataPath,
    outbound: PollSender<Message>,
    sealer: Option<Sealer>,
    receive: Receive,
    unread: Bytes,
    read_done: bool,
    write_done: bool,
    closed: bool,
}

impl std::fmt::Debug for ZitiConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZitiConn")
            .field("service", &self.service)
            .field("conn_id", &self.conn_id)
            .field("router", &self.channel.router())
            .field("dialer", &self.dialer)
            .field("encrypted", &self.sealer.is_some())
            .field("flow_control", &matches!(self.path, DataPath::Flow(_)))
            .finish_non_exhaustive()
    }
}

impl ZitiConn {
    pub(crate) fn new(parts: ConnParts) -> Self {
        let (sealer, receive) = match parts.crypto {
            Some((sealer, keys)) => (Some(sealer), Receive::AwaitHeader(keys)),
            None => (None, Receive::Plain),
        };
        Self {
            _context: parts.context,
            outbound: PollSender::new(parts.channel.outbound()),
            channel: parts.channel,
            conn_id: parts.conn_id,
            service: parts.service,
            dialer: parts.dialer,
            circuit_id: parts.circuit_id,
            path: parts.path,
            sealer,
            receive,
            unread: Bytes::new(),
            read_done: false,
            write_done: false,
            closed: false,
        }
    }

    /// The name of the service this connection belongs to.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// For accepted connections: who dialed (see [`DialerIdentity`] on trusting it).
    pub fn dialer(&self) -> Option<&DialerIdentity> {
        self.dialer.as_ref()
    }

    /// The fabric circuit carrying this connection, when the router named it.
    pub fn circuit_id(&self) -> Option<&str> {
        self.circuit_id.as_deref()
    }

    /// Whether the connection uses per-circuit flow control (a reader that stops holds
    /// up only this connection), rather than the legacy data path.
    pub fn is_flow_controlled(&self) -> bool {
        matches!(self.path, DataPath::Flow(_))
    }

    /// Whether the payload is end-to-end encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.sealer.is_some()
    }

    /// Handles one received Data body; sets `unread` to its plaintext.
    fn receive_data(&mut self, body: Bytes) -> io::Result<()> {
        match &mut self.receive {
            Receive::Plain => self.unread = body,
            Receive::AwaitHeader(keys) => {
                if body.len() != HEADER_LEN {
                    return Err(invalid("the peer's first message is not an encryption header"));
                }
                let opener = keys.opener(&body).map_err(|_| invalid("bad encryption header"))?;
                self.receive = Receive::Open(opener);
            }
            Receive::Open(opener) => {
                let plain = opener.open(&body).map_err(|err| invalid(&err.to_string()))?;
                self.unread = Bytes::from(plain);
            }
        }
        Ok(())
    }

    fn send_close(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        let message = self.channel.sequenced(edge::state_closed(self.conn_id, "closed"));
        let outbound = self.channel.outbound();
        // Behind any queued Data; wait for room off this (possibly sync) context if needed.
        if let Err(TrySendError::Full(message)) = outbound.try_send(message)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = outbound.send(message).await;
            });
        }
    }
}

fn invalid(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.to_owned())
}

fn broken(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, reason.to_owned())
}

impl ZitiConn {
    /// Waits until received plaintext is in `unread` or the peer has finished sending.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.unread.is_empty() && !self.read_done {
            match &mut self.path {
                DataPath::Flow(flow) => match ready!(flow.poll_read(&self.channel, cx)) {
                    Ok(Some(delivery)) => {
                        if !delivery.data.is_empty() {
                            self.receive_data(delivery.data)?;
                        }
                        self.read_done |= delivery.fin || delivery.end;
                    }
                    Ok(None) => self.read_done = true,
                    Err(reason) => {
                        self.read_done = true;
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, reason)));
                    }
                },
                DataPath::Legacy(inbox) => match ready!(inbox.poll_recv(cx)) {
                    Some(Event::Message(message)) => match message.content_type {
                        edge::content::DATA => {
                            let flags = message.header_u32(edge::header::FLAGS).unwrap_or(0);
                            if !message.body.is_empty() {
                                self.receive_data(message.body)?;
                            }
                            if flags & edge::FLAG_FIN != 0 {
                                self.read_done = true;
                            }
                        }
                        edge::content::STATE_CLOSED => {
                            tracing::debug!(conn_id = self.conn_id, reason = %message.body_text(), "peer closed");
                            self.read_done = true;
                            self.closed = true;
                        }
                        _ => {}
                    },
                    Some(Event::Lost(reason)) => {
                        self.read_done = true;
                        self.closed = true;
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, reason)));
                    }
                    None => {
                        self.read_done = true;
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "connection lost")));
                    }
                },
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Waits for received bytes and returns up to `max` of them as they arrived (the
    /// decrypted payload itself, not a copy); `None` once the peer has finished sending.
    ///
    /// An application that forwards or echoes what it reads needs no buffer of its own
    /// this way: an idle connection then costs only what the SDK keeps for it.
    pub async fn read_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await?;
        if self.unread.is_empty() {
            return Ok(None);
        }
        let n = self.unread.len().min(max.max(1));
        Ok(Some(self.unread.split_to(n)))
    }
}

impl AsyncRead for ZitiConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_fill(cx))?;
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..n]);
        this.unread.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// Reads without a copy into a caller's buffer: `fill_buf` lends the received payload.
impl AsyncBufRead for ZitiConn {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        ready!(this.poll_fill(cx))?;
        Poll::Ready(Ok(&this.unread))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.unread.advance(amt.min(this.unread.len()));
    }
}

impl ZitiConn {
    /// Sends one Data (legacy) or payload (flow control) once there is room for it.
    fn poll_send(&mut self, cx: &mut Context<'_>, body: &[u8], fin: bool) -> Poll<io::Result<()>> {
        if let DataPath::Flow(flow) = &self.path {
            ready!(flow.poll_writable(cx)).map_err(broken)?;
        }
        ready!(self.outbound.poll_reserve(cx)).map_err(|_| broken("edge router channel closed"))?;
        let body = match &mut self.sealer {
            Some(sealer) if !body.is_empty() => {
                Bytes::from(sealer.seal(body).map_err(|err| invalid(&err.to_string()))?)
            }
            _ => Bytes::copy_from_slice(body),
        };
        let message = match &self.path {
            DataPath::Legacy(_) if fin => Some(edge::fin(self.conn_id)),
            DataPath::Legacy(_) => Some(edge::data(self.conn_id, body)),
            DataPath::Flow(flow) => flow.send(body, fin),
        };
        match message {
            Some(message) => {
                let message = self.channel.sequenced(message);
                self.outbound.send_item(message).map_err(|_| broken("edge router channel closed"))?;
            }
            // Held until the circuit starts; the reserved slot is not needed.
            None => {
                self.outbound.abort_send();
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ZitiConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let peer_closed = matches!(&this.path, DataPath::Legacy(inbox) if inbox.peer_closed());
        if this.closed || this.write_done || peer_closed {
            return Poll::Ready(Err(broken("connection closed for writing")));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let chunk = &buf[..buf.len().min(MAX_CHUNK)];
        ready!(this.poll_send(cx, chunk, false))?;
        Poll::Ready(Ok(chunk.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Messages are handed to the channel writer as they are written.
        Poll::Ready(Ok(()))
    }

    /// Half-close: tells the peer no more data follows (FIN); reading goes on.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.write_done || this.closed {
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_send(cx, &[], true))?;
        this.write_done = true;
        Poll::Ready(Ok(()))
    }
}

impl Drop for ZitiConn {
    fn drop(&mut self) {
        match &self.path {
            DataPath::Flow(flow) => {
                // Our last data may still need resending: the channel finishes the
                // circuit once it is acknowledged.
                if flow.close(&self.channel) {
                    self.channel.deregister(self.conn_id);
                }
            }
            DataPath::Legacy(_) => {
                self.channel.deregister(self.conn_id);
                self.send_close();
            }
        }
    }
}
