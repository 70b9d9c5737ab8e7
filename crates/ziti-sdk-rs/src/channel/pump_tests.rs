use super::*;
use std::collections::HashMap;

fn data(conn_id: u32, len: usize) -> Message {
    edge::data(conn_id, vec![0u8; len])
}

fn reply_to(sequence: i32) -> Message {
    Message::new(edge::content::STATE_CONNECTED, Vec::new())
        .with_u32(frame::header::REPLY_FOR, sequence as u32)
        .with_u32(edge::header::CONN_ID, 5)
}

#[test]
fn a_reply_goes_to_the_request_waiting_for_it() {
    let mut pending = HashMap::from([(11, "waiter")]);
    match classify(reply_to(11), |sequence| pending.remove(&sequence)) {
        Inbound::Reply(waiter, _) => assert_eq!(waiter, "waiter"),
        other => panic!("the reply went elsewhere: {other:?}"),
    }
    assert!(pending.is_empty(), "the waiter was left registered");
}

#[test]
fn a_reply_nobody_waits_for_goes_to_its_connection() {
    match classify::<()>(reply_to(11), |_| None) {
        Inbound::Conn(5, _) => {}
        other => panic!("a late reply was not routed to its connection: {other:?}"),
    }
}

#[test]
fn data_goes_to_the_connection_it_names() {
    match classify::<()>(data(9, 3), |_| panic!("data is no reply")) {
        Inbound::Conn(9, message) => assert_eq!(message.body.len(), 3),
        other => panic!("data went elsewhere: {other:?}"),
    }
}

#[test]
fn a_message_without_a_connection_is_unaddressed() {
    let message = Message::new(edge::content::DATA, Vec::new());
    assert!(matches!(classify::<()>(message, |_| None), Inbound::Unaddressed(_)));
}

#[test]
fn an_inspect_request_is_answered_by_the_channel() {
    let request = Message::new(edge::content::CONN_INSPECT_REQUEST, Vec::new()).with_u32(edge::header::CONN_ID, 4);
    assert!(matches!(classify::<()>(request, |_| None), Inbound::Inspect(Some(4), _)));
    let anonymous = Message::new(edge::content::CONN_INSPECT_REQUEST, Vec::new());
    assert!(matches!(classify::<()>(anonymous, |_| None), Inbound::Inspect(None, _)));
}

#[test]
fn inspect_answers_say_what_the_connection_is() {
    assert_eq!(inspect_answer(Some(ConnKind::Bind)), (edge::conn_type::BIND, "listening"));
    assert_eq!(inspect_answer(Some(ConnKind::Dial)), (edge::conn_type::DIAL, "connected"));
    assert_eq!(inspect_answer(None), (edge::conn_type::UNKNOWN, "unknown connection"));
}

#[test]
fn a_silent_hang_up_soon_after_the_hello_is_a_rejection() {
    assert_eq!(close_reason(0, Duration::from_secs(1)), Closed::Rejected);
    assert_eq!(close_reason(0, REJECTION_WINDOW - Duration::from_millis(1)), Closed::Rejected);
}

#[test]
fn a_hang_up_after_traffic_or_later_is_a_loss() {
    assert_eq!(close_reason(1, Duration::from_secs(1)), Closed::Lost, "the router had answered");
    assert_eq!(close_reason(0, REJECTION_WINDOW), Closed::Lost, "long after the hello");
}

#[test]
fn a_batch_takes_queued_messages_in_order_until_it_is_full() {
    let chunk = WRITE_BATCH / 3 + 1;
    let mut queued: std::collections::VecDeque<Message> = (2..=5).map(|id| data(id, chunk)).collect();
    let mut buf = BytesMut::new();
    fill_batch(&mut buf, data(1, chunk), || queued.pop_front());

    let mut codec = FrameCodec::default();
    let mut ids = Vec::new();
    while let Some(message) = codec.decode(&mut buf).unwrap() {
        ids.push(edge::conn_id(&message).unwrap());
    }
    assert_eq!(ids, [1, 2, 3], "the batch holds whole frames, in order, up to the limit");
    assert_eq!(queued.len(), 2, "messages past the limit stay queued for the next write");
}

#[test]
fn a_batch_ends_when_nothing_more_is_queued() {
    let mut buf = BytesMut::new();
    fill_batch(&mut buf, data(1, 10), || None);
    let message = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
    assert_eq!(edge::conn_id(&message), Some(1));
    assert!(buf.is_empty());
}
