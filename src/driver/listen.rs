//! The tasks that feed the driver besides its main socket: readers of the extra UDP sockets,
//! the TCP and TLS accept loops (with the connection limits and the TLS handshake), and the
//! bounded channel they all send through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{debug, trace};

use super::DriverGone;
use crate::registration::Destination;
use crate::transport::UdpTransport;
use crate::transport::admission::{AcceptBackoff, Admission, Permit};
use crate::transport::resolve::Resolved;
use crate::transport::udp::MAX_DATAGRAM;

/// A connection's byte stream, whichever its transport.
pub(super) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Things other tasks hand to the driver.
pub(super) enum Input {
    /// A datagram on one of the extra UDP sockets.
    Datagram {
        local: SocketAddr,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A peer connected to us, with its place under the connection limits.
    Accepted {
        stream: Box<dyn Io>,
        peer: SocketAddr,
        transport: crate::registration::Transport,
        permit: Permit,
    },
    Resolved {
        destination: Destination,
        result: Result<Resolved, crate::transport::resolve::ResolveError>,
    },
}

/// The sending side of the driver's bounded event channel, with the rule for each kind of
/// sender: nothing may block the driver task, datagrams are dropped (and counted) when the
/// queue is full, and accepted connections wait.
#[derive(Clone)]
pub(super) struct EventSender {
    pub(super) tx: mpsc::Sender<Input>,
    pub(super) datagrams_dropped: Arc<AtomicU64>,
}

impl EventSender {
    /// For events that must not be lost and are few by construction (one DNS answer per
    /// destination being looked up): queued now if there is room, else by a task that waits
    /// for room, so the caller — often the driver itself — never blocks.
    pub(super) fn send(&self, event: Input) -> Result<(), DriverGone> {
        match self.tx.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(event)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(event).await;
                });
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(DriverGone),
        }
    }

    /// A datagram from an extra socket: dropped and counted when the queue is full (the UDP
    /// sender retransmits, and the count shows the driver could not keep up).
    fn offer(&self, event: Input) -> Result<(), DriverGone> {
        match self.tx.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(DriverGone),
        }
    }

    /// Waits for room (accept loops: a waiting loop accepts nothing, and the kernel's backlog
    /// pushes back).
    pub(super) async fn send_waiting(&self, event: Input) -> Result<(), DriverGone> {
        self.tx.send(event).await.map_err(|_| DriverGone)
    }
}

/// Feeds an extra UDP socket's datagrams to the driver; drops (and counts) them when the
/// driver is behind.
pub(super) async fn read_udp(socket: Arc<UdpTransport>, events: EventSender) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let local = socket.local_addr();
    loop {
        match socket.recv(&mut buf).await {
            Ok((len, from)) => {
                let event = Input::Datagram {
                    local,
                    from,
                    bytes: buf[..len].to_vec(),
                };
                if events.offer(event).is_err() {
                    return;
                }
            }
            Err(err) => trace!(%local, "receive error: {err}"),
        }
    }
}

pub(super) fn listener_name(transport: &str, listener: &TcpListener) -> String {
    match listener.local_addr() {
        Ok(addr) => format!("{transport} listener {addr}"),
        Err(_) => format!("{transport} listener"),
    }
}

/// How long a peer has for its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections (and does the TLS handshake) off the driver task. A connection gets a
/// place under the limits before anything else (a handshake in progress holds one too), or is
/// closed at once.
pub(super) async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    events: EventSender,
    admission: Admission,
) {
    use crate::registration::Transport;
    let mut backoff = AcceptBackoff::new();
    loop {
        let (tcp, peer) = backoff
            .accept(
                "SIP listener (counted in accept_errors)",
                || listener.accept(),
                || admission.accept_failed(),
            )
            .await;
        let permit = match admission.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                debug!(%peer, "connection closed at once: {refusal}");
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        match &tls {
            None => {
                let event = Input::Accepted {
                    stream: Box::new(tcp),
                    peer,
                    transport: Transport::Tcp,
                    permit,
                };
                if events.send_waiting(event).await.is_err() {
                    return;
                }
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let events = events.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            let _ = events
                                .send_waiting(Input::Accepted {
                                    stream: Box::new(stream),
                                    peer,
                                    transport: Transport::Tls,
                                    permit,
                                })
                                .await;
                        }
                        Ok(Err(err)) => debug!(%peer, "TLS handshake failed: {err}"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}
