//! Serving one Bind: answer inbound Dials and queue the connections for `accept`.

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::bind::Binding;
use crate::channel::flow::FlowConn;
use crate::channel::frame::Message;
use crate::channel::xgress::{Circuit, Originator};
use crate::channel::{ConnKind, Event};
use crate::conn::{ConnParts, DataPath, ZitiConn, flow_windows};
use crate::edge::{self, content, header};
use crate::error::Error;
use crate::peer::DialerIdentity;

pub(crate) type Accepted = mpsc::Sender<Result<ZitiConn, Error>>;

/// Why serving a Bind stopped.
pub(crate) enum Ended {
    /// The router ended the Bind itself (unsolicited StateClosed): report it.
    Closed(Error),
    /// The channel to the router is gone: bind again elsewhere or later.
    Lost(Error),
    /// Nobody accepts any more.
    ListenerGone,
    /// `renew` finished: the bind should be made again on a new channel.
    Renew,
}

/// Answers the bind's Dials until it ends, or until `renew` finishes (checked between
/// messages only, so that no Dial is left half answered).
pub(crate) async fn serve(binding: &mut Binding, accepted: &Accepted, renew: impl Future<Output = ()>) -> Ended {
    let early: Vec<_> = binding.early.drain(..).collect();
    let mut early = early.into_iter();
    let mut renew = std::pin::pin!(renew);
    loop {
        let event = match early.next() {
            Some(message) => Some(Event::Message(message)),
            None => tokio::select! {
                biased;
                event = binding.inbox.recv() => event,
                () = &mut renew => return Ended::Renew,
            },
        };
        let message = match event {
            Some(Event::Message(message)) => message,
            Some(Event::Lost(_)) | None => return Ended::Lost(binding.handle.channel.closed_error()),
        };
        match on_bind_message(&message, accepted.capacity() == 0) {
            BindAction::Accept => match accept_dial(binding, &message).await {
                Ok(conn) => {
                    if accepted.send(Ok(conn)).await.is_err() {
                        return Ended::ListenerGone;
                    }
                }
                Err(reason) => refuse(binding, &message, &reason).await,
            },
            BindAction::Refuse(reason) => refuse(binding, &message, reason).await,
            BindAction::Lost(reason) => {
                let ended = Error::BindFailed { service: binding.service.clone(), reason };
                tracing::warn!(service = %binding.service, %ended, "the bind's service session ended");
                return Ended::Lost(ended);
            }
            BindAction::Closed(reason) => {
                let ended = Error::BindFailed { service: binding.service.clone(), reason };
                tracing::warn!(service = %binding.service, %ended, "router ended the bind");
                return Ended::Closed(ended);
            }
            BindAction::Reestablished => tracing::debug!(service = %binding.service, "terminator (re)established"),
            BindAction::Ignore(other) => tracing::trace!(content_type = other, "ignoring message on the bind"),
        }
    }
}

/// What serving a Bind does with one message the router sent on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BindAction {
    /// A Dial to answer: read it with [`read_dial`] and accept the connection.
    Accept,
    /// A Dial to refuse with this reason.
    Refuse(&'static str),
    /// The router ended the Bind because its service session ended (v2 routers say so
    /// with code 3): bind again with a new one; a bind whose access is gone for good is
    /// refused then, and reported.
    Lost(String),
    /// The router ended the Bind for another reason: report it.
    Closed(String),
    /// BindSuccess again: the router re-created the terminator.
    Reestablished,
    /// Anything else (this content type): nothing to do.
    Ignore(i32),
}

/// Decides what to do with `message` on a Bind; `backlog_full` when no accepted
/// connection could be queued now.
pub(crate) fn on_bind_message(message: &Message, backlog_full: bool) -> BindAction {
    match message.content_type {
        content::DIAL if backlog_full => BindAction::Refuse("backlog full"),
        content::DIAL => BindAction::Accept,
        content::STATE_CLOSED => {
            let reason = edge::reason(message);
            if message.header_u32(header::ERROR_CODE) == Some(edge::ERROR_INVALID_SESSION) {
                BindAction::Lost(reason)
            } else {
                BindAction::Closed(reason)
            }
        }
        content::BIND_SUCCESS => BindAction::Reestablished,
        other => BindAction::Ignore(other),
    }
}

/// What an inbound Dial asks for, read before anything is registered or sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DialOffer {
    /// The router-chosen connection id.
    pub conn_id: u32,
    /// The dialer's public key, when the service requires encryption.
    pub peer_key: Option<[u8; 32]>,
    /// The circuit id, when the router offers flow control for this connection.
    pub flow_circuit: Option<Bytes>,
}

/// Reads an inbound Dial on a Bind whose service is `encrypted` or not; the error is the
/// reason to refuse it with.
pub(crate) fn read_dial(dial: &Message, encrypted: bool) -> Result<DialOffer, &'static str> {
    let conn_id = dial.header_u32(header::ROUTER_PROVIDED_CONN_ID).ok_or("dial carries no connection id")?;
    let peer_key = match encrypted {
        true => Some(edge::public_key(dial).ok_or("dialer sent no public key but the service requires encryption")?),
        false => None,
    };
    // The router offers flow control when our Bind asked for it; the dialer starts the circuit.
    let flow_circuit = match dial.header_bool(header::USE_XGRESS_TO_SDK) {
        true => Some(dial.header(header::CIRCUIT_ID).ok_or("flow-controlled dial carries no circuit id")?.clone()),
        false => None,
    };
    Ok(DialOffer { conn_id, peer_key, flow_circuit })
}

async fn refuse(binding: &Binding, dial: &Message, reason: &str) {
    tracing::debug!(service = %binding.service, reason, "refusing a dial");
    let handle = &binding.handle;
    let _ = handle.channel.send(edge::dial_failed(handle.bind_id, dial.sequence, reason)).await;
}

/// Registers the router-chosen conn id, answers DialSuccess, starts encryption.
async fn accept_dial(binding: &Binding, dial: &Message) -> Result<ZitiConn, String> {
    let DialOffer { conn_id, peer_key, flow_circuit } = read_dial(dial, binding.keys.is_some())?;
    let keys = match (&binding.keys, peer_key) {
        (Some(keys), Some(peer)) => Some(keys.server_session(&peer).map_err(|err| err.to_string())?),
        _ => None,
    };
    let channel = &binding.handle.channel;
    let path = match flow_circuit {
        Some(circuit_id) => {
            let windows = flow_windows(&binding.context.inner.options);
            let flow = FlowConn::new(Circuit::new(&circuit_id, conn_id, Originator::Terminator, windows));
            channel.register_flow(conn_id, ConnKind::Dial, flow.clone());
            DataPath::Flow(flow)
        }
        None => DataPath::Legacy(channel.register_id(conn_id, ConnKind::Dial)),
    };
    let sent = async {
        channel.send(edge::dial_success(binding.handle.bind_id, dial.sequence, conn_id)).await?;
        match keys {
            Some(keys) => {
                // Our stream header goes first, alone, right after DialSuccess.
                let (sealer, stream_header) = keys.sealer();
                let first = match &path {
                    // Held until the dialer starts the circuit.
                    DataPath::Flow(flow) => flow.send(stream_header.to_vec().into(), false),
                    DataPath::Legacy(_) => Some(edge::data(conn_id, stream_header.to_vec())),
                };
                if let Some(first) = first {
                    channel.send(first).await?;
                }
                Ok::<_, Error>(Some((sealer, keys)))
            }
            None => Ok(None),
        }
    };
    let crypto = match sent.await {
        Ok(crypto) => crypto,
        Err(err) => {
            channel.deregister(conn_id);
            return Err(err.to_string());
        }
    };
    Ok(ZitiConn::new(ConnParts {
        context: binding.context.clone(),
        channel: channel.clone(),
        conn_id,
        service: binding.service.clone(),
        dialer: Some(DialerIdentity::from_dial(dial)),
        circuit_id: dial.header_str(header::CIRCUIT_ID).map(str::to_owned),
        path,
        crypto,
    }))
}

#[cfg(test)]
#[path = "accept_tests.rs"]
mod tests;
