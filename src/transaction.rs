//! RFC 3261 §17.1.2 non-INVITE client transactions: retransmission (timer E), giving up
//! (timer F), absorbing late retransmitted responses (timer K), and matching responses to
//! requests by the Via branch.
//!
//! Like the registration core this is driven by explicit time: the driver asks for the next
//! deadline, calls [`ClientTransactions::handle_timeout`] when it passes, and sends what comes out.
//! Keeping it free of sockets lets the same code serve UDP (with retransmissions) and reliable
//! transports (timer F only) and be tested without a network.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::registration::RegKey;

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
    branch: String,
    owner: Owner,
    destination: Route,
    bytes: Arc<[u8]>,
    reliable: bool,
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
            _ if self.reliable => self.gives_up_at,
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

/// What a received response means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matched {
    /// Deliver the response to this owner; the duration is the time since the request was
    /// first sent (transaction latency, retransmissions included).
    Deliver(Owner, Duration),
    /// Matched a transaction but needs no delivery (a retransmitted final response).
    Absorbed,
    /// No transaction has this branch.
    Unknown,
}

/// Counters for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
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
    /// Random per-process part of every branch, so branches differ across restarts.
    branch_salt: u64,
    by_id: HashMap<u64, Transaction>,
    queue: BTreeSet<(Instant, u64)>,
    /// How many of `by_id` are Completed (kept only to absorb repeated responses until timer
    /// K): `pending()` is asked once per admitted request, so it must not walk the map.
    completed_held: usize,
    stats: TransactionStats,
}

const BRANCH_PREFIX: &str = "z9hG4bK";

impl ClientTransactions {
    pub fn new(timers: Timers, branch_salt: u64) -> ClientTransactions {
        ClientTransactions {
            timers,
            next_id: 1,
            branch_salt,
            by_id: HashMap::new(),
            queue: BTreeSet::new(),
            completed_held: 0,
            stats: TransactionStats::default(),
        }
    }

    /// Reserves the branch for the next transaction; pass it to the request encoder and then to
    /// [`ClientTransactions::start`].
    pub fn next_branch(&self) -> String {
        format!(
            "{BRANCH_PREFIX}{:016x}.{:x}",
            self.branch_salt, self.next_id
        )
    }

    /// Starts a transaction for `bytes` (which must carry the branch from `next_branch`) just
    /// sent to `destination`.
    pub fn start(
        &mut self,
        now: Instant,
        branch: String,
        owner: Owner,
        destination: Route,
        bytes: Arc<[u8]>,
        reliable: bool,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let tx = Transaction {
            branch,
            owner,
            destination,
            bytes,
            reliable,
            state: TxState::Trying,
            interval: self.timers.t1,
            next_event: now + self.timers.t1,
            gives_up_at: now + self.timers.timeout(),
            retransmissions: 0,
            started: now,
        };
        self.queue.insert((tx.deadline(), id));
        self.by_id.insert(id, tx);
        self.stats.started += 1;
    }

    fn id_of(&self, branch: &str) -> Option<u64> {
        let rest = branch.strip_prefix(BRANCH_PREFIX)?;
        let (salt, id) = rest.split_once('.')?;
        if u64::from_str_radix(salt, 16).ok()? != self.branch_salt {
            return None;
        }
        let id = u64::from_str_radix(id, 16).ok()?;
        // The id alone is guessable; require the whole branch to match what we sent.
        (self.by_id.get(&id)?.branch == branch).then_some(id)
    }

    /// Matches a response by its top Via branch and moves the transaction on.
    pub fn handle_response(&mut self, now: Instant, branch: &str, code: u16) -> Matched {
        let Some(id) = self.id_of(branch) else {
            return Matched::Unknown;
        };
        let Some(tx) = self.by_id.get_mut(&id) else {
            return Matched::Unknown;
        };
        let old_deadline = tx.deadline();
        let result = match (tx.state, code) {
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
                if tx.reliable {
                    // Timer K is zero for reliable transports.
                    self.queue.remove(&(old_deadline, id));
                    self.by_id.remove(&id);
                    return Matched::Deliver(owner, latency);
                }
                tx.state = TxState::Completed;
                self.completed_held += 1;
                tx.next_event = now + self.timers.t4;
                // Nothing is retransmitted any more; only the branch is needed to absorb
                // repeated responses, so drop the request bytes now rather than after timer K.
                tx.bytes = Arc::from(&[][..]);
                Matched::Deliver(owner, latency)
            }
        };
        let new_deadline = tx.deadline();
        if new_deadline != old_deadline {
            self.queue.remove(&(old_deadline, id));
            self.queue.insert((new_deadline, id));
        }
        result
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Ends a transaction without a response (its connection broke); returns its owner.
    pub fn abandon(&mut self, branch: &str) -> Option<Owner> {
        let id = self.id_of(branch)?;
        let tx = self.by_id.remove(&id)?;
        self.queue.remove(&(tx.deadline(), id));
        if tx.state == TxState::Completed {
            self.completed_held -= 1;
            return None;
        }
        Some(tx.owner)
    }

    /// Handles every timer due at `now`, appending retransmissions and timeouts to `out`.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<TimerEvent>) {
        while let Some(&(at, id)) = self.queue.first() {
            if at > now {
                break;
            }
            self.queue.pop_first();
            let Some(tx) = self.by_id.get_mut(&id) else {
                continue;
            };
            if tx.state == TxState::Completed {
                self.by_id.remove(&id);
                self.completed_held -= 1;
                continue;
            }
            if now >= tx.gives_up_at {
                self.stats.timeouts += 1;
                out.push(TimerEvent::TimedOut(tx.owner));
                self.by_id.remove(&id);
                continue;
            }
            // Timer E.
            tx.retransmissions += 1;
            self.stats.retransmissions += 1;
            out.push(TimerEvent::Retransmit {
                destination: tx.destination,
                bytes: tx.bytes.clone(),
            });
            if tx.state == TxState::Trying {
                tx.interval = (tx.interval * 2).min(self.timers.t2);
            }
            tx.next_event = now + tx.interval;
            self.queue.insert((tx.deadline(), id));
        }
        self.release_spare_capacity();
    }

    /// A start-up burst grows the map to tens of thousands of slots (each holds a whole
    /// transaction) that a quiet gateway never needs again; give most of them back once the
    /// map is a quarter full. Each shrink follows at least as many removals as it moves
    /// entries, so the cost per transaction stays constant.
    fn release_spare_capacity(&mut self) {
        const KEEP: usize = 1024;
        let capacity = self.by_id.capacity();
        if capacity > KEEP && self.by_id.len() < capacity / 4 {
            self.by_id.shrink_to((self.by_id.len() * 2).max(KEEP));
        }
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

    fn owner() -> Owner {
        Owner {
            key: RegKey(1),
            cseq: 7,
        }
    }

    /// One transaction started at `t0`; returns the set and its branch.
    fn started(t0: Instant, salt: u64, reliable: bool) -> (ClientTransactions, String) {
        let mut txs = ClientTransactions::new(Timers::default(), salt);
        let branch = txs.next_branch();
        txs.start(
            t0,
            branch.clone(),
            owner(),
            addr(),
            Arc::from(&b"x"[..]),
            reliable,
        );
        (txs, branch)
    }

    fn addr() -> Route {
        Route {
            local: None,
            remote: "127.0.0.1:5060".parse().unwrap(),
        }
    }

    /// Starts `count` transactions at `t0`, the `i`th over a reliable transport when
    /// `reliable(i)`; returns their branches in order.
    fn start_many(
        txs: &mut ClientTransactions,
        t0: Instant,
        count: usize,
        reliable: impl Fn(usize) -> bool,
    ) -> Vec<String> {
        (0..count)
            .map(|i| {
                let branch = txs.next_branch();
                txs.start(
                    t0,
                    branch.clone(),
                    owner(),
                    addr(),
                    Arc::from(&b"x"[..]),
                    reliable(i),
                );
                branch
            })
            .collect()
    }

    #[test]
    fn a_burst_of_transactions_gives_its_memory_back_once_done() {
        let t0 = Instant::now();
        let mut txs = ClientTransactions::new(Timers::default(), 1);
        let branches = start_many(&mut txs, t0, 20_000, |_| false);
        let grown = txs.by_id.capacity();
        assert!(grown >= 20_000);
        for branch in &branches {
            assert!(matches!(
                txs.handle_response(t0, branch, 200),
                Matched::Deliver(..)
            ));
        }
        let mut out = Vec::new();
        txs.handle_timeout(t0 + Duration::from_secs(6), &mut out);
        assert_eq!(txs.pending(), 0);
        assert!(txs.by_id.is_empty());
        assert!(txs.by_id.capacity() < grown / 4, "{}", txs.by_id.capacity());
    }

    #[test]
    fn udp_retransmits_with_doubling_interval_then_times_out_at_64_t1() {
        let t0 = Instant::now();
        let (mut txs, _) = started(t0, 0xabc, false);
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
        assert_eq!(
            sent_at,
            vec![
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!(timed_out, Some((32000, owner())));
        assert_eq!(txs.stats().timeouts, 1);
    }

    #[test]
    fn final_response_is_delivered_once_and_retransmissions_absorbed() {
        let t0 = Instant::now();
        let (mut txs, branch) = started(t0, 1, false);
        assert_eq!(txs.handle_response(t0, &branch, 100), Matched::Absorbed);
        assert_eq!(
            txs.handle_response(t0 + Duration::from_millis(3), &branch, 200),
            Matched::Deliver(owner(), Duration::from_millis(3))
        );
        assert_eq!(txs.handle_response(t0, &branch, 200), Matched::Absorbed);
        let mut out = Vec::new();
        txs.handle_timeout(t0 + Duration::from_secs(6), &mut out);
        assert!(out.is_empty());
        assert_eq!(txs.handle_response(t0, &branch, 200), Matched::Unknown);
        assert_eq!(txs.next_deadline(), None);
    }

    /// `pending()` is a counter now; it must agree with counting the map at every step.
    #[test]
    fn pending_counts_only_unanswered_transactions() {
        let t0 = Instant::now();
        let mut txs = ClientTransactions::new(Timers::default(), 9);
        let naive = |txs: &ClientTransactions| {
            txs.by_id
                .values()
                .filter(|tx| tx.state != TxState::Completed)
                .count()
        };
        let branches = start_many(&mut txs, t0, 10, |i| i % 3 == 0);
        assert_eq!(txs.pending(), 10);
        for branch in &branches[..4] {
            txs.handle_response(t0, branch, 200);
            txs.handle_response(t0, branch, 200); // a repeat changes nothing
            assert_eq!(txs.pending(), naive(&txs));
        }
        assert_eq!(txs.pending(), 6);
        txs.abandon(&branches[1]); // completed: no longer held
        txs.abandon(&branches[5]); // unanswered
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
        let (mut txs, branch) = started(t0, 1, false);
        txs.handle_response(t0 + Duration::from_millis(100), &branch, 180);
        assert_eq!(txs.next_deadline(), Some(t0 + Duration::from_millis(4100)));
    }

    #[test]
    fn unknown_or_forged_branches_do_not_match() {
        let t0 = Instant::now();
        let (mut txs, _) = started(t0, 0x55, false);
        for bad in [
            "",
            "z9hG4bK",
            "z9hG4bK0000000000000055.2",
            "z9hG4bKzz.1",
            "z9hG4bK0000000000000056.1",
            "abc",
        ] {
            assert_eq!(txs.handle_response(t0, bad, 200), Matched::Unknown, "{bad}");
        }
    }

    #[test]
    fn reliable_transport_only_has_timer_f() {
        let t0 = Instant::now();
        let (txs, _) = started(t0, 1, true);
        assert_eq!(txs.next_deadline(), Some(t0 + Duration::from_secs(32)));
    }
}
