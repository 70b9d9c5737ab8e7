//! The edge router channel: framing, per-connection queues and the channel itself.

pub(crate) mod connection;
pub(crate) mod flow;
pub mod frame;
pub(crate) mod inbox;
mod pump;
pub(crate) mod xgress;

pub(crate) use connection::{Channel, ChannelSettings, ConnKind};
pub(crate) use inbox::{Event, Inbox};
