//! One Bind of a service on an edge router: the terminator that routes dials to us.

use std::time::Duration;

use zeroize::Zeroizing;

use crate::channel::frame::Message;
use crate::channel::{Channel, ConnKind, Event, Inbox};
use crate::context::ZitiContext;
use crate::controller::SessionType;
use crate::crypto::KeyPair;
use crate::edge::{self, content};
use crate::error::Error;

const BIND_SUCCESS_TIMEOUT: Duration = Duration::from_secs(20);

/// A live Bind and what serving it needs.
pub(crate) struct Binding {
    pub context: ZitiContext,
    pub service: String,
    pub handle: BindHandle,
    /// Our key for this Bind when the service requires encryption (the host is the kx server).
    pub keys: Option<KeyPair>,
    pub inbox: Inbox,
    /// Messages for the bind that arrived before BindSuccess.
    pub early: Vec<Message>,
}

/// Enough to unbind.
#[derive(Debug, Clone)]
pub(crate) struct BindHandle {
    pub channel: Channel,
    pub bind_id: u32,
    token: Zeroizing<String>,
}

impl BindHandle {
    /// Stops hosting on this Bind (the router does not answer an Unbind).
    pub(crate) async fn unbind(&self) {
        self.channel.deregister(self.bind_id);
        let _ = self.channel.send(edge::unbind(self.bind_id, &self.token)).await;
    }

    /// [`BindHandle::unbind`] from a context that cannot wait (e.g. `Drop`).
    pub(crate) fn unbind_soon(&self) {
        self.channel.deregister(self.bind_id);
        let message = self.channel.sequenced(edge::unbind(self.bind_id, &self.token));
        let outbound = self.channel.outbound();
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(message)) = outbound.try_send(message) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = outbound.send(message).await;
                });
            }
        }
    }
}

/// Binds `service` on every online router the controller offers for it (one terminator
/// each, so dials keep reaching us while any of them is up). Fails only when no router
/// would take the Bind; then with the first router's error.
pub(crate) async fn bind_everywhere(context: &ZitiContext, service: &str) -> Result<Vec<Binding>, Error> {
    let (info, session) = bind_session(context, service).await?;
    let mut addresses: Vec<String> =
        session.edge_routers.iter().filter(|r| r.is_online).filter_map(|r| r.tls_address()).collect();
    addresses.dedup();
    if addresses.is_empty() {
        // No router flagged online (the flag may lag): let the usual choice try them all.
        let channel = context.inner.channel_for(service, &session).await?;
        return Ok(vec![bind_with(context, &info, &session, channel).await?]);
    }
    let mut bindings = Vec::new();
    let mut first_error = None;
    for address in &addresses {
        let bound = match context.inner.channel_to(service, address).await {
            Ok(channel) => bind_with(context, &info, &session, channel).await,
            Err(err) => Err(err),
        };
        match bound {
            Ok(binding) => bindings.push(binding),
            Err(err) => {
                tracing::warn!(service, router = %address, %err, "could not bind on this router");
                first_error.get_or_insert(err);
            }
        }
    }
    match first_error {
        Some(err) if bindings.is_empty() => Err(err),
        _ => Ok(bindings),
    }
}

/// Binds `service` on the router at `address` again (after its channel was lost).
pub(crate) async fn bind_on(context: &ZitiContext, service: &str, address: &str) -> Result<Binding, Error> {
    let (info, session) = bind_session(context, service).await?;
    let channel = context.inner.channel_to(service, address).await?;
    bind_with(context, &info, &session, channel).await
}

async fn bind_session(
    context: &ZitiContext,
    service: &str,
) -> Result<(crate::controller::Service, crate::controller::ServiceSession), Error> {
    let info = context.service(service).await?;
    if !info.can(SessionType::Bind) {
        return Err(Error::NotAuthorized { service: service.to_owned(), action: "bind" });
    }
    let (session, _) = context.inner.service_session(&info, SessionType::Bind).await?;
    Ok((info, session))
}

/// Sends the Bind on `channel`: returns once the router reports the terminator created.
async fn bind_with(
    context: &ZitiContext,
    info: &crate::controller::Service,
    session: &crate::controller::ServiceSession,
    channel: Channel,
) -> Result<Binding, Error> {
    let service = info.name.as_str();
    let inner = &context.inner;
    let keys = info.encryption_required.then(KeyPair::generate);
    let (bind_id, mut inbox) = channel.register(ConnKind::Bind);
    let mut request = edge::bind(bind_id, &session.token, keys.as_ref().map(KeyPair::public));
    if inner.options.flow_control {
        // Dials then say whether the router uses flow control for them.
        request = request.with_bool(edge::header::USE_XGRESS_TO_SDK, true);
    }
    let failed = |reason: String| Error::BindFailed { service: service.to_owned(), reason };
    let bound = async {
        let reply = channel.request(request, inner.options.request_timeout).await?;
        match reply.content_type {
            content::STATE_CONNECTED => {}
            content::STATE_CLOSED => return Err(failed(edge::reason(&reply))),
            other => return Err(Error::Protocol(format!("unexpected answer {other} to Bind"))),
        }
        if channel.supports_bind_success() { wait_bound(&channel, &mut inbox, &failed).await } else { Ok(Vec::new()) }
    };
    let early = match bound.await {
        Ok(early) => early,
        Err(err) => {
            channel.deregister(bind_id);
            return Err(err);
        }
    };
    tracing::debug!(service, bind_id, router = channel.router(), "service bound");
    Ok(Binding {
        context: context.clone(),
        service: service.to_owned(),
        handle: BindHandle { channel, bind_id, token: session.token.clone() },
        keys,
        inbox,
        early,
    })
}

/// Waits for BindSuccess; keeps anything else that arrives meanwhile.
async fn wait_bound(
    channel: &Channel,
    inbox: &mut Inbox,
    failed: &impl Fn(String) -> Error,
) -> Result<Vec<Message>, Error> {
    let mut early = Vec::new();
    let wait = async {
        loop {
            match inbox.recv().await {
                Some(Event::Message(m)) if m.content_type == content::BIND_SUCCESS => return Ok(()),
                Some(Event::Message(m)) if m.content_type == content::STATE_CLOSED => {
                    return Err(failed(edge::reason(&m)));
                }
                Some(Event::Message(m)) => early.push(m),
                Some(Event::Lost(_)) | None => return Err(channel.closed_error()),
            }
        }
    };
    tokio::time::timeout(BIND_SUCCESS_TIMEOUT, wait).await.map_err(|_| Error::Timeout("BindSuccess"))??;
    Ok(early)
}
