//! Channels to edge routers, one per router address, opened on first use. Channels of an
//! API session that was replaced are retired: new work no longer uses them, but they stay
//! open for the connections and binds still on them, and close once those are gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::ClientConfig;

use super::lock;
use crate::channel::{Channel, ChannelSettings};
use crate::controller::{ApiSession, ServiceSession};
use crate::error::Error;

/// How often a retired channel is checked for connections left on it.
const IDLE_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(super) struct Routers {
    state: Mutex<State>,
    /// Serializes dialing so that concurrent callers share one new channel.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct State {
    /// The API session whose token the channels in `channels` presented.
    session_id: String,
    channels: HashMap<String, Channel>,
    /// Channels of earlier API sessions, open while connections use them.
    retired: Vec<Channel>,
}

impl Routers {
    /// No channels yet; new ones belong to API session `session_id`.
    pub(super) fn new(session_id: &str) -> Self {
        let state = State { session_id: session_id.to_owned(), channels: HashMap::new(), retired: Vec::new() };
        Self { state: Mutex::new(state), connecting: tokio::sync::Mutex::new(()) }
    }

    fn open(&self, address: &str) -> Option<Channel> {
        lock(&self.state).channels.get(address).filter(|c| !c.is_closed()).cloned()
    }

    /// Keeps a new channel for reuse, unless its API session was replaced while it was
    /// being opened: then it is retired at once (its caller still uses it).
    pub(super) fn keep(&self, address: &str, channel: &Channel, api: &ApiSession) {
        let mut state = lock(&self.state);
        if state.session_id == api.api_session_id {
            state.channels.insert(address.to_owned(), channel.clone());
        } else {
            state.retire(channel.clone(), retire_grace(api));
        }
    }

    pub(super) async fn channel_for(
        &self,
        service: &str,
        session: &ServiceSession,
        api: &ApiSession,
        tls: Arc<ClientConfig>,
        settings: ChannelSettings,
    ) -> Result<Channel, Error> {
        // Online routers first; offline ones are a last resort (the flag may lag).
        let mut candidates: Vec<_> =
            session.edge_routers.iter().filter_map(|r| Some((r.is_online, r.tls_address()?))).collect();
        candidates.sort_by_key(|(online, _)| !*online);
        if let Some(channel) = candidates.iter().find_map(|(_, address)| self.open(address)) {
            return Ok(channel);
        }
        let _guard = self.connecting.lock().await;
        let mut tried = Vec::new();
        for (_, address) in &candidates {
            if let Some(channel) = self.open(address) {
                return Ok(channel);
            }
            match Channel::connect(address, tls.clone(), &api.token, &api.identity_id, settings).await {
                Ok(channel) => {
                    self.keep(address, &channel, api);
                    return Ok(channel);
                }
                Err(err) => {
                    tracing::debug!(router = %address, %err, "edge router unreachable");
                    tried.push(format!("{address} ({err})"));
                }
            }
        }
        if tried.is_empty() {
            tried.push("no router with a tls address was offered".to_owned());
        }
        Err(Error::NoRouterReachable { service: service.to_owned(), tried: tried.join(", ") })
    }

    /// A channel to the router at `address` (the open one, or a new one).
    pub(super) async fn channel_to(
        &self,
        service: &str,
        address: &str,
        api: &ApiSession,
        tls: Arc<ClientConfig>,
        settings: ChannelSettings,
    ) -> Result<Channel, Error> {
        if let Some(channel) = self.open(address) {
            return Ok(channel);
        }
        let _guard = self.connecting.lock().await;
        if let Some(channel) = self.open(address) {
            return Ok(channel);
        }
        match Channel::connect(address, tls, &api.token, &api.identity_id, settings).await {
            Ok(channel) => {
                self.keep(address, &channel, api);
                Ok(channel)
            }
            Err(err) => {
                Err(Error::NoRouterReachable { service: service.to_owned(), tried: format!("{address} ({err})") })
            }
        }
    }

    /// The open channels of the current API session.
    pub(super) fn open_channels(&self) -> Vec<Channel> {
        lock(&self.state).channels.values().filter(|c| !c.is_closed()).cloned().collect()
    }

    /// Retired channels still open.
    #[cfg(test)]
    pub(super) fn retired_channels(&self) -> Vec<Channel> {
        lock(&self.state).retired.iter().filter(|c| !c.is_closed()).cloned().collect()
    }

    /// Makes API session `session_id` the current one: the channels of `previous` are
    /// retired (routers refuse its token on new work after the switch, and a channel's
    /// token cannot move to another API session) and stay open while connections or
    /// binds use them, at most until the old token expires.
    pub(super) fn retire_all(&self, session_id: &str, previous: &ApiSession) {
        let grace = retire_grace(previous);
        let mut state = lock(&self.state);
        state.session_id = session_id.to_owned();
        let channels: Vec<_> = state.channels.drain().map(|(_, channel)| channel).collect();
        for channel in channels {
            state.retire(channel, grace);
        }
    }

    /// Closes every channel, current and retired.
    pub(super) fn close_all(&self) {
        let mut state = lock(&self.state);
        for (_, channel) in state.channels.drain() {
            channel.close();
        }
        for channel in state.retired.drain(..) {
            channel.close();
        }
    }
}

impl State {
    fn retire(&mut self, channel: Channel, grace: Duration) {
        self.retired.retain(|c| !c.is_closed());
        tracing::debug!(router = channel.router(), connections = channel.registered(), ?grace, "retiring a channel");
        self.retired.push(channel.clone());
        tokio::spawn(close_when_idle(channel, grace));
    }
}

/// A retired channel lives at most as long as the token it presented (and never more
/// than [`MAX_RETIRE_GRACE`]): routers end its connections then anyway.
fn retire_grace(previous: &ApiSession) -> Duration {
    let left = previous.expires_at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    left.min(MAX_RETIRE_GRACE)
}

/// The longest a retired channel is kept open for the connections still on it.
pub(super) const MAX_RETIRE_GRACE: Duration = Duration::from_secs(5 * 60);

/// Closes `channel` once nothing is registered on it, or after `grace`.
async fn close_when_idle(channel: Channel, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        if channel.is_closed() {
            return;
        }
        let left = channel.registered();
        if left == 0 {
            tracing::debug!(router = channel.router(), "closing a retired channel: no connection left on it");
            channel.close();
            return;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            tracing::info!(
                router = channel.router(),
                connections = left,
                "closing a retired channel: its grace is over"
            );
            channel.close();
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(IDLE_CHECK.min(deadline - now)) => {}
            () = channel.closed() => return,
        }
    }
}

#[cfg(test)]
#[path = "routers_tests.rs"]
mod tests;
