//! One Bind of a service on an edge router: the terminator that routes dials to us.

use std::time::Duration;

use zeroize::Zeroizing;

use crate::backoff::Backoff;
use crate::channel::frame::Message;
use crate::channel::{Channel, ConnKind, Event, Inbox};
use crate::context::ZitiContext;
use crate::controller::SessionType;
use crate::crypto::KeyPair;
use crate::edge::{self, content};
use crate::error::Error;

const BIND_SUCCESS_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a Bind is tried again while the router does not know its session yet.
const SESSION_SYNC_WAIT: Duration = Duration::from_secs(15);

/// A live Bind and what serving it needs.
pub(crate) struct Binding {
    pub context: ZitiContext,
    pub service: String,
    /// The API session whose channel the bind is on (binds are made again on a new
    /// channel once the session is replaced).
    pub api_session_id: String,
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

    /// Asks the router to remove the terminator, but keeps receiving on the bind for
    /// dials the router sent before it did.
    pub(crate) async fn request_unbind(&self) {
        let _ = self.channel.send(edge::unbind(self.bind_id, &self.token)).await;
    }

    /// [`BindHandle::unbind`] from a context that cannot wait (e.g. `Drop`).
    pub(crate) fn unbind_soon(&self) {
        self.channel.deregister(self.bind_id);
        let message = self.channel.sequenced(edge::unbind(self.bind_id, &self.token));
        let outbound = self.channel.outbound();
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(message)) = outbound.try_send(message)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = outbound.send(message).await;
            });
        }
    }
}

/// Binds `service` on every online router the controller offers for it (one terminator
/// each, so dials keep reaching us while any of them is up). Fails only when no router
/// would take the Bind; then with the first router's error.
pub(crate) async fn bind_everywhere(context: &ZitiContext, service: &str) -> Result<Vec<Binding>, Error> {
    let api_session_id = context.inner.session().api_session_id.clone();
    let (info, session) = bind_session(context, service).await?;
    let mut addresses: Vec<String> =
        session.edge_routers.iter().filter(|r| r.is_online).filter_map(|r| r.tls_address()).collect();
    addresses.dedup();
    if addresses.is_empty() {
        // No router flagged online (the flag may lag): let the usual choice try them all.
        let channel = context.inner.channel_for(service, &session).await?;
        return Ok(vec![bind_with(context, &info, &session, channel, &api_session_id).await?]);
    }
    let mut bindings = Vec::new();
    let mut first_error = None;
    for address in &addresses {
        let first = match context.inner.channel_to(service, address).await {
            Ok(channel) => bind_with(context, &info, &session, channel, &api_session_id).await,
            Err(err) => Err(err),
        };
        let bound = match first {
            Err(Error::SessionNotKnown { .. }) => bind_on(context, service, address).await,
            other => other,
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
    until_session_known(service, address, || async {
        // Read before the channel is chosen: a session replaced meanwhile makes it stale.
        let api_session_id = context.inner.session().api_session_id.clone();
        let (info, session) = bind_session(context, service).await?;
        let channel = context.inner.channel_to(service, address).await?;
        bind_with(context, &info, &session, channel, &api_session_id).await
    })
    .await
}

/// Runs `bind` again, each time with a new service session, while the router says it
/// does not know the session (for at most [`SESSION_SYNC_WAIT`]): a router hears of a
/// new session from the controller a moment after the login that made it.
async fn until_session_known<F, Fut>(service: &str, router: &str, mut bind: F) -> Result<Binding, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Binding, Error>>,
{
    let deadline = tokio::time::Instant::now() + SESSION_SYNC_WAIT;
    let mut retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match bind().await {
            Err(err @ Error::SessionNotKnown { .. }) if tokio::time::Instant::now() < deadline => {
                let delay = retry.next_delay();
                tracing::debug!(service, router, %err, retry_in = ?delay, "binding again with a new service session");
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
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
    api_session_id: &str,
) -> Result<Binding, Error> {
    let service = info.name.as_str();
    let inner = &context.inner;
    let keys = info.encryption_required.then(KeyPair::generate);
    let (bind_id, mut inbox) = channel.register(ConnKind::Bind);
    let request = bind_request(bind_id, &session.token, keys.as_ref().map(KeyPair::public), inner.options.flow_control);
    let failed = |reason: String| Error::BindFailed { service: service.to_owned(), reason };
    let not_known = |reason: String| Error::SessionNotKnown { service: service.to_owned(), reason };
    let bound = async {
        let reply = channel.request(request, inner.options.request_timeout).await?;
        match on_bind_reply(&reply) {
            BindReply::Created => {}
            BindReply::Refused(reason) => return Err(failed(reason)),
            BindReply::SessionNotKnown(reason) => return Err(not_known(reason)),
            BindReply::Unexpected(other) => return Err(Error::Protocol(format!("unexpected answer {other} to Bind"))),
        }
        if channel.supports_bind_success() {
            wait_bound(&channel, &mut inbox, &failed, &not_known).await
        } else {
            Ok(Vec::new())
        }
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
        api_session_id: api_session_id.to_owned(),
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
    not_known: &impl Fn(String) -> Error,
) -> Result<Vec<Message>, Error> {
    let mut early = Vec::new();
    let wait = async {
        loop {
            match inbox.recv().await {
                Some(Event::Message(m)) => match on_message_before_bound(&m) {
                    BindProgress::Bound => return Ok(()),
                    BindProgress::Refused(reason) => return Err(failed(reason)),
                    BindProgress::SessionNotKnown(reason) => return Err(not_known(reason)),
                    BindProgress::Early => early.push(m),
                },
                Some(Event::Lost(_)) | None => return Err(channel.closed_error()),
            }
        }
    };
    tokio::time::timeout(BIND_SUCCESS_TIMEOUT, wait).await.map_err(|_| Error::Timeout("BindSuccess"))??;
    Ok(early)
}

/// The Bind for a service session: the session token, our public key when the service
/// is encrypted, and the request for flow control when it is on (dials then say
/// whether the router uses it for them).
pub(crate) fn bind_request(bind_id: u32, token: &str, public_key: Option<&[u8; 32]>, flow_control: bool) -> Message {
    let request = edge::bind(bind_id, token, public_key);
    if flow_control { request.with_bool(edge::header::USE_XGRESS_TO_SDK, true) } else { request }
}

/// What the router's reply to a Bind means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BindReply {
    /// StateConnected: the router took the Bind (BindSuccess follows where supported).
    Created,
    /// StateClosed: the router refused, with its reason.
    Refused(String),
    /// StateClosed with error code 3: the router does not know the session (yet).
    SessionNotKnown(String),
    /// Some other content type.
    Unexpected(i32),
}

/// Reads the router's reply to a Bind.
pub(crate) fn on_bind_reply(reply: &Message) -> BindReply {
    match reply.content_type {
        content::STATE_CONNECTED => BindReply::Created,
        content::STATE_CLOSED if session_not_known(reply) => BindReply::SessionNotKnown(edge::reason(reply)),
        content::STATE_CLOSED => BindReply::Refused(edge::reason(reply)),
        other => BindReply::Unexpected(other),
    }
}

/// What a message on a Bind means while it waits for BindSuccess.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BindProgress {
    /// BindSuccess: the terminator exists.
    Bound,
    /// StateClosed: the router gave up on the Bind, with its reason.
    Refused(String),
    /// StateClosed with error code 3: the router does not know the session (yet).
    SessionNotKnown(String),
    /// Anything else (a Dial may beat BindSuccess): keep it for serving.
    Early,
}

/// Reads one message that arrives on a Bind before BindSuccess.
pub(crate) fn on_message_before_bound(message: &Message) -> BindProgress {
    match message.content_type {
        content::BIND_SUCCESS => BindProgress::Bound,
        content::STATE_CLOSED if session_not_known(message) => BindProgress::SessionNotKnown(edge::reason(message)),
        content::STATE_CLOSED => BindProgress::Refused(edge::reason(message)),
        _ => BindProgress::Early,
    }
}

fn session_not_known(message: &Message) -> bool {
    message.header_u32(edge::header::ERROR_CODE) == Some(edge::ERROR_INVALID_SESSION)
}

#[cfg(test)]
#[path = "bind_tests.rs"]
mod tests;
