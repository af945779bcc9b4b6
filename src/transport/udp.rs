//! The UDP socket REGISTERs leave from and answers come back to.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Large kernel buffers absorb the answers to a burst of requests while the driver is busy;
/// the kernel caps them at `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Largest datagram we accept; SIP over UDP stays far below this (RFC 3261 §18.1.1). The one
/// message limit, which is also the largest UDP payload, so a receive never truncates.
pub const MAX_DATAGRAM: usize = crate::sip::MAX_MESSAGE;

pub struct UdpTransport {
    socket: UdpSocket,
    local: SocketAddr,
}

impl UdpTransport {
    pub async fn bind(addr: SocketAddr) -> io::Result<UdpTransport> {
        let domain = socket2::Domain::for_address(addr);
        let socket =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        // Best effort: an unprivileged process may get less than it asks for.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        let local = socket.local_addr()?;
        Ok(UdpTransport { socket, local })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends one datagram. Errors are reported, not fatal: a send that fails is retransmitted
    /// by its transaction or ends in its timeout.
    pub fn try_send(&self, bytes: &[u8], to: SocketAddr) -> io::Result<()> {
        match self.socket.try_send_to(bytes, to) {
            Ok(_) => Ok(()),
            Err(err) => Err(err),
        }
    }

    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }

    /// Non-blocking receive, for draining what is already queued after a wake-up.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.try_recv_from(buf)
    }
}
