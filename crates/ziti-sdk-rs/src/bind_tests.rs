use super::*;
use crate::edge::header;

fn closed(reason: &str) -> Message {
    Message::new(content::STATE_CLOSED, reason.as_bytes().to_vec())
}

#[test]
fn a_plain_bind_carries_the_token_and_asks_for_confirmation() {
    let bind = bind_request(7, "bind-token", None, false);
    assert_eq!(bind.content_type, content::BIND);
    assert_eq!(&bind.body[..], b"bind-token");
    assert_eq!(bind.header_u32(header::CONN_ID), Some(7));
    assert!(bind.header_bool(header::SUPPORTS_BIND_SUCCESS));
    assert!(bind.header_bool(header::ROUTER_PROVIDED_CONN_ID));
    assert!(bind.header_bool(header::SUPPORTS_INSPECT));
    assert_eq!(bind.header(header::PUBLIC_KEY), None, "a key sent for an unencrypted service");
    assert_eq!(bind.header(header::CRYPTO_METHOD), None);
    assert_eq!(bind.header(header::USE_XGRESS_TO_SDK), None, "flow control asked for while off");
}

#[test]
fn an_encrypted_bind_carries_our_public_key() {
    let key = [9u8; 32];
    let bind = bind_request(7, "bind-token", Some(&key), false);
    assert_eq!(bind.header(header::PUBLIC_KEY).map(|k| &k[..]), Some(&key[..]));
    assert_eq!(bind.header_u32(header::CRYPTO_METHOD), Some(0), "libsodium is method 0");
}

#[test]
fn a_bind_with_flow_control_asks_the_router_for_it() {
    let bind = bind_request(7, "bind-token", None, true);
    assert!(bind.header_bool(header::USE_XGRESS_TO_SDK));
}

#[test]
fn state_connected_means_the_bind_was_taken() {
    assert_eq!(on_bind_reply(&Message::new(content::STATE_CONNECTED, Vec::new())), BindReply::Created);
}

#[test]
fn state_closed_refuses_the_bind_with_the_routers_reason_and_code() {
    assert_eq!(on_bind_reply(&closed("no terminator")), BindReply::Refused("no terminator".into()));
    let coded = closed("bind access lost").with_u32(header::ERROR_CODE, 14);
    assert_eq!(on_bind_reply(&coded), BindReply::Refused("bind access lost (error code 14)".into()));
}

#[test]
fn a_session_the_router_does_not_know_yet_is_told_apart_so_the_bind_is_tried_again() {
    let coded = closed("invalid session").with_u32(header::ERROR_CODE, 3);
    assert_eq!(on_bind_reply(&coded), BindReply::SessionNotKnown("invalid session (error code 3)".into()));
    assert_eq!(on_message_before_bound(&coded), BindProgress::SessionNotKnown("invalid session (error code 3)".into()));
}

#[test]
fn any_other_reply_to_a_bind_is_unexpected() {
    assert_eq!(on_bind_reply(&Message::new(content::DATA, Vec::new())), BindReply::Unexpected(content::DATA));
}

#[test]
fn bind_success_completes_the_bind() {
    assert_eq!(on_message_before_bound(&Message::new(content::BIND_SUCCESS, Vec::new())), BindProgress::Bound);
}

#[test]
fn state_closed_before_bind_success_fails_the_bind() {
    assert_eq!(on_message_before_bound(&closed("gone")), BindProgress::Refused("gone".into()));
}

#[test]
fn a_dial_before_bind_success_is_kept_for_serving() {
    assert_eq!(on_message_before_bound(&Message::new(content::DIAL, Vec::new())), BindProgress::Early);
}
