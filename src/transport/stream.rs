//! TCP and TLS connections ("flows", in RFC 5626's word) to registrars and from peers.
//!
//! Each connection is a small tokio task that owns the socket: it connects (and handshakes),
//! writes what the driver queues, cuts what arrives into messages with
//! [`crate::sip::framing`], and reports everything as a [`StreamEvent`] on one channel the
//! driver reads. The driver never blocks on a connection and keeps all decisions (which
//! registrations used a flow, what to do when it drops) in its single task.
//!
//! Connections are reused per destination: every row registering to the same registrar address
//! over the same transport from the same local address shares one connection, as RFC 3261
//! §18.1 recommends and as registrars with connection limits require. Messages queued while a
//! connection is still being set up are written once it is up.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tracing::debug;

use crate::registration::record::Transport;
use crate::sip::framing::{Frame, MAX_MESSAGE, next_frame};

/// Identifies one connection for the life of the process.
pub type FlowId = u64;

/// How long connecting plus the TLS handshake may take before the flow counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What connections report to the driver.
#[derive(Debug)]
pub enum StreamEvent {
    /// A whole SIP message arrived.
    Message {
        flow: FlowId,
        peer: SocketAddr,
        bytes: Vec<u8>,
    },
    /// A CRLF keep-alive arrived: a pong to our ping (or a ping we already answered).
    KeepAlive { flow: FlowId },
    /// The connection is gone (or never came up); `why` says what happened.
    Closed { flow: FlowId, why: String },
}

/// Where an outgoing connection goes; connections are shared per key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub transport: Transport,
    pub peer: SocketAddr,
    /// Local address to connect from (the row's `socket`), or the system's choice.
    pub local_ip: Option<IpAddr>,
    /// Name the registrar's certificate must carry (TLS only).
    pub server_name: String,
}

struct Flow {
    key: Option<FlowKey>,
    peer: SocketAddr,
    transport: Transport,
    writer: mpsc::UnboundedSender<Arc<[u8]>>,
}

/// All open connections.
pub struct Streams {
    next_id: FlowId,
    flows: HashMap<FlowId, Flow>,
    outbound: HashMap<FlowKey, FlowId>,
    events: mpsc::UnboundedSender<StreamEvent>,
    tls_client: Option<Arc<rustls::ClientConfig>>,
}

impl Streams {
    /// `tls_client` is `None` when TLS could not be set up; TLS flows then fail at once with a
    /// clear reason instead of taking the whole daemon down.
    pub fn new(
        events: mpsc::UnboundedSender<StreamEvent>,
        tls_client: Option<Arc<rustls::ClientConfig>>,
    ) -> Streams {
        Streams {
            next_id: 1,
            flows: HashMap::new(),
            outbound: HashMap::new(),
            events,
            tls_client,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn peer(&self, flow: FlowId) -> Option<(Transport, SocketAddr)> {
        self.flows.get(&flow).map(|f| (f.transport, f.peer))
    }

    /// The flow a send to `key` would use now, if one is open.
    pub fn existing(&self, key: &FlowKey) -> Option<FlowId> {
        self.outbound.get(key).copied()
    }

    /// Queues `bytes` on the connection for `key`, opening one if needed. Returns the flow.
    pub fn send(&mut self, key: &FlowKey, bytes: Arc<[u8]>) -> FlowId {
        if let Some(id) = self.outbound.get(key).copied()
            && self.send_on(id, bytes.clone())
        {
            return id;
        }
        let id = self.open(key.clone());
        self.send_on(id, bytes);
        id
    }

    /// Queues `bytes` on an existing flow; false when that flow is gone.
    pub fn send_on(&mut self, flow: FlowId, bytes: Arc<[u8]>) -> bool {
        match self.flows.get(&flow) {
            Some(f) => f.writer.send(bytes).is_ok(),
            None => false,
        }
    }

    /// Closes a flow (e.g. after a missed keep-alive); its task reports `Closed`.
    pub fn close(&mut self, flow: FlowId) {
        if let Some(f) = self.flows.remove(&flow)
            && let Some(key) = f.key
            && self.outbound.get(&key) == Some(&flow)
        {
            self.outbound.remove(&key);
        }
    }

    /// Forgets a flow whose task reported `Closed`.
    pub fn forget(&mut self, flow: FlowId) {
        self.close(flow);
    }

    fn allocate(&mut self) -> FlowId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn open(&mut self, key: FlowKey) -> FlowId {
        let id = self.allocate();
        let (writer, writes) = mpsc::unbounded_channel();
        self.flows.insert(
            id,
            Flow {
                key: Some(key.clone()),
                peer: key.peer,
                transport: key.transport,
                writer,
            },
        );
        self.outbound.insert(key.clone(), id);
        let events = self.events.clone();
        let tls = self.tls_client.clone();
        tokio::spawn(async move {
            match connect(&key, tls).await {
                Ok(Connected::Plain(stream)) => {
                    run_flow(id, key.peer, stream, writes, events).await
                }
                Ok(Connected::Tls(stream)) => run_flow(id, key.peer, *stream, writes, events).await,
                Err(why) => {
                    let _ = events.send(StreamEvent::Closed { flow: id, why });
                }
            }
        });
        id
    }

    /// Takes over a connection a peer opened to us (TCP, or TLS already handshaken by the
    /// listener). Inbound flows are not reused for our own REGISTERs.
    pub fn adopt<S>(&mut self, stream: S, peer: SocketAddr, transport: Transport) -> FlowId
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let id = self.allocate();
        let (writer, writes) = mpsc::unbounded_channel();
        self.flows.insert(
            id,
            Flow {
                key: None,
                peer,
                transport,
                writer,
            },
        );
        tokio::spawn(run_flow(id, peer, stream, writes, self.events.clone()));
        id
    }
}

enum Connected {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn connect(
    key: &FlowKey,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Connected, String> {
    let attempt = async {
        let socket = if key.peer.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|err| format!("cannot create a socket: {err}"))?;
        if let Some(ip) = key.local_ip {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|err| format!("cannot bind {ip}: {err}"))?;
        }
        let tcp = socket
            .connect(key.peer)
            .await
            .map_err(|err| format!("connect to {} failed: {err}", key.peer))?;
        let _ = tcp.set_nodelay(true);
        if key.transport != Transport::Tls {
            return Ok(Connected::Plain(tcp));
        }
        let config =
            tls.ok_or_else(|| "TLS is not available (see the start-up log)".to_string())?;
        let name = ServerName::try_from(key.server_name.clone())
            .map_err(|_| format!("{:?} is not a valid TLS server name", key.server_name))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|err| format!("TLS handshake with {} failed: {err}", key.peer))?;
        Ok(Connected::Tls(Box::new(stream)))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("connect to {} timed out", key.peer)),
    }
}

/// Reads and writes one connection until either side ends it.
async fn run_flow<S>(
    flow: FlowId,
    peer: SocketAddr,
    stream: S,
    mut writes: mpsc::UnboundedReceiver<Arc<[u8]>>,
    events: mpsc::UnboundedSender<StreamEvent>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let why = loop {
        tokio::select! {
            queued = writes.recv() => {
                let Some(bytes) = queued else {
                    let _ = writer.shutdown().await;
                    break "closed by us".to_string();
                };
                if let Err(err) = writer.write_all(&bytes).await {
                    break format!("write failed: {err}");
                }
            }
            read = reader.read_buf(&mut buf) => {
                match read {
                    Ok(0) => break "closed by the peer".to_string(),
                    Ok(_) => {}
                    Err(err) => break format!("read failed: {err}"),
                }
                match drain_frames(flow, peer, &mut buf, &events) {
                    Ok(pings) => {
                        // RFC 5626 §4.4.1: answer each ping with a pong.
                        for _ in 0..pings {
                            if let Err(err) = writer.write_all(b"\r\n").await {
                                debug!(flow, "pong failed: {err}");
                            }
                        }
                    }
                    Err(why) => break why,
                }
                if buf.capacity() > 4 * MAX_MESSAGE && buf.len() < MAX_MESSAGE {
                    buf.shrink_to(MAX_MESSAGE);
                }
            }
        }
    };
    debug!(flow, %peer, "flow ended: {why}");
    let _ = events.send(StreamEvent::Closed { flow, why });
}

/// Hands every complete message in `buf` to the driver and keeps the rest. Returns how many
/// pings arrived, or why the stream has to be closed.
fn drain_frames(
    flow: FlowId,
    peer: SocketAddr,
    buf: &mut Vec<u8>,
    events: &mpsc::UnboundedSender<StreamEvent>,
) -> Result<usize, String> {
    let mut used = 0;
    let mut pings = 0;
    let result = loop {
        match next_frame(&buf[used..]) {
            Frame::Message(len) => {
                let bytes = buf[used..used + len].to_vec();
                used += len;
                let _ = events.send(StreamEvent::Message { flow, peer, bytes });
            }
            Frame::KeepAlive { len, ping } => {
                used += len;
                if ping {
                    pings += 1;
                } else {
                    let _ = events.send(StreamEvent::KeepAlive { flow });
                }
            }
            Frame::Incomplete => break Ok(pings),
            Frame::Invalid(why) => break Err(format!("unframeable stream: {why}")),
        }
    };
    buf.drain(..used);
    result
}
