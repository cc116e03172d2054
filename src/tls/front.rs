//! The TLS front: terminates TLS on the listening port and hands the
//! plain bytes to the HTTP server on a private loopback listener.
//!
//! Why not TLS inside the HTTP server: a WebSocket connection, once
//! upgraded, is written straight to its `TcpStream` by the hub's fan-out
//! (one `send` of bytes shared by every subscriber, from whichever thread
//! publishes: `transport::ws::wire`), and read by its own task at the same
//! time. A TLS session is state one writer at a time must own, so every
//! one of those paths would have to change. Instead each TLS connection
//! gets a loopback TCP connection to the same server, and this module
//! copies between the two: HTTPS and `wss://` on one port, everything
//! behind it unchanged. The price, per TLS connection: a second socket
//! pair on loopback and a copy of every byte each way (`docs/security.md`
//! measures it: about 29 KiB and 2.5× the CPU of a plain fan-out).
//!
//! The server still learns the client's address: [`Peers`] maps each
//! loopback connection's port to the address the TLS connection came
//! from, and the HTTP server reads it back when it accepts.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Longest a TLS handshake may take (as long as a request head may take
/// to arrive: actix-http's `client_request_timeout`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Receive buffer of the loopback side: what the front takes from the
/// server ahead of a client that reads slowly. Small, so that a stalled
/// client backs up into the server's own socket as it would without TLS
/// (the hub then sees the subscriber as backed up).
const LOOPBACK_RCVBUF: u32 = 64 * 1024;

/// The client address behind each loopback connection, by the loopback
/// connection's local port.
#[derive(Default)]
pub struct Peers(Mutex<HashMap<u16, SocketAddr>>);

impl Peers {
    /// The address a connection accepted from `loopback` came from: the
    /// TLS client's, when it is one of the front's connections.
    pub fn client_of(&self, loopback: Option<SocketAddr>) -> Option<SocketAddr> {
        let addr = loopback?;
        if !addr.ip().is_loopback() {
            return Some(addr);
        }
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Some(map.get(&addr.port()).copied().unwrap_or(addr))
    }

    fn insert(&self, port: u16, client: SocketAddr) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port, client);
    }

    fn remove(&self, port: u16) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&port);
    }
}

/// Removes a loopback port from [`Peers`] when the connection ends.
struct PeerEntry<'a>(&'a Peers, u16);

impl Drop for PeerEntry<'_> {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

/// One per server: what each TLS connection needs.
pub struct Front {
    pub acceptor: TlsAcceptor,
    /// The HTTP server's private loopback listener.
    pub backend: SocketAddr,
    pub peers: Arc<Peers>,
    /// Handshakes that failed or timed out (a client that does not trust
    /// the certificate, a scanner, plain HTTP sent to the TLS port).
    pub handshake_failures: IntCounter,
}

impl Front {
    /// Serves one accepted connection: the handshake, then the copy until
    /// either side is done.
    pub async fn serve(&self, io: TcpStream) {
        let client = io.peer_addr().ok();
        let _ = io.set_nodelay(true);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(io)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                self.handshake_failures.inc();
                // A client's doing: not worth more than a debug line each.
                tracing::debug!(error = %e, client = ?client, "TLS handshake failed");
                return;
            }
            Err(_) => {
                self.handshake_failures.inc();
                tracing::debug!(client = ?client, "TLS handshake timed out");
                return;
            }
        };
        let Ok((backend, port)) = self.connect_backend().await else {
            tracing::warn!(backend = %self.backend, "TLS front: cannot reach the HTTP server on loopback");
            return;
        };
        let _entry = client.map(|c| {
            self.peers.insert(port, c);
            PeerEntry(&self.peers, port)
        });
        pipe(tls, backend).await;
    }

    /// A loopback connection to the server; its local port is known
    /// before it connects, so [`Peers`] holds it before the server can
    /// accept it.
    async fn connect_backend(&self) -> std::io::Result<(TcpStream, u16)> {
        let socket = TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(LOOPBACK_RCVBUF)?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let port = socket.local_addr()?.port();
        let stream = socket.connect(self.backend).await?;
        stream.set_nodelay(true)?;
        Ok((stream, port))
    }
}

/// Copies both ways. The connection ends when the server is done with
/// it (its close reaches the client as TLS `close_notify`); a client
/// that half-closes still gets the rest of its answer.
async fn pipe(tls: tokio_rustls::server::TlsStream<TcpStream>, backend: TcpStream) {
    // `copy` flushes whenever its reader has nothing more for now: a
    // frame is never held back in the TLS layer waiting for the next.
    let (mut client_read, mut client_write) = tokio::io::split(tls);
    let (mut server_read, mut server_write) = backend.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut down => {}
        _ = &mut up => down.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopback_connection_of_the_front_is_its_clients() {
        let peers = Peers::default();
        let client: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        peers.insert(50_000, client);
        let via_front: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        assert_eq!(peers.client_of(Some(via_front)), Some(client));
        // Another local connection, and a direct one, are themselves.
        let local: SocketAddr = "127.0.0.1:50001".parse().unwrap();
        assert_eq!(peers.client_of(Some(local)), Some(local));
        assert_eq!(peers.client_of(Some(client)), Some(client));
        {
            let _entry = PeerEntry(&peers, 50_000);
        }
        assert_eq!(peers.client_of(Some(via_front)), Some(via_front));
        assert_eq!(peers.client_of(None), None);
    }
}
