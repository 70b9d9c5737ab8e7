//! Hosting a service: [`ZitiContext::listen`] and the listener that hands out connections.
//! It binds on every online edge router offered; when a channel to a router is lost the
//! service is bound there again, with backoff; when the router itself ends the Bind,
//! `accept` reports it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::accept::{Accepted, Ended, serve};
use crate::backoff::Backoff;
use crate::bind::{BindHandle, Binding, bind_everywhere, bind_on};
use crate::conn::ZitiConn;
use crate::context::ZitiContext;
use crate::error::Error;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

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

/// Serves one router's Bind; binds there again after a lost channel; reports what
/// cannot be retried.
async fn supervise(mut binding: Binding, slot: usize, accepted: Accepted, binds: Arc<Binds>) {
    let router = binding.handle.channel.router().to_owned();
    loop {
        let ended = serve(&mut binding, &accepted).await;
        let lost = match ended {
            Ended::ListenerGone => return,
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
