//! The idle clean-up of provisioned identities, against the real controller: one that
//! nobody used for `ZITI_MGMT_PROVISION_IDLE` is deleted, one logged in is kept. In a
//! file of its own: its short idle time would delete other tests' identities.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

mod support;

use std::time::Duration;

use support::idp::{IDLE_WAIT, Provisioning, principal, token};
use workspace_tests::network::ZitiNetwork;

#[tokio::test(flavor = "multi_thread")]
async fn an_unused_provisioned_identity_is_deleted_after_the_idle_time_and_one_logged_in_is_kept() {
    let network = ZitiNetwork::from_env();
    let idle = [("ZITI_MGMT_PROVISION_IDLE", "3s"), ("ZITI_MGMT_REAPER_INTERVAL", "1s")];
    let setup = Provisioning::start(&network, &idle).await;
    let client = setup.client();
    // The one in use is provisioned first: when the other is found idle, so was it.
    let in_use =
        client.provision_identity(&token(&network, &principal(&network, "in-use"), &[])).await.expect("in use");
    let username = format!("idle-test-{}", in_use.ziti_identity_id);
    setup.controller.log_in_with_password(&in_use.ziti_identity_id, &username, "a-password-1").await;
    let unused =
        client.provision_identity(&token(&network, &principal(&network, "unused"), &[])).await.expect("unused");

    let gone = setup.controller.wait_gone(&unused.ziti_identity_id, IDLE_WAIT).await;

    assert!(gone.is_some(), "the unused identity is still there after {IDLE_WAIT:?}:\n{}", setup.management.logs());
    let kept = setup.controller.identity(&in_use.ziti_identity_id).await.expect("the logged-in identity is kept");
    assert_eq!(kept["hasApiSession"], true, "{kept}");
    // The controller shows the identity gone before ziti-management has logged why.
    let logs = setup.management.wait_for_log_line(
        |line| line.contains("identity.deleted_idle") && line.contains(&unused.ziti_identity_id),
        Duration::from_secs(10),
    );
    let deleted: Vec<&str> = logs.lines().filter(|line| line.contains("identity.deleted_idle")).collect();
    assert!(
        deleted.iter().any(|line| line.contains(&unused.ziti_identity_id) && line.contains(&unused.external_id)),
        "{logs}"
    );
    assert!(!deleted.iter().any(|line| line.contains(&in_use.ziti_identity_id)), "{logs}");

    setup.controller.end_api_sessions(&in_use.ziti_identity_id).await;
    setup.cleanup(&[&in_use.ziti_identity_id, &unused.ziti_identity_id]).await;
}
