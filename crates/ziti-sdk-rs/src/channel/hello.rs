//! The channel hello, sans I/O: the message the SDK opens a channel with and what the
//! router's answer means. `Channel::connect` only moves the bytes.

use super::frame::{Message, content, header};
use crate::edge;

/// The hello: our identity id in the body, the API session token as a header.
/// Sequence -1, as the Go SDK sends it (the hello precedes the channel's numbering).
pub(crate) fn request(token: &str, identity_id: &str) -> Message {
    Message { sequence: -1, ..Message::new(content::HELLO, identity_id.as_bytes().to_vec()) }
        .with_header(edge::header::SESSION_TOKEN, token.as_bytes().to_vec())
}

/// What the router said about itself when it accepted the hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HelloOutcome {
    /// The router's id (empty when the router did not say).
    pub router_id: String,
    /// Whether the router confirms a Bind with BindSuccess once the terminator exists.
    pub supports_bind_success: bool,
}

/// The router did not accept the hello; the reason is its answer's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HelloRefused {
    pub reason: String,
}

/// Reads the router's answer to the hello.
pub(crate) fn on_reply(reply: &Message) -> Result<HelloOutcome, HelloRefused> {
    if reply.content_type != content::RESULT || !reply.header_bool(header::RESULT_SUCCESS) {
        return Err(HelloRefused { reason: reply.body_text() });
    }
    Ok(HelloOutcome {
        router_id: reply.header_str(header::ROUTER_ID).unwrap_or_default().to_owned(),
        supports_bind_success: reply.header_bool(edge::header::SUPPORTS_BIND_SUCCESS),
    })
}

#[cfg(test)]
#[path = "hello_tests.rs"]
mod tests;
