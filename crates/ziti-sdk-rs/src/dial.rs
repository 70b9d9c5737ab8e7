//! Dialing a service: Connect through an edge router, then a connection.

use crate::channel::flow::FlowConn;
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
        let mut connect = edge::connect(conn_id, &session.token, caller, keys.as_ref().map(KeyPair::public));
        if self.inner.options.flow_control {
            connect = connect.with_bool(header::USE_XGRESS_TO_SDK, true);
        }
        let established = async {
            let reply = channel.request(connect, self.inner.options.request_timeout).await?;
            let failed = |reason: String| Error::DialFailed { service: info.name.clone(), reason };
            match reply.content_type {
                content::STATE_CONNECTED => {}
                content::STATE_CLOSED => return Err(failed(edge::reason(&reply))),
                other => return Err(Error::Protocol(format!("unexpected answer {other} to Connect"))),
            }
            // The router agreed to flow control: we start the circuit.
            let flow = match reply.header_bool(header::USE_XGRESS_TO_SDK) {
                true => {
                    let circuit_id = reply
                        .header(header::CIRCUIT_ID)
                        .ok_or_else(|| Error::Protocol("flow-controlled connection without a circuit id".into()))?;
                    let circuit =
                        Circuit::new(circuit_id, conn_id, Originator::Initiator, flow_windows(&self.inner.options));
                    let flow = FlowConn::new(circuit);
                    channel.register_flow(conn_id, ConnKind::Dial, flow.clone());
                    for start in flow.start() {
                        channel.send(start).await?;
                    }
                    Some(flow)
                }
                false => None,
            };
            let crypto = match &keys {
                Some(keys) => {
                    let host = edge::public_key(&reply).ok_or_else(|| {
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
            Ok((reply, crypto, path))
        };
        let (reply, crypto, path) = match established.await {
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
            circuit_id: reply.header_str(header::CIRCUIT_ID).map(str::to_owned),
            path,
            crypto,
        }))
    }
}
