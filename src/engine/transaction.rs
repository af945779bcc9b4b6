//! RFC 3261 §17.1.2 non-INVITE client transactions: retransmission (timer E), giving up
//! (timer F), absorbing late retransmitted responses (timer K), and deciding which responses
//! belong to which request.
//!
//! Our SIP port faces the Internet, so a response is only taken as the answer to a request when
//! everything a stranger could get wrong is right: the Via branch (random per transaction, so it
//! cannot be guessed from earlier ones), the Call-ID, the CSeq number and method (RFC 3261
//! §17.1.3), and the way it came — from the address and port the request went to, on the socket
//! it left from, or on the connection it was written to. Anything else is reported as
//! [`Matched::Unknown`] with the reason, and the transaction carries on as if nothing had
//! arrived: it keeps retransmitting and still ends in timer F.
//!
//! Like the registration core this is driven by explicit time: the engine asks for the next
//! deadline, calls [`ClientTransactions::handle_timeout`] when it passes, and sends what comes out.
//! Keeping it free of sockets lets the same code serve UDP (with retransmissions) and reliable
//! transports (timer F only) and be tested without a network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

use crate::registration::RegKey;
use crate::sip::message::Response;
use crate::transport::stream::FlowId;

use super::tx_store::{Deadlines, Lane, Numbered};

/// RFC 3261 timer values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate; first retransmission interval.
    pub t1: Duration,
    /// Maximum retransmission interval.
    pub t2: Duration,
    /// How long the network may keep a message; timer K for UDP.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// Timer F: 64 × T1.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Where a UDP request goes and which of our sockets it leaves from (`None`: the main one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    pub local: Option<SocketAddr>,
    pub remote: SocketAddr,
}

impl Route {
    /// Whether a datagram received on our socket `local` from `from` comes from where this
    /// route goes. An IPv4 peer seen through a dual-stack socket (`::ffff:a.b.c.d`) is the same
    /// peer as `a.b.c.d`.
    pub fn is_answered_by(&self, local: Option<SocketAddr>, from: SocketAddr) -> bool {
        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        self.local == local && canonical(self.remote) == canonical(from)
    }
}

/// The way a request went out, and so the way its responses must come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// A datagram: responses come from `remote` to our socket `local`, and the request is
    /// retransmitted there.
    Udp(Route),
    /// A TCP or TLS connection: responses come on the same connection (RFC 3261 §18.2.2), and
    /// nothing is retransmitted.
    Flow(FlowId),
    /// A TCP or TLS connection the I/O side has not named yet (it does so at once, see
    /// [`ClientTransactions::connected`]): reliable, and answered by nothing until named.
    Connecting,
}

impl Path {
    fn is_reliable(&self) -> bool {
        matches!(self, Path::Flow(_) | Path::Connecting)
    }

    /// Whether a message that arrived by `arrival` came back the way this path went.
    pub fn is_answered_by(&self, arrival: &Path) -> bool {
        match (self, arrival) {
            (Path::Udp(sent), Path::Udp(got)) => sent.is_answered_by(got.local, got.remote),
            (Path::Flow(sent), Path::Flow(got)) => sent == got,
            _ => false,
        }
    }
}

/// What of a request its responses must carry back unchanged (RFC 3261 §17.1.3): the branch of
/// our Via, the Call-ID, and the CSeq number and method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestIds {
    pub branch: String,
    pub call_id: String,
    pub cseq: u32,
    pub method: &'static str,
}

impl RequestIds {
    /// Whether `response` carries this request's Call-ID and CSeq (the branch is compared by
    /// whoever found the request by it).
    pub fn is_echoed_by(&self, response: &Response) -> bool {
        response.call_id == self.call_id
            && response.cseq == self.cseq
            && response.cseq_method == self.method
    }

    /// Decides whether `response`, which arrived by `arrival`, answers this request sent by
    /// `sent`.
    pub fn check(&self, sent: &Path, response: &Response, arrival: &Path) -> Result<(), Mismatch> {
        if response.branch.as_deref() != Some(self.branch.as_str()) {
            return Err(Mismatch::Branch);
        }
        if !self.is_echoed_by(response) {
            return Err(Mismatch::Ids);
        }
        if !sent.is_answered_by(arrival) {
            return Err(Mismatch::Source);
        }
        Ok(())
    }
}

/// Who a transaction belongs to: the registration and the CSeq of its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub key: RegKey,
    pub cseq: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxState {
    /// Sent, nothing heard yet: retransmit on timer E with doubling interval.
    Trying,
    /// A provisional response arrived: retransmit every T2.
    Proceeding,
    /// Final response delivered; absorbing retransmissions of it until timer K.
    Completed,
}

struct Transaction {
    ids: RequestIds,
    owner: Owner,
    path: Path,
    bytes: Arc<[u8]>,
    state: TxState,
    interval: Duration,
    /// Next retransmission (Trying/Proceeding) or end of Completed (timer K).
    next_event: Instant,
    /// Timer F.
    gives_up_at: Instant,
    retransmissions: u32,
    started: Instant,
}

impl Transaction {
    fn deadline(&self) -> Instant {
        match self.state {
            TxState::Completed => self.next_event,
            _ if self.path.is_reliable() => self.gives_up_at,
            _ => self.next_event.min(self.gives_up_at),
        }
    }
}

/// What a timeout produced.
#[derive(Clone, Debug)]
pub enum TimerEvent {
    /// Send these bytes again.
    Retransmit {
        destination: Route,
        bytes: Arc<[u8]>,
    },
    /// Timer F fired: no final response.
    TimedOut(Owner),
}

/// Why a response was not taken as the answer to any request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// No transaction has this branch: never sent by us, guessed, or long over.
    Branch,
    /// The branch is one of ours, but the Call-ID, the CSeq number or the CSeq method is not
    /// the request's.
    Ids,
    /// Everything matches, but it came from another address or port than the request went to,
    /// reached another of our sockets, or arrived on another connection.
    Source,
}

/// What a received response means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matched {
    /// Deliver the response to this owner; the duration is the time since the request was
    /// first sent (transaction latency, retransmissions included).
    Deliver(Owner, Duration),
    /// Matched a transaction but needs no delivery (a provisional or retransmitted final
    /// response).
    Absorbed,
    /// Answers no request of ours; drop it. The transaction it may have aimed at is untouched.
    Unknown(Mismatch),
}

/// Counters for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransactionStats {
    pub started: u64,
    pub retransmissions: u64,
    pub timeouts: u64,
    pub completed: u64,
}

/// All live client transactions.
pub struct ClientTransactions {
    timers: Timers,
    next_id: u64,
    /// Where the random part of every branch comes from.
    rng: StdRng,
    by_id: Numbered<Transaction>,
    queue: Deadlines,
    /// How many of `by_id` are Completed (kept only to absorb repeated responses until timer
    /// K): `pending()` is asked once per admitted request, so it must not walk the map.
    completed_held: usize,
    stats: TransactionStats,
}

/// The magic cookie every RFC 3261 branch starts with.
const BRANCH_COOKIE: &str = "z9hG4bK";
/// What follows the cookie in our transactions' branches: a letter that is not a hex digit and
/// differs from the relay's `rly-` and the keep-alives' `ka`, so the three kinds of branch never
/// overlap.
const TRANSACTION_MARK: &str = "t";

impl ClientTransactions {
    /// `rng` must be a cryptographic generator seeded from the OS in production: the branches
    /// it writes are what keeps strangers from answering our requests.
    pub fn new(timers: Timers, rng: StdRng) -> ClientTransactions {
        ClientTransactions {
            timers,
            next_id: 1,
            rng,
            by_id: Numbered::default(),
            queue: Deadlines::default(),
            completed_held: 0,
            stats: TransactionStats::default(),
        }
    }

    /// A branch for the next transaction: the cookie, our mark, the transaction's number (to
    /// find it again) and 128 random bits (so that nobody can guess it from the branches they
    /// saw). Write it into the request's Via, then pass it to [`ClientTransactions::start`].
    pub fn next_branch(&mut self) -> String {
        let random: u128 = self.rng.random();
        let mut branch = String::with_capacity(64);
        branch.push_str(BRANCH_COOKIE);
        branch.push_str(TRANSACTION_MARK);
        crate::sip::hex::push_short(&mut branch, self.next_id);
        branch.push('.');
        crate::sip::hex::push_fixed(&mut branch, random, 32);
        branch
    }

    /// Starts a transaction for `bytes` (which must carry `ids`, its branch from
    /// [`ClientTransactions::next_branch`]) just sent by `path`.
    pub fn start(
        &mut self,
        now: Instant,
        ids: RequestIds,
        owner: Owner,
        path: Path,
        bytes: Arc<[u8]>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        debug_assert_eq!(
            Self::id_in(&ids.branch),
            Some(id),
            "branch from next_branch"
        );
        let tx = Transaction {
            ids,
            owner,
            path,
            bytes,
            state: TxState::Trying,
            interval: self.timers.t1,
            next_event: now + self.timers.t1,
            gives_up_at: now + self.timers.timeout(),
            retransmissions: 0,
            started: now,
        };
        let lane = if tx.path.is_reliable() {
            Lane::Reliable
        } else {
            Lane::Sent
        };
        self.queue.push(lane, tx.deadline(), id);
        self.by_id.insert(id, tx);
        self.stats.started += 1;
    }

    /// The transaction number written into `branch`, if it has our form.
    fn id_in(branch: &str) -> Option<u64> {
        let rest = branch
            .strip_prefix(BRANCH_COOKIE)?
            .strip_prefix(TRANSACTION_MARK)?;
        let (id, _) = rest.split_once('.')?;
        u64::from_str_radix(id, 16).ok()
    }

    /// The live transaction whose branch is exactly `branch`.
    fn id_of(&self, branch: &str) -> Option<u64> {
        let id = Self::id_in(branch)?;
        // The number alone is guessable; the whole branch, random part included, must be ours.
        (self.by_id.get(id)?.ids.branch == branch).then_some(id)
    }

    /// Matches a response that arrived by `arrival` and moves its transaction on. Only a
    /// response that matches in every respect (see the module documentation) has any effect.
    pub fn handle_response(&mut self, now: Instant, response: &Response, arrival: Path) -> Matched {
        let Some(id) = response.branch.as_deref().and_then(|b| self.id_of(b)) else {
            return Matched::Unknown(Mismatch::Branch);
        };
        let Some(tx) = self.by_id.get_mut(id) else {
            return Matched::Unknown(Mismatch::Branch);
        };
        if let Err(mismatch) = tx.ids.check(&tx.path, response, &arrival) {
            return Matched::Unknown(mismatch);
        }
        let old_deadline = tx.deadline();
        let result = match (tx.state, response.code) {
            (TxState::Completed, _) => Matched::Absorbed,
            (_, 100..=199) => {
                if tx.state == TxState::Trying {
                    tx.state = TxState::Proceeding;
                    tx.interval = self.timers.t2;
                    tx.next_event = now + self.timers.t2;
                }
                Matched::Absorbed
            }
            _ => {
                self.stats.completed += 1;
                let owner = tx.owner;
                let latency = now.saturating_duration_since(tx.started);
                if tx.path.is_reliable() {
                    // Timer K is zero for reliable transports.
                    self.by_id.remove(id);
                    self.drop_stale_deadlines();
                    return Matched::Deliver(owner, latency);
                }
                tx.state = TxState::Completed;
                self.completed_held += 1;
                tx.next_event = now + self.timers.t4;
                // Nothing is retransmitted any more; only the identifiers are needed to absorb
                // repeated responses, so drop the request bytes now rather than after timer K.
                tx.bytes = Arc::from(&[][..]);
                Matched::Deliver(owner, latency)
            }
        };
        let new_deadline = tx.deadline();
        if new_deadline != old_deadline {
            // The old entry stays behind, stale; see `tx_store`.
            if tx.state == TxState::Completed {
                self.queue.push(Lane::Answered, new_deadline, id);
            } else {
                self.queue.push_other(new_deadline, id);
            }
            self.drop_stale_deadlines();
        }
        result
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| at)
    }

    /// Whether the deadline entry `(at, id)` is still its transaction's deadline.
    fn is_due_entry(by_id: &Numbered<Transaction>, at: Instant, id: u64) -> bool {
        by_id.get(id).is_some_and(|tx| tx.deadline() == at)
    }

    /// Drops stale entries at the front of the deadlines, so that the next deadline is one at
    /// which something happens (an answered request's timer E would otherwise wake the
    /// driver for nothing).
    fn drop_stale_deadlines(&mut self) {
        let by_id = &self.by_id;
        self.queue
            .drop_stale_fronts(|at, id| Self::is_due_entry(by_id, at, id));
    }

    /// Names the connection a transaction started on [`Path::Connecting`] went on.
    pub fn connected(&mut self, branch: &str, flow: FlowId) {
        if let Some(id) = self.id_of(branch)
            && let Some(tx) = self.by_id.get_mut(id)
            && tx.path == Path::Connecting
        {
            tx.path = Path::Flow(flow);
        }
    }

    /// Ends a transaction without a response (its connection broke); returns its owner.
    pub fn abandon(&mut self, branch: &str) -> Option<Owner> {
        let id = self.id_of(branch)?;
        let tx = self.by_id.remove(id)?;
        self.drop_stale_deadlines();
        if tx.state == TxState::Completed {
            self.completed_held -= 1;
            return None;
        }
        Some(tx.owner)
    }

    /// Handles every timer due at `now`, appending retransmissions and timeouts to `out`.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<TimerEvent>) {
        while let Some((at, id)) = self.queue.pop_due(now) {
            let Some(tx) = self.by_id.get_mut(id) else {
                continue;
            };
            if tx.deadline() != at {
                // Stale: the transaction moved on since this entry was made.
                continue;
            }
            if tx.state == TxState::Completed {
                self.by_id.remove(id);
                self.completed_held -= 1;
                continue;
            }
            if now >= tx.gives_up_at {
                self.stats.timeouts += 1;
                out.push(TimerEvent::TimedOut(tx.owner));
                self.by_id.remove(id);
                continue;
            }
            let Path::Udp(destination) = tx.path else {
                // Reliable transports have no timer E; their only deadline is timer F.
                self.queue.push_other(tx.gives_up_at, id);
                continue;
            };
            // Timer E.
            tx.retransmissions += 1;
            self.stats.retransmissions += 1;
            out.push(TimerEvent::Retransmit {
                destination,
                bytes: tx.bytes.clone(),
            });
            if tx.state == TxState::Trying {
                tx.interval = (tx.interval * 2).min(self.timers.t2);
            }
            tx.next_event = now + tx.interval;
            self.queue.push_other(tx.deadline(), id);
        }
        self.drop_stale_deadlines();
        self.release_spare_capacity();
    }

    /// A start-up burst grows the map to tens of thousands of slots (each holds a whole
    /// transaction) that a quiet gateway never needs again; give most of them back once the
    /// map is a quarter full. Each shrink follows at least as many removals as it moves
    /// entries, so the cost per transaction stays constant.
    fn release_spare_capacity(&mut self) {
        const KEEP: usize = 1024;
        self.by_id.release_spare(KEEP);
        self.queue.release_spare(KEEP);
    }

    /// Transactions not yet answered (Trying or Proceeding) — what pacing limits.
    pub fn pending(&self) -> usize {
        self.by_id.len() - self.completed_held
    }

    pub fn stats(&self) -> TransactionStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn owner() -> Owner {
        Owner {
            key: RegKey(1),
            cseq: 7,
        }
    }

    fn registrar() -> SocketAddr {
        "127.0.0.1:5060".parse().unwrap()
    }

    fn udp() -> Path {
        Path::Udp(Route {
            local: None,
            remote: registrar(),
        })
    }

    fn transactions(seed: u64) -> ClientTransactions {
        ClientTransactions::new(Timers::default(), StdRng::seed_from_u64(seed))
    }

    /// Starts one transaction sent by `path` at `t0`; returns what its responses must carry.
    fn start_one(txs: &mut ClientTransactions, t0: Instant, path: Path) -> RequestIds {
        let ids = RequestIds {
            branch: txs.next_branch(),
            call_id: "3f2a@uacreg".into(),
            cseq: 7,
            method: "REGISTER",
        };
        txs.start(t0, ids.clone(), owner(), path, Arc::from(&b"x"[..]));
        ids
    }

    /// One transaction started at `t0`; returns the set and its identifiers.
    fn started(t0: Instant, seed: u64, reliable: bool) -> (ClientTransactions, RequestIds) {
        let mut txs = transactions(seed);
        let path = if reliable { Path::Flow(3) } else { udp() };
        let ids = start_one(&mut txs, t0, path);
        (txs, ids)
    }

    /// A response to `ids` with `code`, echoing everything as a registrar would.
    fn response(ids: &RequestIds, code: u16) -> Response<'static> {
        Response {
            code,
            reason: "Whatever".into(),
            branch: Some(ids.branch.clone().into()),
            call_id: ids.call_id.clone().into(),
            cseq: ids.cseq,
            cseq_method: ids.method.into(),
            contacts: vec![],
            expires: None,
            min_expires: None,
            retry_after: None,
            www_authenticate: vec![],
            proxy_authenticate: vec![],
        }
    }

    /// Starts `count` transactions at `t0`, the `i`th over a reliable transport when
    /// `reliable(i)`; returns their identifiers in order.
    fn start_many(
        txs: &mut ClientTransactions,
        t0: Instant,
        count: usize,
        reliable: impl Fn(usize) -> bool,
    ) -> Vec<RequestIds> {
        (0..count)
            .map(|i| {
                let path = if reliable(i) {
                    Path::Flow(i as u64)
                } else {
                    udp()
                };
                start_one(txs, t0, path)
            })
            .collect()
    }

    /// Runs every timer to the end; returns when (ms after `t0`) each retransmission went out
    /// and when (and for whom) timer F fired.
    fn run_out(txs: &mut ClientTransactions, t0: Instant) -> (Vec<u128>, Option<(u128, Owner)>) {
        let mut sent_at = Vec::new();
        let mut timed_out = None;
        let mut out = Vec::new();
        while let Some(at) = txs.next_deadline() {
            txs.handle_timeout(at, &mut out);
            for event in out.drain(..) {
                match event {
                    TimerEvent::Retransmit { .. } => sent_at.push((at - t0).as_millis()),
                    TimerEvent::TimedOut(o) => timed_out = Some(((at - t0).as_millis(), o)),
                }
            }
        }
        (sent_at, timed_out)
    }

    const UDP_SCHEDULE: [u128; 10] = [
        500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
    ];

    #[test]
    fn a_burst_of_transactions_gives_its_memory_back_once_done() {
        let t0 = Instant::now();
        let mut txs = transactions(1);
        let all = start_many(&mut txs, t0, 20_000, |_| false);
        let grown = txs.by_id.capacity();
        assert!(grown >= 20_000);
        for ids in &all {
            assert!(matches!(
                txs.handle_response(t0, &response(ids, 200), udp()),
                Matched::Deliver(..)
            ));
        }
        let mut out = Vec::new();
        txs.handle_timeout(t0 + Duration::from_secs(6), &mut out);
        assert_eq!(txs.pending(), 0);
        assert_eq!(txs.by_id.len(), 0);
        assert!(txs.by_id.capacity() < grown / 4, "{}", txs.by_id.capacity());
    }

    #[test]
    fn udp_retransmits_with_doubling_interval_then_times_out_at_64_t1() {
        let t0 = Instant::now();
        let (mut txs, _) = started(t0, 0xabc, false);
        let (sent_at, timed_out) = run_out(&mut txs, t0);
        assert_eq!(sent_at, UDP_SCHEDULE);
        assert_eq!(timed_out, Some((32000, owner())));
        assert_eq!(txs.stats().timeouts, 1);
    }

    #[test]
    fn final_response_is_delivered_once_and_retransmissions_absorbed() {
        let t0 = Instant::now();
        let (mut txs, ids) = started(t0, 1, false);
        assert_eq!(
            txs.handle_response(t0, &response(&ids, 100), udp()),
            Matched::Absorbed
        );
        assert_eq!(
            txs.handle_response(t0 + Duration::from_millis(3), &response(&ids, 200), udp()),
            Matched::Deliver(owner(), Duration::from_millis(3))
        );
        assert_eq!(
            txs.handle_response(t0, &response(&ids, 200), udp()),
            Matched::Absorbed
        );
        let mut out = Vec::new();
        txs.handle_timeout(t0 + Duration::from_secs(6), &mut out);
        assert!(out.is_empty());
        assert_eq!(
            txs.handle_response(t0, &response(&ids, 200), udp()),
            Matched::Unknown(Mismatch::Branch)
        );
        assert_eq!(txs.next_deadline(), None);
    }

    /// `pending()` is a counter now; it must agree with counting the map at every step.
    #[test]
    fn pending_counts_only_unanswered_transactions() {
        let t0 = Instant::now();
        let mut txs = transactions(9);
        let naive = |txs: &ClientTransactions| {
            txs.by_id
                .values()
                .filter(|tx| tx.state != TxState::Completed)
                .count()
        };
        let reliable = |i: usize| i % 3 == 0;
        let all = start_many(&mut txs, t0, 10, reliable);
        let path_of = |i: usize| {
            if reliable(i) {
                Path::Flow(i as u64)
            } else {
                udp()
            }
        };
        assert_eq!(txs.pending(), 10);
        for (i, ids) in all[..4].iter().enumerate() {
            txs.handle_response(t0, &response(ids, 200), path_of(i));
            // A repeat changes nothing.
            txs.handle_response(t0, &response(ids, 200), path_of(i));
            assert_eq!(txs.pending(), naive(&txs));
        }
        assert_eq!(txs.pending(), 6);
        txs.abandon(&all[1].branch); // completed: no longer held
        txs.abandon(&all[5].branch); // unanswered
        assert_eq!(txs.pending(), naive(&txs));
        assert_eq!(txs.pending(), 5);
        let mut out = Vec::new();
        txs.handle_timeout(t0 + Duration::from_secs(6), &mut out); // timer K for the completed
        assert_eq!(txs.pending(), naive(&txs));
        txs.handle_timeout(t0 + Duration::from_secs(40), &mut out); // the rest time out
        assert_eq!((txs.pending(), txs.by_id.len()), (0, 0));
    }

    #[test]
    fn provisional_switches_to_t2_interval() {
        let t0 = Instant::now();
        let (mut txs, ids) = started(t0, 1, false);
        txs.handle_response(t0 + Duration::from_millis(100), &response(&ids, 180), udp());
        assert_eq!(txs.next_deadline(), Some(t0 + Duration::from_millis(4100)));
    }

    #[test]
    fn reliable_transport_only_has_timer_f() {
        let t0 = Instant::now();
        let (mut txs, _) = started(t0, 1, true);
        assert_eq!(txs.next_deadline(), Some(t0 + Duration::from_secs(32)));
        let (sent_at, timed_out) = run_out(&mut txs, t0);
        assert!(sent_at.is_empty());
        assert_eq!(timed_out, Some((32000, owner())));
    }

    /// Feeds `bad` (each with how it arrived) to a fresh transaction at 100 ms intervals and
    /// checks each is refused for `why` — provisional and final codes alike — and that the
    /// transaction then runs exactly as if nothing had arrived: same retransmissions, timer F.
    fn refused_without_effect(
        path: Path,
        bad: impl Fn(&RequestIds) -> Vec<(Response, Path)>,
        why: Mismatch,
    ) {
        let t0 = Instant::now();
        let mut txs = transactions(5);
        let ids = start_one(&mut txs, t0, path);
        let mut at = t0;
        for (response, arrival) in bad(&ids) {
            for code in [100, 180, 200, 401, 503] {
                let mut response = response.clone();
                response.code = code;
                at += Duration::from_millis(10);
                assert_eq!(
                    txs.handle_response(at, &response, arrival),
                    Matched::Unknown(why),
                    "{code} {response:?} by {arrival:?}"
                );
            }
        }
        assert_eq!(txs.stats().completed, 0);
        assert_eq!(txs.pending(), 1);
        let (sent_at, timed_out) = run_out(&mut txs, t0);
        let expected: &[u128] = if path.is_reliable() {
            &[]
        } else {
            &UDP_SCHEDULE
        };
        assert_eq!(sent_at, expected);
        assert_eq!(timed_out, Some((32000, owner())));
    }

    #[test]
    fn a_wrong_call_id_is_refused() {
        refused_without_effect(
            udp(),
            |ids| {
                ["3f2b@uacreg", "3F2A@uacreg", "3f2a@uacreg ", "", "3f2a"]
                    .into_iter()
                    .map(|call_id| {
                        let mut r = response(ids, 200);
                        r.call_id = call_id.into();
                        (r, udp())
                    })
                    .collect()
            },
            Mismatch::Ids,
        );
    }

    #[test]
    fn a_wrong_cseq_number_is_refused() {
        refused_without_effect(
            udp(),
            |ids| {
                [0, 6, 8, 7 + (1 << 16), u32::MAX]
                    .into_iter()
                    .map(|cseq| {
                        let mut r = response(ids, 200);
                        r.cseq = cseq;
                        (r, udp())
                    })
                    .collect()
            },
            Mismatch::Ids,
        );
    }

    #[test]
    fn a_wrong_cseq_method_is_refused() {
        refused_without_effect(
            udp(),
            |ids| {
                ["OPTIONS", "register", "INVITE", ""]
                    .into_iter()
                    .map(|method| {
                        let mut r = response(ids, 200);
                        r.cseq_method = method.into();
                        (r, udp())
                    })
                    .collect()
            },
            Mismatch::Ids,
        );
    }

    #[test]
    fn a_response_from_another_address_or_port_is_refused() {
        let from = |addr: &str| {
            Path::Udp(Route {
                local: None,
                remote: addr.parse().unwrap(),
            })
        };
        refused_without_effect(
            udp(),
            |ids| {
                [
                    "127.0.0.2:5060",
                    "127.0.0.1:5061",
                    "127.0.0.1:1",
                    "[::1]:5060",
                    "192.0.2.1:5060",
                ]
                .into_iter()
                .map(|addr| (response(ids, 200), from(addr)))
                .collect()
            },
            Mismatch::Source,
        );
    }

    #[test]
    fn a_response_on_another_socket_or_connection_is_refused() {
        let own_socket: SocketAddr = "127.0.0.3:5070".parse().unwrap();
        let sent = Path::Udp(Route {
            local: Some(own_socket),
            remote: registrar(),
        });
        refused_without_effect(
            sent,
            |ids| {
                vec![
                    // Right peer, but on the main socket.
                    (response(ids, 200), udp()),
                    // Right peer, another of our sockets.
                    (
                        response(ids, 200),
                        Path::Udp(Route {
                            local: Some("127.0.0.3:5071".parse().unwrap()),
                            remote: registrar(),
                        }),
                    ),
                    // Over a connection.
                    (response(ids, 200), Path::Flow(1)),
                ]
            },
            Mismatch::Source,
        );
        refused_without_effect(
            Path::Flow(4),
            |ids| {
                vec![
                    (response(ids, 200), Path::Flow(5)),
                    (response(ids, 200), Path::Flow(0)),
                    // The registrar's address, but as a datagram.
                    (response(ids, 200), udp()),
                ]
            },
            Mismatch::Source,
        );
    }

    #[test]
    fn forged_or_guessed_branches_are_refused() {
        refused_without_effect(
            udp(),
            |ids| {
                let real = ids.branch.clone();
                let (prefix, random) = real.rsplit_once('.').unwrap();
                let mut flipped = random.to_string().into_bytes();
                flipped[31] = if flipped[31] == b'0' { b'1' } else { b'0' };
                let flipped = String::from_utf8(flipped).unwrap();
                [
                    String::new(),
                    "z9hG4bK".into(),
                    "z9hG4bKt1".into(),
                    "z9hG4bKt1.".into(),
                    format!("{prefix}.{flipped}"),
                    format!("{prefix}.{}", &random[..31]),
                    format!("{real}0"),
                    real.to_uppercase(),
                    real.replacen("z9hG4bKt1", "z9hG4bKt2", 1),
                    real.replacen("z9hG4bKt1", "z9hG4bKt01", 1),
                    real.replacen("z9hG4bKt1", "z9hG4bKt+1", 1),
                    real.replacen("z9hG4bKt", "z9hG4bKrly-", 1),
                    real.replacen("z9hG4bKt", "z9hG4bKka", 1),
                    "abc".into(),
                ]
                .into_iter()
                .map(|branch| {
                    let mut r = response(ids, 200);
                    r.branch = Some(branch.into());
                    (r, udp())
                })
                .chain(std::iter::once({
                    let mut r = response(ids, 200);
                    r.branch = None;
                    (r, udp())
                }))
                .collect()
            },
            Mismatch::Branch,
        );
    }

    #[test]
    fn only_the_exact_answer_completes_after_refused_ones() {
        let t0 = Instant::now();
        let (mut txs, ids) = started(t0, 2, false);
        let mut wrong = response(&ids, 200);
        wrong.call_id.to_mut().push('x');
        assert_eq!(
            txs.handle_response(t0, &wrong, udp()),
            Matched::Unknown(Mismatch::Ids)
        );
        // The real answer still completes it, and a forged repeat is not "absorbed" either.
        assert_eq!(
            txs.handle_response(t0 + Duration::from_millis(5), &response(&ids, 200), udp()),
            Matched::Deliver(owner(), Duration::from_millis(5))
        );
        assert_eq!(
            txs.handle_response(t0, &wrong, udp()),
            Matched::Unknown(Mismatch::Ids)
        );
    }

    #[test]
    fn an_ipv4_peer_seen_through_a_dual_stack_socket_is_the_same_peer() {
        let t0 = Instant::now();
        let (mut txs, ids) = started(t0, 3, false);
        let mapped = Path::Udp(Route {
            local: None,
            remote: "[::ffff:127.0.0.1]:5060".parse().unwrap(),
        });
        assert!(matches!(
            txs.handle_response(t0, &response(&ids, 200), mapped),
            Matched::Deliver(..)
        ));
    }

    #[test]
    fn branches_are_random_unique_and_never_look_like_the_relays() {
        let t0 = Instant::now();
        let mut a = transactions(1);
        let mut b = transactions(2);
        let from_a = start_many(&mut a, t0, 1000, |_| false);
        let from_b = start_many(&mut b, t0, 1000, |_| false);
        let mut seen = std::collections::HashSet::new();
        for ids in from_a.iter().chain(&from_b) {
            let branch = &ids.branch;
            assert!(branch.starts_with("z9hG4bKt"), "{branch}");
            assert!(!branch.starts_with("z9hG4bKrly-"), "{branch}");
            assert!(!branch.starts_with("z9hG4bKka"), "{branch}");
            let (_, random) = branch.rsplit_once('.').unwrap();
            assert_eq!(random.len(), 32, "{branch}");
            assert!(random.bytes().all(|c| c.is_ascii_hexdigit()), "{branch}");
            assert!(
                seen.insert(random.to_string()),
                "random part repeated: {branch}"
            );
        }
        // Same transaction numbers in both sets, different branches: knowing one process's
        // branches says nothing about another's, nor one transaction's about the next.
        assert_eq!(
            from_a[0].branch.split('.').next(),
            from_b[0].branch.split('.').next()
        );
        assert_ne!(from_a[0].branch, from_b[0].branch);
        // A branch of one set is unknown to the other.
        assert_eq!(
            b.handle_response(t0, &response(&from_a[5], 200), udp()),
            Matched::Unknown(Mismatch::Branch)
        );
    }
}
