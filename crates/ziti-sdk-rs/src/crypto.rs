//! End-to-end encryption as the Go SDK does it: libsodium `crypto_kx` (the dialer is the
//! kx client, the host the kx server) and one secretstream XChaCha20-Poly1305 per direction.

use dryoc::classic::crypto_kx::{crypto_kx_client_session_keys, crypto_kx_keypair, crypto_kx_server_session_keys};
use dryoc::classic::crypto_secretstream_xchacha20poly1305::{
    Header, State, crypto_secretstream_xchacha20poly1305_init_pull, crypto_secretstream_xchacha20poly1305_init_push,
    crypto_secretstream_xchacha20poly1305_pull, crypto_secretstream_xchacha20poly1305_push,
};
use dryoc::constants::{
    CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_ABYTES, CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_HEADERBYTES,
    CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_MESSAGE,
};
use zeroize::Zeroizing;

use crate::error::Error;

/// Bytes a sealed message adds to its plaintext.
pub const OVERHEAD: usize = CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_ABYTES;
/// Length of the stream header sent as the first Data of each direction.
pub const HEADER_LEN: usize = CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_HEADERBYTES;

/// An X25519 key pair for one bind or one dial.
pub(crate) struct KeyPair {
    public: [u8; 32],
    secret: Zeroizing<[u8; 32]>,
}

impl KeyPair {
    pub(crate) fn generate() -> Self {
        let (public, secret) = crypto_kx_keypair();
        Self { public, secret: Zeroizing::new(secret) }
    }

    pub(crate) fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// Session keys for the dialer (kx client), talking to the host's `server_public`.
    pub(crate) fn client_session(&self, server_public: &[u8; 32]) -> Result<SessionKeys, Error> {
        let mut keys = SessionKeys::empty();
        crypto_kx_client_session_keys(&mut keys.rx, &mut keys.tx, &self.public, &self.secret, server_public)
            .map_err(|_| Error::Crypto("key exchange failed"))?;
        Ok(keys)
    }

    /// Session keys for the host (kx server), talking to the dialer's `client_public`.
    pub(crate) fn server_session(&self, client_public: &[u8; 32]) -> Result<SessionKeys, Error> {
        let mut keys = SessionKeys::empty();
        crypto_kx_server_session_keys(&mut keys.rx, &mut keys.tx, &self.public, &self.secret, client_public)
            .map_err(|_| Error::Crypto("key exchange failed"))?;
        Ok(keys)
    }
}

/// Receive and transmit keys of one connection.
pub(crate) struct SessionKeys {
    rx: Zeroizing<[u8; 32]>,
    tx: Zeroizing<[u8; 32]>,
}

impl SessionKeys {
    fn empty() -> Self {
        Self { rx: Zeroizing::new([0; 32]), tx: Zeroizing::new([0; 32]) }
    }

    /// The sending stream and the header the peer needs to open it.
    pub(crate) fn sealer(&self) -> (Sealer, [u8; HEADER_LEN]) {
        let mut state = State::new();
        let mut header: Header = [0; HEADER_LEN];
        crypto_secretstream_xchacha20poly1305_init_push(&mut state, &mut header, &self.tx);
        (Sealer { state }, header)
    }

    /// The receiving stream, from the header the peer sent first.
    pub(crate) fn opener(&self, header: &[u8]) -> Result<Opener, Error> {
        let header: &Header = header.try_into().map_err(|_| Error::Crypto("stream header is not 24 bytes"))?;
        let mut state = State::new();
        crypto_secretstream_xchacha20poly1305_init_pull(&mut state, header, &self.rx);
        Ok(Opener { state })
    }
}

/// Encrypts one direction; each call is one secretstream message (TAG_MESSAGE).
pub(crate) struct Sealer {
    state: State,
}

impl Sealer {
    pub(crate) fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let mut sealed = vec![0u8; plaintext.len() + OVERHEAD];
        crypto_secretstream_xchacha20poly1305_push(
            &mut self.state,
            &mut sealed,
            plaintext,
            None,
            CRYPTO_SECRETSTREAM_XCHACHA20POLY1305_TAG_MESSAGE,
        )
        .map_err(|_| Error::Crypto("encryption failed"))?;
        Ok(sealed)
    }
}

/// Decrypts one direction, message by message.
pub(crate) struct Opener {
    state: State,
}

impl Opener {
    pub(crate) fn open(&mut self, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        // The library subtracts the overhead unchecked: refuse short input first.
        if sealed.len() < OVERHEAD {
            return Err(Error::Crypto("encrypted message shorter than its tag"));
        }
        let mut plaintext = vec![0u8; sealed.len() - OVERHEAD];
        let mut tag = 0u8;
        crypto_secretstream_xchacha20poly1305_pull(&mut self.state, &mut plaintext, &mut tag, sealed, None)
            .map_err(|_| Error::Crypto("message failed authentication"))?;
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialer_and_host_agree_and_messages_round_trip() {
        let (dialer, host) = (KeyPair::generate(), KeyPair::generate());
        let dialer_keys = dialer.client_session(host.public()).unwrap();
        let host_keys = host.server_session(dialer.public()).unwrap();
        let (mut seal, header) = dialer_keys.sealer();
        let mut open = host_keys.opener(&header).unwrap();
        for text in [&b"hello"[..], b"", &[7u8; 40_000]] {
            let sealed = seal.seal(text).unwrap();
            assert_eq!(sealed.len(), text.len() + 17);
            assert_eq!(open.open(&sealed).unwrap(), text);
        }
        let (mut back, header) = host_keys.sealer();
        let mut open_back = dialer_keys.opener(&header).unwrap();
        assert_eq!(open_back.open(&back.seal(b"reply").unwrap()).unwrap(), b"reply");
    }

    #[test]
    fn tampered_short_or_reordered_messages_fail() {
        let (dialer, host) = (KeyPair::generate(), KeyPair::generate());
        let (mut seal, header) = dialer.client_session(host.public()).unwrap().sealer();
        let host_keys = host.server_session(dialer.public()).unwrap();
        let mut sealed = seal.seal(b"payload").unwrap();
        sealed[3] ^= 1;
        assert!(host_keys.opener(&header).unwrap().open(&sealed).is_err());
        assert!(host_keys.opener(&header).unwrap().open(&[0u8; 5]).is_err());
        let (mut seal, header) = dialer.client_session(host.public()).unwrap().sealer();
        let first = seal.seal(b"one").unwrap();
        let second = seal.seal(b"two").unwrap();
        let mut open = host_keys.opener(&header).unwrap();
        assert!(open.open(&second).is_err(), "out of order");
        assert_eq!(open.open(&first).unwrap(), b"one");
        assert!(host_keys.opener(&header[..10]).is_err());
    }
}
