//! Plain TCP: callers are known only by their socket address.

use std::io;
use std::net::SocketAddr;

use async_trait::async_trait;
use domain::ports::{Accepted, ServiceListener};
use domain::{Caller, ListenError, Transport};
use thiserror::Error;
use tokio::net::TcpListener;

#[derive(Debug, Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct TcpBindError {
    pub addr: SocketAddr,
    pub source: io::Error,
}

/// A bound TCP port handing out connections with the peer address as the caller.
#[derive(Debug)]
pub struct TcpServiceListener {
    listener: TcpListener,
}

impl TcpServiceListener {
    pub async fn bind(addr: SocketAddr) -> Result<Self, TcpBindError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| TcpBindError { addr, source })?;
        Ok(Self { listener })
    }

    pub fn from_listener(listener: TcpListener) -> Self {
        Self { listener }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

#[async_trait]
impl ServiceListener for TcpServiceListener {
    async fn accept(&mut self) -> Result<Accepted, ListenError> {
        let (connection, peer) = self.listener.accept().await.map_err(|err| ListenError::Accept(err.into()))?;
        // Small request/response exchanges should not wait for Nagle.
        connection.set_nodelay(true).ok();
        Ok(Accepted {
            connection: Box::new(connection),
            caller: Caller { transport: Transport::Tcp, peer: peer.to_string(), identity: None },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn accepted_connection_carries_the_peer_address_and_bytes() -> Result<(), Box<dyn std::error::Error>> {
        let mut listener = TcpServiceListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let mut client = TcpStream::connect(addr).await?;
        let client_addr = client.local_addr()?;
        client.write_all(b"ping").await?;

        let mut accepted = listener.accept().await?;
        assert_eq!(accepted.caller.transport, Transport::Tcp);
        assert_eq!(accepted.caller.peer, client_addr.to_string());
        assert_eq!(accepted.caller.identity, None);
        let mut buf = [0u8; 4];
        accepted.connection.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok(())
    }

    #[tokio::test]
    async fn binding_a_taken_port_names_the_address() -> Result<(), Box<dyn std::error::Error>> {
        let first = TcpServiceListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = first.local_addr()?;
        let err = TcpServiceListener::bind(addr).await.err().ok_or("second bind succeeded")?;
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        Ok(())
    }
}
