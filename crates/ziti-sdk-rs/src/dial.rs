//! Dialing a service: Connect through an edge router, then a connection.

use bytes::Bytes;

use crate::channel::flow::FlowConn;
use crate::channel::frame::Message;
use crate::channel::xgress::{Circuit, Originator};
use crate::channel::{Channel, ConnKind};
use crate::conn::{ConnParts, DataPath, ZitiConn, flow_windows};
use crate::context::ZitiContext;
use crate::controller::{Service, ServiceSession, SessionType};
use crate::crypto::KeyPair;
use crate::edge::{self, content, header};
use crate::error::Error;

impl ZitiContext {
    /// Opens a connection to a host of `service`.
    pub async fn dial(&self, service: &str) -> Result<ZitiConn, Error> {
        let caller = self.inner.session().identity_name.clone();
        self.dial_as(service, &caller).await
    }

    /// Like [`Self::dial`], but the Connect names `claimed_caller` as the caller (edge
    /// header 1008) instead of this identity: what any dialer can do to a host that
    /// trusts the claim. Only for tests of how hosts and gateways treat an unverified
    /// claim (an OpenZiti v1.x router passes it on as is; v2 routers add the dialer's
    /// real identity), hence behind the `forge-caller-claims` feature.
    #[cfg(feature = "forge-caller-claims")]
    pub async fn dial_with_forged_caller_claim(&self, service: &str, claimed_caller: &str) -> Result<ZitiConn, Error> {
        self.dial_as(service, claimed_caller).await
    }

    async fn dial_as(&self, service: &str, caller: &str) -> Result<ZitiConn, Error> {
        let info = self.service(service).await?;
        if !info.can(SessionType::Dial) {
            return Err(Error::NotAuthorized { service: service.to_owned(), action: "dial" });
        }
        loop {
            let (session, cached) = self.inner.service_session(&info, SessionType::Dial).await?;
            let channel = self.inner.channel_for(service, &session).await?;
            match self.connect(&info, &session, channel, caller).await {
                // A reused Dial token may have been revoked: retry once with a new one.
                Err(Error::DialFailed { .. }) if cached => self.inner.forget_dial_session(&info),
                other => return other,
            }
        }
    }

    async fn connect(
        &self,
        info: &Service,
        session: &ServiceSession,
        channel: Channel,
        caller: &str,
    ) -> Result<ZitiConn, Error> {
        let keys = info.encryption_required.then(KeyPair::generate);
        let (conn_id, inbox) = channel.register(ConnKind::Dial);
        let connect = connect_request(
            conn_id,
            &session.token,
            caller,
            keys.as_ref().map(KeyPair::public),
            self.inner.options.flow_control,
        );
        let established = async {
            let reply = channel.request(connect, self.inner.options.request_timeout).await?;
            let failed = |reason: String| Error::DialFailed { service: info.name.clone(), reason };
            let connected = match on_connect_reply(&reply) {
                Ok(connected) => connected,
                Err(ConnectError::Refused(reason)) => return Err(failed(reason)),
                Err(ConnectError::Unexpected(other)) => {
                    return Err(Error::Protocol(format!("unexpected answer {other} to Connect")));
                }
                Err(ConnectError::NoCircuitId) => {
                    return Err(Error::Protocol("flow-controlled connection without a circuit id".into()));
                }
            };
            // The router agreed to flow control: we start the circuit.
            let flow = match &connected.flow_circuit {
                Some(circuit_id) => {
                    let circuit =
                        Circuit::new(circuit_id, conn_id, Originator::Initiator, flow_windows(&self.inner.options));
                    let flow = FlowConn::new(circuit);
                    channel.register_flow(conn_id, ConnKind::Dial, flow.clone());
                    for start in flow.start() {
                        channel.send(start).await?;
                    }
                    Some(flow)
                }
                None => None,
            };
            let crypto = match &keys {
                Some(keys) => {
                    // Checked only once the circuit started, as before: the same frames on the wire.
                    let host = connected.host_key.ok_or_else(|| {
                        failed("the host sent no public key but the service requires encryption".into())
                    })?;
                    let keys = keys.client_session(&host)?;
                    let (sealer, stream_header) = keys.sealer();
                    let first = match &flow {
                        Some(flow) => flow.send(stream_header.to_vec().into(), false),
                        None => Some(edge::data(conn_id, stream_header.to_vec())),
                    };
                    if let Some(first) = first {
                        channel.send(first).await?;
                    }
                    Some((sealer, keys))
                }
                None => None,
            };
            let path = match flow {
                Some(flow) => DataPath::Flow(flow),
                None => DataPath::Legacy(inbox),
            };
            Ok((connected.circuit_id, crypto, path))
        };
        let (circuit_id, crypto, path) = match established.await {
            Ok(done) => done,
            Err(err) => {
                channel.deregister(conn_id);
                return Err(err);
            }
        };
        Ok(ZitiConn::new(ConnParts {
            context: self.clone(),
            channel,
            conn_id,
            service: info.name.clone(),
            dialer: None,
            circuit_id,
            path,
            crypto,
        }))
    }
}

/// The Connect for a Dial session: the session token, our identity name as the caller,
/// our public key when the service is encrypted, and the request for flow control when
/// it is on.
pub(crate) fn connect_request(
    conn_id: u32,
    token: &str,
    caller: &str,
    public_key: Option<&[u8; 32]>,
    flow_control: bool,
) -> Message {
    let connect = edge::connect(conn_id, token, caller, public_key);
    if flow_control { connect.with_bool(header::USE_XGRESS_TO_SDK, true) } else { connect }
}

/// A connection the router set up (StateConnected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Connected {
    /// The circuit to start, when the router agreed to flow control.
    pub flow_circuit: Option<Bytes>,
    /// The host's public key, when it sent one (required for encrypted services).
    pub host_key: Option<[u8; 32]>,
    /// The circuit id as text, for logs and `ZitiConn::circuit_id`.
    pub circuit_id: Option<String>,
}

/// Why a Connect did not set up a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnectError {
    /// StateClosed: the router or the host refused, with the reason.
    Refused(String),
    /// Some other content type.
    Unexpected(i32),
    /// The router agreed to flow control but named no circuit.
    NoCircuitId,
}

/// Reads the router's reply to a Connect.
pub(crate) fn on_connect_reply(reply: &Message) -> Result<Connected, ConnectError> {
    match reply.content_type {
        content::STATE_CONNECTED => {}
        content::STATE_CLOSED => return Err(ConnectError::Refused(edge::reason(reply))),
        other => return Err(ConnectError::Unexpected(other)),
    }
    let flow_circuit = match reply.header_bool(header::USE_XGRESS_TO_SDK) {
        true => Some(reply.header(header::CIRCUIT_ID).ok_or(ConnectError::NoCircuitId)?.clone()),
        false => None,
    };
    Ok(Connected {
        flow_circuit,
        host_key: edge::public_key(reply),
        circuit_id: reply.header_str(header::CIRCUIT_ID).map(str::to_owned),
    })
}

#[cfg(test)]
#[path = "dial_tests.rs"]
mod tests;
