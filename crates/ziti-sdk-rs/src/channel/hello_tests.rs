use super::*;
use crate::channel::frame::{FrameCodec, encode_into};
use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// A router's answer as it arrives: encoded, then decoded, so the tests read real frames.
fn from_wire(message: Message) -> Message {
    let mut buf = BytesMut::new();
    encode_into(&message, &mut buf).unwrap();
    FrameCodec::default().decode(&mut buf).unwrap().unwrap()
}

fn success() -> Message {
    Message::new(content::RESULT, Vec::new()).with_bool(header::RESULT_SUCCESS, true)
}

#[test]
fn the_hello_carries_the_identity_and_the_token() {
    let hello = request("api-token", "identity-id");
    assert_eq!(hello.content_type, content::HELLO);
    assert_eq!(hello.sequence, -1);
    assert_eq!(&hello.body[..], b"identity-id");
    assert_eq!(hello.header_str(edge::header::SESSION_TOKEN), Some("api-token"));
    assert_eq!(hello.headers.len(), 1, "nothing else goes in the hello: {hello:?}");
}

#[test]
fn a_successful_reply_names_the_router() {
    let reply = from_wire(success().with_header(header::ROUTER_ID, b"router-1".to_vec()));
    assert_eq!(on_reply(&reply), Ok(HelloOutcome { router_id: "router-1".into(), supports_bind_success: false }));
}

#[test]
fn a_router_that_confirms_binds_says_so_in_its_reply() {
    // Newer routers add headers the SDK does not read (ids 0 and 4 here); they change nothing.
    let reply = from_wire(
        success()
            .with_header(0, b"channel-connection-id".to_vec())
            .with_header(header::ROUTER_ID, b"router-2".to_vec())
            .with_bool(edge::header::SUPPORTS_BIND_SUCCESS, true)
            .with_header(4, b"v2.0.0".to_vec())
            .with_bool(edge::header::SUPPORTS_INSPECT, true),
    );
    assert_eq!(on_reply(&reply), Ok(HelloOutcome { router_id: "router-2".into(), supports_bind_success: true }));
}

#[test]
fn a_reply_without_router_headers_still_succeeds() {
    assert_eq!(
        on_reply(&from_wire(success())),
        Ok(HelloOutcome { router_id: String::new(), supports_bind_success: false })
    );
}

#[test]
fn a_failed_result_is_a_refusal_with_the_routers_reason() {
    let reply = from_wire(
        Message::new(content::RESULT, b"invalid api session".to_vec()).with_bool(header::RESULT_SUCCESS, false),
    );
    assert_eq!(on_reply(&reply), Err(HelloRefused { reason: "invalid api session".into() }));
}

#[test]
fn a_result_without_the_success_header_is_a_refusal() {
    let reply = from_wire(Message::new(content::RESULT, b"no".to_vec()));
    assert_eq!(on_reply(&reply), Err(HelloRefused { reason: "no".into() }));
}

#[test]
fn an_answer_that_is_not_a_result_is_a_refusal() {
    let reply = from_wire(Message::new(content::LATENCY, Vec::new()).with_bool(header::RESULT_SUCCESS, true));
    assert!(on_reply(&reply).is_err(), "a non-Result answer was taken for success");
}
