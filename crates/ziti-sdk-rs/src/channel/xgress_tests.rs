use super::*;

const ID: &str = "circuit-1";

fn pair() -> (Circuit, Circuit) {
    (
        Circuit::new(ID.as_bytes(), 7, Originator::Initiator, Windows::default()),
        Circuit::new(ID.as_bytes(), 9, Originator::Terminator, Windows::default()),
    )
}

fn payload(message: Message) -> Payload {
    assert_eq!(message.content_type, content::PAYLOAD);
    Payload::from_message(message).unwrap()
}

fn ack(message: &Message) -> Ack {
    assert_eq!(message.content_type, content::ACKNOWLEDGEMENT);
    Ack::from_message(message).unwrap()
}

/// Starts `dialer` and hands the start to `host`; returns what the host sent back.
fn started(dialer: &mut Circuit, host: &mut Circuit) -> Outgoing {
    let start = dialer.start(0);
    assert_eq!(start.len(), 1);
    let out = host.on_payload(payload(start[0].clone()), 0);
    for message in out.iter().filter(|m| m.content_type == content::ACKNOWLEDGEMENT) {
        dialer.on_ack(&ack(message), 0);
    }
    out
}

#[test]
fn payloads_and_acks_survive_the_wire_format() {
    let sent = Payload {
        sequence: 42,
        flags: flag::ORIGINATOR,
        rtt: 513,
        headers: vec![(payload_header::EDGE_FLAGS, Bytes::from_static(&[1, 0, 0, 0]))],
        data: Bytes::from_static(b"hello"),
    };
    let message = sent.to_message(&Bytes::from_static(ID.as_bytes()), 5);
    assert_eq!(message.header_u32(edge::header::CONN_ID), Some(5));
    assert_eq!(message.header(header::SEQUENCE).map(|v| v.len()), Some(8), "sequence is a u64");
    assert_eq!(message.header(2016).map(|v| v.as_ref()), Some(&[1u8, 0, 0, 0][..]), "payload header 0x10");
    assert_eq!(Payload::from_message(message).unwrap(), sent);

    let sent = Ack { sequences: vec![1, 2, 300], flags: 0, receive_buffered: 4096, rtt: 9 };
    let message = sent.to_message(&Bytes::from_static(ID.as_bytes()));
    assert_eq!(&message.body[..4], &[0, 0, 0, 1], "sequences are big-endian");
    assert_eq!(Ack::from_message(&message).unwrap(), sent);
}

#[test]
fn malformed_messages_are_refused() {
    let no_circuit = Message::new(content::PAYLOAD, Vec::new());
    assert_eq!(Payload::from_message(no_circuit), Err(WireError::Missing("a circuit id")));
    let no_sequence = Message::new(content::PAYLOAD, Vec::new()).with_header(header::CIRCUIT_ID, ID.as_bytes());
    assert_eq!(Payload::from_message(no_sequence), Err(WireError::Missing("a sequence")));
    let odd = Message::new(content::ACKNOWLEDGEMENT, vec![0u8; 5]).with_header(header::CIRCUIT_ID, ID.as_bytes());
    assert_eq!(Ack::from_message(&odd), Err(WireError::BadSequences(5)));
}

#[test]
fn the_dialer_starts_with_its_capabilities_and_the_host_answers() {
    let (mut dialer, mut host) = pair();
    let start = payload(dialer.start(0).remove(0));
    assert_eq!(start.sequence, 0);
    assert_ne!(start.flags & flag::CIRCUIT_START, 0);
    assert_eq!(start.flags & flag::ORIGINATOR, 0, "sent by the initiator");
    let answer = host.on_payload(start, 0);
    assert_eq!(answer.len(), 2, "capabilities answer and the start's ack: {answer:?}");
    let caps = payload(answer[0].clone());
    assert_ne!(caps.flags & flag::ORIGINATOR, 0, "sent by the terminator");
    assert!(caps.header(payload_header::CAPABILITIES).is_some());
    assert_eq!(ack(&answer[1]).sequences, vec![0]);
    assert_eq!(host.next_delivery(), None, "control payloads are not data");
}

#[test]
fn the_host_holds_its_writes_until_the_circuit_starts() {
    let (mut dialer, mut host) = pair();
    assert_eq!(host.send(Bytes::from_static(b"early"), false, 0), None, "held before the start");
    let out = started(&mut dialer, &mut host);
    let sent: Vec<_> = out.into_iter().filter(|m| m.content_type == content::PAYLOAD).map(payload).collect();
    assert_eq!(sent.len(), 2, "capabilities answer, then the held write");
    for p in sent {
        dialer.on_payload(p, 1);
    }
    let delivered = dialer.next_delivery().unwrap();
    assert_eq!(delivered.data, Bytes::from_static(b"early"));
    assert!(host.send(Bytes::from_static(b"later"), false, 2).is_some(), "sent at once after the start");
}

#[test]
fn out_of_order_payloads_are_delivered_in_order_and_each_acknowledged() {
    let (mut dialer, mut host) = pair();
    started(&mut dialer, &mut host);
    let messages: Vec<_> = (0..3).map(|i| dialer.send(Bytes::from(vec![i as u8; 10]), false, 0).unwrap()).collect();
    for message in messages.into_iter().rev() {
        let out = host.on_payload(payload(message), 0);
        assert_eq!(out.len(), 1);
        assert_eq!(ack(&out[0]).sequences.len(), 1);
    }
    let order: Vec<_> = std::iter::from_fn(|| host.next_delivery()).map(|d| d.data[0]).collect();
    assert_eq!(order, vec![0, 1, 2]);
}

#[test]
fn a_duplicate_is_acknowledged_again_but_delivered_once() {
    let (mut dialer, mut host) = pair();
    started(&mut dialer, &mut host);
    let message = dialer.send(Bytes::from_static(b"once"), false, 0).unwrap();
    host.on_payload(payload(message.clone()), 0);
    assert_eq!(host.next_delivery().unwrap().data, Bytes::from_static(b"once"));
    let out = host.on_payload(payload(message), 0);
    assert_eq!(ack(&out[0]).sequences, vec![1]);
    assert_eq!(host.next_delivery(), None);
}

#[test]
fn a_full_receiver_drops_new_payloads_unanswered_and_reopens_when_read() {
    let windows = Windows { send: DEFAULT_WINDOW, receive: 64 * 1024 };
    let mut dialer = Circuit::new(ID.as_bytes(), 7, Originator::Initiator, windows);
    let mut host = Circuit::new(ID.as_bytes(), 9, Originator::Terminator, windows);
    started(&mut dialer, &mut host);
    let mut answered = 0;
    let mut dropped = 0;
    while dropped == 0 && answered < 1_000 {
        let message = dialer.send(Bytes::from(vec![0u8; 32 * 1024]), false, 0).unwrap();
        match host.on_payload(payload(message), 0).as_slice() {
            [a] => {
                answered += 1;
                dialer.on_ack(&ack(a), 0);
            }
            [] => dropped += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // Over the 64 KiB window the host reports full, and keeps what a peer with the
    // default window may still have on the way; past that it drops.
    let kept = (64 * 1024 + DEFAULT_WINDOW as usize) / (32 * 1024) + 1;
    assert_eq!((answered, dropped), (kept, 1), "accepted until over the window and the slack, then dropped");
    assert!(!dialer.writable(), "the host reports a full buffer and one payload is in flight");
    assert_eq!(host.window_update(), None, "nothing was read yet");
    while host.next_delivery().is_some() {}
    let update = host.window_update().expect("reading makes room: window update");
    let update = ack(&update);
    assert!(update.sequences.is_empty());
    assert_eq!(update.receive_buffered, 0);
    assert!(dialer.on_ack(&update, 1).0, "the dialer may write again");
    let resent = dialer.retransmit(1_000);
    assert_eq!(resent.len(), 1, "the dropped payload is resent");
    let resent = payload(resent[0].clone());
    assert_ne!(resent.flags & flag::RETRANSMIT, 0);
    assert_eq!(host.on_payload(resent, 1_000).len(), 1, "and now kept");
}

#[test]
fn a_sender_with_nothing_in_flight_may_always_send_one_payload() {
    let (mut dialer, mut host) = pair();
    started(&mut dialer, &mut host);
    let full = Ack { sequences: vec![0], flags: flag::ORIGINATOR, receive_buffered: u32::MAX, rtt: 0 };
    dialer.on_ack(&full, 0);
    assert!(dialer.writable(), "nothing unacknowledged: one probe may go");
    dialer.send(Bytes::from_static(b"probe"), false, 0).unwrap();
    assert!(!dialer.writable(), "blocked until the peer reports room");
}

#[test]
fn a_payload_overtaken_by_three_acknowledged_ones_is_resent_at_once_and_once_only() {
    let (mut dialer, mut host) = pair();
    started(&mut dialer, &mut host);
    let sent: Vec<Message> = (0..5u8).map(|i| dialer.send(Bytes::from(vec![i; 100]), false, 1_000).unwrap()).collect();
    // The router dropped the first; the others arrive and are acknowledged in order.
    let acks: Vec<Ack> = sent[1..].iter().map(|m| ack(&host.on_payload(payload(m.clone()), 1_001)[0])).collect();
    assert!(dialer.on_ack(&acks[0], 1_002).1.is_empty(), "one later payload is no proof of loss");
    assert!(dialer.on_ack(&acks[1], 1_002).1.is_empty());
    let (_, lost) = dialer.on_ack(&acks[2], 1_002);
    assert_eq!(lost.len(), 1, "three later payloads acknowledged: the first was lost");
    let resent = payload(lost[0].clone());
    assert_eq!(resent.data, sent_data(&sent[0]));
    assert_ne!(resent.flags & flag::RETRANSMIT, 0);
    assert!(dialer.on_ack(&acks[3], 1_003).1.is_empty(), "resent once, not on every later ack");
    assert!(dialer.retransmit(1_010).is_empty(), "nor by the timer right after");
    host.on_payload(resent, 1_004);
    let delivered: Vec<u8> = std::iter::from_fn(|| host.next_delivery()).map(|d| d.data[0]).collect();
    assert_eq!(delivered, vec![0, 1, 2, 3, 4], "in order once the gap is filled");
}

fn sent_data(message: &Message) -> Bytes {
    payload(message.clone()).data
}

#[test]
fn the_window_counts_what_the_peer_holds_unread_as_well_as_what_is_in_flight() {
    let (mut dialer, mut host) = pair();
    started(&mut dialer, &mut host);
    let first = dialer.send(Bytes::from(vec![0u8; 1000]), false, 0).unwrap();
    let holds: u32 = 3 * 1024 * 1024;
    let report =
        Ack { sequences: vec![payload(first).sequence], flags: flag::ORIGINATOR, receive_buffered: holds, rtt: 0 };
    dialer.on_ack(&report, 1);
    let chunk = 32 * 1024;
    let mut sent = 0;
    while dialer.writable() && sent < 2 * DEFAULT_WINDOW as usize {
        dialer.send(Bytes::from(vec![0u8; chunk]), false, 1);
        sent += chunk;
    }
    let room = (DEFAULT_WINDOW - holds) as usize;
    assert!(sent <= room + chunk, "sent {sent} bytes while the peer holds {holds} of a {DEFAULT_WINDOW} window");
    assert!(sent >= room, "stopped at {sent} bytes with {room} of room");
}

#[test]
fn a_loss_halves_the_window_once_per_episode_and_acknowledgements_widen_it_again() {
    let (mut dialer, mut host) = pair();
    started(&mut dialer, &mut host);
    let full = dialer.window;
    let sequence = |m: &Message| payload(m.clone()).sequence;
    let send = |dialer: &mut Circuit, count: u8, now: u64| -> Vec<Message> {
        (0..count).map(|i| dialer.send(Bytes::from(vec![i; 1000]), false, now).unwrap()).collect()
    };
    let acked = |sequences: Vec<i32>| Ack { sequences, flags: flag::ORIGINATOR, receive_buffered: 0, rtt: 0 };

    // The first two of eight are dropped; the next three are acknowledged one by one.
    let flight = send(&mut dialer, 8, 1_000);
    for message in &flight[2..5] {
        dialer.on_ack(&acked(vec![sequence(message)]), 1_002);
    }
    // Halved, then widened a little by the acknowledgement that came with it.
    let about = |window: u32, target: u32| (target..target + 1024).contains(&window);
    assert!(about(dialer.window, full / 2), "two payloads lost in one flight: one halving, got {}", dialer.window);
    // The rest of that flight timing out is still the same episode.
    let before = dialer.window;
    assert!(!dialer.retransmit(2_000).is_empty());
    assert_eq!(dialer.window, before, "resends of the same flight do not halve it again");

    dialer.on_ack(&acked(flight.iter().map(sequence).collect()), 2_001);
    let widened = dialer.window;
    assert!(widened > full / 2, "acknowledgements widen the window again");

    // A loss among payloads sent after the halving is a new episode.
    let later = send(&mut dialer, 5, 3_000);
    for message in &later[1..4] {
        dialer.on_ack(&acked(vec![sequence(message)]), 3_001);
    }
    assert!(about(dialer.window, widened / 2), "a new loss halves it again, got {}", dialer.window);
}

#[test]
fn a_burst_of_payloads_is_acknowledged_by_one_message() {
    let (mut dialer, mut host) = pair();
    started(&mut dialer, &mut host);
    let sent: Vec<Message> = (0..4u8).map(|i| dialer.send(Bytes::from(vec![i; 10]), false, 1_000).unwrap()).collect();
    for message in &sent {
        assert!(host.accept_payload(payload(message.clone()), 1_001).is_empty(), "no acknowledgement per payload");
    }
    let one = ack(&host.acknowledgement().expect("one acknowledgement for the burst"));
    assert_eq!(one.sequences, sent.iter().map(|m| payload(m.clone()).sequence).collect::<Vec<_>>());
    assert!(host.acknowledgement().is_none(), "nothing more to acknowledge");
    let (writable, lost) = dialer.on_ack(&one, 1_002);
    assert!(writable && lost.is_empty());
    assert!(dialer.all_acked());
}

#[test]
fn unacknowledged_payloads_are_resent_after_the_timeout_only() {
    let (mut dialer, mut host) = pair();
    started(&mut dialer, &mut host);
    dialer.send(Bytes::from_static(b"lost"), false, 1_000).unwrap();
    assert!(dialer.retransmit(1_000 + u64::from(INITIAL_RETRANSMIT_MS) / 2).is_empty(), "too early");
    let resent = dialer.retransmit(1_000 + u64::from(INITIAL_RETRANSMIT_MS));
    assert_eq!(resent.len(), 1);
    assert!(dialer.retransmit(1_000 + u64::from(INITIAL_RETRANSMIT_MS) + 10).is_empty(), "passes are spaced");
    let acked = host.on_payload(payload(resent[0].clone()), 1_300);
    dialer.on_ack(&ack(&acked[0]), 1_301);
    assert!(dialer.all_acked());
}

#[test]
fn half_close_and_end_reach_the_reader() {
    let (mut dialer, mut host) = pair();
    let out = started(&mut dialer, &mut host);
    for message in out.into_iter().filter(|m| m.content_type == content::PAYLOAD) {
        dialer.on_payload(payload(message), 0);
    }
    let fin = dialer.send(Bytes::new(), true, 0).unwrap();
    host.on_payload(payload(fin), 0);
    assert_eq!(host.next_delivery(), Some(Delivery { data: Bytes::new(), fin: true, end: false }));
    let end = host.send_end(0).unwrap();
    assert_ne!(payload(end.clone()).flags & flag::EOF, 0, "the dialer advertised EOF");
    dialer.on_payload(payload(end), 0);
    assert_eq!(dialer.next_delivery(), Some(Delivery { data: Bytes::new(), fin: false, end: true }));
}

#[test]
fn our_own_payloads_coming_back_are_ignored() {
    let (mut dialer, _) = pair();
    dialer.start(0);
    let mine = dialer.send(Bytes::from_static(b"loop"), false, 0).unwrap();
    assert!(dialer.on_payload(payload(mine), 0).is_empty());
    assert_eq!(dialer.next_delivery(), None);
}

/// Two circuits joined by a lossy link that drops every 7th message each way: all of
/// 2 MiB arrives, in order, while the reader takes its time.
#[test]
fn a_lossy_link_still_delivers_everything_in_order() {
    let windows = Windows { send: 256 * 1024, receive: 128 * 1024 };
    let mut dialer = Circuit::new(ID.as_bytes(), 7, Originator::Initiator, windows);
    let mut host = Circuit::new(ID.as_bytes(), 9, Originator::Terminator, windows);
    let total = 2 * 1024 * 1024;
    let mut to_host: VecDeque<Message> = dialer.start(0).into();
    let mut to_dialer: VecDeque<Message> = VecDeque::new();
    let (mut written, mut received, mut dropped, mut now) = (0usize, Vec::new(), 0usize, 0u64);
    let mut counter = 0u32;
    while received.len() < total {
        now += 5;
        assert!(now < 10_000_000, "stalled at {} of {total} bytes", received.len());
        while written < total && dialer.writable() {
            let chunk: Vec<u8> = (written..written + 16 * 1024).map(|i| (i % 251) as u8).collect();
            written += chunk.len();
            to_host.extend(dialer.send(Bytes::from(chunk), false, now));
        }
        to_host.extend(dialer.retransmit(now));
        while let Some(message) = to_host.pop_front() {
            counter += 1;
            if counter.is_multiple_of(7) {
                dropped += 1;
                continue;
            }
            to_dialer.extend(host.on_payload(payload(message), now));
        }
        // The reader takes at most 32 KiB per tick.
        let mut taken = 0;
        while taken < 32 * 1024 {
            let Some(delivery) = host.next_delivery() else { break };
            taken += delivery.data.len();
            received.extend_from_slice(&delivery.data);
        }
        to_dialer.extend(host.window_update());
        while let Some(message) = to_dialer.pop_front() {
            counter += 1;
            if counter.is_multiple_of(7) {
                dropped += 1;
                continue;
            }
            match message.content_type {
                content::ACKNOWLEDGEMENT => {
                    let (_, lost) = dialer.on_ack(&ack(&message), now);
                    to_host.extend(lost);
                }
                _ => {
                    dialer.on_payload(payload(message), now);
                }
            }
        }
        // Gaps below the highest sequence seen are always filled, so a full receiver may
        // hold up to one send window more than its buffer.
        assert!(host.buffered <= windows.receive + windows.send, "the receiver stays bounded");
    }
    assert!(dropped > 0);
    assert!(received.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8), "in order and intact");
}

/// Routers re-stamp the payloads they forward with their own wall clock, and the round
/// trip is that stamp, echoed back, against ours: the resend timeout follows it and how
/// much it varies, never below the floor.
/// A started dialer that saw one acknowledged payload per round trip in `trips` (ms),
/// a second apart; then one more payload, unacknowledged, sent at the returned time.
fn after_round_trips(trips: &[u64]) -> (Circuit, u64) {
    let (mut dialer, mut host) = pair();
    started(&mut dialer, &mut host);
    let from = 1_000_000u64;
    for (i, trip) in trips.iter().enumerate() {
        let now = from + i as u64 * 1_000;
        dialer.send(Bytes::from_static(b"x"), false, now).unwrap();
        let stamp = (now - trip) as u16;
        let ack = Ack { sequences: vec![1 + i as i32], flags: flag::ORIGINATOR, receive_buffered: 0, rtt: stamp };
        dialer.on_ack(&ack, now);
    }
    let now = from + 100_000;
    dialer.send(Bytes::from_static(b"unacknowledged"), false, now).unwrap();
    (dialer, now)
}

#[test]
fn the_resend_timeout_follows_the_round_trip_the_acks_report() {
    let (mut dialer, now) = after_round_trips(&[400; 8]);
    assert!(dialer.retransmit(now + 420).is_empty(), "not before the round trip is over");
    assert_eq!(dialer.retransmit(now + 600).len(), 1, "resent soon after a steady round trip");

    // A queue that fills and drains: a round trip seen before is not a loss.
    let (mut dialer, now) = after_round_trips(&[100, 700, 100, 700, 100, 700, 100, 700]);
    assert!(dialer.retransmit(now + 720).is_empty(), "a 700 ms round trip taken for a loss");

    // A fast loopback: never below the floor.
    let (mut dialer, now) = after_round_trips(&[1; 8]);
    assert!(dialer.retransmit(now + u64::from(MIN_RETRANSMIT_MS) - 70).is_empty(), "below the floor");
    assert_eq!(dialer.retransmit(now + u64::from(MIN_RETRANSMIT_MS)).len(), 1);
}

#[test]
fn a_peer_that_stopped_reading_gets_one_probe_per_pass_not_every_payload() {
    let (mut dialer, mut host) = pair();
    started(&mut dialer, &mut host);
    for _ in 0..5 {
        dialer.send(Bytes::from(vec![0u8; 1024]), false, 0);
    }
    let full = Ack { sequences: Vec::new(), flags: flag::ORIGINATOR, receive_buffered: u32::MAX, rtt: 0 };
    dialer.on_ack(&full, 500);
    assert_eq!(dialer.retransmit(1_000).len(), 5, "full, but maybe reading: everything due");
    let probe = dialer.retransmit(1_500);
    assert_eq!(probe.len(), 1, "a level that stood still for a second: one probe");
    assert_eq!(payload(probe[0].clone()).sequence, 1, "the oldest");
    let draining = Ack { receive_buffered: u32::MAX - 1, ..full.clone() };
    dialer.on_ack(&draining, 1_600);
    assert_eq!(dialer.retransmit(2_000).len(), 5, "the level moves again: everything due");
}
