//! The edge router channel: framing, per-connection queues and the channel itself.

pub(crate) mod connection;
pub(crate) mod flow;
pub(crate) mod frame;
mod hello;
pub(crate) mod inbox;
mod pump;
mod shared;
pub(crate) mod xgress;

pub(crate) use connection::Channel;
pub(crate) use inbox::{Event, Inbox};
pub(crate) use shared::{ChannelSettings, ConnKind};
