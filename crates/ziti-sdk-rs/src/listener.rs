//! Hosting a service: [`ZitiContext::listen`] and the listener that hands out connections.
//! It binds on every online edge router offered; when a channel to a router is lost the
//! service is bound there again, with backoff; when the router itself ends the Bind,
//! `accept` reports it. When the API session is replaced (rotated credentials), each
//! Bind is made again on a new channel before the old one is ended.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::accept::{Accepted, Ended, serve};
use crate::backoff::Backoff;
use crate::bind::{BindHandle, Binding, bind_everywhere, bind_on};
use crate::conn::ZitiConn;
use crate::context::ZitiContext;
use crate::error::Error;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long a replaced Bind still answers the Dials its router sent before it removed
/// the terminator.
const UNBIND_DRAIN: Duration = Duration::from_secs(10);

/// A hosted service: one Bind per edge router. Dropping it (or
/// [`ZitiListener::close`]) unbinds them all.
#[derive(Debug)]
pub struct ZitiListener {
    service: String,
    accepted: mpsc::Receiver<Result<ZitiConn, Error>>,
    tasks: Vec<JoinHandle<()>>,
    binds: Arc<Binds>,
    bound: watch::Receiver<bool>,
}

/// The live Bind on each router (by slot), and whether any of them is up.
#[derive(Debug)]
struct Binds {
    handles: Mutex<Vec<Option<BindHandle>>>,
    any_bound: watch::Sender<bool>,
}

impl Binds {
    fn set(&self, slot: usize, handle: Option<BindHandle>) {
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        handles[slot] = handle;
        let any = handles.iter().any(Option::is_some);
        self.any_bound.send_if_modified(|bound| std::mem::replace(bound, any) != any);
    }

    fn take_all(&self) -> Vec<BindHandle> {
        self.handles.lock().unwrap_or_else(PoisonError::into_inner).iter_mut().filter_map(Option::take).collect()
    }
}

impl ZitiContext {
    /// Hosts `service` on every online edge router the controller offers for it:
    /// returns once each has created its terminator (or refused; one is enough).
    pub async fn listen(&self, service: &str) -> Result<ZitiListener, Error> {
        let bindings = bind_everywhere(self, service).await?;
        let (accepted_tx, accepted) = mpsc::channel(self.inner.options.accept_backlog.max(1));
        let (any_bound, bound) = watch::channel(true);
        let binds = Arc::new(Binds {
            handles: Mutex::new(bindings.iter().map(|binding| Some(binding.handle.clone())).collect()),
            any_bound,
        });
        let tasks = bindings
            .into_iter()
            .enumerate()
            .map(|(slot, binding)| tokio::spawn(supervise(binding, slot, accepted_tx.clone(), binds.clone())))
            .collect();
        Ok(ZitiListener { service: service.to_owned(), accepted, tasks, binds, bound })
    }
}

/// When a Bind is due to be made again on a new channel: after the API session changed,
/// or when an earlier attempt failed and its retry is due.
struct Renewal {
    changes: watch::Receiver<u64>,
    retry: Backoff,
    retry_at: Option<Instant>,
}

impl Renewal {
    fn new(changes: watch::Receiver<u64>) -> Self {
        Self { changes, retry: Backoff::new(FIRST_RETRY, MAX_RETRY), retry_at: None }
    }

    async fn due(&mut self) {
        match self.retry_at {
            Some(at) => tokio::time::sleep_until(at).await,
            // The context is gone (its sender with it): nothing will change.
            None => {
                if self.changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    fn retry_later(&mut self) -> Duration {
        let delay = self.retry.next_delay();
        self.retry_at = Some(Instant::now() + delay);
        delay
    }

    fn done(&mut self) {
        self.retry_at = None;
        self.retry.reset();
    }
}

/// Serves one router's Bind; binds there again after a lost channel, and on a new
/// channel once the API session is replaced; reports what cannot be retried.
async fn supervise(mut binding: Binding, slot: usize, accepted: Accepted, binds: Arc<Binds>) {
    let router = binding.handle.channel.router().to_owned();
    let mut renewal = Renewal::new(binding.context.inner.renewals());
    if binding.api_session_id != binding.context.inner.session().api_session_id {
        // The session was replaced while `listen` was binding: renew at once.
        renewal.changes.mark_changed();
    }
    loop {
        let ended = serve(&mut binding, &accepted, renewal.due()).await;
        let lost = match ended {
            Ended::ListenerGone => return,
            Ended::Renew => {
                renew(&mut binding, slot, &accepted, &binds, &mut renewal).await;
                continue;
            }
            Ended::Closed(err) => {
                binding.handle.unbind().await;
                binds.set(slot, None);
                let _ = accepted.send(Err(err)).await;
                return;
            }
            Ended::Lost(err) => err,
        };
        binds.set(slot, None);
        tracing::warn!(service = %binding.service, %router, err = %lost, "lost the bind; binding again");
        let mut retry = Backoff::new(FIRST_RETRY, MAX_RETRY);
        binding = loop {
            if accepted.is_closed() {
                return;
            }
            match bind_on(&binding.context, &binding.service, &router).await {
                Ok(fresh) => break fresh,
                Err(err) if is_final(&err) => {
                    let _ = accepted.send(Err(err)).await;
                    return;
                }
                Err(err) => {
                    let delay = retry.next_delay();
                    tracing::warn!(service = %binding.service, %router, %err, retry_in = ?delay, "binding again failed");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        binds.set(slot, Some(binding.handle.clone()));
        tracing::info!(service = %binding.service, %router, "service bound again");
    }
}

/// Make-before-break: binds on a channel of the current API session, then ends the old
/// Bind (whose accepted connections carry on). Failing that, the old Bind goes on
/// serving and binding again is retried later.
async fn renew(binding: &mut Binding, slot: usize, accepted: &Accepted, binds: &Binds, renewal: &mut Renewal) {
    if binding.api_session_id == binding.context.inner.session().api_session_id {
        renewal.done();
        return;
    }
    let router = binding.handle.channel.router().to_owned();
    match bind_on(&binding.context, &binding.service, &router).await {
        Ok(fresh) => {
            renewal.done();
            binds.set(slot, Some(fresh.handle.clone()));
            let old = std::mem::replace(binding, fresh);
            tracing::info!(service = %binding.service, %router, "service bound on a new channel; ending the old bind");
            tokio::spawn(end_replaced(old, accepted.clone()));
        }
        Err(err) => {
            let delay = renewal.retry_later();
            tracing::warn!(service = %binding.service, %router, %err, retry_in = ?delay, "binding on a new channel failed; the old bind goes on serving");
        }
    }
}

/// Ends a Bind replaced by one on a new channel: asks the router to remove its
/// terminator, answers the Dials it still sends meanwhile, then stops receiving.
async fn end_replaced(mut old: Binding, accepted: Accepted) {
    old.handle.request_unbind().await;
    let drained = tokio::time::timeout(UNBIND_DRAIN, serve(&mut old, &accepted, std::future::pending())).await;
    if let Ok(Ended::Closed(err)) = drained {
        tracing::debug!(service = %old.service, %err, "the router ended the replaced bind");
    }
    old.handle.channel.deregister(old.handle.bind_id);
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

    /// The name of the service this listener hosts.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Whether a terminator exists now on some router (false while every Bind is being
    /// made again after lost channels).
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

    /// Unbinds and waits until the requests are queued to the routers.
    pub async fn close(self) {
        for task in &self.tasks {
            task.abort();
        }
        for handle in self.binds.take_all() {
            handle.unbind().await;
        }
    }
}

impl Drop for ZitiListener {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for handle in self.binds.take_all() {
            handle.unbind_soon();
        }
    }
}
