//! Serving one Bind: answer inbound Dials and queue the connections for `accept`.

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
        match message.content_type {
            content::DIAL => {
                if accepted.capacity() == 0 {
                    refuse(binding, &message, "backlog full").await;
                    continue;
                }
                match accept_dial(binding, &message).await {
                    Ok(conn) => {
                        if accepted.send(Ok(conn)).await.is_err() {
                            return Ended::ListenerGone;
                        }
                    }
                    Err(reason) => refuse(binding, &message, &reason).await,
                }
            }
            content::STATE_CLOSED => {
                let reason = edge::reason(&message);
                let ended = Error::BindFailed { service: binding.service.clone(), reason };
                if message.header_u32(header::ERROR_CODE) == Some(edge::ERROR_INVALID_SESSION) {
                    // Only the service session behind the bind ended (v2 routers say so
                    // with code 3): bind again with a new one; a bind whose access is gone
                    // for good is refused then, and reported.
                    tracing::warn!(service = %binding.service, %ended, "the bind's service session ended");
                    return Ended::Lost(ended);
                }
                tracing::warn!(service = %binding.service, %ended, "router ended the bind");
                return Ended::Closed(ended);
            }
            content::BIND_SUCCESS => tracing::debug!(service = %binding.service, "terminator (re)established"),
            other => tracing::trace!(content_type = other, "ignoring message on the bind"),
        }
    }
}

async fn refuse(binding: &Binding, dial: &Message, reason: &str) {
    tracing::debug!(service = %binding.service, reason, "refusing a dial");
    let handle = &binding.handle;
    let _ = handle.channel.send(edge::dial_failed(handle.bind_id, dial.sequence, reason)).await;
}

/// Registers the router-chosen conn id, answers DialSuccess, starts encryption.
async fn accept_dial(binding: &Binding, dial: &Message) -> Result<ZitiConn, String> {
    let conn_id = dial.header_u32(header::ROUTER_PROVIDED_CONN_ID).ok_or("dial carries no connection id")?;
    let keys = match &binding.keys {
        Some(keys) => {
            let peer = edge::public_key(dial).ok_or("dialer sent no public key but the service requires encryption")?;
            Some(keys.server_session(&peer).map_err(|err| err.to_string())?)
        }
        None => None,
    };
    let channel = &binding.handle.channel;
    // The router offers flow control when our Bind asked for it; the dialer starts the circuit.
    let path = if dial.header_bool(header::USE_XGRESS_TO_SDK) {
        let circuit_id = dial.header(header::CIRCUIT_ID).ok_or("flow-controlled dial carries no circuit id")?;
        let windows = flow_windows(&binding.context.inner.options);
        let flow = FlowConn::new(Circuit::new(circuit_id, conn_id, Originator::Terminator, windows));
        channel.register_flow(conn_id, ConnKind::Dial, flow.clone());
        DataPath::Flow(flow)
    } else {
        DataPath::Legacy(channel.register_id(conn_id, ConnKind::Dial))
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
