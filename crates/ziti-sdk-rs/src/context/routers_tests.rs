use std::time::SystemTime;

use super::*;
use crate::channel::ConnKind;
use crate::fake_controller::logged_in_session;

/// API session `s1`, its token valid for `left`.
fn old_session(left: Duration) -> ApiSession {
    ApiSession { expires_at: SystemTime::now() + left, ..logged_in_session() }
}

/// Routers holding one channel of session `s1` (to `router:3022`) with one connection on it.
fn routers_with_a_connection() -> (Routers, Channel, u32) {
    let routers = Routers::new("s1");
    let channel = Channel::detached("router:3022");
    let (conn_id, _inbox) = channel.register(ConnKind::Dial);
    routers.keep("router:3022", &channel, &old_session(Duration::from_secs(3600)));
    assert_eq!(routers.open_channels().len(), 1);
    (routers, channel, conn_id)
}

/// Lets spawned tasks run (paused time advances only when everything waits).
async fn after(wait: Duration) {
    tokio::time::sleep(wait).await;
}

#[tokio::test(start_paused = true)]
async fn a_new_api_session_retires_channels_instead_of_closing_them() {
    let (routers, channel, _conn) = routers_with_a_connection();

    routers.retire_all("s2", &old_session(Duration::from_secs(3600)));
    after(Duration::from_secs(30)).await;

    assert!(routers.open_channels().is_empty(), "new work must not use the old session's channel");
    assert!(!channel.is_closed(), "the connection on the old channel must carry on");
    assert_eq!(routers.retired_channels().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retired_channel_closes_once_its_last_connection_is_gone() {
    let (routers, channel, conn) = routers_with_a_connection();
    routers.retire_all("s2", &old_session(Duration::from_secs(3600)));
    after(Duration::from_secs(5)).await;
    assert!(!channel.is_closed());

    channel.deregister(conn);
    after(IDLE_CHECK * 2).await;
    assert!(channel.is_closed(), "an idle retired channel is closed");
    assert!(routers.retired_channels().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_retired_channel_without_connections_closes_at_once() {
    let routers = Routers::new("s1");
    let channel = Channel::detached("router:3022");
    routers.keep("router:3022", &channel, &old_session(Duration::from_secs(3600)));

    routers.retire_all("s2", &old_session(Duration::from_secs(3600)));
    after(Duration::from_millis(10)).await;
    assert!(channel.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_retired_channel_in_use_closes_when_the_old_token_expires() {
    let (routers, channel, _conn) = routers_with_a_connection();
    routers.retire_all("s2", &old_session(Duration::from_secs(40)));

    after(Duration::from_secs(38)).await;
    assert!(!channel.is_closed(), "open while the old token is valid");
    after(Duration::from_secs(3)).await;
    assert!(channel.is_closed(), "closed once the old token expired");
}

#[tokio::test(start_paused = true)]
async fn a_retired_channel_in_use_closes_after_the_longest_grace() {
    let (routers, channel, _conn) = routers_with_a_connection();
    routers.retire_all("s2", &old_session(Duration::from_secs(3600)));

    after(MAX_RETIRE_GRACE - Duration::from_secs(2)).await;
    assert!(!channel.is_closed());
    after(Duration::from_secs(3)).await;
    assert!(channel.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_channel_opened_with_a_replaced_session_is_retired_not_reused() {
    let routers = Routers::new("s1");
    routers.retire_all("s2", &old_session(Duration::from_secs(3600)));
    let late = Channel::detached("router:3022");
    let (_conn, _inbox) = late.register(ConnKind::Dial);

    // Opened with `s1`'s token while `s2` was being installed.
    routers.keep("router:3022", &late, &old_session(Duration::from_secs(3600)));

    assert!(routers.open_channels().is_empty());
    assert_eq!(routers.retired_channels().len(), 1);
    assert!(!late.is_closed());
}

#[tokio::test(start_paused = true)]
async fn closing_all_closes_retired_channels_too() {
    let (routers, channel, _conn) = routers_with_a_connection();
    routers.retire_all("s2", &old_session(Duration::from_secs(3600)));
    routers.close_all();
    assert!(channel.is_closed());
}
