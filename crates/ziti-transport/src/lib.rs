//! `OverlayListener` adapters. Today: plain TCP, the transport used when the overlay
//! is off (and, in tests, standing in for it).

mod tcp;

pub use tcp::{TcpError, TcpOverlayListener};
