//! Dialing a service: Connect through an edge router, then a connection.

use crate::channel::{Channel, ConnKind};
use crate::conn::{ConnParts, ZitiConn};
use crate::context::ZitiContext;
use crate::controller::{Service, ServiceSession, SessionType};
use crate::crypto::KeyPair;
use crate::edge::{self, content, header};
use crate::error::Error;

impl ZitiContext {
    /// Opens a connection to a host of `service`.
    pub async fn dial(&self, service: &str) -> Result<ZitiConn, Error> {
        let info = self.service(service).await?;
        if !info.can(SessionType::Dial) {
            return Err(Error::NotAuthorized { service: service.to_owned(), action: "dial" });
        }
        loop {
            let (session, cached) = self.inner.service_session(&info, SessionType::Dial).await?;
            let channel = self.inner.channel_for(service, &session).await?;
            match self.connect(&info, &session, channel).await {
                // A reused Dial token may have been revoked: retry once with a new one.
                Err(Error::DialFailed { .. }) if cached => self.inner.forget_dial_session(&info),
                other => return other,
            }
        }
    }

    async fn connect(&self, info: &Service, session: &ServiceSession, channel: Channel) -> Result<ZitiConn, Error> {
        let keys = info.encryption_required.then(KeyPair::generate);
        let caller = self.inner.session().identity_name.clone();
        let (conn_id, inbox) = channel.register(ConnKind::Dial);
        let connect = edge::connect(conn_id, &session.token, &caller, keys.as_ref().map(KeyPair::public));
        let established = async {
            let reply = channel.request(connect, self.inner.options.request_timeout).await?;
            let failed = |reason: String| Error::DialFailed { service: info.name.clone(), reason };
            match reply.content_type {
                content::STATE_CONNECTED => {}
                content::STATE_CLOSED => return Err(failed(edge::reason(&reply))),
                other => return Err(Error::Protocol(format!("unexpected answer {other} to Connect"))),
            }
            let crypto = match &keys {
                Some(keys) => {
                    let host = edge::public_key(&reply).ok_or_else(|| {
                        failed("the host sent no public key but the service requires encryption".into())
                    })?;
                    let keys = keys.client_session(&host)?;
                    let (sealer, stream_header) = keys.sealer();
                    channel.send(edge::data(conn_id, stream_header.to_vec())).await?;
                    Some((sealer, keys))
                }
                None => None,
            };
            Ok((reply, crypto))
        };
        let (reply, crypto) = match established.await {
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
            inbox,
            crypto,
        }))
    }
}
