use super::*;

fn connected() -> Message {
    Message::new(content::STATE_CONNECTED, Vec::new()).with_u32(header::CONN_ID, 3)
}

#[test]
fn a_plain_connect_carries_the_token_and_the_caller() {
    let connect = connect_request(3, "dial-token", "alice", None, false);
    assert_eq!(connect.content_type, content::CONNECT);
    assert_eq!(&connect.body[..], b"dial-token");
    assert_eq!(connect.header_u32(header::CONN_ID), Some(3));
    assert_eq!(connect.header_str(header::CALLER_ID), Some("alice"));
    assert_eq!(connect.header(header::PUBLIC_KEY), None, "a key sent for an unencrypted service");
    assert_eq!(connect.header(header::USE_XGRESS_TO_SDK), None, "flow control asked for while off");
}

#[test]
fn an_encrypted_connect_with_flow_control_carries_key_and_request() {
    let key = [7u8; 32];
    let connect = connect_request(3, "dial-token", "alice", Some(&key), true);
    assert_eq!(connect.header(header::PUBLIC_KEY).map(|k| &k[..]), Some(&key[..]));
    assert_eq!(connect.header_u32(header::CRYPTO_METHOD), Some(0));
    assert!(connect.header_bool(header::USE_XGRESS_TO_SDK));
}

#[test]
fn state_connected_without_extras_is_a_legacy_connection() {
    assert_eq!(on_connect_reply(&connected()), Ok(Connected { flow_circuit: None, host_key: None, circuit_id: None }));
}

#[test]
fn state_connected_with_flow_control_names_the_circuit_to_start() {
    let reply = connected().with_bool(header::USE_XGRESS_TO_SDK, true).with_header(header::CIRCUIT_ID, b"c-9".to_vec());
    let outcome = on_connect_reply(&reply).unwrap();
    assert_eq!(outcome.flow_circuit.as_deref(), Some(&b"c-9"[..]));
    assert_eq!(outcome.circuit_id.as_deref(), Some("c-9"));
}

#[test]
fn a_circuit_id_without_flow_control_is_only_a_name() {
    let outcome = on_connect_reply(&connected().with_header(header::CIRCUIT_ID, b"c-9".to_vec())).unwrap();
    assert_eq!(outcome.flow_circuit, None);
    assert_eq!(outcome.circuit_id.as_deref(), Some("c-9"));
}

#[test]
fn flow_control_without_a_circuit_id_is_an_error() {
    let reply = connected().with_bool(header::USE_XGRESS_TO_SDK, true);
    assert_eq!(on_connect_reply(&reply), Err(ConnectError::NoCircuitId));
}

#[test]
fn the_hosts_public_key_is_read_when_whole() {
    let key = [4u8; 32];
    let outcome = on_connect_reply(&connected().with_header(header::PUBLIC_KEY, key.to_vec())).unwrap();
    assert_eq!(outcome.host_key, Some(key));
    let short = on_connect_reply(&connected().with_header(header::PUBLIC_KEY, vec![4u8; 16])).unwrap();
    assert_eq!(short.host_key, None, "a 16-byte key was taken");
}

#[test]
fn state_closed_refuses_the_dial_with_the_reason() {
    let reply = Message::new(content::STATE_CLOSED, b"no terminators".to_vec()).with_u32(header::ERROR_CODE, 2);
    assert_eq!(on_connect_reply(&reply), Err(ConnectError::Refused("no terminators (error code 2)".into())));
}

#[test]
fn any_other_reply_to_a_connect_is_unexpected() {
    let reply = Message::new(content::DIAL_FAILED, b"x".to_vec());
    assert_eq!(on_connect_reply(&reply), Err(ConnectError::Unexpected(content::DIAL_FAILED)));
}
