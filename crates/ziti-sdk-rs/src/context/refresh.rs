//! Keeps the API session fresh: refresh before expiry, hand the new token to every router
//! (UpdateToken), retry a failed refresh with backoff, log in again once refused or expired.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use super::Inner;
use crate::backoff::Backoff;
use crate::controller::{ApiSession, AuthMode};
use crate::edge;
use crate::error::Error;

const UPDATE_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// The shortest wait between attempts, so a session about to expire is not hammered.
const MIN_RETRY: Duration = Duration::from_millis(250);

pub(super) async fn keep_fresh(inner: Weak<Inner>) {
    let mut retry = Backoff::new(FIRST_RETRY, MAX_RETRY);
    let mut failed = false;
    loop {
        let (delay, session) = {
            let Some(inner) = inner.upgrade() else { return };
            let session = inner.session();
            let now = SystemTime::now();
            let delay = if failed {
                retry_wait(retry.next_delay(), &session, now)
            } else {
                let due = session.refresh_due(now);
                inner.options.max_refresh_interval.map_or(due, |max| due.min(max))
            };
            (delay, session)
        };
        tokio::time::sleep(delay).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.session().token.as_str() != session.token.as_str() {
            // Someone logged in again meanwhile; schedule from the new session.
            failed = false;
            retry.reset();
            continue;
        }
        failed = !refresh_once(&inner, &session).await;
        if !failed {
            retry.reset();
        }
    }
}

/// The backoff, but never past half of what is left of the session, so that retries
/// come closer together (and one comes before expiry) as it runs out.
fn retry_wait(backoff: Duration, session: &ApiSession, now: SystemTime) -> Duration {
    match session.expires_at.duration_since(now) {
        Ok(left) => backoff.min(left / 2).max(MIN_RETRY),
        Err(_) => backoff,
    }
}

/// One refresh attempt; true when the session is fresh again.
async fn refresh_once(inner: &Arc<Inner>, session: &ApiSession) -> bool {
    match inner.controller().refresh(session).await {
        Ok(fresh) => {
            let (fresh, same_api_session) = inner.install(fresh);
            tracing::debug!(expires_at = ?fresh.expires_at, same_api_session, "API session refreshed");
            // A legacy session keeps its token; only OIDC hands routers a new one.
            if same_api_session && fresh.mode == AuthMode::Oidc {
                update_routers(inner, &fresh).await;
            }
            if !same_api_session && inner.controller().ext_jwt().is_some() {
                // Routers take an API-session certificate for its own API session only.
                match super::certify::certify(
                    &inner.controller(),
                    &fresh,
                    inner.options.max_certificate_renewal_interval,
                )
                .await
                {
                    Ok(certified) => inner.adopt(certified),
                    Err(err) => tracing::warn!(%err, "no API-session certificate for the refreshed session"),
                }
            }
            true
        }
        Err(err) => {
            // A refused refresh (revoked, or the refresh token expired) will not succeed
            // later: log in afresh now. Anything else (the controller unavailable or
            // unreachable) is retried until expiry, leaving channels and binds alone.
            let refused = matches!(err, Error::LoginRejected(_) | Error::SessionExpired)
                || (err.is_transient() && session_refused(inner, session).await);
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

/// Whether the controller refuses the session itself. A failed OIDC refresh is not
/// clear on that (the controller answers 500 to a refresh for a deleted identity), so
/// ask with the access token, which it then answers 401.
async fn session_refused(inner: &Inner, session: &ApiSession) -> bool {
    session.mode == AuthMode::Oidc
        && matches!(inner.controller().check_session(session).await, Err(Error::SessionExpired))
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

#[cfg(test)]
mod tests;
