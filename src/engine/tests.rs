//! The engine on simulated time, without sockets: a scripted registrar answers its transmits,
//! the clock jumps from one `poll_timeout` to the next, and the tests read what came out —
//! the requests on the wire, where they went, the registrations' states and the counters.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::registration::{
    Attribute, Continuation, RecordFields, RegKey, Secret, Status, Transport,
};
use crate::sip::message::Request;
use crate::transport::resolve::{ResolveError, Target};

const MAIN: &str = "127.0.0.1:5070";
const BACKUP: &str = "127.0.0.2:5070";

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("a test address")
}

/// Row `i`, registering at `destination`.
fn record(i: usize, destination: Destination) -> Record {
    let user = format!("user{i:06}");
    RecordFields {
        id: i as i64 + 1,
        l_uuid: format!("uuid{i:06}"),
        l_username: format!("local{i:06}"),
        l_domain: "gw.test".into(),
        r_username: user.clone(),
        r_domain: "registrar.test".into(),
        realm: "registrar.test".into(),
        auth_username: user.clone(),
        auth_password: Secret::new(format!("pw-{user}")),
        auth_ha1: Secret::default(),
        auth_proxy: String::new(),
        expires: 3600,
        flags: 0,
        reg_delay: 0,
        contact_addr: "127.0.0.1:5080".into(),
        socket: String::new(),
        contact_user: String::new(),
        destination,
        contact_host_port: "127.0.0.1:5080".into(),
    }
    .try_into()
    .expect("a valid test row")
}

fn literal(target: &str, transport: Transport) -> Destination {
    let target = addr(target);
    Destination {
        host: target.ip().to_string().into(),
        port: Some(target.port()),
        transport: Some(transport),
        secure: false,
    }
}

/// A name RFC 3263 resolves to [`MAIN`] then [`BACKUP`] (see [`Script::dns`]).
fn by_name() -> Destination {
    Destination {
        host: "sip.registrar.test".into(),
        port: None,
        transport: None,
        secure: false,
    }
}

fn config(keepalive: Option<Duration>) -> EngineConfig {
    EngineConfig {
        core: CoreConfig::default(),
        pacing: PacingConfig::default(),
        timers: Timers::default(),
        via_sent_by: "127.0.0.1:5080".into(),
        keepalive,
        outbound: false,
        extra_udp: Vec::new(),
        cluster_shards: None,
    }
}

/// What the scripted registrar does with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// A final response with this code.
    Code(u16),
    /// Nothing comes back.
    Silent,
}

/// One request as it left the engine.
#[derive(Clone, Debug)]
struct Sent {
    at: Instant,
    route: TransmitRoute,
    /// The target address (a connection's peer for flows).
    to: SocketAddr,
    method: String,
    branch: String,
    cseq: u32,
    /// The Expires header (0: an un-REGISTER).
    expires: Option<u32>,
    /// The user of the To URI (the row's AOR).
    user: String,
    /// The connection it went on.
    flow: Option<FlowId>,
    call_id: String,
}

/// The registrar's behaviour, decided per message by the test.
type Script<'a> = dyn FnMut(&Sent, &mut Sim) -> Answer + 'a;

/// The engine with a fake network around it.
struct Sim {
    engine: Engine,
    now: Instant,
    /// Connections the fake network has open, by key and by id.
    flows: HashMap<FlowKey, FlowId>,
    peers: HashMap<FlowId, SocketAddr>,
    next_flow: FlowId,
    /// Flows to close (their peer hung up) before the next delivery.
    closing: Vec<FlowId>,
    /// Every request sent (retransmissions included), in order.
    sent: Vec<Sent>,
    pings: Vec<(Instant, FlowId)>,
    /// Answer pings with a pong.
    pong: bool,
    events: Vec<Event>,
    lookups: usize,
    /// The most transactions in flight seen after any step.
    peak_in_flight: usize,
}

impl Sim {
    fn new(config: EngineConfig) -> Sim {
        let now = Instant::now();
        Sim {
            engine: Engine::new(config, now, StdRng::seed_from_u64(14)),
            now,
            flows: HashMap::new(),
            peers: HashMap::new(),
            next_flow: 1,
            closing: Vec::new(),
            sent: Vec::new(),
            pings: Vec::new(),
            pong: true,
            events: Vec::new(),
            lookups: 0,
            peak_in_flight: 0,
        }
    }

    fn load(&mut self, records: Vec<Record>) {
        self.engine.reload(self.now, records);
    }

    fn status(&self, i: usize) -> Status {
        self.engine
            .table()
            .get(&format!("uuid{i:06}"))
            .map(|r| r.status())
            .expect("the row is loaded")
    }

    /// REGISTERs sent for row `i` (retransmissions included).
    fn registers_of(&self, i: usize) -> Vec<&Sent> {
        let user = format!("user{i:06}");
        self.sent
            .iter()
            .filter(|s| s.method == "REGISTER" && s.user == user)
            .collect()
    }

    /// Delivers everything the engine wants to send, the registrar's answers, and the I/O
    /// events, until all is quiet at `now`.
    fn pump(&mut self, script: &mut Script<'_>) {
        for _ in 0..1_000_000 {
            let mut busy = false;
            while let Some(transmit) = self.engine.poll_transmit() {
                busy = true;
                self.deliver(transmit, script);
            }
            while let Some(event) = self.engine.poll_event() {
                busy = true;
                match &event {
                    Event::Resolve(destination) => {
                        self.lookups += 1;
                        let result = dns(destination, self.now);
                        self.engine
                            .handle_resolved(self.now, destination.clone(), result);
                    }
                    Event::CloseFlow(flow) => self.closing.push(*flow),
                    Event::RegistrarMoved { .. } => {}
                }
                self.events.push(event);
            }
            for flow in std::mem::take(&mut self.closing) {
                if self.peers.contains_key(&flow) {
                    busy = true;
                    self.close(flow, "closed by the peer");
                }
            }
            let in_flight = self.engine.stats().in_flight;
            self.peak_in_flight = self.peak_in_flight.max(in_flight);
            if !busy {
                return;
            }
        }
        panic!("the engine never went quiet at one instant: a send storm");
    }

    fn close(&mut self, flow: FlowId, why: &str) {
        let peer = self.peers.remove(&flow);
        self.flows.retain(|_, f| *f != flow);
        self.engine.handle_flow_event(
            self.now,
            FlowEvent::Closed {
                flow,
                peer,
                why: why.into(),
            },
        );
    }

    fn deliver(&mut self, transmit: Transmit, script: &mut Script<'_>) {
        let (flow, to) = match &transmit.route {
            TransmitRoute::Udp(route) => (None, route.remote),
            TransmitRoute::Flow(flow) => match self.peers.get(flow) {
                Some(peer) => (Some(*flow), *peer),
                None => return,
            },
            TransmitRoute::Connect(key) => {
                let (flow, opened) = match self.flows.get(key) {
                    Some(flow) => (*flow, false),
                    None => {
                        let flow = self.next_flow;
                        self.next_flow += 1;
                        self.flows.insert(key.clone(), flow);
                        self.peers.insert(flow, key.peer);
                        (flow, true)
                    }
                };
                self.engine.handle_flow_event(
                    self.now,
                    FlowEvent::Connected {
                        key: key.clone(),
                        flow,
                        opened,
                    },
                );
                (Some(flow), key.peer)
            }
        };
        if &transmit.bytes[..] == b"\r\n\r\n" {
            let flow = flow.expect("pings go on connections");
            self.pings.push((self.now, flow));
            if self.pong {
                self.engine
                    .handle_flow_event(self.now, FlowEvent::Pong(flow));
            }
            return;
        }
        let request = Request::parse(&transmit.bytes).expect("the engine sends valid requests");
        let sent = Sent {
            at: self.now,
            route: transmit.route.clone(),
            to,
            method: request.method.clone(),
            branch: request
                .vias
                .first()
                .and_then(|via| via.split(";branch=").nth(1))
                .map(|b| b.split(';').next().unwrap_or(b).to_owned())
                .unwrap_or_default(),
            cseq: request.cseq,
            expires: request.expires,
            user: request.to_uri.user.clone().unwrap_or_default(),
            flow,
            call_id: request.call_id.clone(),
        };
        self.sent.push(sent.clone());
        self.peak_in_flight = self.peak_in_flight.max(self.engine.stats().in_flight);
        let Answer::Code(code) = script(&sent, self) else {
            return;
        };
        let response = response(&request, code);
        match flow {
            Some(flow) => {
                self.engine
                    .handle_stream_message(self.now, flow, to, response.as_bytes())
            }
            None => {
                let local = match &transmit.route {
                    TransmitRoute::Udp(route) => route.local,
                    _ => None,
                };
                self.engine
                    .handle_datagram(self.now, local, to, response.as_bytes())
            }
        }
    }

    /// Runs until `until`, jumping from one deadline of the engine to the next.
    fn run_until(&mut self, until: Instant, script: &mut Script<'_>) {
        self.pump(script);
        while let Some(at) = self.engine.poll_timeout(self.now) {
            if at > until {
                break;
            }
            self.now = self.now.max(at);
            self.engine.handle_timeout(self.now);
            self.pump(script);
        }
        self.now = until;
        self.engine.handle_timeout(self.now);
        self.pump(script);
    }

    fn run_for(&mut self, span: Duration, script: &mut Script<'_>) {
        let until = self.now + span;
        self.run_until(until, script);
    }
}

/// RFC 3263 as the fake DNS has it: [`by_name`] gives UDP targets [`MAIN`], then [`BACKUP`].
fn dns(destination: &Destination, now: Instant) -> Result<Resolved, ResolveError> {
    if *destination != by_name() {
        return Err(ResolveError::NoSuchName {
            host: destination.host.to_string(),
        });
    }
    Ok(Resolved {
        targets: vec![
            Target {
                transport: Transport::Udp,
                addr: addr(MAIN),
            },
            Target {
                transport: Transport::Udp,
                addr: addr(BACKUP),
            },
        ],
        valid_until: now + Duration::from_secs(3600),
    })
}

/// A response to `request` with `code`; a 2xx grants 3600 s.
fn response(request: &Request, code: u16) -> String {
    let reason = match code {
        200 => "OK",
        503 => "Service Unavailable",
        _ => "Whatever",
    };
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for via in &request.vias {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    out.push_str(&format!("From: {}\r\n", request.from));
    out.push_str(&format!("To: {};tag=reg\r\n", request.to));
    out.push_str(&format!("Call-ID: {}\r\n", request.call_id));
    out.push_str(&format!(
        "CSeq: {} {}\r\n",
        request.cseq, request.cseq_method
    ));
    if (200..300).contains(&code) && request.method == "REGISTER" {
        out.push_str(&format!("Expires: {}\r\n", request.expires.unwrap_or(3600)));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

const T: Duration = Duration::from_secs(1);

fn ok(_: &Sent, _: &mut Sim) -> Answer {
    Answer::Code(200)
}

#[test]
fn a_silent_target_fails_over_to_the_next_when_timer_f_fires() {
    let mut sim = Sim::new(config(None));
    sim.load(vec![record(0, by_name())]);
    let (main, backup) = (addr(MAIN), addr(BACKUP));
    let mut script = |sent: &Sent, _: &mut Sim| {
        if sent.to == main {
            Answer::Silent
        } else {
            Answer::Code(200)
        }
    };
    sim.run_for(60 * T, &mut script);

    assert_eq!(sim.status(0), Status::Registered);
    assert_eq!(sim.lookups, 1);
    let registers = sim.registers_of(0);
    let to_main: Vec<&&Sent> = registers.iter().filter(|s| s.to == main).collect();
    let to_backup: Vec<&&Sent> = registers.iter().filter(|s| s.to == backup).collect();
    // The first target got the request and its retransmissions (one branch), then nothing.
    assert!(
        to_main.len() > 5,
        "{} sends to the silent target",
        to_main.len()
    );
    assert!(to_main.iter().all(|s| s.branch == to_main[0].branch));
    // The same request (same CSeq, new branch) moved on when timer F fired.
    assert_eq!(to_backup.len(), 1);
    assert_eq!(to_backup[0].cseq, to_main[0].cseq);
    assert_ne!(to_backup[0].branch, to_main[0].branch);
    assert_eq!(to_backup[0].at - to_main[0].at, Timers::default().timeout());
    let stats = sim.engine.stats();
    assert_eq!(stats.failovers, 1);
    assert_eq!(stats.responses.get(&200), Some(&1));
    // The relay learns where the binding lives: the target that answered.
    let moves: Vec<&Event> = sim
        .events
        .iter()
        .filter(|e| matches!(e, Event::RegistrarMoved { .. }))
        .collect();
    assert_eq!(
        moves,
        [&Event::RegistrarMoved {
            from: None,
            to: Some(backup.ip())
        }]
    );

    // The binding stays where it was accepted: the refresh goes to the second target.
    let before = registers.len();
    sim.run_for(3600 * T, &mut script);
    let registers = sim.registers_of(0);
    let refreshes = &registers[before..];
    assert!(!refreshes.is_empty(), "no refresh within the hour");
    assert!(refreshes.iter().all(|s| s.to == backup));
    assert_eq!(sim.engine.stats().failovers, 1);
    assert_eq!(sim.status(0), Status::Registered);
}

#[test]
fn a_503_moves_the_request_to_the_next_target_at_once() {
    let mut sim = Sim::new(config(None));
    sim.load(vec![record(0, by_name())]);
    let main = addr(MAIN);
    let mut script = |sent: &Sent, _: &mut Sim| {
        if sent.to == main {
            Answer::Code(503)
        } else {
            Answer::Code(200)
        }
    };
    sim.run_for(T, &mut script);

    let registers = sim.registers_of(0);
    let to: Vec<SocketAddr> = registers.iter().map(|s| s.to).collect();
    assert_eq!(to, [main, addr(BACKUP)]);
    assert_eq!(
        registers[0].at, registers[1].at,
        "no wait before the next target"
    );
    assert_eq!(registers[0].cseq, registers[1].cseq);
    assert_eq!(sim.status(0), Status::Registered);
    let stats = sim.engine.stats();
    assert_eq!(stats.failovers, 1);
    assert_eq!(stats.responses.get(&503), Some(&1));
    assert_eq!(stats.responses.get(&200), Some(&1));
}

#[test]
fn when_every_target_fails_the_retry_policy_takes_over() {
    let mut sim = Sim::new(config(None));
    sim.load(vec![record(0, by_name())]);
    let mut silent = |_: &Sent, _: &mut Sim| Answer::Silent;
    sim.run_for(65 * T, &mut silent);

    let registers = sim.registers_of(0);
    let targets: HashSet<SocketAddr> = registers.iter().map(|s| s.to).collect();
    assert_eq!(targets, HashSet::from([addr(MAIN), addr(BACKUP)]));
    let branches: HashSet<&str> = registers.iter().map(|s| s.branch.as_str()).collect();
    assert_eq!(branches.len(), 2, "one transaction per target");
    assert_eq!(sim.status(0), Status::RetryWait);
    let stats = sim.engine.stats();
    assert_eq!(stats.failovers, 1);
    assert_eq!(stats.transactions.timeouts, 2);
    assert_eq!(stats.core.retries_scheduled, 1);
}

#[test]
fn a_lost_connection_registers_its_bindings_again_on_a_new_one() {
    let mut sim = Sim::new(config(None));
    let rows = 20;
    sim.load(
        (0..rows)
            .map(|i| record(i, literal(MAIN, Transport::Tcp)))
            .collect(),
    );
    sim.run_for(T, &mut ok);
    assert!((0..rows).all(|i| sim.status(i) == Status::Registered));
    assert_eq!(sim.flows.len(), 1, "the rows share one connection");
    let first = *sim.flows.values().next().expect("a connection");
    assert!(sim.sent.iter().all(|s| s.flow == Some(first)));

    let before = sim.sent.len();
    let lost_at = sim.now;
    sim.close(first, "connection reset by peer");
    sim.run_for(T, &mut ok);

    let again = &sim.sent[before..];
    assert_eq!(
        again.len(),
        rows,
        "one REGISTER per binding that lived on it"
    );
    assert!(
        again.iter().all(|s| s.at == lost_at),
        "the first loss waits for nothing"
    );
    assert!(
        again
            .iter()
            .all(|s| matches!(s.route, TransmitRoute::Connect(_)))
    );
    let second = again[0].flow.expect("sent on a connection");
    assert_ne!(second, first);
    assert!(again.iter().all(|s| s.flow == Some(second)));
    assert!((0..rows).all(|i| sim.status(i) == Status::Registered));
    let stats = sim.engine.stats();
    assert_eq!(stats.rebinds, rows as u64);
    assert_eq!(stats.connections_opened, 2);
    assert_eq!(stats.connections_closed, 1);

    // The new connection carries the bindings now: losing it rebinds them again (a second
    // loss within the window, so after a back-off).
    sim.close(second, "connection reset by peer");
    sim.run_for(T / 4, &mut ok);
    assert_eq!(sim.engine.stats().rebinds, rows as u64, "none at once");
    sim.run_for(2 * T, &mut ok);
    assert_eq!(sim.engine.stats().rebinds, 2 * rows as u64);
}

#[test]
fn connections_that_keep_dropping_back_off_instead_of_storming() {
    let mut sim = Sim::new(config(None));
    let rows = 10;
    sim.load(
        (0..rows)
            .map(|i| record(i, literal(MAIN, Transport::Tcp)))
            .collect(),
    );
    // Every connection breaks right after it carried a successful REGISTER.
    let mut flaky = |sent: &Sent, sim: &mut Sim| {
        if let Some(flow) = sent.flow {
            sim.closing.push(flow);
        }
        Answer::Code(200)
    };
    let start = sim.now;
    sim.run_for(1800 * T, &mut flaky);

    for i in 0..rows {
        let at: Vec<Instant> = sim.registers_of(i).iter().map(|s| s.at).collect();
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        // The first loss rebinds at once; then each wait is drawn from the upper half of a
        // nominal delay doubling from 2 s.
        assert_eq!(gaps[0], Duration::ZERO, "row {i}");
        for (k, gap) in gaps[1..7].iter().enumerate() {
            let nominal = 2 * T * (1 << k);
            assert!(
                *gap >= nominal / 2 && *gap <= nominal,
                "row {i}: wait {k} is {gap:?}, nominal {nominal:?}"
            );
        }
        assert!(gaps.iter().all(|gap| *gap <= binding::MAX_REBIND_DELAY));
        // Half an hour of a connection that never holds: tens of REGISTERs, not a storm.
        assert!(at.len() <= 160, "row {i}: {} REGISTERs", at.len());
        assert!(at.len() >= 10, "row {i}: {} REGISTERs", at.len());
    }
    // Jitter keeps rows that lost the same connection from coming back in lockstep.
    let second_rebind: HashSet<Instant> = (0..rows).map(|i| sim.registers_of(i)[2].at).collect();
    assert!(second_rebind.len() > rows / 2, "{second_rebind:?}");
    let stats = sim.engine.stats();
    assert_eq!(stats.connections_closed, stats.connections_opened);
    assert!(stats.rebinds as usize >= 10 * rows);
    assert!(sim.now - start == 1800 * T);
}

#[test]
fn an_unanswered_udp_keepalive_registers_again() {
    let interval = 30 * T;
    let mut sim = Sim::new(config(Some(interval)));
    sim.load(vec![record(0, literal(MAIN, Transport::Udp))]);
    let answering = std::cell::Cell::new(true);
    let mut script = |sent: &Sent, _: &mut Sim| {
        if sent.method == "OPTIONS" && !answering.get() {
            Answer::Silent
        } else {
            Answer::Code(200)
        }
    };
    sim.run_for(300 * T, &mut script);
    let probes = sim.sent.iter().filter(|s| s.method == "OPTIONS").count();
    assert!((8..=10).contains(&probes), "{probes} probes in 5 minutes");
    assert!(sim.sent.iter().all(|s| s.to == addr(MAIN)));
    assert_eq!(sim.registers_of(0).len(), 1);
    assert_eq!(sim.engine.stats().keepalive_failures, 0);

    answering.set(false);
    let before = sim.sent.len();
    sim.run_for(2 * interval + 5 * T, &mut script);
    let after = &sim.sent[before..];
    let probe = after
        .iter()
        .find(|s| s.method == "OPTIONS")
        .expect("a probe");
    let register = after
        .iter()
        .find(|s| s.method == "REGISTER")
        .expect("a REGISTER after the probe went unanswered");
    // Unanswered for the shorter of timer F and the interval, then the binding is renewed.
    assert_eq!(register.at - probe.at, interval);
    assert_eq!(register.to, addr(MAIN));
    assert_eq!(
        after.iter().filter(|s| s.method == "REGISTER").count(),
        1,
        "one REGISTER per unanswered probe"
    );
    let stats = sim.engine.stats();
    assert_eq!(stats.keepalive_failures, 1);
    assert_eq!(stats.rebinds, 1);
    assert_eq!(sim.status(0), Status::Registered);
}

#[test]
fn a_missing_pong_closes_the_connection_and_registers_again() {
    let interval = 30 * T;
    let mut sim = Sim::new(config(Some(interval)));
    sim.load(vec![record(0, literal(MAIN, Transport::Tcp))]);
    sim.run_for(120 * T, &mut ok);
    assert!(sim.pings.len() >= 3, "{} pings", sim.pings.len());
    let first = sim.sent[0].flow.expect("on a connection");
    assert!(sim.pings.iter().all(|(_, flow)| *flow == first));
    assert!(!sim.events.iter().any(|e| matches!(e, Event::CloseFlow(_))));

    sim.pong = false;
    let before = sim.sent.len();
    let pinged = sim.pings.len();
    sim.run_for(60 * T, &mut ok);
    let (ping_at, _) = sim.pings[pinged];
    assert!(sim.events.contains(&Event::CloseFlow(first)));
    let again = &sim.sent[before..];
    assert_eq!(again.len(), 1, "{again:?}");
    let delay = again[0].at - ping_at;
    assert!(
        delay >= keepalive::PONG_TIMEOUT && delay <= keepalive::PONG_TIMEOUT + T,
        "registered again {delay:?} after the unanswered ping"
    );
    assert_ne!(again[0].flow, Some(first), "on a new connection");
    let stats = sim.engine.stats();
    assert_eq!(stats.keepalive_failures, 1);
    assert_eq!(stats.rebinds, 1);
    assert_eq!(sim.status(0), Status::Registered);
}

#[test]
fn pacing_under_loss_registers_every_row_within_the_window() {
    let rows = 10_000;
    let mut sim = Sim::new(config(None));
    sim.load(
        (0..rows)
            .map(|i| record(i, literal(MAIN, Transport::Udp)))
            .collect(),
    );
    let mut rng = StdRng::seed_from_u64(20);
    // One datagram in five is lost, each way.
    let mut lossy = |_: &Sent, _: &mut Sim| {
        let request_lost = rng.random_bool(0.2);
        let response_lost = rng.random_bool(0.2);
        if request_lost || response_lost {
            Answer::Silent
        } else {
            Answer::Code(200)
        }
    };
    // A third of the requests go unanswered, so the window stays near its floor and the
    // start-up takes a quarter of an hour rather than seconds: slow, but it finishes.
    sim.run_for(1800 * T, &mut lossy);

    let counts = sim.engine.status_counts();
    assert_eq!(counts.get("registered"), Some(&rows), "{counts:?}");
    let window = PacingConfig::default().max_in_flight;
    assert!(
        sim.peak_in_flight <= window,
        "{} in flight, window {window}",
        sim.peak_in_flight
    );
    let stats = sim.engine.stats();
    assert!(stats.pacing_backoffs > 0, "losses made the window back off");
    assert!(stats.transactions.retransmissions > 0);
    let mut branches: HashMap<&str, HashSet<&str>> = HashMap::new();
    for sent in &sim.sent {
        branches.entry(&sent.user).or_default().insert(&sent.branch);
    }
    assert_eq!(branches.len(), rows);
    let most = branches.values().map(HashSet::len).max().unwrap_or(0);
    assert!(most <= 2, "a row needed {most} REGISTER transactions");
    let per_row = sim.sent.len() as f64 / rows as f64;
    assert!(per_row < 1.8, "{per_row:.2} datagrams per row");
    assert!(stats.registers_sent as usize <= rows + rows / 100);
}

#[test]
fn a_local_uri_finds_its_row_through_the_index() {
    let mut sim = Sim::new(config(None));
    let destination = || literal(MAIN, Transport::Udp);
    sim.load((0..5).map(|i| record(i, destination())).collect());
    let uuid_of = |sim: &Sim, user: &str, host: &str| {
        sim.engine
            .find_by_local_uri(user, host)
            .map(|s| s.record.l_uuid().to_owned())
    };
    assert_eq!(
        uuid_of(&sim, "local000003", "GW.test").as_deref(),
        Some("uuid000003")
    );
    assert_eq!(
        uuid_of(&sim, "LOCAL000003", "gw.test"),
        None,
        "the user is exact"
    );

    // A reload that renames row 3 and drops row 4 moves the index with it.
    let mut rows: Vec<Record> = (0..4).map(|i| record(i, destination())).collect();
    let mut renamed = rows[3].to_fields();
    renamed.l_username = "renamed".into();
    rows[3] = renamed.try_into().expect("a valid row");
    sim.engine.reload(sim.now, rows);
    assert_eq!(uuid_of(&sim, "local000003", "gw.test"), None);
    assert_eq!(
        uuid_of(&sim, "renamed", "gw.test").as_deref(),
        Some("uuid000003")
    );
    assert_eq!(uuid_of(&sim, "local000004", "gw.test"), None);

    // Two rows with one local URI: the first in l_uuid order, as the old walk found it.
    let mut twin = record(7, destination()).to_fields();
    twin.l_username = "local000001".into();
    sim.engine
        .add(sim.now, twin.try_into().expect("a valid row"))
        .expect("a new l_uuid");
    assert_eq!(
        uuid_of(&sim, "local000001", "gw.test").as_deref(),
        Some("uuid000001")
    );
    assert!(sim.engine.remove(sim.now, "uuid000001"));
    assert_eq!(
        uuid_of(&sim, "local000001", "gw.test").as_deref(),
        Some("uuid000007")
    );
}

#[test]
fn registering_sends_nothing_the_flows_did_not_ask_for() {
    // Registrations without any request sent keep no transaction open: an idle engine has
    // only the table's timers left.
    let mut sim = Sim::new(config(None));
    sim.load(vec![record(0, literal(MAIN, Transport::Udp))]);
    // Past timer K, which keeps the answered transaction to absorb repeats.
    sim.run_for(10 * T, &mut ok);
    let key_of_row = sim
        .engine
        .table()
        .get("uuid000000")
        .map(|r| r.snapshot().key);
    assert_eq!(key_of_row, Some(RegKey(1)));
    assert_eq!(sim.engine.stats().in_flight, 0);
    let next = sim
        .engine
        .poll_timeout(sim.now)
        .expect("a refresh is scheduled");
    assert!(
        next - sim.now > 3000 * T,
        "next wake-up in {:?}",
        next - sim.now
    );
}

#[test]
fn a_shutdown_unregisters_every_binding_and_ends_when_all_are_answered() {
    let mut sim = Sim::new(config(None));
    let rows = 50;
    sim.load(
        (0..rows)
            .map(|i| record(i, literal(MAIN, Transport::Udp)))
            .collect(),
    );
    sim.run_for(T, &mut ok);
    assert_eq!(
        sim.engine.shutdown_finished(sim.now),
        None,
        "none asked for"
    );
    let before = sim.sent.len();
    sim.engine.shutdown(sim.now, Some(10 * T));
    sim.run_for(T, &mut ok);

    let goodbyes = &sim.sent[before..];
    assert_eq!(goodbyes.len(), rows);
    assert!(goodbyes.iter().all(|s| s.expires == Some(0)));
    let users: HashSet<&str> = goodbyes.iter().map(|s| s.user.as_str()).collect();
    assert_eq!(users.len(), rows);
    assert_eq!(sim.engine.shutdown_finished(sim.now), Some(0));
    // The relay trusts none of the registrars any more.
    let unbound = sim
        .events
        .iter()
        .filter(|e| matches!(e, Event::RegistrarMoved { to: None, .. }))
        .count();
    assert_eq!(unbound, rows);
}

#[test]
fn a_shutdown_gives_up_on_silent_registrars_at_its_deadline() {
    let mut sim = Sim::new(config(None));
    sim.load(
        (0..3)
            .map(|i| record(i, literal(MAIN, Transport::Udp)))
            .collect(),
    );
    sim.run_for(T, &mut ok);
    let mut silent = |_: &Sent, _: &mut Sim| Answer::Silent;
    sim.engine.shutdown(sim.now, Some(5 * T));
    let deadline = sim.now + 5 * T;
    sim.run_for(4 * T, &mut silent);
    assert_eq!(sim.engine.shutdown_finished(sim.now), None);
    // The deadline is one of the engine's wake-ups.
    assert!(
        sim.engine
            .poll_timeout(sim.now)
            .is_some_and(|at| at <= deadline)
    );
    sim.run_until(deadline, &mut silent);
    assert_eq!(sim.engine.shutdown_finished(sim.now), Some(3));
}

/// The reload guard's rule: which removals need `force`.
#[test]
fn which_removals_need_force() {
    let refuses = |removed, running, loaded, max_share| {
        RemovalGuard { loaded, max_share }.refuses(Removal { removed, running })
    };
    // An empty read of a running table, however small.
    assert!(refuses(1, 1, 0, 0.5));
    assert!(refuses(2000, 2000, 0, 0.5));
    // More than the share, two rows or more.
    assert!(refuses(12, 15, 3, 0.5));
    assert!(!refuses(7, 15, 8, 0.5));
    // One row is an ordinary edit.
    assert!(!refuses(1, 2, 1, 0.5));
    // Share 1.0 lets everything through, even an empty read.
    assert!(!refuses(2000, 2000, 0, 1.0));
    assert!(!refuses(0, 2000, 2000, 0.0));
}

fn clustered(shards: u32) -> EngineConfig {
    EngineConfig {
        cluster_shards: Some(shards),
        ..config(None)
    }
}

fn shard(i: usize, shards: u32) -> u32 {
    crate::cluster::shard_of(&format!("uuid{i:06}"), shards)
}

fn silent(_: &Sent, _: &mut Sim) -> Answer {
    Answer::Silent
}

#[test]
fn a_clustered_engine_runs_only_the_shards_it_holds() {
    let mut sim = Sim::new(clustered(4));
    let rows: Vec<Record> = (0..40)
        .map(|i| record(i, literal(MAIN, Transport::Udp)))
        .collect();
    sim.load(rows.clone());
    sim.run_for(5 * T, &mut ok);
    assert!(sim.sent.is_empty(), "no shard held, nothing sent");
    assert_eq!(sim.engine.table().len(), 0);

    let until = sim.now + 600 * T;
    let with_no_dialog = rows.iter().cloned().map(|r| (r, None)).collect();
    let added = sim
        .engine
        .take_shards(sim.now, &[(0, until), (1, until)], with_no_dialog);
    let mine: Vec<usize> = (0..40).filter(|i| shard(*i, 4) < 2).collect();
    assert!(!mine.is_empty() && mine.len() < 40);
    assert_eq!(added, mine.len());
    sim.run_for(5 * T, &mut ok);
    for i in &mine {
        assert_eq!(sim.status(*i), Status::Registered);
    }
    let users: HashSet<&str> = sim.sent.iter().map(|s| s.user.as_str()).collect();
    assert_eq!(users.len(), mine.len(), "REGISTERs only for held shards");

    // A reload keeps to the held shards too.
    sim.load(rows);
    assert_eq!(sim.engine.table().len(), mine.len());
}

#[test]
fn nothing_is_sent_for_a_shard_after_its_deadline() {
    let mut sim = Sim::new(clustered(4));
    let rows: Vec<Record> = (0..40)
        .map(|i| record(i, literal(MAIN, Transport::Udp)))
        .collect();
    let start = sim.now;
    let deadline = start + 20 * T;
    sim.engine.take_shards(
        sim.now,
        &[(0, deadline), (1, deadline)],
        rows.into_iter().map(|r| (r, None)).collect(),
    );
    sim.run_for(5 * T, &mut ok);
    // Shard 0 is renewed, shard 1 is not. Every row re-registers into a silent registrar, so
    // shard 1's transactions are still retransmitting when its deadline comes.
    sim.engine.extend_shards(sim.now, &[(0, start + 300 * T)]);
    assert_eq!(
        sim.engine.poll_timeout(sim.now).map(|t| t <= deadline),
        Some(true)
    );
    for i in 0..40 {
        sim.engine
            .register_now(sim.now, Attribute::LUuid, &format!("uuid{i:06}"), true);
    }
    sim.run_until(start + 100 * T, &mut silent);

    let in_shard = |s: &Sent, wanted: u32| {
        let i: usize = s.user.trim_start_matches("user").parse().unwrap();
        shard(i, 4) == wanted
    };
    let late: Vec<&Sent> = sim
        .sent
        .iter()
        .filter(|s| s.at >= deadline && in_shard(s, 1))
        .collect();
    assert!(late.is_empty(), "{} sent for a lapsed shard", late.len());
    assert!(
        sim.sent
            .iter()
            .any(|s| s.at > start + 5 * T && s.at < deadline && in_shard(s, 1)),
        "shard 1 was retransmitting before its deadline"
    );
    assert!(
        sim.sent.iter().any(|s| s.at >= deadline && in_shard(s, 0)),
        "shard 0 goes on"
    );
    let shard_1_rows = (0..40).filter(|i| shard(*i, 4) == 1).count() as u64;
    let stats = sim.engine.stats();
    assert_eq!(stats.rows_fenced, shard_1_rows);
    assert_eq!(stats.shards_lapsed, 1);
    assert_eq!(stats.rows_handed_over, 0);
    assert!(sim.engine.held_shards().all(|(s, _)| s == 0));
    assert!(
        sim.sent.iter().all(|s| s.expires != Some(0)),
        "no un-REGISTER"
    );
}

#[test]
fn a_handed_over_shard_continues_on_the_next_node_without_a_new_dialog() {
    let rows: Vec<Record> = (0..40)
        .map(|i| record(i, literal(MAIN, Transport::Udp)))
        .collect();
    let mut old = Sim::new(clustered(2));
    let forever = old.now + 100_000 * T;
    old.engine.take_shards(
        old.now,
        &[(0, forever), (1, forever)],
        rows.iter().cloned().map(|r| (r, None)).collect(),
    );
    old.run_for(600 * T, &mut ok);
    assert!((0..40).all(|i| old.status(i) == Status::Registered));
    let written = old.engine.dialogs(old.now);
    assert_eq!(written.len(), 40);

    let handover_at = old.now;
    let handed = old.engine.drop_shards(old.now, &[1]);
    assert_eq!(
        handed.len(),
        written.iter().filter(|d| d.shard == 1).count()
    );
    assert_eq!(old.engine.stats().rows_handed_over, handed.len() as u64);
    let before = old.sent.len();
    old.run_for(7200 * T, &mut ok);
    assert!(
        old.sent[before..].iter().all(|s| {
            let i: usize = s.user.trim_start_matches("user").parse().unwrap();
            shard(i, 2) == 0
        }),
        "the old node sends nothing more for the shard it gave away"
    );

    let mut new = Sim::new(clustered(2));
    new.now = handover_at;
    let dialogs: HashMap<String, Continuation> =
        handed.into_iter().map(|d| (d.l_uuid, d.dialog)).collect();
    let takeover = new.now;
    let with_dialogs = rows
        .iter()
        .cloned()
        .map(|r| {
            let dialog = dialogs.get(r.l_uuid()).cloned();
            (r, dialog)
        })
        .collect();
    let added = new
        .engine
        .take_shards(new.now, &[(1, new.now + 100_000 * T)], with_dialogs);
    assert_eq!(added, dialogs.len());
    assert_eq!(new.engine.stats().rows_continued, added as u64);
    new.run_for(60 * T, &mut ok);
    assert!(
        new.sent.is_empty(),
        "bindings with time left are not refreshed at once"
    );
    new.run_for(3600 * T, &mut ok);
    for (l_uuid, dialog) in &dialogs {
        let user = l_uuid.replace("uuid", "user");
        let first = new.sent.iter().find(|s| s.user == user).expect("refreshed");
        assert_eq!(first.call_id, dialog.call_id);
        assert!(first.cseq >= dialog.next_cseq + crate::registration::CONTINUED_CSEQ_STEP);
        assert!(first.at > takeover + 60 * T);
    }
}

#[test]
fn a_start_up_larger_than_the_send_queue_leaves_the_rest_due_in_the_table() {
    let rows = 5 * send_queue::HIGH_WATER;
    let mut sim = Sim::new(config(None));
    sim.load(
        (0..rows)
            .map(|i| record(i, literal(MAIN, Transport::Udp)))
            .collect(),
    );
    // Every row is due now. The first round fills the queue, the pacer sends its first
    // window out of it, the second tops the queue up again, and the third finds it full.
    sim.engine.handle_timeout(sim.now);
    sim.engine.handle_timeout(sim.now);
    assert_eq!(sim.engine.queue.len(), send_queue::HIGH_WATER);
    let in_flight = sim.engine.stats().in_flight;
    sim.engine.handle_timeout(sim.now);
    assert_eq!(sim.engine.queue.len(), send_queue::HIGH_WATER);
    assert_eq!(sim.engine.stats().in_flight, in_flight);
    assert!(
        sim.engine
            .table()
            .next_deadline()
            .is_some_and(|at| at <= sim.now)
    );
    assert!(
        sim.engine
            .poll_timeout(sim.now)
            .is_some_and(|at| at > sim.now),
        "held timers must not make the driver spin"
    );

    // The registrar answers everything at once; the queue refills only as the pacer empties it.
    let mut peak_queue = 0;
    let mut watch = |_: &Sent, sim: &mut Sim| {
        peak_queue = peak_queue.max(sim.engine.queue.len());
        Answer::Code(200)
    };
    sim.run_for(60 * T, &mut watch);

    let counts = sim.engine.status_counts();
    assert_eq!(counts.get("registered"), Some(&rows), "{counts:?}");
    assert!(peak_queue <= send_queue::HIGH_WATER, "{peak_queue} queued");
    assert_eq!(
        sim.sent.len(),
        rows,
        "one REGISTER per row, none sent twice"
    );
    // Held timers waited for the pacer, not for a busy driver: none of them counts as late.
    let lateness = &sim.engine.stats().timer_lateness;
    assert!(lateness.count > 0);
    assert!(
        lateness.sum_seconds < 0.001,
        "{:.3} s of lateness over {} rounds",
        lateness.sum_seconds,
        lateness.count
    );
}

#[test]
fn timers_left_for_lack_of_room_count_as_held_even_when_the_queue_was_not_full() {
    let rows = send_queue::HIGH_WATER + 1000;
    let mut sim = Sim::new(config(None));
    sim.load(
        (0..rows)
            .map(|i| record(i, literal(MAIN, Transport::Udp)))
            .collect(),
    );
    let t0 = sim.now;
    // The first round fills the queue and the pacer sends its window (100) out of it; the
    // second has room for those 100 only, and leaves the other 900 due.
    sim.engine.handle_timeout(t0);
    sim.engine.handle_timeout(t0);
    assert_eq!(sim.engine.queue.len(), send_queue::HIGH_WATER);
    assert!(
        sim.engine
            .table()
            .next_deadline()
            .is_some_and(|at| at <= t0)
    );
    // Two seconds on, the answers arrive and their flushes make room; the timers left over
    // were waiting for that room, not for a busy driver.
    sim.now = t0 + 2 * T;
    sim.pump(&mut ok);
    let before = sim.engine.stats().timer_lateness.sum_seconds;
    sim.engine.handle_timeout(sim.now);
    let lateness = sim.engine.stats().timer_lateness.sum_seconds - before;
    assert!(lateness < 0.01, "{lateness:.3} s counted as the driver's");
}
