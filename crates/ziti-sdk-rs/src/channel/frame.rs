//! Channel v2 framing: `03 06 09 0C`, then little-endian i32 content type, sequence,
//! headers length and body length, then headers (`i32 key, i32 len, bytes`) and body.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The v2 frame magic.
pub const MAGIC: [u8; 4] = [0x03, 0x06, 0x09, 0x0C];
const PREFIX_LEN: usize = 4 + 4 * 4;

/// Channel-level header ids.
pub mod header {
    pub const REPLY_FOR: i32 = 1;
    pub const RESULT_SUCCESS: i32 = 2;
    pub const ROUTER_ID: i32 = 8;
    /// Reflected by the router in replies (e.g. latency probe timestamps).
    pub const LATENCY_TIMESTAMP: i32 = 128;
}

/// Channel-level content types.
pub mod content {
    pub const HELLO: i32 = 0;
    pub const RESULT: i32 = 2;
    pub const LATENCY: i32 = 3;
}

/// One channel message. `Debug` shows sizes only: bodies and headers carry tokens.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub content_type: i32,
    pub sequence: i32,
    pub headers: Vec<(i32, Bytes)>,
    pub body: Bytes,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("content_type", &self.content_type)
            .field("sequence", &self.sequence)
            .field("header_lens", &self.headers.iter().map(|(k, v)| (*k, v.len())).collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Message {
    pub fn new(content_type: i32, body: impl Into<Bytes>) -> Self {
        Self { content_type, sequence: 0, headers: Vec::new(), body: body.into() }
    }

    /// Sets (or replaces) a header.
    pub fn with_header(mut self, key: i32, value: impl Into<Bytes>) -> Self {
        self.set_header(key, value);
        self
    }

    pub fn set_header(&mut self, key: i32, value: impl Into<Bytes>) {
        let value = value.into();
        match self.headers.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.headers.push((key, value)),
        }
    }

    pub fn with_u32(self, key: i32, value: u32) -> Self {
        self.with_header(key, value.to_le_bytes().to_vec())
    }

    pub fn with_bool(self, key: i32, value: bool) -> Self {
        self.with_header(key, vec![u8::from(value)])
    }

    pub fn header(&self, key: i32) -> Option<&Bytes> {
        self.headers.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn header_u32(&self, key: i32) -> Option<u32> {
        let value = self.header(key)?;
        Some(u32::from_le_bytes(value.get(..4)?.try_into().ok()?))
    }

    pub fn header_i32(&self, key: i32) -> Option<i32> {
        self.header_u32(key).map(|v| v as i32)
    }

    pub fn header_bool(&self, key: i32) -> bool {
        self.header(key).and_then(|v| v.first()).is_some_and(|b| *b != 0)
    }

    pub fn header_str(&self, key: i32) -> Option<&str> {
        self.header(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The sequence this message answers, when it is a reply.
    pub fn reply_for(&self) -> Option<i32> {
        self.header_i32(header::REPLY_FOR)
    }

    /// The body as text, for error reasons sent by the router.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("bad frame magic {0:02x?} (not a channel v2 peer)")]
    BadMagic([u8; 4]),
    #[error("frame declares a negative length")]
    NegativeLength,
    #[error("frame headers of {0} bytes exceed the limit")]
    HeadersTooLarge(usize),
    #[error("frame body of {0} bytes exceeds the limit")]
    BodyTooLarge(usize),
    #[error("frame headers are malformed")]
    BadHeaders,
    #[error("connection ended inside a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encoder/decoder for channel v2 frames, with size limits on what it accepts.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_headers: usize,
    max_body: usize,
}

impl FrameCodec {
    pub fn new(max_headers: usize, max_body: usize) -> Self {
        Self { max_headers, max_body }
    }
}

impl Default for FrameCodec {
    /// 64 KiB of headers; 16 MiB bodies (far above what peers send per message).
    fn default() -> Self {
        Self::new(64 * 1024, 16 * 1024 * 1024)
    }
}

fn read_i32(src: &[u8], at: usize) -> i32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&src[at..at + 4]);
    i32::from_le_bytes(word)
}

fn length(value: i32) -> Result<usize, FrameError> {
    usize::try_from(value).map_err(|_| FrameError::NegativeLength)
}

fn parse_headers(mut raw: Bytes) -> Result<Vec<(i32, Bytes)>, FrameError> {
    let mut headers = Vec::new();
    while raw.has_remaining() {
        if raw.remaining() < 8 {
            return Err(FrameError::BadHeaders);
        }
        let key = raw.get_i32_le();
        let len = usize::try_from(raw.get_i32_le()).map_err(|_| FrameError::BadHeaders)?;
        if raw.remaining() < len {
            return Err(FrameError::BadHeaders);
        }
        headers.push((key, raw.split_to(len)));
    }
    Ok(headers)
}

impl Decoder for FrameCodec {
    type Item = Message;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        let magic_seen = src.len().min(4);
        if src[..magic_seen] != MAGIC[..magic_seen] {
            let mut magic = [0u8; 4];
            magic[..magic_seen].copy_from_slice(&src[..magic_seen]);
            return Err(FrameError::BadMagic(magic));
        }
        if src.len() < PREFIX_LEN {
            src.reserve(PREFIX_LEN - src.len());
            return Ok(None);
        }
        let content_type = read_i32(src, 4);
        let sequence = read_i32(src, 8);
        let headers_len = length(read_i32(src, 12))?;
        let body_len = length(read_i32(src, 16))?;
        if headers_len > self.max_headers {
            return Err(FrameError::HeadersTooLarge(headers_len));
        }
        if body_len > self.max_body {
            return Err(FrameError::BodyTooLarge(body_len));
        }
        let total = PREFIX_LEN + headers_len + body_len;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(PREFIX_LEN);
        let headers = parse_headers(src.split_to(headers_len).freeze())?;
        let body = src.split_to(body_len).freeze();
        Ok(Some(Message { content_type, sequence, headers, body }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        match self.decode(src)? {
            Some(message) => Ok(Some(message)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated),
        }
    }
}

impl Encoder<Message> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, message: Message, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_into(&message, dst)
    }
}

/// Appends one frame to `dst`.
pub fn encode_into(message: &Message, dst: &mut BytesMut) -> Result<(), FrameError> {
    let headers_len: usize = message.headers.iter().map(|(_, v)| 8 + v.len()).sum();
    let as_i32 = |len: usize, err: FrameError| i32::try_from(len).map_err(|_| err);
    let headers_len_i32 = as_i32(headers_len, FrameError::HeadersTooLarge(headers_len))?;
    let body_len = as_i32(message.body.len(), FrameError::BodyTooLarge(message.body.len()))?;
    dst.reserve(PREFIX_LEN + headers_len + message.body.len());
    dst.put_slice(&MAGIC);
    dst.put_i32_le(message.content_type);
    dst.put_i32_le(message.sequence);
    dst.put_i32_le(headers_len_i32);
    dst.put_i32_le(body_len);
    for (key, value) in &message.headers {
        dst.put_i32_le(*key);
        dst.put_i32_le(as_i32(value.len(), FrameError::HeadersTooLarge(value.len()))?);
        dst.put_slice(value);
    }
    dst.put_slice(&message.body);
    Ok(())
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
