//! Hosting a service: [`ZitiContext::listen`] and the listener that hands out connections.
//! When the channel to the router is lost the service is bound again, with backoff; when
//! the router itself ends the Bind, `accept` reports it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::accept::{Accepted, Ended, serve};
use crate::bind::{BindHandle, Binding, bind};
use crate::conn::ZitiConn;
use crate::context::ZitiContext;
use crate::error::Error;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// A hosted service. Dropping it (or [`ZitiListener::close`]) unbinds.
#[derive(Debug)]
pub struct ZitiListener {
    service: String,
    accepted: mpsc::Receiver<Result<ZitiConn, Error>>,
    task: JoinHandle<()>,
    current: Arc<Mutex<Option<BindHandle>>>,
    bound: watch::Receiver<bool>,
}

impl ZitiContext {
    /// Hosts `service`: returns once the router has created the terminator.
    pub async fn listen(&self, service: &str) -> Result<ZitiListener, Error> {
        let binding = bind(self, service).await?;
        let (accepted_tx, accepted) = mpsc::channel(self.inner.options.accept_backlog.max(1));
        let current = Arc::new(Mutex::new(Some(binding.handle.clone())));
        let (bound_tx, bound) = watch::channel(true);
        let task = tokio::spawn(supervise(binding, accepted_tx, current.clone(), bound_tx));
        Ok(ZitiListener { service: service.to_owned(), accepted, task, current, bound })
    }
}

fn set(current: &Mutex<Option<BindHandle>>, handle: Option<BindHandle>) {
    *current.lock().unwrap_or_else(PoisonError::into_inner) = handle;
}

/// Serves the Bind; binds again after a lost channel; reports what cannot be retried.
async fn supervise(
    mut binding: Binding,
    accepted: Accepted,
    current: Arc<Mutex<Option<BindHandle>>>,
    bound: watch::Sender<bool>,
) {
    loop {
        let ended = serve(&mut binding, &accepted).await;
        let _ = bound.send(false);
        let lost = match ended {
            Ended::ListenerGone => return,
            Ended::Closed(err) => {
                binding.handle.unbind().await;
                set(&current, None);
                let _ = accepted.send(Err(err)).await;
                return;
            }
            Ended::Lost(err) => err,
        };
        set(&current, None);
        tracing::warn!(service = %binding.service, err = %lost, "lost the bind; binding again");
        let mut delay = FIRST_RETRY;
        binding = loop {
            if accepted.is_closed() {
                return;
            }
            match bind(&binding.context, &binding.service).await {
                Ok(fresh) => break fresh,
                Err(err) if is_final(&err) => {
                    let _ = accepted.send(Err(err)).await;
                    return;
                }
                Err(err) => {
                    tracing::warn!(service = %binding.service, %err, retry_in = ?delay, "binding again failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY);
                }
            }
        };
        set(&current, Some(binding.handle.clone()));
        let _ = bound.send(true);
        tracing::info!(service = %binding.service, "service bound again");
    }
}

/// Errors that retrying cannot fix.
fn is_final(err: &Error) -> bool {
    matches!(
        err,
        Error::ServiceNotFound(_)
            | Error::NotAuthorized { .. }
            | Error::SessionExpired
            | Error::LoginRejected(_)
            | Error::Identity(_)
    )
}

impl ZitiListener {
    /// The next inbound connection. An error means hosting has stopped: the router
    /// ended the Bind, or binding again is impossible (e.g. the policy was removed).
    pub async fn accept(&mut self) -> Result<ZitiConn, Error> {
        match self.accepted.recv().await {
            Some(result) => result,
            None => Err(Error::BindFailed { service: self.service.clone(), reason: "listener stopped".to_owned() }),
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// Whether a terminator exists now (false while binding again after a lost channel).
    pub fn is_bound(&self) -> bool {
        *self.bound.borrow()
    }

    /// Follows [`ZitiListener::is_bound`] without borrowing the listener (e.g. for
    /// readiness while another task accepts).
    pub fn bound(&self) -> watch::Receiver<bool> {
        self.bound.clone()
    }

    /// Waits until [`ZitiListener::is_bound`] is `bound`.
    pub async fn wait_bound(&mut self, bound: bool) {
        let _ = self.bound.wait_for(|now| *now == bound).await;
    }

    /// Unbinds and waits until the request is queued to the router.
    pub async fn close(self) {
        self.task.abort();
        let handle = self.current.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle {
            handle.unbind().await;
        }
    }
}

impl Drop for ZitiListener {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(handle) = self.current.lock().unwrap_or_else(PoisonError::into_inner).take() {
            handle.unbind_soon();
        }
    }
}
