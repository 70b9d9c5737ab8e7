//! Channels to edge routers, one per router address, opened on first use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::ClientConfig;

use super::lock;
use crate::channel::{Channel, ChannelSettings};
use crate::controller::{ApiSession, ServiceSession};
use crate::error::Error;

#[derive(Debug, Default)]
pub(super) struct Routers {
    channels: Mutex<HashMap<String, Channel>>,
    /// Serializes dialing so that concurrent callers share one new channel.
    connecting: tokio::sync::Mutex<()>,
}

impl Routers {
    fn open(&self, address: &str) -> Option<Channel> {
        lock(&self.channels).get(address).filter(|c| !c.is_closed()).cloned()
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
                    lock(&self.channels).insert(address.clone(), channel.clone());
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
                lock(&self.channels).insert(address.to_owned(), channel.clone());
                Ok(channel)
            }
            Err(err) => {
                Err(Error::NoRouterReachable { service: service.to_owned(), tried: format!("{address} ({err})") })
            }
        }
    }

    pub(super) fn open_channels(&self) -> Vec<Channel> {
        lock(&self.channels).values().filter(|c| !c.is_closed()).cloned().collect()
    }

    pub(super) fn close_all(&self) {
        for (_, channel) in lock(&self.channels).drain() {
            channel.close();
        }
    }
}
