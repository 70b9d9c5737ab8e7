//! Per-circuit flow control ("sdk xgress"), without I/O: the wire form of xgress
//! payloads and acknowledgements, and [`Circuit`], a state machine that takes received
//! messages, application writes and clock ticks and returns the messages to send.
//!
//! The protocol is OpenZiti's xgress, which the edge router bridges to the SDK when the
//! Connect or Bind carries `UseXgressToSdk`: each direction numbers its payloads, the
//! receiver acknowledges every payload it keeps (reporting how much it holds unread),
//! the sender keeps at most a window of unacknowledged bytes, stops while the receiver
//! reports a full buffer and resends what is not acknowledged in time. A receiver that
//! is full drops new payloads instead of waiting, so a reader that stops stalls only
//! its own circuit.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};

use super::frame::Message;
use crate::edge;

/// Xgress content types (the same numbers the fabric uses on router links).
pub(crate) mod content {
    pub const PAYLOAD: i32 = 1100;
    pub const ACKNOWLEDGEMENT: i32 = 1101;
    pub const CONTROL: i32 = 1102;
    /// SDK to router: this circuit is finished (body: the circuit id).
    pub const CLOSE: i32 = 1103;
}

/// Channel header ids of xgress messages.
mod header {
    /// Payload headers `k` travel as channel headers `FIRST_PAYLOAD_HEADER + k`.
    pub const FIRST_PAYLOAD_HEADER: i32 = 2000;
    pub const LAST_PAYLOAD_HEADER: i32 = FIRST_PAYLOAD_HEADER + u8::MAX as i32;
    pub const CIRCUIT_ID: i32 = 2256;
    pub const SEQUENCE: i32 = 2257;
    pub const FLAGS: i32 = 2258;
    pub const RECV_BUFFER_SIZE: i32 = 2259;
    pub const RTT: i32 = 2260;
}

/// Payload header keys.
mod payload_header {
    /// The sender's capabilities (u32, big-endian), on the circuit start and its answer.
    pub const CAPABILITIES: u8 = 1;
    /// The edge Data flags (u32 LE, e.g. FIN), passed end to end by routers.
    pub const EDGE_FLAGS: u8 = 0x10;
}

/// Payload and acknowledgement flags.
mod flag {
    pub const CIRCUIT_END: u32 = 1;
    /// Set when the terminator (host) side sent it.
    pub const ORIGINATOR: u32 = 2;
    pub const CIRCUIT_START: u32 = 4;
    pub const CHUNK: u32 = 8;
    pub const RETRANSMIT: u32 = 16;
    /// The sender will send no more (peers that advertise [`super::CAPABILITY_EOF`]).
    pub const EOF: u32 = 32;
    pub const WRITE_FAILED: u32 = 64;
}

/// Capability bit: the peer understands the EOF flag.
const CAPABILITY_EOF: u32 = 1 << 8;

/// Unacknowledged bytes a circuit may have in flight at most (the xgress default).
pub const DEFAULT_WINDOW: u32 = 4 * 1024 * 1024;
/// The window never shrinks below this after losses.
pub const MIN_WINDOW: u32 = 16 * 1024;
/// Received bytes a circuit holds unread before it drops new payloads (the default).
pub const DEFAULT_RECEIVE_BUFFER: u32 = 4 * 1024 * 1024;
/// A peer stops sending while we report holding more than this (its default window
/// maximum); our reports are scaled so that it stops when our own buffer is full.
const PEER_BLOCK_THRESHOLD: u64 = 4 * 1024 * 1024;
/// Resend timeout before any round trip was measured.
const INITIAL_RETRANSMIT_MS: u32 = 200;
/// Resend timeouts stay within these bounds (the floor keeps a fast loopback round trip
/// from turning a briefly busy peer into a resend storm).
const MIN_RETRANSMIT_MS: u32 = 50;
const MAX_RETRANSMIT_MS: u32 = 10_000;
/// Passes over the unacknowledged payloads are at least this far apart.
const RETRANSMIT_PASS_MS: u64 = 64;
/// A full peer whose reported level has not moved for this long has stopped reading.
const STALLED_PEER_MS: u64 = 1_000;
/// A payload still unacknowledged when this many later ones were acknowledged was lost:
/// routers forward payloads and acknowledgements with a non-blocking send and drop them
/// when the next hop's queue is full, and the channel keeps the rest in order.
const FAST_RETRANSMIT_AFTER: i32 = 3;
/// Once the window was halved after a loss it grows by about this much per window of
/// acknowledged bytes (one full payload per round trip, as TCP grows by a segment).
const WINDOW_STEP: u32 = 32 * 1024;
/// Reading only sends a window update once the reported level has halved and was
/// above this; smaller changes ride on the next acknowledgement.
const WINDOW_UPDATE_FLOOR: u32 = 10_000;

/// Which end of the circuit we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Originator {
    /// The dialer: it starts the circuit.
    Initiator,
    /// The host: it waits for the dialer's start before sending.
    Terminator,
}

impl Originator {
    fn flag(self) -> u32 {
        match self {
            Originator::Initiator => 0,
            Originator::Terminator => flag::ORIGINATOR,
        }
    }
}

/// Why an xgress message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("xgress message without {0}")]
    Missing(&'static str),
    #[error("xgress acknowledgement body of {0} bytes is not a list of sequences")]
    BadSequences(usize),
    #[error("chunked xgress payloads are not supported")]
    Chunked,
}

/// One numbered payload of a circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Payload {
    pub sequence: i32,
    pub flags: u32,
    /// The sender's clock (ms, truncated), echoed in the acknowledgement.
    pub rtt: u16,
    pub headers: Vec<(u8, Bytes)>,
    pub data: Bytes,
}

impl Payload {
    fn header(&self, key: u8) -> Option<&Bytes> {
        self.headers.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn edge_flags(&self) -> u32 {
        self.header(payload_header::EDGE_FLAGS)
            .and_then(|v| v.get(..4))
            .map_or(0, |v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]))
    }

    fn sent_by_terminator(&self) -> bool {
        self.flags & flag::ORIGINATOR != 0
    }

    /// The message for the router (it routes it by circuit id).
    pub(crate) fn to_message(&self, circuit_id: &Bytes, conn_id: u32) -> Message {
        let mut message = Message::new(content::PAYLOAD, self.data.clone());
        message.headers.reserve(self.headers.len() + 5);
        for (key, value) in &self.headers {
            message.headers.push((header::FIRST_PAYLOAD_HEADER + i32::from(*key), value.clone()));
        }
        message.headers.push((header::CIRCUIT_ID, circuit_id.clone()));
        if self.flags != 0 {
            message.headers.push((header::FLAGS, Bytes::copy_from_slice(&self.flags.to_le_bytes())));
        }
        let sequence = i64::from(self.sequence) as u64;
        message.headers.push((header::SEQUENCE, Bytes::copy_from_slice(&sequence.to_le_bytes())));
        message.headers.push((header::RTT, Bytes::copy_from_slice(&self.rtt.to_le_bytes())));
        message.headers.push((edge::header::CONN_ID, Bytes::copy_from_slice(&conn_id.to_le_bytes())));
        message
    }

    pub(crate) fn from_message(message: Message) -> Result<Payload, WireError> {
        message.header(header::CIRCUIT_ID).ok_or(WireError::Missing("a circuit id"))?;
        let sequence = header_u64(&message, header::SEQUENCE).ok_or(WireError::Missing("a sequence"))?;
        let flags = message.header_u32(header::FLAGS).unwrap_or(0);
        if flags & flag::CHUNK != 0 {
            return Err(WireError::Chunked);
        }
        let rtt = header_u16(&message, header::RTT).unwrap_or(0);
        let headers = message
            .headers
            .into_iter()
            .filter(|(k, _)| (header::FIRST_PAYLOAD_HEADER..=header::LAST_PAYLOAD_HEADER).contains(k))
            .map(|(k, v)| ((k - header::FIRST_PAYLOAD_HEADER) as u8, v))
            .collect();
        Ok(Payload { sequence: sequence as i32, flags, rtt, headers, data: message.body })
    }
}

/// An acknowledgement: which payloads arrived and how much the receiver holds unread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    pub sequences: Vec<i32>,
    pub flags: u32,
    pub receive_buffered: u32,
    pub rtt: u16,
}

impl Ack {
    pub(crate) fn to_message(&self, circuit_id: &Bytes) -> Message {
        let mut body = BytesMut::with_capacity(self.sequences.len() * 4);
        for sequence in &self.sequences {
            body.extend_from_slice(&sequence.to_be_bytes());
        }
        let mut message = Message::new(content::ACKNOWLEDGEMENT, body.freeze());
        message.headers.push((header::RTT, Bytes::copy_from_slice(&self.rtt.to_le_bytes())));
        message.headers.push((header::CIRCUIT_ID, circuit_id.clone()));
        if self.flags != 0 {
            message.headers.push((header::FLAGS, Bytes::copy_from_slice(&self.flags.to_le_bytes())));
        }
        message.headers.push((header::RECV_BUFFER_SIZE, Bytes::copy_from_slice(&self.receive_buffered.to_le_bytes())));
        message
    }

    pub(crate) fn from_message(message: &Message) -> Result<Ack, WireError> {
        message.header(header::CIRCUIT_ID).ok_or(WireError::Missing("a circuit id"))?;
        if !message.body.len().is_multiple_of(4) {
            return Err(WireError::BadSequences(message.body.len()));
        }
        let sequences = message.body.chunks_exact(4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])).collect();
        Ok(Ack {
            sequences,
            flags: message.header_u32(header::FLAGS).unwrap_or(0),
            // Absent means "unknown", which the sender must not read as "full".
            receive_buffered: message.header_u32(header::RECV_BUFFER_SIZE).unwrap_or(0),
            rtt: header_u16(message, header::RTT).unwrap_or(0),
        })
    }
}

fn header_u16(message: &Message, key: i32) -> Option<u16> {
    let value = message.header(key)?;
    Some(u16::from_le_bytes(value.get(..2)?.try_into().ok()?))
}

fn header_u64(message: &Message, key: i32) -> Option<u64> {
    let value = message.header(key)?;
    Some(u64::from_le_bytes(value.get(..8)?.try_into().ok()?))
}

/// The message that tells the router we are done with the circuit.
pub(crate) fn close_message(circuit_id: &Bytes) -> Message {
    Message::new(content::CLOSE, circuit_id.clone())
}

/// Sizes of one circuit's windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Windows {
    /// Most unacknowledged bytes we send.
    pub send: u32,
    /// Most unread bytes we hold before dropping new payloads.
    pub receive: u32,
}

impl Default for Windows {
    fn default() -> Self {
        Self { send: DEFAULT_WINDOW, receive: DEFAULT_RECEIVE_BUFFER }
    }
}

/// What the application gets from the circuit, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub data: Bytes,
    /// The peer half-closed (edge FIN) after this data.
    pub fin: bool,
    /// The peer ended its side of the circuit (EOF or circuit end).
    pub end: bool,
}

#[derive(Debug)]
struct Unacked {
    payload: Payload,
    /// `None` while held back until the circuit starts.
    sent_at: Option<u64>,
    /// Resent already because later payloads were acknowledged (once only; after that
    /// the resend timeout applies).
    fast_resent: bool,
}

/// Messages produced by one step, for the caller to send.
pub(crate) type Outgoing = Vec<Message>;

/// One circuit's flow control. Times are milliseconds since the Unix epoch: routers
/// stamp the payloads they forward with their own clock (truncated to 16 bits), and the
/// round trip is that stamp, echoed in the acknowledgement, taken from our clock.
#[derive(Debug)]
pub(crate) struct Circuit {
    circuit_id: Bytes,
    conn_id: u32,
    originator: Originator,
    windows: Windows,
    started: bool,
    peer_capabilities: u32,

    next_sequence: i32,
    unacked: BTreeMap<i32, Unacked>,
    unacked_bytes: u32,
    window: u32,
    peer_buffered: u32,
    /// Below it the window grows by every acknowledged byte, above it by [`WINDOW_STEP`]
    /// per window: it is half the window the last loss was seen at.
    growth_threshold: u32,
    /// Losses among payloads before this sequence belong to the loss episode the window
    /// already shrank for.
    recovery_until: i32,
    /// Smoothed round trip and its mean deviation (RFC 6298), in ms; `None` before the
    /// first sample.
    rtt: Option<(f64, f64)>,
    retransmit_after: u32,
    last_retransmit_pass: u64,
    /// When the peer's reported level last changed.
    level_changed_at: u64,

    next_expected: i32,
    highest_seen: i32,
    out_of_order: BTreeMap<i32, Payload>,
    ready: VecDeque<Payload>,
    buffered: u32,
    last_reported: u32,
    /// Payloads kept and not yet acknowledged, and the newest one's stamp.
    unanswered: Vec<i32>,
    unanswered_rtt: u16,
    ended: bool,
}

impl Circuit {
    /// `circuit_id` is copied: a slice of a received frame would keep the channel's
    /// whole read buffer alive for as long as the connection lives.
    pub(crate) fn new(circuit_id: &[u8], conn_id: u32, originator: Originator, windows: Windows) -> Self {
        let windows = Windows { send: windows.send.max(MIN_WINDOW), receive: windows.receive.max(MIN_WINDOW) };
        Circuit {
            circuit_id: Bytes::copy_from_slice(circuit_id),
            conn_id,
            originator,
            windows,
            started: false,
            peer_capabilities: 0,
            next_sequence: 0,
            unacked: BTreeMap::new(),
            unacked_bytes: 0,
            window: windows.send,
            peer_buffered: 0,
            growth_threshold: windows.send,
            recovery_until: 0,
            rtt: None,
            retransmit_after: INITIAL_RETRANSMIT_MS,
            last_retransmit_pass: 0,
            level_changed_at: 0,
            next_expected: 0,
            highest_seen: -1,
            out_of_order: BTreeMap::new(),
            ready: VecDeque::new(),
            buffered: 0,
            last_reported: 0,
            unanswered: Vec::new(),
            unanswered_rtt: 0,
            ended: false,
        }
    }

    pub(crate) fn circuit_id(&self) -> &Bytes {
        &self.circuit_id
    }

    /// The initiator starts the circuit: its first payload, carrying our capabilities.
    pub(crate) fn start(&mut self, now: u64) -> Outgoing {
        if self.originator != Originator::Initiator || self.started {
            return Vec::new();
        }
        self.started = true;
        self.queue(flag::CIRCUIT_START, capabilities(), Bytes::new(), now).into_iter().collect()
    }

    /// Whether a write may go out now. A circuit with nothing in flight may always send
    /// one payload, so that a lost window update cannot stall it for good.
    ///
    /// The window covers what the peer holds unread as well as what is in flight: the
    /// peer stops taking payloads once its buffer is full, so sending past that only
    /// makes resends.
    pub(crate) fn writable(&self) -> bool {
        let committed = u64::from(self.peer_buffered) + u64::from(self.unacked_bytes);
        committed < u64::from(self.window) || self.unacked_bytes == 0
    }

    /// Queues application data (or an empty half-close when `fin`); returns the
    /// message to send, or nothing while the circuit waits for its start.
    pub(crate) fn send(&mut self, data: Bytes, fin: bool, now: u64) -> Option<Message> {
        let headers = if fin {
            vec![(payload_header::EDGE_FLAGS, Bytes::copy_from_slice(&edge::FLAG_FIN.to_le_bytes()))]
        } else {
            Vec::new()
        };
        self.queue(0, headers, data, now)
    }

    /// Our side is finished: EOF where the peer understands it, else circuit end.
    pub(crate) fn send_end(&mut self, now: u64) -> Option<Message> {
        let end = if self.peer_capabilities & CAPABILITY_EOF != 0 { flag::EOF } else { flag::CIRCUIT_END };
        self.queue(end, Vec::new(), Bytes::new(), now)
    }

    /// The final circuit end, sent once and not resent (the circuit is going away).
    pub(crate) fn circuit_end(&mut self, now: u64) -> Message {
        let payload = Payload {
            sequence: self.take_sequence(),
            flags: flag::CIRCUIT_END | self.originator.flag(),
            rtt: now as u16,
            headers: Vec::new(),
            data: Bytes::new(),
        };
        payload.to_message(&self.circuit_id, self.conn_id)
    }

    fn take_sequence(&mut self) -> i32 {
        let sequence = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        sequence
    }

    fn queue(&mut self, flags: u32, headers: Vec<(u8, Bytes)>, data: Bytes, now: u64) -> Option<Message> {
        let payload = Payload {
            sequence: self.take_sequence(),
            flags: flags | self.originator.flag(),
            rtt: now as u16,
            headers,
            data,
        };
        self.unacked_bytes += payload.data.len() as u32;
        let message = self.started.then(|| payload.to_message(&self.circuit_id, self.conn_id));
        let sent_at = self.started.then_some(now);
        self.unacked.insert(payload.sequence, Unacked { payload, sent_at, fast_resent: false });
        message
    }

    /// Whether everything we sent was acknowledged.
    pub(crate) fn all_acked(&self) -> bool {
        self.unacked.is_empty()
    }

    /// A payload from the peer: keeps it, answering with an acknowledgement at once (see
    /// [`Circuit::accept_payload`]).
    #[cfg(test)]
    pub(crate) fn on_payload(&mut self, payload: Payload, now: u64) -> Outgoing {
        let mut out = self.accept_payload(payload, now);
        out.extend(self.acknowledgement());
        out
    }

    /// A payload from the peer: keeps it, to be acknowledged by the next
    /// [`Circuit::acknowledgement`], unless the receive buffer is full, in which case it
    /// is dropped unanswered and resent later. Returns what else must go out (our
    /// answer to the circuit's start).
    pub(crate) fn accept_payload(&mut self, payload: Payload, now: u64) -> Outgoing {
        let mut out = Vec::new();
        if payload.sent_by_terminator() == (self.originator == Originator::Terminator) {
            // Our own payload come back: a routing loop, not data for us.
            return out;
        }
        if let Some(caps) = payload.header(payload_header::CAPABILITIES)
            && let Some(bytes) = caps.get(..4)
        {
            self.peer_capabilities = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        if payload.flags & flag::CIRCUIT_START != 0 && !self.started && self.originator == Originator::Terminator {
            self.started = true;
            out.extend(self.queue(0, capabilities(), Bytes::new(), now));
            for held in self.unacked.values_mut().filter(|u| u.sent_at.is_none()) {
                held.sent_at = Some(now);
                held.payload.rtt = now as u16;
                out.push(held.payload.to_message(&self.circuit_id, self.conn_id));
            }
        }
        let sequence = payload.sequence;
        if sequence >= self.next_expected {
            // The peer stops once we report the receive window full, with up to its own
            // window still on the way: that much more is kept, not dropped and resent.
            let full = u64::from(self.buffered) > u64::from(self.windows.receive) + PEER_BLOCK_THRESHOLD;
            if full && sequence > self.highest_seen {
                return out;
            }
            let len = payload.data.len() as u32;
            let rtt = payload.rtt;
            if self.out_of_order.insert(sequence, payload).is_none() {
                self.buffered += len;
            }
            self.highest_seen = self.highest_seen.max(sequence);
            while let Some(next) = self.out_of_order.remove(&self.next_expected) {
                self.next_expected = self.next_expected.wrapping_add(1);
                self.ready.push_back(next);
            }
            self.owe_acknowledgement(sequence, rtt);
        } else {
            // Already delivered: the acknowledgement was lost, send it again.
            self.owe_acknowledgement(sequence, payload.rtt);
        }
        out
    }

    fn reported(&self) -> u32 {
        let scaled = u64::from(self.buffered) * PEER_BLOCK_THRESHOLD / u64::from(self.windows.receive);
        u32::try_from(scaled).unwrap_or(u32::MAX)
    }

    fn owe_acknowledgement(&mut self, sequence: i32, rtt: u16) {
        self.unanswered.push(sequence);
        self.unanswered_rtt = rtt;
    }

    /// One acknowledgement for every payload kept since the last one: the channel's
    /// reader asks once it has handled all it read, so a burst costs the router one
    /// message to forward rather than one per payload. It carries the newest payload's
    /// stamp for the peer's round trip.
    pub(crate) fn acknowledgement(&mut self) -> Option<Message> {
        if self.unanswered.is_empty() {
            return None;
        }
        let sequences = std::mem::take(&mut self.unanswered);
        Some(self.ack(sequences, self.unanswered_rtt))
    }

    fn ack(&mut self, sequences: Vec<i32>, rtt: u16) -> Message {
        let receive_buffered = self.reported();
        self.last_reported = receive_buffered;
        Ack { sequences, flags: self.originator.flag(), receive_buffered, rtt }.to_message(&self.circuit_id)
    }

    /// An acknowledgement from the peer: whether writing may have become possible, and
    /// the payloads it shows lost, to send again now.
    pub(crate) fn on_ack(&mut self, ack: &Ack, now: u64) -> (bool, Outgoing) {
        for sequence in &ack.sequences {
            if let Some(done) = self.unacked.remove(sequence) {
                let len = done.payload.data.len() as u32;
                self.unacked_bytes -= len;
                self.grow(len);
            }
        }
        if ack.receive_buffered != self.peer_buffered {
            self.level_changed_at = now;
        }
        self.peer_buffered = ack.receive_buffered;
        if ack.rtt != 0 {
            self.round_trip_sample(f64::from((now as u16).wrapping_sub(ack.rtt)));
        }
        let lost = match ack.sequences.iter().max() {
            Some(newest) => self.resend_overtaken(newest.saturating_sub(FAST_RETRANSMIT_AFTER), now),
            None => Vec::new(),
        };
        (self.writable(), lost)
    }

    /// Resends (once) each payload up to `last` that is still unacknowledged.
    fn resend_overtaken(&mut self, last: i32, now: u64) -> Outgoing {
        let mut out = Vec::new();
        let mut first_lost = None;
        for (sequence, unacked) in self.unacked.range_mut(..=last) {
            if unacked.fast_resent || unacked.sent_at.is_none() {
                continue;
            }
            unacked.fast_resent = true;
            first_lost.get_or_insert(*sequence);
            out.push(Self::resend_message(&self.circuit_id, self.conn_id, unacked, now));
        }
        if let Some(sequence) = first_lost {
            self.on_loss(sequence);
        }
        out
    }

    /// Marks `unacked` as sent again now and returns its message.
    fn resend_message(circuit_id: &Bytes, conn_id: u32, unacked: &mut Unacked, now: u64) -> Message {
        unacked.sent_at = Some(now);
        unacked.payload.flags |= flag::RETRANSMIT;
        unacked.payload.rtt = now as u16;
        unacked.payload.to_message(circuit_id, conn_id)
    }

    /// Acknowledged bytes widen the window: fast up to the growth threshold, then by
    /// about [`WINDOW_STEP`] per window (AIMD, as TCP).
    fn grow(&mut self, acked: u32) {
        let step = if self.window < self.growth_threshold {
            acked
        } else {
            (u64::from(acked) * u64::from(WINDOW_STEP) / u64::from(self.window.max(1))) as u32
        };
        self.window = self.window.saturating_add(step.max(1)).min(self.windows.send);
    }

    /// Payloads up to `sequence` were lost: the path is full (a router drops what the
    /// next hop's queue has no room for), so the window halves, once per loss episode.
    fn on_loss(&mut self, sequence: i32) {
        if sequence < self.recovery_until {
            return;
        }
        self.window = (self.window / 2).max(MIN_WINDOW);
        self.growth_threshold = self.window;
        self.recovery_until = self.next_sequence;
    }

    /// The resend timeout follows the round trip and how much it varies (RFC 6298):
    /// under a full window the round trip is mostly queueing, and varies with it.
    fn round_trip_sample(&mut self, sample: f64) {
        let (srtt, rttvar) = match self.rtt {
            None => (sample, sample / 2.0),
            Some((srtt, rttvar)) => (0.875 * srtt + 0.125 * sample, 0.75 * rttvar + 0.25 * (srtt - sample).abs()),
        };
        self.rtt = Some((srtt, rttvar));
        let after = (srtt + 4.0 * rttvar).ceil() as u32;
        self.retransmit_after = after.clamp(MIN_RETRANSMIT_MS, MAX_RETRANSMIT_MS);
    }

    /// Payloads not acknowledged in time, marked as resent, oldest first. While the peer
    /// reports a full buffer it drops whatever follows what it holds, so resending them
    /// all would only load the router: once the peer's reported level has stood still for
    /// [`STALLED_PEER_MS`] (its reader stopped), only the oldest is resent, as a probe.
    /// A peer whose level moves is reading: everything due is resent, to refill it.
    pub(crate) fn retransmit(&mut self, now: u64) -> Outgoing {
        let mut out = Vec::new();
        if self.unacked.is_empty() || now.saturating_sub(self.last_retransmit_pass) <= RETRANSMIT_PASS_MS {
            return out;
        }
        self.last_retransmit_pass = now;
        let after = u64::from(self.retransmit_after);
        let peer_full = u64::from(self.peer_buffered) > u64::from(self.windows.send);
        let stalled_peer = peer_full && now.saturating_sub(self.level_changed_at) >= STALLED_PEER_MS;
        let limit = if stalled_peer { 1 } else { usize::MAX };
        let due = self
            .unacked
            .iter_mut()
            .filter(|(_, unacked)| unacked.sent_at.is_some_and(|sent_at| now.saturating_sub(sent_at) >= after))
            .take(limit);
        let mut first_lost = None;
        for (sequence, unacked) in due {
            first_lost.get_or_insert(*sequence);
            out.push(Self::resend_message(&self.circuit_id, self.conn_id, unacked, now));
        }
        // A peer that stopped reading is not a full path: probing it leaves the window be.
        if let Some(sequence) = first_lost
            && !stalled_peer
        {
            self.on_loss(sequence);
        }
        out
    }

    /// The next thing for the application, in order. Control-only payloads (start,
    /// capabilities) are consumed here.
    pub(crate) fn next_delivery(&mut self) -> Option<Delivery> {
        while let Some(payload) = self.ready.pop_front() {
            self.buffered -= payload.data.len() as u32;
            if self.ended {
                continue;
            }
            let fin = payload.edge_flags() & edge::FLAG_FIN != 0;
            let end = payload.flags & (flag::EOF | flag::CIRCUIT_END | flag::WRITE_FAILED) != 0;
            self.ended |= end;
            if payload.data.is_empty() && !fin && !end {
                continue;
            }
            return Some(Delivery { data: payload.data, fin, end });
        }
        None
    }

    /// After reading: an acknowledgement without sequences that tells the peer room was
    /// made, when the level we last reported has at least halved.
    pub(crate) fn window_update(&mut self) -> Option<Message> {
        let now_reported = self.reported();
        (self.last_reported > WINDOW_UPDATE_FLOOR && self.last_reported / 2 > now_reported)
            .then(|| self.ack(Vec::new(), 0))
    }

    /// Drops everything received and not yet read (the application is gone).
    pub(crate) fn discard_received(&mut self) {
        while self.next_delivery().is_some() {}
    }
}

fn capabilities() -> Vec<(u8, Bytes)> {
    vec![(payload_header::CAPABILITIES, Bytes::copy_from_slice(&CAPABILITY_EOF.to_be_bytes()))]
}

#[cfg(test)]
#[path = "xgress_tests.rs"]
mod tests;
