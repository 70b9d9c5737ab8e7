//! Edge protocol numbers (sdk-golang edge_client.proto) and the messages the SDK sends.

use bytes::Bytes;

use crate::channel::frame::Message;

/// Edge content types.
pub mod content {
    pub const CONNECT: i32 = 60783;
    pub const STATE_CONNECTED: i32 = 60784;
    pub const STATE_CLOSED: i32 = 60785;
    pub const DATA: i32 = 60786;
    pub const DIAL: i32 = 60787;
    pub const DIAL_SUCCESS: i32 = 60788;
    pub const DIAL_FAILED: i32 = 60789;
    pub const BIND: i32 = 60790;
    pub const UNBIND: i32 = 60791;
    pub const CONN_INSPECT_REQUEST: i32 = 60798;
    pub const CONN_INSPECT_RESPONSE: i32 = 60799;
    pub const BIND_SUCCESS: i32 = 60800;
    pub const UPDATE_TOKEN_SUCCESS: i32 = 60801;
    pub const UPDATE_TOKEN_FAILURE: i32 = 60802;
    pub const UPDATE_TOKEN: i32 = 60803;
}

/// Edge header ids.
pub mod header {
    pub const CONN_ID: i32 = 1000;
    pub const SESSION_TOKEN: i32 = 1002;
    pub const PUBLIC_KEY: i32 = 1003;
    pub const CALLER_ID: i32 = 1008;
    pub const CRYPTO_METHOD: i32 = 1009;
    pub const FLAGS: i32 = 1010;
    pub const ROUTER_PROVIDED_CONN_ID: i32 = 1012;
    pub const ERROR_CODE: i32 = 1014;
    pub const CONN_TYPE: i32 = 1022;
    pub const SUPPORTS_INSPECT: i32 = 1023;
    pub const SUPPORTS_BIND_SUCCESS: i32 = 1024;
    pub const CIRCUIT_ID: i32 = 1026;
    /// On Connect and Bind: asks for per-circuit flow control; on StateConnected and
    /// Dial: the router agreed (routers that do not know it leave it off).
    pub const USE_XGRESS_TO_SDK: i32 = 1028;
    pub const DIALER_IDENTITY_ID: i32 = 1034;
    pub const DIALER_IDENTITY_NAME: i32 = 1035;
}

/// Data flag: the sender will write no more (half-close).
pub const FLAG_FIN: u32 = 1;

/// ConnType values in a ConnInspectResponse.
pub mod conn_type {
    pub const UNKNOWN: u8 = 0;
    pub const DIAL: u8 = 1;
    pub const BIND: u8 = 2;
}

/// libsodium, the only crypto method.
const CRYPTO_METHOD_LIBSODIUM: u32 = 0;

pub(crate) fn conn_id(message: &Message) -> Option<u32> {
    message.header_u32(header::CONN_ID)
}

/// Bind: the service JWT in the body; asks for BindSuccess and router-chosen conn ids.
pub(crate) fn bind(conn_id: u32, token: &str, public_key: Option<&[u8; 32]>) -> Message {
    let message = Message::new(content::BIND, token.as_bytes().to_vec())
        .with_u32(header::CONN_ID, conn_id)
        .with_bool(header::SUPPORTS_BIND_SUCCESS, true)
        .with_bool(header::ROUTER_PROVIDED_CONN_ID, true)
        .with_bool(header::SUPPORTS_INSPECT, true);
    with_key(message, public_key)
}

pub(crate) fn unbind(conn_id: u32, token: &str) -> Message {
    Message::new(content::UNBIND, token.as_bytes().to_vec()).with_u32(header::CONN_ID, conn_id)
}

/// Connect (dial): the service JWT in the body and our identity name as the caller id.
pub(crate) fn connect(conn_id: u32, token: &str, caller: &str, public_key: Option<&[u8; 32]>) -> Message {
    let message = Message::new(content::CONNECT, token.as_bytes().to_vec())
        .with_u32(header::CONN_ID, conn_id)
        .with_header(header::CALLER_ID, caller.as_bytes().to_vec());
    with_key(message, public_key)
}

fn with_key(message: Message, public_key: Option<&[u8; 32]>) -> Message {
    match public_key {
        Some(key) => message
            .with_header(header::PUBLIC_KEY, key.to_vec())
            .with_u32(header::CRYPTO_METHOD, CRYPTO_METHOD_LIBSODIUM),
        None => message,
    }
}

/// Accepts an inbound Dial: reply to it on the bind id, body = the new conn id (LE).
pub(crate) fn dial_success(bind_id: u32, dial_sequence: i32, new_conn_id: u32) -> Message {
    Message::new(content::DIAL_SUCCESS, new_conn_id.to_le_bytes().to_vec())
        .with_u32(header::CONN_ID, bind_id)
        .with_u32(crate::channel::frame::header::REPLY_FOR, dial_sequence as u32)
}

pub(crate) fn dial_failed(bind_id: u32, dial_sequence: i32, reason: &str) -> Message {
    Message::new(content::DIAL_FAILED, reason.as_bytes().to_vec())
        .with_u32(header::CONN_ID, bind_id)
        .with_u32(crate::channel::frame::header::REPLY_FOR, dial_sequence as u32)
}

pub(crate) fn data(conn_id: u32, body: impl Into<Bytes>) -> Message {
    Message::new(content::DATA, body).with_u32(header::CONN_ID, conn_id)
}

/// Half-close: an empty Data carrying FIN.
pub(crate) fn fin(conn_id: u32) -> Message {
    data(conn_id, Bytes::new()).with_u32(header::FLAGS, FLAG_FIN)
}

pub(crate) fn state_closed(conn_id: u32, reason: &str) -> Message {
    Message::new(content::STATE_CLOSED, reason.as_bytes().to_vec()).with_u32(header::CONN_ID, conn_id)
}

pub(crate) fn inspect_response(request: &Message, conn_type: u8, detail: &str) -> Message {
    let mut reply = Message::new(content::CONN_INSPECT_RESPONSE, detail.as_bytes().to_vec())
        .with_u32(crate::channel::frame::header::REPLY_FOR, request.sequence as u32)
        .with_header(header::CONN_TYPE, vec![conn_type]);
    if let Some(id) = conn_id(request) {
        reply = reply.with_u32(header::CONN_ID, id);
    }
    reply
}

pub(crate) fn update_token(access_token: &str) -> Message {
    Message::new(content::UPDATE_TOKEN, access_token.as_bytes().to_vec())
}

/// The error code (header 1014) with which a v2 router ends a bind or connection whose
/// service session is no longer valid.
pub(crate) const ERROR_INVALID_SESSION: u32 = 3;

/// The router's reason in a StateClosed or DialFailed, with the error code v2 routers add.
pub(crate) fn reason(message: &Message) -> String {
    match message.header_u32(header::ERROR_CODE) {
        Some(code) => format!("{} (error code {code})", message.body_text()),
        None => message.body_text(),
    }
}

/// Reads a 32-byte public key header.
pub(crate) fn public_key(message: &Message) -> Option<[u8; 32]> {
    message.header(header::PUBLIC_KEY).and_then(|key| <[u8; 32]>::try_from(key.as_ref()).ok())
}
