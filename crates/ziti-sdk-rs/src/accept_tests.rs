use super::*;

fn dial() -> Message {
    Message::new(content::DIAL, Vec::new()).with_u32(header::ROUTER_PROVIDED_CONN_ID, 42)
}

fn closed(reason: &str) -> Message {
    Message::new(content::STATE_CLOSED, reason.as_bytes().to_vec())
}

#[test]
fn a_dial_is_accepted_while_the_backlog_has_room() {
    assert_eq!(on_bind_message(&dial(), false), BindAction::Accept);
}

#[test]
fn a_dial_is_refused_when_the_backlog_is_full() {
    assert_eq!(on_bind_message(&dial(), true), BindAction::Refuse("backlog full"));
}

#[test]
fn state_closed_with_invalid_session_loses_the_bind_to_bind_again() {
    let message = closed("session gone").with_u32(header::ERROR_CODE, edge::ERROR_INVALID_SESSION);
    assert_eq!(on_bind_message(&message, false), BindAction::Lost("session gone (error code 3)".into()));
}

#[test]
fn state_closed_for_another_reason_closes_the_bind() {
    assert_eq!(on_bind_message(&closed("service removed"), false), BindAction::Closed("service removed".into()));
    let coded = closed("other").with_u32(header::ERROR_CODE, 4);
    assert_eq!(on_bind_message(&coded, false), BindAction::Closed("other (error code 4)".into()));
}

#[test]
fn bind_success_on_a_serving_bind_changes_nothing() {
    let message = Message::new(content::BIND_SUCCESS, Vec::new());
    assert_eq!(on_bind_message(&message, true), BindAction::Reestablished);
}

#[test]
fn other_messages_on_a_bind_are_ignored() {
    let message = Message::new(content::DATA, b"stray".to_vec());
    assert_eq!(on_bind_message(&message, false), BindAction::Ignore(content::DATA));
}

#[test]
fn a_plain_dial_names_its_connection() {
    assert_eq!(read_dial(&dial(), false), Ok(DialOffer { conn_id: 42, peer_key: None, flow_circuit: None }));
}

#[test]
fn a_dial_without_a_connection_id_is_refused() {
    assert_eq!(read_dial(&Message::new(content::DIAL, Vec::new()), false), Err("dial carries no connection id"));
}

#[test]
fn an_encrypted_service_takes_the_dialers_key() {
    let key = [5u8; 32];
    let offer = read_dial(&dial().with_header(header::PUBLIC_KEY, key.to_vec()), true).unwrap();
    assert_eq!(offer.peer_key, Some(key));
}

#[test]
fn an_encrypted_service_refuses_a_dial_without_a_key() {
    assert_eq!(read_dial(&dial(), true), Err("dialer sent no public key but the service requires encryption"));
    let short = dial().with_header(header::PUBLIC_KEY, vec![5u8; 31]);
    assert!(read_dial(&short, true).is_err(), "a 31-byte key was taken");
}

#[test]
fn a_flow_controlled_dial_names_its_circuit() {
    let message = dial().with_bool(header::USE_XGRESS_TO_SDK, true).with_header(header::CIRCUIT_ID, b"c-1".to_vec());
    let offer = read_dial(&message, false).unwrap();
    assert_eq!(offer.flow_circuit.as_deref(), Some(&b"c-1"[..]));
}

#[test]
fn a_flow_controlled_dial_without_a_circuit_id_is_refused() {
    let message = dial().with_bool(header::USE_XGRESS_TO_SDK, true);
    assert_eq!(read_dial(&message, false), Err("flow-controlled dial carries no circuit id"));
}

#[test]
fn a_circuit_id_alone_does_not_turn_on_flow_control() {
    let message = dial().with_header(header::CIRCUIT_ID, b"c-1".to_vec());
    assert_eq!(read_dial(&message, false).unwrap().flow_circuit, None);
}
