use bytes::{BufMut, Bytes, BytesMut};
use rstest::rstest;
use tokio_util::codec::{Decoder, Encoder};

use super::*;

fn encoded(message: &Message) -> BytesMut {
    let mut buf = BytesMut::new();
    FrameCodec::default().encode(message.clone(), &mut buf).unwrap();
    buf
}

fn hello_like() -> Message {
    Message { content_type: 0, sequence: -1, headers: Vec::new(), body: Bytes::from_static(b"client-id") }
        .with_header(1002, b"eyJhbGciOi.token".to_vec())
        .with_u32(1000, 7)
}

#[rstest]
#[case::empty(Message::new(60786, Bytes::new()))]
#[case::hello(hello_like())]
#[case::negative_sequence(Message { sequence: i32::MIN, ..Message::new(2, b"x".to_vec()) })]
#[case::many_headers((0..50).fold(Message::new(60790, vec![9u8; 4096]), |m, k| m.with_u32(1000 + k, k as u32)))]
#[case::empty_header_value(Message::new(60791, Bytes::new()).with_header(1010, Bytes::new()))]
fn round_trip(#[case] message: Message) {
    let mut buf = encoded(&message);
    let decoded = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
    assert_eq!(decoded, message);
    assert!(buf.is_empty(), "the decoder consumes exactly one frame");
}

#[test]
fn wire_layout_is_little_endian() {
    let buf = encoded(&Message { sequence: 5, ..Message::new(60786, b"ab".to_vec()) }.with_u32(1000, 1));
    let expected: &[u8] = &[
        0x03, 0x06, 0x09, 0x0C, // magic
        0x72, 0xED, 0x00, 0x00, // 60786
        5, 0, 0, 0, // sequence
        12, 0, 0, 0, // headers length
        2, 0, 0, 0, // body length
        0xE8, 0x03, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, // header 1000 = u32 1
        b'a', b'b',
    ];
    assert_eq!(&buf[..], expected);
}

#[test]
fn two_frames_in_one_buffer_decode_in_order() {
    let mut buf = encoded(&Message::new(1, b"first".to_vec()));
    buf.extend_from_slice(&encoded(&Message::new(2, b"second".to_vec())));
    let mut codec = FrameCodec::default();
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap().body, Bytes::from_static(b"first"));
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap().body, Bytes::from_static(b"second"));
    assert!(codec.decode(&mut buf).unwrap().is_none());
}

#[rstest]
#[case::v1_magic(&[0x03, 0x06, 0x09, 0x0A])]
#[case::http(b"HTTP")]
#[case::partial_wrong(&[0x03, 0x07])]
fn bad_magic_is_rejected(#[case] prefix: &[u8]) {
    let mut buf = BytesMut::from(prefix);
    buf.extend_from_slice(&[0u8; 16]);
    let err = FrameCodec::default().decode(&mut buf).unwrap_err();
    assert!(matches!(err, FrameError::BadMagic(_)), "{err}");
}

#[rstest]
#[case::magic_only(4)]
#[case::inside_prefix(10)]
#[case::inside_headers(24)]
#[case::inside_body(40)]
fn truncated_frame_waits_then_fails_at_eof(#[case] cut: usize) {
    let full = encoded(&hello_like());
    assert!(cut < full.len());
    let mut buf = BytesMut::from(&full[..cut]);
    let mut codec = FrameCodec::default();
    assert!(codec.decode(&mut buf).unwrap().is_none(), "an incomplete frame is not an error yet");
    assert!(matches!(codec.decode_eof(&mut buf), Err(FrameError::Truncated)));
    // The rest arriving completes the frame.
    buf.extend_from_slice(&full[cut..]);
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), hello_like());
}

#[test]
fn clean_eof_between_frames_is_not_an_error() {
    let mut buf = BytesMut::new();
    assert!(FrameCodec::default().decode_eof(&mut buf).unwrap().is_none());
}

#[rstest]
#[case::body(16, 1025, "body")]
#[case::headers(1025, 0, "headers")]
fn oversized_frames_are_refused_before_buffering(#[case] headers: i32, #[case] body: i32, #[case] what: &str) {
    let mut buf = BytesMut::new();
    buf.put_slice(&MAGIC);
    for word in [60786, 1, headers, body] {
        buf.put_i32_le(word);
    }
    let err = FrameCodec::new(1024, 1024).decode(&mut buf).unwrap_err();
    match (what, err) {
        ("body", FrameError::BodyTooLarge(1025)) | ("headers", FrameError::HeadersTooLarge(1025)) => {}
        (_, other) => panic!("unexpected {other}"),
    }
}

#[test]
fn negative_lengths_are_refused() {
    let mut buf = BytesMut::new();
    buf.put_slice(&MAGIC);
    for word in [60786, 1, 0, -1] {
        buf.put_i32_le(word);
    }
    assert!(matches!(FrameCodec::default().decode(&mut buf), Err(FrameError::NegativeLength)));
}

#[rstest]
#[case::short_key(&[1, 0, 0])]
#[case::value_past_end(&[0xE8, 3, 0, 0, 9, 0, 0, 0, 1])]
#[case::negative_value_len(&[0xE8, 3, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF])]
fn malformed_headers_are_refused(#[case] headers: &[u8]) {
    let mut buf = BytesMut::new();
    buf.put_slice(&MAGIC);
    for word in [60786, 1, headers.len() as i32, 0] {
        buf.put_i32_le(word);
    }
    buf.put_slice(headers);
    assert!(matches!(FrameCodec::default().decode(&mut buf), Err(FrameError::BadHeaders)));
}

#[test]
fn typed_header_accessors() {
    let message = Message::new(2, Bytes::new())
        .with_u32(1, (-1i32) as u32)
        .with_bool(2, true)
        .with_header(8, b"router-id".to_vec())
        .with_header(1000, vec![1, 2]);
    assert_eq!(message.reply_for(), Some(-1));
    assert!(message.header_bool(2));
    assert!(!message.header_bool(1024));
    assert_eq!(message.header_str(8), Some("router-id"));
    assert_eq!(message.header_u32(1000), None, "a short value is not a u32");
}

#[test]
fn debug_shows_sizes_not_tokens() {
    let shown = format!("{:?}", hello_like());
    assert!(!shown.contains("token"), "{shown}");
    assert!(!shown.contains("client-id"), "{shown}");
    assert!(shown.contains("body_len: 9"), "{shown}");
}
