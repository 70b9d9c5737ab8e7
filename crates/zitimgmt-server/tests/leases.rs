//! Leases on the real controller, with a short TTL (10 s) and reaper interval (2 s):
//! renewed leases live on, unrenewed ones are reaped on time, released ones go at
//! once, and a restart of ziti-management loses nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

mod support;

use std::time::{Duration, Instant};

use support::controller::ControllerView;
use support::{Management, extend, release, request_gateway, seconds_until};
use tonic::Code;
use workspace_tests::network::ZitiNetwork;

const TTL: &str = "10s";
const TTL_SECS: f64 = 10.0;
const REAPER: &str = "2s";
/// TTL + one reaper interval + a margin for a busy machine.
const REAPED_WITHIN: Duration = Duration::from_secs(10 + 2 + 3);

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_renewed_every_4s_outlives_several_ttls() {
    let network = ZitiNetwork::from_env();
    let management = Management::start(&network, TTL, REAPER);
    let mut client = management.client().await;
    let controller = ControllerView::login(&network).await;
    let id = request_gateway(&mut client).await.expect("request").ziti_identity_id;

    let started = Instant::now();
    let mut renewals = 0;
    while started.elapsed() < Duration::from_secs(25) {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let expiry = extend(&mut client, &id).await.expect("extension").expect("an expiry");
        let left = seconds_until(&expiry);
        assert!((TTL_SECS - 1.5..=TTL_SECS + 0.5).contains(&left), "expiry {left} s ahead, expected ~{TTL_SECS}");
        renewals += 1;
    }
    assert!(renewals >= 6);
    let shown = controller.identity(&id).await.expect("a renewed lease's identity must survive");
    assert_eq!(shown["tags"]["zitiMgmtManaged"], true);
    release(&mut client, &id).await.expect("release");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unrenewed_lease_is_reaped_within_ttl_plus_one_interval() {
    let network = ZitiNetwork::from_env();
    let management = Management::start(&network, TTL, REAPER);
    let mut client = management.client().await;
    let controller = ControllerView::login(&network).await;
    let issued_at = Instant::now();
    let id = request_gateway(&mut client).await.expect("request").ziti_identity_id;

    // Not before its time...
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(controller.identity(&id).await.is_some(), "reaped before the lease ran out");
    // ...but soon after.
    let left = REAPED_WITHIN.saturating_sub(issued_at.elapsed());
    let gone = controller.wait_gone(&id, left).await;
    assert!(gone.is_some(), "still on the controller {:?} after issue", issued_at.elapsed());
    eprintln!("unrenewed lease reaped {:.1} s after issue (TTL 10 s, reaper 2 s)", issued_at.elapsed().as_secs_f64());

    let status = extend(&mut client, &id).await.expect_err("a reaped lease cannot be extended");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // The reaper counts the lease once the controller has answered its delete, so the
    // controller can show the identity gone a moment before the count moves.
    let counted =
        |metrics: &str| metrics.lines().any(|l| l.starts_with("zitimgmt_leases_reaped_total ") && !l.ends_with(" 0"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = support::http_get(management.admin, "/metrics").expect("metrics").1;
        if counted(&metrics) {
            break;
        }
        assert!(Instant::now() < deadline, "the reaped lease is not counted:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_released_lease_is_gone_at_once() {
    let network = ZitiNetwork::from_env();
    let management = Management::start(&network, TTL, REAPER);
    let mut client = management.client().await;
    let controller = ControllerView::login(&network).await;
    let id = request_gateway(&mut client).await.expect("request").ziti_identity_id;
    assert!(controller.identity(&id).await.is_some());

    release(&mut client, &id).await.expect("release");
    assert!(controller.identity(&id).await.is_none(), "a released identity must be deleted at once");
    assert_eq!(extend(&mut client, &id).await.expect_err("released").code(), Code::NotFound);
    assert_eq!(release(&mut client, &id).await.expect_err("released twice").code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lease_is_not_extended_even_before_the_reaper_comes() {
    let network = ZitiNetwork::from_env();
    // The reaper would not come for an hour: the expiry alone must count.
    let management = Management::start(&network, "3s", "1h");
    let mut client = management.client().await;
    let controller = ControllerView::login(&network).await;
    let id = request_gateway(&mut client).await.expect("request").ziti_identity_id;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(controller.identity(&id).await.is_some(), "nothing should have reaped it yet");

    let status = extend(&mut client, &id).await.expect_err("the lease has run out");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(controller.identity(&id).await.is_none(), "an expired lease found on extension must be deleted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_loses_no_lease() {
    let network = ZitiNetwork::from_env();
    let controller = ControllerView::login(&network).await;
    let mut first = Management::start(&network, TTL, REAPER);
    let mut client = first.client().await;
    let kept = request_gateway(&mut client).await.expect("request kept").ziti_identity_id;
    let issued_at = Instant::now();
    let abandoned = request_gateway(&mut client).await.expect("request abandoned").ziti_identity_id;
    // Stopped while the client still holds its connection open, as a gateway would.
    let stopping = Instant::now();
    assert!(first.stop().success(), "ziti-management did not stop cleanly:\n{}", first.logs());
    assert!(stopping.elapsed() < Duration::from_secs(3), "stopping took {:?}", stopping.elapsed());
    drop(client);

    // A new process (new ports, nothing shared but the controller) takes over.
    let second = Management::start(&network, TTL, REAPER);
    let mut client = second.client().await;
    extend(&mut client, &kept).await.expect("a lease from before the restart can be extended");
    let mut renewer = client.clone();
    let renewing = tokio::spawn({
        let kept = kept.clone();
        async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                extend(&mut renewer, &kept).await.expect("extension after the restart");
            }
        }
    });

    let left = REAPED_WITHIN.saturating_sub(issued_at.elapsed());
    assert!(
        controller.wait_gone(&abandoned, left).await.is_some(),
        "the new process did not reap the unrenewed lease; log:\n{}",
        second.logs()
    );
    renewing.await.expect("renewals");
    assert!(controller.identity(&kept).await.is_some(), "the renewed lease was lost");
    release(&mut client, &kept).await.expect("release");
}

/// The reaper lists a lease as run out, then an extension lands (from another replica,
/// or one that read the lease just in time) before the reaper deletes it: the
/// identity, just reported extended, must survive.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_extended_after_the_reaper_listed_it_is_not_deleted() {
    use std::sync::Arc;
    use std::time::SystemTime;

    use zitimgmt_server::controller::{Controller, NewIdentity};
    use zitimgmt_server::lease::new_lease_tags;

    let network = ZitiNetwork::from_env();
    let settings: std::collections::BTreeMap<&str, String> = [
        ("ziti_mgmt_controller_url", network.ctrl_url.clone()),
        ("ziti_mgmt_controller_ca", network.ctrl_ca.display().to_string()),
        ("ziti_mgmt_admin_user", network.admin_user.clone()),
        ("ziti_mgmt_admin_password", network.admin_password.clone()),
    ]
    .into();
    let config = zitimgmt_server::config::Config::from_figment(&figment::Figment::from(
        figment::providers::Serialized::defaults(settings),
    ))
    .expect("config");
    let controller = Arc::new(
        Controller::new(
            config.controller_url,
            config.controller_ca_pem.as_deref(),
            config.admin_user,
            config.admin_password,
        )
        .expect("controller client"),
    );
    let view = ControllerView::login(&network).await;
    let now = SystemTime::now();
    let name = format!("mgmt-test-race-{}", uuid::Uuid::new_v4().simple());
    let new = NewIdentity {
        name: &name,
        role_attributes: &[],
        tags: new_lease_tags("gateway", "anonymous", now - Duration::from_secs(60)),
    };
    let id = controller.create_identity(&new).await.expect("an identity whose lease ran out a minute ago");

    let reaper = zitimgmt_server::reaper::Reaper::new(
        controller.clone(),
        Arc::new(zitimgmt_server::metrics::Metrics::new()),
        Duration::from_secs(30),
    );
    let listed = reaper.expired(now - Duration::from_secs(1)).await.expect("list");
    assert!(listed.contains(&id), "the run-out lease was not listed");
    // The extension lands between the listing and the deletion.
    controller
        .set_tags(&id, &new_lease_tags("gateway", "anonymous", now + Duration::from_secs(300)))
        .await
        .expect("extend");

    let reaped = reaper.reap(vec![id.clone()]).await;
    let survived = view.identity(&id).await.is_some();
    if survived {
        view.delete(&id).await;
    }
    assert!(survived, "the reaper deleted a lease extended after it was listed");
    assert_eq!(reaped, 0);
}
