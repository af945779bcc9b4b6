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
//!
//! Everything a connection can make us hold is bounded: its receive buffer (one message at
//! [`crate::sip::MAX_MESSAGE`] plus one read, see [`StreamBuffer`]), its writer queue (a
//! flow whose queue fills is closed), the time one write may take, and the channel to the
//! driver (readers wait, so TCP pushes back on the sender). Connections peers open to us also
//! hold a [`Permit`] and are closed when idle.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::ServerName;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::admission::Permit;
use crate::registration::record::Transport;
use crate::sip::framing::{Framed, FramingError, StreamBuffer};

/// Identifies one connection for the life of the process.
pub type FlowId = u64;

/// How long connecting plus the TLS handshake may take before the flow counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A write that cannot finish within this long means the peer stopped reading (or the path is
/// dead): the flow is closed rather than left holding its queue and task forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Messages a flow may have waiting to be written. Our own REGISTERs on a shared connection
/// are bounded by the pacer's in-flight window; answers on an inbound flow by what its peer
/// sends. A queue this full means the peer has not been reading for a while.
pub const MIN_WRITE_QUEUE: usize = 1024;

/// Capacity of the channel that carries connection events to the driver. Readers wait when it
/// is full, and TCP then pushes back on their peers; nothing is dropped.
pub const EVENT_QUEUE: usize = 256;

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
    Closed { flow: FlowId, why: FlowClosed },
}

/// Why an outgoing connection could not be set up.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("cannot create a socket: {0}")]
    Socket(#[source] io::Error),
    /// The row's `socket` names a local address that cannot be bound.
    #[error("cannot bind {ip}: {source}")]
    Bind {
        ip: IpAddr,
        #[source]
        source: io::Error,
    },
    /// The peer answered with a reset: nothing listens there.
    #[error("connect to {peer} failed: {source}")]
    Refused {
        peer: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// Any other connect failure (no route, network unreachable …).
    #[error("connect to {peer} failed: {source}")]
    Connect {
        peer: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// Connecting plus the TLS handshake took longer than `CONNECT_TIMEOUT` (5 s).
    #[error("connect to {peer} timed out")]
    Timeout { peer: SocketAddr },
    /// A TLS row while the client configuration could not be built at start-up.
    #[error("TLS is not available (see the start-up log)")]
    TlsUnavailable,
    #[error("{name:?} is not a valid TLS server name")]
    BadServerName { name: String },
    /// The handshake failed: an untrusted certificate, a name mismatch, no common version.
    #[error("TLS handshake with {peer} failed: {source}")]
    Handshake {
        peer: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Why a flow ended: reported with [`StreamEvent::Closed`] and logged by the driver.
#[derive(Debug, Error)]
pub enum FlowClosed {
    /// It never came up.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The driver closed it (or dropped its writer).
    #[error("closed by us")]
    ByUs,
    #[error("closed by the peer")]
    ByPeer,
    #[error("read failed: {0}")]
    Read(#[source] io::Error),
    #[error("write failed: {0}")]
    Write(#[source] io::Error),
    /// A write did not finish within the write timeout: the peer is not reading.
    #[error("write stalled for {} s (peer not reading)", limit.as_secs_f32())]
    WriteStalled { limit: Duration },
    /// An accepted flow carried no message or keep-alive for its idle timeout.
    #[error("idle: no message or keep-alive for {} s", idle.as_secs_f32())]
    Idle { idle: Duration },
    /// The bytes cannot be cut into SIP messages (a head or body over the limits).
    #[error("unframeable stream: {0}")]
    Unframeable(#[source] FramingError),
    /// The driver's end of the event channel is gone.
    #[error("the driver stopped")]
    DriverStopped,
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

/// How flows behave; see [`crate::transport::admission::ConnectionLimits`] for the source of
/// the idle timeout.
#[derive(Clone, Copy, Debug)]
pub struct FlowSettings {
    /// Accepted flows on which no message or CRLF ping arrives, and none of our messages is
    /// sent, for this long are closed. Flows we open are never closed for idling: they carry
    /// our bindings.
    pub idle_timeout: Duration,
    /// Messages a flow may have waiting; a flow whose queue is full is closed.
    pub write_queue: usize,
}

impl Default for FlowSettings {
    fn default() -> Self {
        FlowSettings {
            idle_timeout: Duration::from_secs(300),
            write_queue: MIN_WRITE_QUEUE,
        }
    }
}

/// Flows closed for breaking a limit, counted by the flow tasks themselves.
#[derive(Debug, Default)]
pub struct StreamCounters {
    idle_closed: AtomicU64,
    unframeable: AtomicU64,
    write_queue_overflows: AtomicU64,
    write_timeouts: AtomicU64,
}

/// A copy of [`StreamCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamCounts {
    /// Accepted flows closed by the idle timeout.
    pub idle_closed: u64,
    /// Flows closed because their bytes could not be framed (oversized, bad Content-Length).
    pub unframeable: u64,
    /// Flows closed because their writer queue was full.
    pub write_queue_overflows: u64,
    /// Flows closed because a write did not finish within [`WRITE_TIMEOUT`].
    pub write_timeouts: u64,
}

impl StreamCounters {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> StreamCounts {
        StreamCounts {
            idle_closed: self.idle_closed.load(Ordering::Relaxed),
            unframeable: self.unframeable.load(Ordering::Relaxed),
            write_queue_overflows: self.write_queue_overflows.load(Ordering::Relaxed),
            write_timeouts: self.write_timeouts.load(Ordering::Relaxed),
        }
    }
}

struct Flow {
    key: Option<FlowKey>,
    peer: SocketAddr,
    transport: Transport,
    writer: mpsc::Sender<Arc<[u8]>>,
    /// Dropping this (with the flow) stops the flow's task at once, queued writes or not.
    _stop: oneshot::Sender<()>,
}

/// All open connections.
pub struct Streams {
    next_id: FlowId,
    flows: HashMap<FlowId, Flow>,
    outbound: HashMap<FlowKey, FlowId>,
    events: mpsc::Sender<StreamEvent>,
    tls_client: Option<Arc<rustls::ClientConfig>>,
    settings: FlowSettings,
    counters: Arc<StreamCounters>,
}

impl Streams {
    /// `tls_client` is `None` when TLS could not be set up; TLS flows then fail at once with a
    /// clear reason instead of taking the whole daemon down.
    pub fn new(
        events: mpsc::Sender<StreamEvent>,
        tls_client: Option<Arc<rustls::ClientConfig>>,
        settings: FlowSettings,
    ) -> Streams {
        Streams {
            next_id: 1,
            flows: HashMap::new(),
            outbound: HashMap::new(),
            events,
            tls_client,
            settings,
            counters: Arc::default(),
        }
    }

    /// Connections open (the `connections` gauge).
    pub fn count(&self) -> usize {
        self.flows.len()
    }

    /// Flows closed for breaking a limit so far.
    pub fn counts(&self) -> StreamCounts {
        self.counters.snapshot()
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

    /// Queues `bytes` on an existing flow; false when that flow is gone. A flow whose queue is
    /// full is closed (its task reports `Closed`, so what was in flight on it fails over and
    /// its bindings register again): its peer has stopped reading, and dropping one message
    /// from the middle of a stream would leave a request to time out with nothing to show.
    pub fn send_on(&mut self, flow: FlowId, bytes: Arc<[u8]>) -> bool {
        let Some(f) = self.flows.get(&flow) else {
            return false;
        };
        match f.writer.try_send(bytes) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                StreamCounters::count(&self.counters.write_queue_overflows);
                if f.key.is_some() {
                    warn!(flow, peer = %f.peer, "connection not draining its writes; closing it");
                } else {
                    debug!(flow, peer = %f.peer, "peer not reading its answers; closing");
                }
                self.close(flow);
                false
            }
        }
    }

    /// Closes a flow at once (e.g. after a missed keep-alive); its task reports `Closed`.
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

    /// Registers a flow and returns the task half of it.
    fn register(
        &mut self,
        key: Option<FlowKey>,
        peer: SocketAddr,
        transport: Transport,
        idle_timeout: Option<Duration>,
        permit: Option<Permit>,
    ) -> FlowTask {
        let id = self.allocate();
        let (writer, writes) = mpsc::channel(self.settings.write_queue.max(1));
        let (stop_tx, stop) = oneshot::channel();
        self.flows.insert(
            id,
            Flow {
                key,
                peer,
                transport,
                writer,
                _stop: stop_tx,
            },
        );
        FlowTask {
            flow: id,
            peer,
            writes,
            stop,
            events: self.events.clone(),
            idle_timeout,
            write_timeout: idle_timeout.map_or(WRITE_TIMEOUT, |idle| idle.min(WRITE_TIMEOUT)),
            counters: self.counters.clone(),
            _permit: permit,
        }
    }

    fn open(&mut self, key: FlowKey) -> FlowId {
        let mut task = self.register(Some(key.clone()), key.peer, key.transport, None, None);
        let id = task.flow;
        self.outbound.insert(key.clone(), id);
        let tls = self.tls_client.clone();
        tokio::spawn(async move {
            let connected = tokio::select! {
                biased;
                // Closed by the driver while still connecting: no need to finish.
                _ = &mut task.stop => Err(FlowClosed::ByUs),
                connected = connect(&key, tls) => connected.map_err(FlowClosed::Connect),
            };
            match connected {
                Ok(Connected::Plain(stream)) => task.run(stream).await,
                Ok(Connected::Tls(stream)) => task.run(*stream).await,
                Err(why) => {
                    let _ = task
                        .events
                        .send(StreamEvent::Closed { flow: id, why })
                        .await;
                }
            }
        });
        id
    }

    /// Takes over a connection a peer opened to us (TCP, or TLS already handshaken by the
    /// listener), with its place under the connection limits. Inbound flows are not reused for
    /// our own REGISTERs, and are closed when idle.
    pub fn adopt<S>(
        &mut self,
        stream: S,
        peer: SocketAddr,
        transport: Transport,
        permit: Permit,
    ) -> FlowId
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let idle = Some(self.settings.idle_timeout);
        let task = self.register(None, peer, transport, idle, Some(permit));
        let id = task.flow;
        tokio::spawn(task.run(stream));
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
) -> Result<Connected, ConnectError> {
    let attempt = async {
        let socket = if key.peer.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(ConnectError::Socket)?;
        if let Some(ip) = key.local_ip {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|source| ConnectError::Bind { ip, source })?;
        }
        let peer = key.peer;
        let tcp = socket.connect(peer).await.map_err(|source| {
            if source.kind() == io::ErrorKind::ConnectionRefused {
                ConnectError::Refused { peer, source }
            } else {
                ConnectError::Connect { peer, source }
            }
        })?;
        let _ = tcp.set_nodelay(true);
        if key.transport != Transport::Tls {
            return Ok(Connected::Plain(tcp));
        }
        let config = tls.ok_or(ConnectError::TlsUnavailable)?;
        let name = ServerName::try_from(key.server_name.clone()).map_err(|_| {
            ConnectError::BadServerName {
                name: key.server_name.clone(),
            }
        })?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|source| ConnectError::Handshake { peer, source })?;
        Ok(Connected::Tls(Box::new(stream)))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout { peer: key.peer }),
    }
}

/// The task half of a flow: owns the socket until either side ends it.
struct FlowTask {
    flow: FlowId,
    peer: SocketAddr,
    writes: mpsc::Receiver<Arc<[u8]>>,
    stop: oneshot::Receiver<()>,
    events: mpsc::Sender<StreamEvent>,
    /// Accepted flows only.
    idle_timeout: Option<Duration>,
    /// How long one write may take: [`WRITE_TIMEOUT`], or the idle timeout if shorter (a peer
    /// that neither reads nor sends is idle).
    write_timeout: Duration,
    counters: Arc<StreamCounters>,
    /// An accepted flow's place under the connection limits, given back when the task ends.
    _permit: Option<Permit>,
}

impl FlowTask {
    /// Reads, frames and writes until the peer or the driver ends the flow, a limit is broken,
    /// or (accepted flows) nothing useful passed for the idle timeout; then reports `Closed`.
    async fn run<S>(mut self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (flow, peer) = (self.flow, self.peer);
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut input = StreamBuffer::new();
        // Activity is a whole message or a ping received, or a message of ours sent (an answer
        // relayed back while a call rings). Bytes alone are not, or one byte a minute would
        // hold a connection forever.
        let mut idle_at = self.idle_timeout.map(|idle| Instant::now() + idle);
        let why = loop {
            tokio::select! {
                biased;
                _ = &mut self.stop => break FlowClosed::ByUs,
                queued = self.writes.recv() => {
                    let Some(bytes) = queued else {
                        let _ = writer.shutdown().await;
                        break FlowClosed::ByUs;
                    };
                    if let Err(why) = self.write(&mut writer, &bytes).await {
                        break why;
                    }
                    idle_at = self.idle_timeout.map(|idle| Instant::now() + idle);
                }
                read = reader.read(input.read_space()) => {
                    match read {
                        Ok(0) => break FlowClosed::ByPeer,
                        Ok(n) => input.filled(n),
                        Err(err) => break FlowClosed::Read(err),
                    }
                    let pings = match self.deliver(&mut input).await {
                        Ok(Delivered { messages, pings }) => {
                            if messages + pings > 0 {
                                idle_at = self.idle_timeout.map(|idle| Instant::now() + idle);
                            }
                            pings
                        }
                        Err(why) => break why,
                    };
                    if pings > 0 {
                        // RFC 5626 §4.4.1: answer each ping with a pong.
                        let pongs = b"\r\n".repeat(pings);
                        if let Err(why) = self.write(&mut writer, &pongs).await {
                            break why;
                        }
                    }
                }
                _ = sleep_until_opt(idle_at) => {
                    StreamCounters::count(&self.counters.idle_closed);
                    let idle = self.idle_timeout.unwrap_or_default();
                    break FlowClosed::Idle { idle };
                }
            }
        };
        debug!(flow, %peer, "flow ended: {why}");
        let _ = self.events.send(StreamEvent::Closed { flow, why }).await;
    }

    /// Writes within the write timeout; a close by the driver ends the wait.
    async fn write<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        bytes: &[u8],
    ) -> Result<(), FlowClosed> {
        let limit = self.write_timeout;
        tokio::select! {
            biased;
            _ = &mut self.stop => Err(FlowClosed::ByUs),
            written = tokio::time::timeout(limit, writer.write_all(bytes)) => match written {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(FlowClosed::Write(err)),
                Err(_) => {
                    StreamCounters::count(&self.counters.write_timeouts);
                    Err(FlowClosed::WriteStalled { limit })
                }
            },
        }
    }

    /// Hands every complete message in `input` to the driver (waiting while its queue is
    /// full), or says why the stream has to be closed.
    async fn deliver(&self, input: &mut StreamBuffer) -> Result<Delivered, FlowClosed> {
        let mut delivered = Delivered::default();
        loop {
            match input.take_frame() {
                Ok(Some(Framed::Message(bytes))) => {
                    delivered.messages += 1;
                    let event = StreamEvent::Message {
                        flow: self.flow,
                        peer: self.peer,
                        bytes,
                    };
                    if self.events.send(event).await.is_err() {
                        return Err(FlowClosed::DriverStopped);
                    }
                }
                Ok(Some(Framed::KeepAlive { pings: 0 })) => {
                    let _ = self
                        .events
                        .send(StreamEvent::KeepAlive { flow: self.flow })
                        .await;
                }
                Ok(Some(Framed::KeepAlive { pings })) => delivered.pings += pings,
                Ok(None) => return Ok(delivered),
                Err(err) => {
                    StreamCounters::count(&self.counters.unframeable);
                    return Err(FlowClosed::Unframeable(err));
                }
            }
        }
    }
}

/// What one read brought.
#[derive(Default)]
struct Delivered {
    messages: usize,
    pings: usize,
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::admission::Admission;

    fn streams(idle: Duration, write_queue: usize) -> (Streams, mpsc::Receiver<StreamEvent>) {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let settings = FlowSettings {
            idle_timeout: idle,
            write_queue,
        };
        (Streams::new(tx, None, settings), rx)
    }

    fn peer() -> SocketAddr {
        "192.0.2.1:5060".parse().unwrap()
    }

    /// The next `Closed` event's reason (within 5 s), and the messages that came before it.
    async fn closed(events: &mut mpsc::Receiver<StreamEvent>) -> (FlowClosed, Vec<Vec<u8>>) {
        let mut messages = Vec::new();
        let wait = async {
            while let Some(event) = events.recv().await {
                match event {
                    StreamEvent::Closed { why, .. } => return why,
                    StreamEvent::Message { bytes, .. } => messages.push(bytes),
                    StreamEvent::KeepAlive { .. } => {}
                }
            }
            panic!("the event channel ended before a Closed event");
        };
        let why = tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("no Closed event within 5 s");
        (why, messages)
    }

    async fn places_given_back(admission: &Admission) -> bool {
        for _ in 0..100 {
            if admission.counts().open == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn an_accepted_flow_that_only_dribbles_is_closed_when_idle() {
        let admission = Admission::new(10, 10);
        let idle = Duration::from_millis(300);
        let (mut streams, mut events) = streams(idle, 16);
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let permit = admission.admit(peer().ip()).unwrap();
        streams.adopt(ours, peer(), Transport::Tcp, permit);
        assert_eq!(admission.counts().open, 1);
        let start = Instant::now();
        let dribble = tokio::spawn(async move {
            // A byte every 50 ms: bytes keep coming, a message never does.
            for byte in b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n" {
                if theirs.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let (why, messages) = closed(&mut events).await;
        assert!(matches!(why, FlowClosed::Idle { .. }), "{why}");
        assert!(
            why.to_string().contains("no message or keep-alive"),
            "{why}"
        );
        assert!(messages.is_empty());
        let after = start.elapsed();
        assert!(after >= idle && after < idle * 4, "{after:?}");
        assert_eq!(streams.counts().idle_closed, 1);
        assert!(places_given_back(&admission).await);
        dribble.abort();
    }

    #[tokio::test]
    async fn messages_and_pings_keep_an_accepted_flow_open() {
        let admission = Admission::new(10, 10);
        let idle = Duration::from_millis(300);
        let (mut streams, mut events) = streams(idle, 16);
        let (ours, mut theirs) = tokio::io::duplex(4096);
        streams.adopt(
            ours,
            peer(),
            Transport::Tcp,
            admission.admit(peer().ip()).unwrap(),
        );
        let message = b"OPTIONS sip:x SIP/2.0\r\nl: 0\r\n\r\n";
        let mut pongs = Vec::new();
        for round in 0..10 {
            // Over a second: three idle timeouts, each bridged by a ping or a message.
            if round % 2 == 0 {
                theirs.write_all(b"\r\n\r\n").await.unwrap();
                let mut pong = [0u8; 2];
                theirs.read_exact(&mut pong).await.unwrap();
                pongs.push(pong);
            } else {
                theirs.write_all(message).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(pongs.iter().all(|p| p == b"\r\n"));
        let mut delivered = 0;
        while let Ok(event) = events.try_recv() {
            match event {
                StreamEvent::Message { bytes, .. } => {
                    assert_eq!(bytes, message);
                    delivered += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delivered, 5);
        assert_eq!(streams.counts(), StreamCounts::default());
        // Then silence: closed.
        let (why, _) = closed(&mut events).await;
        assert!(matches!(why, FlowClosed::Idle { .. }), "{why}");
        assert!(
            why.to_string().contains("no message or keep-alive"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn what_we_send_on_an_accepted_flow_keeps_it_open() {
        // A call ringing: the peer sent its INVITE long ago, answers keep going back.
        let admission = Admission::new(10, 10);
        let idle = Duration::from_millis(300);
        let (mut streams, mut events) = streams(idle, 16);
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let flow = streams.adopt(
            ours,
            peer(),
            Transport::Tcp,
            admission.admit(peer().ip()).unwrap(),
        );
        let answer = b"SIP/2.0 180 Ringing\r\nContent-Length: 0\r\n\r\n";
        for _ in 0..10 {
            assert!(streams.send_on(flow, Arc::from(&answer[..])));
            let mut got = vec![0u8; answer.len()];
            theirs.read_exact(&mut got).await.unwrap();
            assert_eq!(got, answer);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(events.try_recv().is_err(), "closed while answers went out");
        let (why, _) = closed(&mut events).await;
        assert!(why.to_string().starts_with("idle"), "{why}");
    }

    #[tokio::test]
    async fn an_unframeable_stream_is_closed_and_counted() {
        let admission = Admission::new(10, 10);
        let (mut streams, mut events) = streams(Duration::from_secs(60), 16);
        let (ours, mut theirs) = tokio::io::duplex(4096);
        streams.adopt(
            ours,
            peer(),
            Transport::Tcp,
            admission.admit(peer().ip()).unwrap(),
        );
        let good = b"SIP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        theirs.write_all(good).await.unwrap();
        theirs
            .write_all(b"SIP/2.0 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\nSIP/2.0")
            .await
            .unwrap();
        let (why, messages) = closed(&mut events).await;
        assert!(matches!(why, FlowClosed::Unframeable(_)), "{why}");
        assert!(why.to_string().contains("unframeable"), "{why}");
        assert_eq!(messages, vec![good.to_vec()]);
        assert_eq!(streams.counts().unframeable, 1);
        assert!(places_given_back(&admission).await);
    }

    #[tokio::test]
    async fn a_flow_whose_peer_stops_reading_is_closed_when_its_queue_fills() {
        let admission = Admission::new(10, 10);
        let (mut streams, mut events) = streams(Duration::from_secs(60), 4);
        // The peer never reads: the first write blocks once 64 bytes are in the pipe.
        let (ours, _theirs) = tokio::io::duplex(64);
        let flow = streams.adopt(
            ours,
            peer(),
            Transport::Tcp,
            admission.admit(peer().ip()).unwrap(),
        );
        let answer: Arc<[u8]> = Arc::from(vec![b'x'; 200]);
        let mut queued = 0;
        while streams.send_on(flow, answer.clone()) {
            queued += 1;
            assert!(queued <= 6, "the queue never filled");
            // Let the flow task take the first one and block on it.
            tokio::task::yield_now().await;
        }
        assert!(queued >= 4);
        assert_eq!(streams.counts().write_queue_overflows, 1);
        assert!(streams.peer(flow).is_none(), "the flow is closed");
        // The task stops at once, blocked write or not.
        let (why, _) = closed(&mut events).await;
        assert!(matches!(why, FlowClosed::ByUs), "{why:?}");
        assert_eq!(why.to_string(), "closed by us");
        assert!(places_given_back(&admission).await);
    }

    #[tokio::test]
    async fn a_write_that_cannot_finish_closes_the_flow() {
        let admission = Admission::new(10, 10);
        // An accepted flow's writes get at most its idle timeout.
        let idle = Duration::from_millis(300);
        let (mut streams, mut events) = streams(idle, 16);
        let (ours, _theirs) = tokio::io::duplex(64);
        let flow = streams.adopt(
            ours,
            peer(),
            Transport::Tcp,
            admission.admit(peer().ip()).unwrap(),
        );
        let start = Instant::now();
        assert!(streams.send_on(flow, Arc::from(vec![b'x'; 1000])));
        let (why, _) = closed(&mut events).await;
        assert!(matches!(why, FlowClosed::WriteStalled { .. }), "{why}");
        assert!(why.to_string().contains("write stalled"), "{why}");
        assert!(start.elapsed() >= idle);
        assert_eq!(streams.counts().write_timeouts, 1);
    }

    #[tokio::test]
    async fn flows_we_open_are_not_closed_for_idling() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let registrar = listener.local_addr().unwrap();
        let (mut streams, mut events) = streams(Duration::from_millis(100), 16);
        let key = FlowKey {
            transport: Transport::Tcp,
            peer: registrar,
            local_ip: None,
            server_name: String::new(),
        };
        let flow = streams.send(&key, Arc::from(&b"REGISTER"[..]));
        let (mut accepted, _) = listener.accept().await.unwrap();
        let mut got = [0u8; 8];
        accepted.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"REGISTER");
        // Ten idle timeouts of silence: still open.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(events.try_recv().is_err());
        assert_eq!(streams.existing(&key), Some(flow));
        assert!(streams.send_on(flow, Arc::from(&b"again"[..])));
        let mut got = [0u8; 5];
        accepted.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"again");
    }

    #[tokio::test]
    async fn a_refused_connection_and_missing_tls_are_told_apart() {
        // A port that was just free: nothing listens, the kernel answers with a reset.
        let vacant = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let registrar = vacant.local_addr().unwrap();
        drop(vacant);
        let (mut streams, mut events) = streams(Duration::from_secs(60), 16);
        let key = FlowKey {
            transport: Transport::Tcp,
            peer: registrar,
            local_ip: None,
            server_name: String::new(),
        };
        streams.send(&key, Arc::from(&b"REGISTER"[..]));
        let (why, _) = closed(&mut events).await;
        assert!(
            matches!(why, FlowClosed::Connect(ConnectError::Refused { peer, .. }) if peer == registrar),
            "{why:?}"
        );
        assert!(
            why.to_string()
                .starts_with(&format!("connect to {registrar} failed"))
        );

        // TLS without a client configuration fails before any handshake.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let key = FlowKey {
            transport: Transport::Tls,
            peer: listener.local_addr().unwrap(),
            local_ip: None,
            server_name: "registrar.test".into(),
        };
        streams.send(&key, Arc::from(&b"REGISTER"[..]));
        let (why, _) = closed(&mut events).await;
        assert!(
            matches!(why, FlowClosed::Connect(ConnectError::TlsUnavailable)),
            "{why:?}"
        );
    }
}
