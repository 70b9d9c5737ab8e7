//! One TLS channel to an edge router: hello, a writer task, and a reader task that hands
//! replies to their requests and everything else to the connection it names.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

use bytes::BytesMut;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;

use super::flow::{self, FlowConn};
use super::frame::{self, FrameCodec, Message};
use super::hello;
use super::inbox::Inbox;
use super::pump;
use super::shared::{ChannelSettings, Closed, ConnKind, Route, Shared, Sink, lock};
use crate::error::Error;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const OUTBOUND_QUEUE: usize = 256;

/// A live channel to one edge router; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Channel {
    pub(super) shared: Arc<Shared>,
}

impl Channel {
    /// Connects over TLS, sends the hello with `token`, and waits for the router's answer.
    pub(crate) async fn connect(
        address: &str,
        tls: Arc<ClientConfig>,
        token: &str,
        hello_body: &str,
        settings: ChannelSettings,
    ) -> Result<Channel, Error> {
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let server_name =
            ServerName::try_from(host).map_err(|_| Error::Protocol(format!("bad router address {address}")))?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| Error::Timeout("edge router TCP connect"))??;
        tcp.set_nodelay(true)?;
        let mut tls = tokio::time::timeout(CONNECT_TIMEOUT, TlsConnector::from(tls).connect(server_name, tcp))
            .await
            .map_err(|_| Error::Timeout("edge router TLS handshake"))??;

        let hello = hello::request(token, hello_body);
        let mut buf = BytesMut::new();
        frame::encode_into(&hello, &mut buf).map_err(|err| Error::Protocol(err.to_string()))?;
        tls.write_all(&buf).await?;
        tls.flush().await?;

        let (mut reader, writer) = tokio::io::split(tls);
        let mut codec = FrameCodec::default();
        let mut inbound = BytesMut::with_capacity(64 * 1024);
        let reply = tokio::time::timeout(HELLO_TIMEOUT, pump::read_frame(&mut reader, &mut codec, &mut inbound))
            .await
            .map_err(|_| Error::Timeout("edge router hello reply"))?
            .map_err(|err| Error::Protocol(format!("hello to {address}: {err}")))?
            .ok_or_else(|| Error::Protocol(format!("router {address} closed the channel during the hello")))?;
        tracing::trace!(message = ?reply, "hello reply");
        let outcome = hello::on_reply(&reply)
            .map_err(|refused| Error::Protocol(format!("router {address} refused the hello: {}", refused.reason)))?;

        let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
        let (control, control_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(address, outcome, outbound, control, settings));
        // Everything the channel's tasks log carries the router it talks to.
        let span = tracing::info_span!("router", address, id = %shared.router_id);
        tracing::debug!(parent: &span, "edge router channel up");
        tokio::spawn(pump::write_loop(shared.clone(), writer, outbound_rx, control_rx).instrument(span.clone()));
        tokio::spawn(pump::read_loop(shared.clone(), reader, codec, inbound, Instant::now()).instrument(span.clone()));
        let channel = Channel { shared };
        if let Some(interval) = settings.probe_interval {
            tokio::spawn(probe_loop(channel.clone(), interval).instrument(span));
        }
        Ok(channel)
    }

    pub(crate) fn router(&self) -> &str {
        &self.shared.router
    }

    pub(crate) fn supports_bind_success(&self) -> bool {
        self.shared.supports_bind_success
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.cancel.is_cancelled()
    }

    /// Closes the channel; every connection on it sees the loss.
    pub(crate) fn close(&self) {
        self.shared.cancel.cancel();
    }

    /// How many connections and binds are registered on the channel now.
    pub(crate) fn registered(&self) -> usize {
        lock(&self.shared.sinks).len()
    }

    /// Waits until the channel is closed.
    pub(crate) async fn closed(&self) {
        self.shared.cancel.cancelled().await;
    }

    /// A channel with no router behind it (its sends fail), for unit tests of what holds
    /// channels.
    #[cfg(test)]
    pub(crate) fn detached(router: &str) -> Channel {
        let (outbound, _) = mpsc::channel(1);
        let (control, _) = mpsc::unbounded_channel();
        let outcome = hello::HelloOutcome { router_id: String::new(), supports_bind_success: true };
        let settings = ChannelSettings { budget: 1024, stall: Duration::from_secs(1), probe_interval: None };
        Channel { shared: Arc::new(Shared::new(router, outcome, outbound, control, settings)) }
    }

    /// The error to report for work that failed because this channel closed.
    pub(crate) fn closed_error(&self) -> Error {
        match *lock(&self.shared.closed) {
            Some(Closed::Rejected) => Error::IdentityRejected { router: self.shared.router.clone() },
            _ => Error::ChannelClosed { router: self.shared.router.clone() },
        }
    }

    /// Stamps `message` with the next sequence number.
    pub(crate) fn sequenced(&self, mut message: Message) -> Message {
        message.sequence = self.shared.sequence.fetch_add(1, Ordering::Relaxed);
        message
    }

    /// A new SDK-chosen connection id (1 ..= 2^31-2), registered before use.
    pub(crate) fn register(&self, kind: ConnKind) -> (u32, Inbox) {
        let id = self.shared.next_conn_id.fetch_add(1, Ordering::Relaxed) % 0x7FFF_FFFE + 1;
        (id, self.register_id(id, kind))
    }

    /// Registers a router-chosen connection id.
    pub(crate) fn register_id(&self, id: u32, kind: ConnKind) -> Inbox {
        let (tx, inbox) = Inbox::new(self.shared.settings.budget);
        if self.is_closed() {
            tx.lose("edge router channel closed");
        } else {
            lock(&self.shared.sinks).insert(id, Sink { kind, route: Route::Inbox(tx) });
        }
        inbox
    }

    /// Routes connection `id` (new, or registered for the legacy path until the router
    /// agreed to flow control) to `flow`.
    pub(crate) fn register_flow(&self, id: u32, kind: ConnKind, flow: Arc<FlowConn>) {
        if self.is_closed() {
            flow.lose("edge router channel closed");
            return;
        }
        lock(&self.shared.sinks).insert(id, Sink { kind, route: Route::Flow(flow) });
        if !self.shared.ticking.swap(true, Ordering::AcqRel) {
            let span = tracing::info_span!("router", address = %self.shared.router, id = %self.shared.router_id);
            tokio::spawn(flow::tick_loop(self.shared.clone()).instrument(span));
        }
    }

    /// Queues `message` ahead of data without waiting.
    pub(crate) fn send_control(&self, message: Message) {
        self.shared.send_control(message);
    }

    pub(crate) fn deregister(&self, id: u32) {
        lock(&self.shared.sinks).remove(&id);
    }

    /// A sender for ordered outbound messages (stamp them with [`Channel::sequenced`]).
    pub(crate) fn outbound(&self) -> mpsc::Sender<Message> {
        self.shared.outbound.clone()
    }

    /// Queues `message` behind earlier ones.
    pub(crate) async fn send(&self, message: Message) -> Result<(), Error> {
        let message = self.sequenced(message);
        self.shared.outbound.send(message).await.map_err(|_| self.closed_error())
    }

    /// Sends `message` and waits up to `timeout` for the router's reply to it.
    pub(crate) async fn request(&self, message: Message, timeout: Duration) -> Result<Message, Error> {
        let message = self.sequenced(message);
        let sequence = message.sequence;
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(sequence, tx);
        let result = async {
            self.shared.outbound.send(message).await.map_err(|_| self.closed_error())?;
            tokio::select! {
                reply = rx => reply.map_err(|_| self.closed_error()),
                () = self.shared.cancel.cancelled() => Err(self.closed_error()),
            }
        };
        let result = tokio::time::timeout(timeout, result).await;
        lock(&self.shared.pending).remove(&sequence);
        result.map_err(|_| Error::Timeout("edge router reply"))?
    }
}

/// Sends a latency probe every `interval`; a router that does not answer within the
/// interval is taken for dead and the channel is closed (its listeners bind again).
async fn probe_loop(channel: Channel, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        if channel.is_closed() {
            return;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let probe = Message::new(frame::content::LATENCY, Vec::new())
            .with_header(frame::header::LATENCY_TIMESTAMP, now.to_le_bytes().to_vec());
        let sent = Instant::now();
        match channel.request(probe, interval).await {
            Ok(_) => tracing::trace!(router = channel.router(), latency = ?sent.elapsed(), "latency probe answered"),
            Err(err) => {
                if !channel.is_closed() {
                    tracing::warn!(router = channel.router(), %err, "edge router stopped answering; closing the channel");
                    channel.close();
                }
                return;
            }
        }
    }
}
