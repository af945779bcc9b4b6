//! A real SIP registrar on UDP for tests, the demo and benchmarks.
//!
//! It challenges every REGISTER without valid credentials, checks digest answers against its
//! user list (with nonce lifetime and nonce-count replay checks), keeps bindings per RFC 3261
//! §10.3 and answers 200 OK listing every binding of the address of record in one Contact line,
//! as production registrars do. It records every REGISTER it saw so tests can assert on the
//! wire behaviour, and can be told to misbehave ([`Behavior`]). Per address of record it keeps
//! a journal of binding changes, the overlaps of two clients and the gaps without a binding
//! (`journal.rs`).

mod journal;

pub use journal::{Binding, Change, Gap, JournalEntry, Origin, Overlap};

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{oneshot, watch};

use crate::sip::digest::{Algorithm, Authorization, SecretInput};
use crate::sip::framing::{Frame, next_frame};
use crate::sip::message::Request;

use journal::{AddressOfRecord, Liveness};

/// How the registrar answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Challenge, verify, store, answer 200.
    Normal,
    /// Drop every request (a dead registrar).
    Silent,
    /// Answer every REGISTER with this final response (e.g. 403, or 503 with Retry-After).
    Reject {
        code: u16,
        reason: String,
        retry_after: Option<u32>,
    },
    /// Answer 423 with this Min-Expires to authorized REGISTERs asking for less.
    IntervalTooBrief { min_expires: u32 },
    /// Challenge with this realm instead of the configured one (and never accept).
    WrongRealm(String),
    /// Answer each user's first correctly authorized REGISTER with 401 stale=true.
    StaleNonce,
}

#[derive(Clone, Debug)]
pub struct RegistrarConfig {
    /// Address to bind; `127.0.0.1:0` picks a free port.
    pub bind: SocketAddr,
    pub realm: String,
    /// username → password.
    pub users: HashMap<String, String>,
    /// Offer `qop="auth"`.
    pub qop: bool,
    pub algorithm: Algorithm,
    /// Cap on granted expiry.
    pub max_expires: Option<u32>,
    /// How long an issued nonce is accepted.
    pub nonce_lifetime: Duration,
    /// Also accept TCP connections on the UDP port.
    pub tcp: bool,
    /// Also accept TLS connections, on a port of their own, with this certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Keep every request for [`TestRegistrar::requests_for`]. The load tool's fast mode turns
    /// this off: at 100,000 rows the history is the registrar's largest cost in memory.
    pub keep_history: bool,
    /// An authenticating proxy in front, challenging with this realm: a REGISTER needs a valid
    /// `Proxy-Authorization` (407 otherwise) before the registrar's own 401 challenge.
    pub proxy_realm: Option<String>,
    /// The 200 states this expiry for every binding, whatever was stored (a registrar that
    /// overstates its grant, e.g. `u32::MAX`).
    pub stated_expires: Option<u32>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            realm: "registrar.test".into(),
            users: HashMap::new(),
            qop: true,
            algorithm: Algorithm::Md5,
            max_expires: None,
            nonce_lifetime: Duration::from_secs(300),
            tcp: false,
            tls: None,
            keep_history: true,
            proxy_realm: None,
            stated_expires: None,
        }
    }
}

/// One REGISTER as received.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub at: Instant,
    /// The `branch` of the top Via (what a response must echo, with Call-ID and CSeq).
    pub branch: Option<String>,
    pub call_id: String,
    pub cseq: u32,
    pub expires: Option<u32>,
    pub contact: Option<String>,
    pub had_authorization: bool,
    /// Whether the credentials verified (None without credentials).
    pub authorization_valid: Option<bool>,
    pub code: u16,
    /// `UDP`, `TCP` or `TLS`: how the request arrived.
    pub transport: &'static str,
    /// The UDP source address, or the TCP/TLS peer.
    pub source: SocketAddr,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RegistrarStats {
    pub requests: u64,
    pub challenges: u64,
    /// Requests whose credentials verified.
    pub authorized: u64,
    /// Requests with credentials that did not verify.
    pub rejected: u64,
    /// 200 OK answers.
    pub ok: u64,
    pub removals: u64,
    pub malformed: u64,
    /// TCP and TLS connections accepted.
    pub connections: u64,
    /// OPTIONS requests (keep-alives) received.
    pub options: u64,
    /// Refreshes that came too late: a REGISTER of a Call-ID whose binding had already expired
    /// (the registrar would have routed no calls to it in between).
    pub lapsed: u64,
    /// Accepted REGISTERs asking to remove bindings (`Expires: 0`, a contact's `expires=0`,
    /// `Contact: *`).
    pub unregisters: u64,
}

struct NonceState {
    issued: Instant,
    last_nc: u32,
}

struct State {
    behavior: Behavior,
    bindings: HashMap<String, AddressOfRecord>,
    /// Every overlap so far, oldest first.
    overlaps: Vec<Overlap>,
    /// Gaps that have ended, in the order they ended.
    closed_gaps: Vec<Gap>,
    seen: HashMap<String, Vec<SeenRequest>>,
    nonces: HashMap<String, NonceState>,
    /// When expired nonces were last removed.
    nonces_swept: Instant,
    stale_sent: HashSet<String>,
    stats: RegistrarStats,
    rng: StdRng,
}

pub struct TestRegistrar {
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// Listener tasks for TCP and TLS.
    stream_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Bumped to make every open connection close.
    disconnect: Arc<watch::Sender<u64>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock only happens in a failing test; keep going with the data.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TestRegistrar {
    pub async fn start(config: RegistrarConfig) -> std::io::Result<TestRegistrar> {
        // With port 0 the UDP port's TCP twin may be taken: try other ports.
        let mut attempts = 0;
        let (socket, tcp_listener) = loop {
            attempts += 1;
            let socket = UdpSocket::bind(config.bind).await?;
            // A registrar with the kernel's default receive buffer (about 90 small datagrams)
            // drops REGISTERs whenever its task is descheduled for a few milliseconds at
            // load-test rates; the gateway then retransmits, and the retransmissions measure
            // the registrar's buffer, not the gateway. Best effort, capped by rmem_max.
            let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(8 * 1024 * 1024);
            if !config.tcp {
                break (socket, None);
            }
            match TcpListener::bind(socket.local_addr()?).await {
                Ok(listener) => break (socket, Some(listener)),
                Err(err) if config.bind.port() == 0 && attempts < 20 => {
                    let _ = err;
                }
                Err(err) => return Err(err),
            }
        };
        let local_addr = socket.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            behavior: Behavior::Normal,
            // Room for every user's binding and nonce from the start: a map that doubles while
            // a load test runs stops the registrar for as long as it takes to move every entry
            // (350 ms for the nonces of half a million users, and both sockets' registrars
            // doubled at about the same moment), and the gateway's requests of that moment are
            // answered late and sent again, which measures this registrar, not the gateway.
            bindings: HashMap::with_capacity(config.users.len()),
            overlaps: Vec::new(),
            closed_gaps: Vec::new(),
            seen: HashMap::new(),
            nonces: HashMap::with_capacity(config.users.len()),
            nonces_swept: Instant::now(),
            stale_sent: HashSet::new(),
            stats: RegistrarStats::default(),
            rng: StdRng::from_os_rng(),
        }));
        let (disconnect, _) = watch::channel(0u64);
        let disconnect = Arc::new(disconnect);
        let mut stream_tasks = Vec::new();
        if let Some(listener) = tcp_listener {
            stream_tasks.push(tokio::spawn(accept_loop(
                listener,
                None,
                config.clone(),
                state.clone(),
                disconnect.clone(),
            )));
        }
        let mut tls_addr = None;
        if let Some(tls) = &config.tls {
            let listener = TcpListener::bind(SocketAddr::new(local_addr.ip(), 0)).await?;
            tls_addr = Some(listener.local_addr()?);
            stream_tasks.push(tokio::spawn(accept_loop(
                listener,
                Some(tokio_rustls::TlsAcceptor::from(tls.clone())),
                config.clone(),
                state.clone(),
                disconnect.clone(),
            )));
        }
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let task_state = state.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            loop {
                tokio::select! {
                    _ = &mut stop_rx => return,
                    received = socket.recv_from(&mut buf) => {
                        let Ok((len, from)) = received else { continue };
                        let answer = handle(&config, &task_state, &buf[..len], "UDP", from);
                        if let Some(answer) = answer {
                            let _ = socket.send_to(answer.as_bytes(), from).await;
                        }
                    }
                }
            }
        });
        Ok(TestRegistrar {
            local_addr,
            tls_addr,
            state,
            stop: Some(stop_tx),
            task,
            stream_tasks,
            disconnect,
        })
    }

    /// Where the TLS listener is (when configured with a certificate).
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Closes every open TCP and TLS connection (the listeners stay open), as a registrar
    /// restart or a NAT timeout would.
    pub fn drop_connections(&self) {
        self.disconnect.send_modify(|epoch| *epoch += 1);
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Current (unexpired) bindings of `sip:user@…`.
    pub fn bindings(&self, user: &str) -> Vec<Binding> {
        let now = Instant::now();
        lock(&self.state)
            .bindings
            .get(user)
            .map(|aor| aor.live_bindings(now).cloned().collect())
            .unwrap_or_default()
    }

    /// Unexpired bindings of every user.
    pub fn binding_count(&self) -> usize {
        let now = Instant::now();
        lock(&self.state)
            .bindings
            .values()
            .map(|aor| aor.live_bindings(now).count())
            .sum()
    }

    /// How many users hold at least one unexpired binding.
    pub fn bound_users(&self) -> usize {
        let now = Instant::now();
        lock(&self.state)
            .bindings
            .values()
            .filter(|aor| aor.liveness(now) == Liveness::Live)
            .count()
    }

    /// Every time a REGISTER bound a contact of a user while a binding of another Call-ID was
    /// live: one entry per such live binding, oldest first. Recorded in every mode.
    pub fn overlaps(&self) -> Vec<Overlap> {
        lock(&self.state).overlaps.clone()
    }

    /// Every interval during which a user that had been registered held no live binding:
    /// those that ended (in the order they ended), then those still open (`end: None`).
    /// Recorded in every mode.
    pub fn gaps(&self) -> Vec<Gap> {
        let now = Instant::now();
        let state = lock(&self.state);
        let mut gaps = state.closed_gaps.clone();
        let mut open: Vec<Gap> = state
            .bindings
            .iter()
            .filter_map(|(user, aor)| match aor.liveness(now) {
                Liveness::DeadSince(start) => Some(Gap {
                    user: user.clone(),
                    start,
                    end: None,
                }),
                Liveness::Live | Liveness::Never => None,
            })
            .collect();
        open.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.user.cmp(&b.user)));
        gaps.extend(open);
        gaps
    }

    /// Every change to the bindings of `user`, oldest first (empty unless `keep_history`).
    /// Expiries that passed since its last REGISTER are included.
    pub fn journal(&self, user: &str) -> Vec<JournalEntry> {
        let now = Instant::now();
        lock(&self.state)
            .bindings
            .get(user)
            .map(|aor| aor.journal_at(now))
            .unwrap_or_default()
    }

    /// Accepted REGISTERs that asked to remove bindings ([`RegistrarStats::unregisters`]).
    pub fn unregisters(&self) -> u64 {
        lock(&self.state).stats.unregisters
    }

    pub fn stats(&self) -> RegistrarStats {
        lock(&self.state).stats
    }

    /// Every REGISTER received for `user`, oldest first.
    pub fn requests_for(&self, user: &str) -> Vec<SeenRequest> {
        lock(&self.state)
            .seen
            .get(user)
            .cloned()
            .unwrap_or_default()
    }

    pub fn set_behavior(&self, behavior: Behavior) {
        lock(&self.state).behavior = behavior;
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for TestRegistrar {
    fn drop(&mut self) {
        self.task.abort();
        for task in &self.stream_tasks {
            task.abort();
        }
        self.drop_connections();
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    config: RegistrarConfig,
    state: Arc<Mutex<State>>,
    disconnect: Arc<watch::Sender<u64>>,
) {
    let transport = if tls.is_some() { "TLS" } else { "TCP" };
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        lock(&state).stats.connections += 1;
        let config = config.clone();
        let state = state.clone();
        let closing = disconnect.subscribe();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        serve_stream(stream, transport, peer, config, state, closing).await;
                    }
                }
                None => serve_stream(tcp, transport, peer, config, state, closing).await,
            }
        });
    }
}

/// Answers the REGISTERs of one connection until it closes or [`TestRegistrar::drop_connections`].
async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    transport: &'static str,
    peer: SocketAddr,
    config: RegistrarConfig,
    state: Arc<Mutex<State>>,
    mut closing: watch::Receiver<u64>,
) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        tokio::select! {
            _ = closing.changed() => return,
            read = stream.read_buf(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
            }
        }
        loop {
            match next_frame(&buf) {
                Frame::Message(len) => {
                    let message: Vec<u8> = buf.drain(..len).collect();
                    if let Some(answer) = handle(&config, &state, &message, transport, peer)
                        && stream.write_all(answer.as_bytes()).await.is_err()
                    {
                        return;
                    }
                }
                Frame::KeepAlive { len, ping } => {
                    buf.drain(..len);
                    if ping && stream.write_all(b"\r\n").await.is_err() {
                        return;
                    }
                }
                Frame::Incomplete => break,
                Frame::Invalid(_) => return,
            }
        }
    }
}

/// Handles one message; returns the response text, if any.
fn handle(
    config: &RegistrarConfig,
    state: &Mutex<State>,
    datagram: &[u8],
    transport: &'static str,
    source: SocketAddr,
) -> Option<String> {
    let mut state = lock(state);
    let request = match Request::parse(datagram) {
        Ok(request) => request,
        Err(_) => {
            state.stats.malformed += 1;
            return None;
        }
    };
    if request.method == "ACK" {
        return None;
    }
    if request.method == "OPTIONS" {
        // Keep-alive probes (and monitoring) get a plain 200.
        state.stats.options += 1;
        if state.behavior == Behavior::Silent {
            return None;
        }
        return Some(response(&request, 200, "OK", ""));
    }
    if request.method != "REGISTER" {
        return Some(response(
            &request,
            405,
            "Method Not Allowed",
            "Allow: REGISTER\r\n",
        ));
    }
    state.stats.requests += 1;
    let user = request.to_uri.user.clone().unwrap_or_default();
    let now = Instant::now();
    let behavior = state.behavior.clone();
    let mut seen = SeenRequest {
        at: now,
        branch: request.vias.first().and_then(|via| via_branch(via)),
        call_id: request.call_id.clone(),
        cseq: request.cseq,
        expires: request.expires,
        contact: request.contacts.first().map(|c| c.uri_text.clone()),
        had_authorization: request.authorization.is_some() || request.proxy_authorization.is_some(),
        authorization_valid: None,
        code: 0,
        transport,
        source,
    };

    let answer = match behavior {
        Behavior::Silent => None,
        Behavior::Reject {
            code,
            ref reason,
            retry_after,
        } => {
            let extra = retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            seen.code = code;
            Some(response(&request, code, reason, &extra))
        }
        Behavior::WrongRealm(ref realm) => {
            seen.code = 401;
            Some(challenge(
                config,
                &mut state,
                &request,
                Challenger::Registrar,
                realm,
                false,
            ))
        }
        _ => Some(authorize_and_register(
            config, &mut state, &request, &user, &behavior, &mut seen, now,
        )),
    };
    if config.keep_history {
        state.seen.entry(user).or_default().push(seen);
    }
    answer
}

/// The `branch` parameter of one Via value.
fn via_branch(via: &str) -> Option<String> {
    via.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("branch")
            .then(|| value.trim().to_string())
    })
}

fn authorize_and_register(
    config: &RegistrarConfig,
    state: &mut State,
    request: &Request,
    user: &str,
    behavior: &Behavior,
    seen: &mut SeenRequest,
    now: Instant,
) -> String {
    if let Some(proxy_realm) = &config.proxy_realm {
        let verdict = request
            .proxy_authorization
            .as_deref()
            .map(|header| check_credentials(config, state, header, proxy_realm, now));
        match verdict {
            Some(Credential::Valid) => {}
            Some(Credential::Stale) => {
                seen.code = 407;
                return challenge(config, state, request, Challenger::Proxy, proxy_realm, true);
            }
            Some(Credential::Invalid) | None => {
                seen.code = 407;
                return challenge(
                    config,
                    state,
                    request,
                    Challenger::Proxy,
                    proxy_realm,
                    false,
                );
            }
        }
    }
    let Some(header) = request.authorization.as_deref() else {
        seen.code = 401;
        return challenge(
            config,
            state,
            request,
            Challenger::Registrar,
            &config.realm,
            false,
        );
    };
    let verdict = check_credentials(config, state, header, &config.realm, now);
    match verdict {
        Credential::Valid => {
            seen.authorization_valid = Some(true);
            state.stats.authorized += 1;
        }
        Credential::Stale => {
            // Correct credentials on an expired or unknown nonce.
            seen.authorization_valid = Some(true);
            seen.code = 401;
            return challenge(
                config,
                state,
                request,
                Challenger::Registrar,
                &config.realm,
                true,
            );
        }
        Credential::Invalid => {
            seen.authorization_valid = Some(false);
            state.stats.rejected += 1;
            seen.code = 401;
            return challenge(
                config,
                state,
                request,
                Challenger::Registrar,
                &config.realm,
                false,
            );
        }
    }
    if *behavior == Behavior::StaleNonce && state.stale_sent.insert(user.to_string()) {
        seen.code = 401;
        return challenge(
            config,
            state,
            request,
            Challenger::Registrar,
            &config.realm,
            true,
        );
    }
    if let Behavior::IntervalTooBrief { min_expires } = *behavior {
        let asked = request
            .contacts
            .first()
            .and_then(|c| c.expires)
            .or(request.expires)
            .unwrap_or(3600);
        if asked != 0 && asked < min_expires {
            seen.code = 423;
            return response(
                request,
                423,
                "Interval Too Brief",
                &format!("Min-Expires: {min_expires}\r\n"),
            );
        }
    }
    update_bindings(config, state, request, user, seen.source, now);
    seen.code = 200;
    state.stats.ok += 1;
    let list: Vec<String> = state
        .bindings
        .get(user)
        .map(|aor| {
            aor.live_bindings(now)
                .map(|b| {
                    let left = b
                        .expires_at
                        .saturating_duration_since(now)
                        .as_secs_f64()
                        .round() as u64;
                    let stated = config.stated_expires.map_or(left, u64::from);
                    format!("<{}>;expires={stated}", b.contact)
                })
                .collect()
        })
        .unwrap_or_default();
    let extra = if list.is_empty() {
        String::new()
    } else {
        format!("Contact: {}\r\n", list.join(", "))
    };
    response(request, 200, "OK", &extra)
}

enum Credential {
    Valid,
    Stale,
    Invalid,
}

fn check_credentials(
    config: &RegistrarConfig,
    state: &mut State,
    header: &str,
    realm: &str,
    now: Instant,
) -> Credential {
    let Ok(auth) = Authorization::parse(header) else {
        return Credential::Invalid;
    };
    let Some(password) = config.users.get(&auth.username) else {
        return Credential::Invalid;
    };
    if auth.realm != realm || !auth.verify(SecretInput::Password(password), "REGISTER", b"") {
        return Credential::Invalid;
    }
    let lifetime = config.nonce_lifetime;
    let Some(nonce) = state.nonces.get_mut(&auth.nonce) else {
        return Credential::Stale;
    };
    if now.duration_since(nonce.issued) > lifetime {
        return Credential::Stale;
    }
    if let Some(nc) = auth.nc {
        // A replayed or reordered nonce count is treated as stale: the client gets a new nonce.
        if nc <= nonce.last_nc {
            return Credential::Stale;
        }
        nonce.last_nc = nc;
    }
    Credential::Valid
}

/// Applies an accepted REGISTER to the user's bindings, journaling each change (with
/// `keep_history`) and recording the overlaps it causes and the gap it closes.
fn update_bindings(
    config: &RegistrarConfig,
    state: &mut State,
    request: &Request,
    user: &str,
    source: SocketAddr,
    now: Instant,
) {
    let keep_history = config.keep_history;
    let State {
        bindings,
        overlaps,
        closed_gaps,
        stats,
        ..
    } = state;
    let aor = bindings.entry(user.to_string()).or_default();
    let before = aor.liveness(now);
    let lapsed = aor
        .bindings
        .iter()
        .any(|b| b.call_id == request.call_id && b.expires_at <= now);
    if lapsed && request.expires != Some(0) {
        stats.lapsed += 1;
    }
    aor.sweep(now, keep_history);
    let origin = || Origin {
        call_id: request.call_id.clone(),
        cseq: request.cseq,
        source,
    };
    let removed = |aor: &mut AddressOfRecord, binding: Binding| {
        if keep_history {
            aor.journal.push(JournalEntry {
                at: now,
                change: Change::Removed { by: origin() },
                binding,
            });
        }
    };
    if request.contact_star {
        if request.expires == Some(0) {
            stats.unregisters += 1;
            for binding in std::mem::take(&mut aor.bindings) {
                removed(aor, binding);
            }
            stats.removals += 1;
        }
    } else {
        let mut asked_removal = false;
        let mut adds = false;
        for contact in &request.contacts {
            let asked = contact.expires.or(request.expires).unwrap_or(3600);
            let expires = config.max_expires.map_or(asked, |max| asked.min(max));
            asked_removal |= asked == 0;
            adds |= asked > 0;
            let same = |b: &Binding| {
                crate::sip::message::UriParts::parse(&b.contact).is_ok_and(|u| {
                    u.user == contact.uri.user
                        && u.host.eq_ignore_ascii_case(&contact.uri.host)
                        && u.port.unwrap_or(5060) == contact.uri.port.unwrap_or(5060)
                })
            };
            let existing = aor.bindings.iter().position(same);
            if expires == 0 {
                if let Some(index) = existing {
                    let binding = aor.bindings.remove(index);
                    removed(aor, binding);
                    stats.removals += 1;
                }
                continue;
            }
            let binding = Binding {
                contact: contact.uri_text.clone(),
                expires_at: now + Duration::from_secs(u64::from(expires)),
                call_id: request.call_id.clone(),
                cseq: request.cseq,
                source,
            };
            let change = match existing {
                Some(index) if aor.bindings[index].call_id == request.call_id => Change::Refreshed,
                Some(index) => {
                    // Another client's binding of the same contact is taken over, not joined.
                    let replaced = aor.bindings.remove(index);
                    removed(aor, replaced);
                    Change::Added
                }
                None => Change::Added,
            };
            if change == Change::Added {
                overlaps.extend(
                    aor.bindings
                        .iter()
                        .filter(|live| live.call_id != request.call_id)
                        .map(|live| Overlap {
                            user: user.to_string(),
                            at: now,
                            arriving: binding.clone(),
                            live: live.clone(),
                        }),
                );
            }
            if keep_history {
                aor.journal.push(JournalEntry {
                    at: now,
                    change: change.clone(),
                    binding: binding.clone(),
                });
            }
            match (change, existing) {
                (Change::Refreshed, Some(index)) => aor.bindings[index] = binding,
                _ => aor.bindings.push(binding),
            }
        }
        // A REGISTER that also binds a contact (a node taking a row over and retiring the
        // previous node's contact) leaves the AoR registered: not an un-REGISTER.
        if asked_removal && !adds {
            stats.unregisters += 1;
        }
    }
    if let Some(gap) = aor.settle(user, before, now) {
        closed_gaps.push(gap);
    }
}

/// Who challenges: the registrar itself (401) or the authenticating proxy in front of it (407).
#[derive(Clone, Copy)]
enum Challenger {
    Registrar,
    Proxy,
}

fn challenge(
    config: &RegistrarConfig,
    state: &mut State,
    request: &Request,
    by: Challenger,
    realm: &str,
    stale: bool,
) -> String {
    let value = new_challenge(config, state, realm, stale);
    let (code, reason, header) = match by {
        Challenger::Registrar => (401, "Unauthorized", "WWW-Authenticate"),
        Challenger::Proxy => (407, "Proxy Authentication Required", "Proxy-Authenticate"),
    };
    response(request, code, reason, &format!("{header}: {value}\r\n"))
}

/// A fresh nonce, remembered, as a challenge header value for `realm`.
fn new_challenge(config: &RegistrarConfig, state: &mut State, realm: &str, stale: bool) -> String {
    state.stats.challenges += 1;
    let nonce = format!(
        "{:016x}{:016x}",
        state.rng.random::<u64>(),
        state.rng.random::<u64>()
    );
    let now = Instant::now();
    // Expired nonces are swept at most once a second: a sweep per challenge made a start-up of
    // 100,000 rows quadratic.
    if now.duration_since(state.nonces_swept) >= Duration::from_secs(1) {
        state
            .nonces
            .retain(|_, n| now.duration_since(n.issued) < config.nonce_lifetime * 2);
        state.nonces_swept = now;
    }
    state.nonces.insert(
        nonce.clone(),
        NonceState {
            issued: now,
            last_nc: 0,
        },
    );
    let mut value = format!("Digest realm=\"{realm}\", nonce=\"{nonce}\"");
    if config.qop {
        value.push_str(", qop=\"auth\"");
    }
    value.push_str(&format!(", algorithm={}", config.algorithm.as_str()));
    if stale {
        value.push_str(", stale=true");
    }
    value
}

fn response(request: &Request, code: u16, reason: &str, extra: &str) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for via in &request.vias {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    out.push_str(&format!("From: {}\r\n", request.from));
    if request.to.contains(";tag=") {
        out.push_str(&format!("To: {}\r\n", request.to));
    } else {
        out.push_str(&format!(
            "To: {};tag=reg{:08x}\r\n",
            request.to, request.cseq
        ));
    }
    out.push_str(&format!("Call-ID: {}\r\n", request.call_id));
    out.push_str(&format!(
        "CSeq: {} {}\r\n",
        request.cseq, request.cseq_method
    ));
    out.push_str(extra);
    out.push_str("Server: uacreg-test-registrar\r\nContent-Length: 0\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::digest::Challenge;
    use crate::sip::message::Response;
    use crate::sip::register::RegisterRequest;

    async fn exchange(
        socket: &UdpSocket,
        to: SocketAddr,
        request: &RegisterRequest,
    ) -> Response<'static> {
        let mut bytes = Vec::new();
        let sent_by = socket.local_addr().unwrap().to_string();
        request.encode(
            &crate::sip::Hop::plain("UDP", &sent_by, "z9hG4bKt"),
            &mut bytes,
        );
        socket.send_to(&bytes, to).await.unwrap();
        let mut buf = vec![0u8; 65_535];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("answer in time")
            .unwrap();
        Response::parse(&buf[..len]).unwrap().into_owned()
    }

    fn register(cseq: u32, expires: u32) -> RegisterRequest {
        RegisterRequest {
            retire_contact: None,
            request_uri: "sip:registrar.test".into(),
            aor: "sip:alice@registrar.test".into(),
            from_tag: "t".into(),
            call_id: "c1".into(),
            cseq,
            contact_uri: "sip:dev1@127.0.0.1:5999".into(),
            expires,
            authorization: Vec::new(),
            user_agent: "".into(),
        }
    }

    fn answer(challenge: &Response, password: &str, request: &mut RegisterRequest) {
        let c = Challenge::parse(&challenge.www_authenticate[0], false).unwrap();
        let a = Authorization::answer(
            &c,
            "alice",
            SecretInput::Password(password),
            "REGISTER",
            "sip:registrar.test",
            b"",
            1,
            "cn",
        )
        .unwrap();
        request.authorization = vec![("Authorization", a.to_header_value())];
    }

    #[tokio::test]
    async fn challenge_answer_bind_and_remove() {
        let registrar = TestRegistrar::start(RegistrarConfig {
            users: HashMap::from([("alice".to_string(), "secret".to_string())]),
            ..RegistrarConfig::default()
        })
        .await
        .unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = registrar.local_addr();

        let first = exchange(&socket, to, &register(1, 600)).await;
        assert_eq!(first.code, 401);
        let mut second = register(2, 600);
        answer(&first, "secret", &mut second);
        let ok = exchange(&socket, to, &second).await;
        assert_eq!(ok.code, 200);
        assert_eq!(ok.contacts.len(), 1);
        assert_eq!(ok.contacts[0].uri.user.as_deref(), Some("dev1"));
        assert_eq!(ok.contacts[0].expires, Some(600));
        assert_eq!(registrar.bindings("alice").len(), 1);

        // Wrong password: challenged again, counted as rejected.
        let mut wrong = register(3, 600);
        answer(&first, "nope", &mut wrong);
        assert_eq!(exchange(&socket, to, &wrong).await.code, 401);
        assert_eq!(registrar.stats().rejected, 1);

        // Remove with Expires: 0 (fresh challenge first).
        let challenge = exchange(&socket, to, &register(4, 0)).await;
        let mut remove = register(5, 0);
        answer(&challenge, "secret", &mut remove);
        assert_eq!(exchange(&socket, to, &remove).await.code, 200);
        assert_eq!(registrar.binding_count(), 0);

        // Garbage is ignored and the registrar keeps answering.
        socket.send_to(b"\x00garbage\xff", to).await.unwrap();
        assert_eq!(exchange(&socket, to, &register(6, 60)).await.code, 401);
        assert_eq!(registrar.stats().malformed, 1);
        let seen = registrar.requests_for("alice");
        assert_eq!(seen.len(), 6);
        assert_eq!(seen[1].authorization_valid, Some(true));
        assert_eq!(seen[2].authorization_valid, Some(false));
        registrar.stop().await;
    }

    /// One client: a socket of its own, a Call-ID and a contact.
    struct Client {
        socket: UdpSocket,
        call_id: &'static str,
        contact: &'static str,
    }

    impl Client {
        async fn new(call_id: &'static str, contact: &'static str) -> Client {
            Client {
                socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
                call_id,
                contact,
            }
        }

        fn source(&self) -> SocketAddr {
            self.socket.local_addr().unwrap()
        }

        /// Registers (challenge, then the answer with CSeq `cseq`); the final answer's code.
        async fn register(&self, to: SocketAddr, cseq: u32, expires: u32) -> u16 {
            let mut request = register(cseq - 1, expires);
            request.call_id = self.call_id.into();
            request.contact_uri = self.contact.into();
            let challenge = exchange(&self.socket, to, &request).await;
            assert_eq!(challenge.code, 401);
            request.cseq = cseq;
            answer(&challenge, "secret", &mut request);
            exchange(&self.socket, to, &request).await.code
        }
    }

    async fn alice_registrar() -> TestRegistrar {
        TestRegistrar::start(RegistrarConfig {
            users: HashMap::from([("alice".to_string(), "secret".to_string())]),
            ..RegistrarConfig::default()
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn two_clients_with_their_own_call_ids_overlap_once() {
        let registrar = alice_registrar().await;
        let to = registrar.local_addr();
        let first = Client::new("call-a", "sip:dev-a@127.0.0.1:5997").await;
        let second = Client::new("call-b", "sip:dev-b@127.0.0.1:5998").await;
        assert_eq!(first.register(to, 2, 600).await, 200);
        assert!(registrar.overlaps().is_empty());
        assert_eq!(second.register(to, 2, 600).await, 200);
        // The first client refreshing alongside is the same overlap, not a new one.
        assert_eq!(first.register(to, 4, 600).await, 200);

        let overlaps = registrar.overlaps();
        assert_eq!(overlaps.len(), 1, "{overlaps:?}");
        let overlap = &overlaps[0];
        assert_eq!(overlap.user, "alice");
        assert_eq!(overlap.arriving.call_id, "call-b");
        assert_eq!(overlap.arriving.source, second.source());
        assert_eq!(overlap.arriving.contact, "sip:dev-b@127.0.0.1:5998");
        assert_eq!(overlap.live.call_id, "call-a");
        assert_eq!(overlap.live.source, first.source());
        assert_eq!(registrar.bindings("alice").len(), 2);
        assert_eq!(registrar.bound_users(), 1);
        assert!(registrar.gaps().is_empty());
        let changes: Vec<(Change, &str)> = registrar
            .journal("alice")
            .iter()
            .map(|e| {
                let who = if e.binding.call_id == "call-a" {
                    "a"
                } else {
                    "b"
                };
                (e.change.clone(), who)
            })
            .collect();
        assert_eq!(
            changes,
            [
                (Change::Added, "a"),
                (Change::Added, "b"),
                (Change::Refreshed, "a")
            ]
        );
        registrar.stop().await;
    }

    #[tokio::test]
    async fn a_client_refreshing_its_own_call_id_never_overlaps() {
        let registrar = alice_registrar().await;
        let to = registrar.local_addr();
        let client = Client::new("call-a", "sip:dev-a@127.0.0.1:5997").await;
        for cseq in [2, 4, 6] {
            assert_eq!(client.register(to, cseq, 600).await, 200);
        }
        assert!(
            registrar.overlaps().is_empty(),
            "{:?}",
            registrar.overlaps()
        );
        let journal = registrar.journal("alice");
        let cseqs: Vec<(Change, u32)> = journal
            .iter()
            .map(|e| (e.change.clone(), e.binding.cseq))
            .collect();
        assert_eq!(
            cseqs,
            [
                (Change::Added, 2),
                (Change::Refreshed, 4),
                (Change::Refreshed, 6)
            ]
        );
        assert!(journal.iter().all(|e| e.binding.source == client.source()));
        assert!(journal.windows(2).all(|w| w[0].at <= w[1].at));

        // Removing it is an unregister, journaled with who asked, and opens a gap.
        assert_eq!(registrar.unregisters(), 0);
        assert_eq!(client.register(to, 8, 0).await, 200);
        assert_eq!(registrar.unregisters(), 1);
        let journal = registrar.journal("alice");
        let last = journal.last().expect("entries");
        let Change::Removed { by } = &last.change else {
            panic!("not a removal: {last:?}");
        };
        assert_eq!((by.call_id.as_str(), by.cseq), ("call-a", 8));
        assert_eq!(by.source, client.source());
        let gaps = registrar.gaps();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!((gaps[0].start, gaps[0].end), (last.at, None));
        registrar.stop().await;
    }

    #[tokio::test]
    async fn an_expiry_then_a_new_registration_is_one_gap_with_both_ends() {
        let registrar = alice_registrar().await;
        let to = registrar.local_addr();
        let client = Client::new("call-a", "sip:dev-a@127.0.0.1:5997").await;
        assert_eq!(client.register(to, 2, 1).await, 200);
        let expiry = registrar.bindings("alice")[0].expires_at;
        assert!(registrar.gaps().is_empty());
        tokio::time::sleep(Duration::from_millis(1200)).await;

        let open = registrar.gaps();
        assert_eq!(open.len(), 1, "{open:?}");
        assert_eq!((open[0].start, open[0].end), (expiry, None));
        let journal = registrar.journal("alice");
        assert_eq!(journal.last().map(|e| &e.change), Some(&Change::Expired));

        assert_eq!(client.register(to, 4, 600).await, 200);
        let gaps = registrar.gaps();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(gaps[0].user, "alice");
        assert_eq!(gaps[0].start, expiry);
        let end = gaps[0].end.expect("the gap ended");
        assert!(end >= expiry + Duration::from_millis(200), "{gaps:?}");
        assert!(registrar.overlaps().is_empty());
        assert_eq!(registrar.stats().lapsed, 1);
        let changes: Vec<Change> = registrar
            .journal("alice")
            .into_iter()
            .map(|e| e.change)
            .collect();
        assert_eq!(changes, [Change::Added, Change::Expired, Change::Added]);
        registrar.stop().await;
    }

    #[tokio::test]
    async fn misbehaviours() {
        let registrar = TestRegistrar::start(RegistrarConfig::default())
            .await
            .unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = registrar.local_addr();
        registrar.set_behavior(Behavior::Reject {
            code: 503,
            reason: "Service Unavailable".into(),
            retry_after: Some(30),
        });
        let r = exchange(&socket, to, &register(1, 60)).await;
        assert_eq!((r.code, r.retry_after), (503, Some(30)));
        registrar.set_behavior(Behavior::WrongRealm("elsewhere".into()));
        let r = exchange(&socket, to, &register(2, 60)).await;
        assert!(r.www_authenticate[0].contains("realm=\"elsewhere\""));
        registrar.stop().await;
    }
}
