//! An identity the controller stops accepting (deleted while hosting): refreshing and
//! logging in again fail, and the listener reports it instead of hosting on.

use std::time::Duration;

use ziti_sdk::{ContextOptions, Error, Identity, ZitiContext};

use crate::support::{TestIdentity, exclusive_service, host_role, network, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_hosting_identity_stops_the_listener_with_session_expired() {
    let network = network();
    let _hosting = exclusive_service(&network).await;
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let options = ContextOptions { max_refresh_interval: Some(Duration::from_secs(2)), ..ContextOptions::default() };
    let context = ZitiContext::with_options(Identity::from_file(&host.file).unwrap(), options).await.unwrap();
    let mut listener = context.listen(&network.service_name).await.unwrap();

    host.delete().await;
    let ended = within("the listener to give up", Duration::from_secs(60), listener.accept()).await;
    assert!(matches!(ended, Err(Error::SessionExpired)), "{ended:?}");
    assert!(!listener.is_bound());
}
