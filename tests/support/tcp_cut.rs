//! A TCP forwarding proxy on loopback that a test can cut, as a partition or a firewall change
//! would, between a client (a uacregd node) and its server (the database).
//!
//! Why a proxy rather than stopping the server: a cluster test needs one node to lose the
//! database while the others keep it, and needs the loss to look like the network's fault, not
//! the server's (no shutdown message, no refused port unless asked).
//!
//! Plain threads, not tokio: the tests around it block (processes, `DbServer`), and forwarding
//! must go on whatever runtime the test does or does not run. Each forwarded connection costs
//! two threads, so the number of connections is bounded ([`TcpCut::with_limit`]); one over the
//! bound is reset at once, as a server with a full connection table would.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Connections at once unless told otherwise: well above what one uacregd opens to its
/// database.
pub const DEFAULT_LIMIT: usize = 64;
/// How long a connection to the upstream may take before the client is reset instead.
const CONNECT_LIMIT: Duration = Duration::from_secs(2);
/// How often a forwarding thread looks up from a blocked read (to see a freeze or a cut).
const POLL: Duration = Duration::from_millis(20);

/// How a cut looks to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    /// Open connections are closed; new ones are reset as soon as they are accepted (a
    /// rejecting firewall, a server host that is up without the server).
    Refuse,
    /// Open connections are closed; new ones are accepted and held without a byte forwarded
    /// either way (a partition, as a client that connects during it sees it). They are
    /// forwarded once [`TcpCut::restore`] is called, as a healed network would let them through.
    Blackhole,
    /// Open connections stay open but nothing is forwarded on them, and new ones are held as
    /// with `Blackhole` (a partition, as the connections that were open see it). Everything
    /// resumes on [`TcpCut::restore`].
    Freeze,
}

/// What the proxy did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutStats {
    /// Connections forwarded to the upstream.
    pub forwarded: u64,
    /// New connections reset: in `Refuse` mode, over the limit, or the upstream unreachable.
    pub refused: u64,
    /// New connections accepted and held while cut (`Blackhole`, `Freeze`).
    pub held: u64,
    /// Open connections closed by [`TcpCut::cut`].
    pub closed_by_cut: u64,
    pub bytes_to_upstream: u64,
    pub bytes_to_client: u64,
}

/// Whether connections are forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Open,
    Cut(CutMode),
}

/// One forwarded connection: handles on both sockets, to close them from outside.
struct Link {
    client: TcpStream,
    upstream: TcpStream,
}

impl Link {
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

struct State {
    mode: Mode,
    links: HashMap<u64, Link>,
    /// Accepted while cut, not yet forwarded.
    held: Vec<TcpStream>,
    stats: CutStats,
}

struct Shared {
    upstream: SocketAddr,
    limit: usize,
    state: Mutex<State>,
    next_link: AtomicU64,
    stopping: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A forwarding thread that panicked leaves the data usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn frozen(&self) -> bool {
        self.lock().mode == Mode::Cut(CutMode::Freeze)
    }
}

/// A forwarding proxy on `127.0.0.1:<port>` to one upstream address. Dropping it closes every
/// connection and the listener.
pub struct TcpCut {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl TcpCut {
    /// Listens on a free loopback port and forwards every connection to `upstream`, at most
    /// [`DEFAULT_LIMIT`] at once.
    pub fn start(upstream: SocketAddr) -> io::Result<TcpCut> {
        TcpCut::with_limit(upstream, DEFAULT_LIMIT)
    }

    /// Like [`start`](Self::start), with at most `limit` connections (forwarded and held) at
    /// once.
    pub fn with_limit(upstream: SocketAddr, limit: usize) -> io::Result<TcpCut> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            limit,
            state: Mutex::new(State {
                mode: Mode::Open,
                links: HashMap::new(),
                held: Vec::new(),
                stats: CutStats::default(),
            }),
            next_link: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("tcp-cut-{}", addr.port()))
            .spawn(move || accept_loop(listener, accepting))?;
        Ok(TcpCut {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Cuts the link: in `Refuse` and `Blackhole` mode every open connection is closed at once;
    /// new connections are treated as `mode` says until [`restore`](Self::restore).
    pub fn cut(&self, mode: CutMode) {
        let mut state = self.shared.lock();
        state.mode = Mode::Cut(mode);
        if mode != CutMode::Freeze {
            let closed = state.links.len() as u64;
            for (_, link) in state.links.drain() {
                link.close();
            }
            state.stats.closed_by_cut += closed;
        }
        if mode == CutMode::Refuse {
            for held in state.held.drain(..) {
                reset(held);
            }
        }
    }

    /// Forwards again: frozen connections resume, held ones are connected to the upstream.
    pub fn restore(&self) {
        let held = {
            let mut state = self.shared.lock();
            state.mode = Mode::Open;
            std::mem::take(&mut state.held)
        };
        for client in held {
            forward(&self.shared, client);
        }
    }

    /// Whether the link is cut, and how.
    pub fn cut_mode(&self) -> Option<CutMode> {
        match self.shared.lock().mode {
            Mode::Open => None,
            Mode::Cut(mode) => Some(mode),
        }
    }

    /// Connections being forwarded (or frozen) now.
    pub fn open_connections(&self) -> usize {
        self.shared.lock().links.len()
    }

    /// Connections accepted while cut and not forwarded yet.
    pub fn held_connections(&self) -> usize {
        self.shared.lock().held.len()
    }

    pub fn stats(&self) -> CutStats {
        self.shared.lock().stats
    }
}

impl Drop for TcpCut {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        {
            let mut state = self.shared.lock();
            for (_, link) in state.links.drain() {
                link.close();
            }
            for held in state.held.drain(..) {
                reset(held);
            }
        }
        // Wakes the acceptor from its blocking accept; it sees `stopping` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        match incoming {
            Ok(client) => admit(&shared, client),
            // Out of file descriptors and the like: do not spin.
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Decides what happens to a connection just accepted.
fn admit(shared: &Arc<Shared>, client: TcpStream) {
    {
        let mut state = shared.lock();
        if state.links.len() + state.held.len() >= shared.limit {
            state.stats.refused += 1;
            reset(client);
            return;
        }
        match state.mode {
            Mode::Open => {}
            Mode::Cut(CutMode::Refuse) => {
                state.stats.refused += 1;
                reset(client);
                return;
            }
            Mode::Cut(CutMode::Blackhole | CutMode::Freeze) => {
                state.stats.held += 1;
                state.held.push(client);
                return;
            }
        }
    }
    forward(shared, client);
}

/// Connects `client` to the upstream and starts forwarding both ways (or resets the client if
/// the upstream cannot be reached, or holds it if the link was cut meanwhile).
fn forward(shared: &Arc<Shared>, client: TcpStream) {
    let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, CONNECT_LIMIT) else {
        shared.lock().stats.refused += 1;
        reset(client);
        return;
    };
    let handles = client
        .try_clone()
        .and_then(|c| Ok((c, upstream.try_clone()?)));
    let Ok((client_handle, upstream_handle)) = handles else {
        shared.lock().stats.refused += 1;
        reset(client);
        return;
    };
    let id = shared.next_link.fetch_add(1, Ordering::Relaxed);
    {
        let mut state = shared.lock();
        match state.mode {
            Mode::Open => {}
            Mode::Cut(_) => {
                // Cut while connecting: as if it had arrived a moment later.
                drop(state);
                let _ = upstream.shutdown(Shutdown::Both);
                admit(shared, client);
                return;
            }
        }
        state.stats.forwarded += 1;
        state.links.insert(
            id,
            Link {
                client: client_handle,
                upstream: upstream_handle,
            },
        );
    }
    let (Ok(client_reader), Ok(upstream_reader)) = (client.try_clone(), upstream.try_clone())
    else {
        end_link(shared, id);
        return;
    };
    for (from, to, toward_upstream) in [
        (client_reader, upstream, true),
        (upstream_reader, client, false),
    ] {
        let pumping = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("tcp-cut-link-{id}"))
            .spawn(move || pump(&pumping, id, from, to, toward_upstream));
        if spawned.is_err() {
            end_link(shared, id);
            return;
        }
    }
}

/// Copies one direction of link `id` until either side closes or the link is cut; while the
/// link is frozen it reads nothing, so the sender's buffers fill as they would in a partition.
fn pump(shared: &Shared, id: u64, mut from: TcpStream, mut to: TcpStream, toward_upstream: bool) {
    let mut buf = vec![0u8; 16 * 1024];
    if from.set_read_timeout(Some(POLL)).is_err() {
        end_link(shared, id);
        return;
    }
    loop {
        if shared.stopping.load(Ordering::SeqCst) || !shared.lock().links.contains_key(&id) {
            break;
        }
        if shared.frozen() {
            std::thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Frozen while this read was under way: the bytes wait, as if still in flight.
                while shared.frozen() && shared.lock().links.contains_key(&id) {
                    std::thread::sleep(POLL);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                let mut state = shared.lock();
                if toward_upstream {
                    state.stats.bytes_to_upstream += n as u64;
                } else {
                    state.stats.bytes_to_client += n as u64;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    end_link(shared, id);
}

/// Forgets link `id` and closes both of its sockets (both forwarding threads then end).
fn end_link(shared: &Shared, id: u64) {
    if let Some(link) = shared.lock().links.remove(&id) {
        link.close();
    }
}

/// Closes `stream` with a reset (SO_LINGER 0) rather than an orderly FIN, so the client sees
/// "connection reset" at once, as from a refused or rejected connection.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}
