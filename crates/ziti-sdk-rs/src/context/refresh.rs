//! Keeps the API session fresh: refresh before expiry, hand the new token to every router
//! (UpdateToken), retry a failed refresh every few seconds, log in again once expired.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use super::Inner;
use crate::controller::{ApiSession, AuthMode};
use crate::edge;
use crate::error::Error;

const RETRY: Duration = Duration::from_secs(5);
const UPDATE_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn keep_fresh(inner: Weak<Inner>) {
    let mut failed = false;
    loop {
        let (delay, session) = {
            let Some(inner) = inner.upgrade() else { return };
            let session = inner.session();
            let mut delay = session.refresh_due(SystemTime::now());
            if let Some(max) = inner.options.max_refresh_interval {
                delay = delay.min(max);
            }
            if failed {
                delay = delay.max(RETRY);
            }
            (delay, session)
        };
        tokio::time::sleep(delay).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.session().token.as_str() != session.token.as_str() {
            // Someone logged in again meanwhile; schedule from the new session.
            failed = false;
            continue;
        }
        failed = !refresh_once(&inner, &session).await;
    }
}

/// One refresh attempt; true when the session is fresh again.
async fn refresh_once(inner: &Arc<Inner>, session: &ApiSession) -> bool {
    match inner.controller.refresh(session).await {
        Ok(fresh) => {
            let (fresh, same_api_session) = inner.install(fresh);
            tracing::debug!(expires_at = ?fresh.expires_at, same_api_session, "API session refreshed");
            // A legacy session keeps its token; only OIDC hands routers a new one.
            if same_api_session && fresh.mode == AuthMode::Oidc {
                update_routers(inner, &fresh).await;
            }
            true
        }
        Err(err) => {
            // A refused refresh (revoked, or the refresh token expired) will not succeed
            // later: log in afresh now. A failed request is retried until expiry.
            let refused = matches!(err, Error::LoginRejected(_) | Error::SessionExpired);
            if !refused && SystemTime::now() < session.expires_at {
                tracing::warn!(%err, "API session refresh failed; retrying");
                return false;
            }
            tracing::warn!(%err, "API session cannot be refreshed; logging in again");
            match inner.relogin(session).await {
                Ok(_) => true,
                Err(Error::SessionExpired) => {
                    // The controller no longer accepts this identity (deleted, certificate
                    // revoked): stop using it, so listeners and connections report it.
                    tracing::warn!("the controller refuses this identity; closing its router channels");
                    inner.close_channels();
                    false
                }
                Err(err) => {
                    tracing::warn!(%err, "logging in again failed; retrying");
                    false
                }
            }
        }
    }
}

/// Routers check every Bind and Connect against the channel's latest token.
async fn update_routers(inner: &Inner, session: &ApiSession) {
    for channel in inner.channels() {
        let result = channel.request(edge::update_token(&session.token), UPDATE_TIMEOUT).await;
        match result {
            Ok(reply) if reply.content_type == edge::content::UPDATE_TOKEN_SUCCESS => {
                tracing::debug!(router = channel.router(), "router accepted the refreshed token");
            }
            Ok(reply) => {
                let refused = reply.content_type == edge::content::UPDATE_TOKEN_FAILURE;
                tracing::warn!(router = channel.router(), refused, reason = %reply.body_text(), "token update failed");
                channel.close();
            }
            Err(err) => {
                tracing::warn!(router = channel.router(), %err, "token update failed");
                channel.close();
            }
        }
    }
}
