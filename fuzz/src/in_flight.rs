//! Registrations with REGISTERs in flight, for responses to land on.
//!
//! [`InFlight`] holds what the daemon's driver holds for the response path — the registration
//! table and the client transactions — and moves them the way the driver does, through the
//! library's public calls: actions of the table become transactions (branch from
//! `next_branch`, request encoded, `start`, `request_sent`), timers of both are run, timeouts go
//! back to the table, and a delivered response goes to the table. Everything is deterministic:
//! the generators are seeded and time only moves when the harness says so. DNS is not involved:
//! the rows name IP literals or the harness picks the address.
//!
//! It also records every transaction it started, so the targets can check that a response the
//! matcher delivered really carried that transaction's branch, Call-ID and CSeq and came back
//! the way the request went.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use uacreg::registration::{
    Action, CoreConfig, Record, RegKey, RegistrationTable, RetryPolicy, Transport,
};
use uacreg::sip::message::Response;
use uacreg::sip::register::Hop;
use uacreg::engine::transaction::{
    ClientTransactions, Matched, Owner, Path, RequestIds, Route, TimerEvent, Timers,
};

/// Our Via sent-by in every REGISTER.
pub const SENT_BY: &str = "192.0.2.1:5062";
/// Where a row whose destination is a host name is sent (no DNS here).
const NAMED_HOST: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 40)), 5060);

/// One transaction the harness started.
#[derive(Clone, Debug)]
pub struct Sent {
    pub key: RegKey,
    pub ids: RequestIds,
    pub path: Path,
    /// The request as it went out.
    pub bytes: Arc<[u8]>,
}

pub struct InFlight {
    pub now: Instant,
    pub table: RegistrationTable,
    pub transactions: ClientTransactions,
    /// Every transaction started, oldest first.
    pub sent: Vec<Sent>,
    /// The registrations, in the order of the records given.
    pub keys: Vec<RegKey>,
    encode_buf: Vec<u8>,
}

impl InFlight {
    /// A table holding `records`, with every registration that wants a binding having sent
    /// its first REGISTER.
    pub fn new(records: Vec<Record>) -> InFlight {
        let now = Instant::now();
        let mut table = RegistrationTable::new(CoreConfig::default(), StdRng::seed_from_u64(1));
        let l_uuids: Vec<String> = records.iter().map(|r| r.l_uuid().to_string()).collect();
        table.reload(now, records);
        let keys = l_uuids
            .iter()
            .filter_map(|l_uuid| table.get(l_uuid).map(|r| r.key()))
            .collect();
        let mut state = InFlight {
            now,
            table,
            transactions: ClientTransactions::new(Timers::default(), StdRng::seed_from_u64(2)),
            sent: Vec::new(),
            keys,
            encode_buf: Vec::new(),
        };
        state.advance(Duration::ZERO);
        state
    }

    /// Moves time on by `step` and runs every timer that falls due (repeatedly, in deadline
    /// order, so a long step still passes through each intermediate deadline).
    pub fn advance(&mut self, step: Duration) {
        let until = self.now + step;
        // Bounded: a long step crosses few deadlines per registration at the default policy.
        for _ in 0..10_000 {
            let next = [
                self.table.next_deadline(),
                self.transactions.next_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    self.run_timers();
                }
                _ => break,
            }
        }
        self.now = until;
        self.run_timers();
    }

    fn run_timers(&mut self) {
        let mut events = Vec::new();
        self.transactions.handle_timeout(self.now, &mut events);
        for event in events {
            if let TimerEvent::TimedOut(owner) = event {
                self.table
                    .handle_transaction_failure(self.now, owner.key, owner.cseq, "timer F");
            }
        }
        self.table.handle_timeout(self.now);
        self.send_actions();
    }

    /// Turns the table's actions into transactions, as the driver's send path does.
    fn send_actions(&mut self) {
        let actions: Vec<Action> = self.table.drain_actions().collect();
        for action in actions {
            let Action::Send {
                key,
                destination,
                request,
            } = action;
            if !self.table.is_current(key, request.cseq) {
                continue;
            }
            let transport = destination.transport.unwrap_or(if destination.secure {
                Transport::Tls
            } else {
                Transport::Udp
            });
            let remote = destination
                .host
                .parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, destination.port.unwrap_or(transport.default_port())))
                .unwrap_or(NAMED_HOST);
            let path = if transport.is_stream() {
                // One connection per registration, numbered after it.
                Path::Flow(100 + key.0)
            } else {
                Path::Udp(Route {
                    local: None,
                    remote,
                })
            };
            let branch = self.transactions.next_branch();
            self.encode_buf.clear();
            request.encode(
                &Hop::plain(transport.via_token(), SENT_BY, &branch),
                &mut self.encode_buf,
            );
            let bytes: Arc<[u8]> = Arc::from(&self.encode_buf[..]);
            let ids = RequestIds {
                branch,
                call_id: request.call_id.clone(),
                cseq: request.cseq,
                method: "REGISTER",
            };
            let owner = Owner {
                key,
                cseq: request.cseq,
            };
            self.transactions
                .start(self.now, ids.clone(), owner, path, bytes.clone());
            self.table.request_sent(self.now, key, request.cseq);
            self.sent.push(Sent {
                key,
                ids,
                path,
                bytes,
            });
        }
    }

    /// The latest transaction of registration `key`, if it ever sent one.
    pub fn latest(&self, key: RegKey) -> Option<&Sent> {
        self.sent.iter().rev().find(|s| s.key == key)
    }

    /// The first transaction of registration `key`.
    pub fn first(&self, key: RegKey) -> Option<&Sent> {
        self.sent.iter().find(|s| s.key == key)
    }

    /// A response that arrived by `arrival`, as the driver handles it after the relay said it
    /// is not a relayed one: matched against the transactions and, when it answers one,
    /// delivered to the registration. Checks that a delivered response did answer the
    /// transaction it was delivered for.
    pub fn handle_response(&mut self, response: &Response, arrival: Path) -> Matched {
        let matched = self
            .transactions
            .handle_response(self.now, response, arrival);
        if let Matched::Deliver(owner, _) = matched {
            let sent = self
                .sent
                .iter()
                .find(|s| s.key == owner.key && s.ids.cseq == owner.cseq)
                .expect("a delivered response belongs to a transaction we started");
            assert_eq!(response.branch.as_deref(), Some(sent.ids.branch.as_str()));
            assert_eq!(response.call_id, sent.ids.call_id);
            assert_eq!(response.cseq, sent.ids.cseq);
            assert_eq!(response.cseq_method, sent.ids.method);
            assert!(
                sent.path.is_answered_by(&arrival),
                "delivered a response that came by {arrival:?} for a request sent by {:?}",
                sent.path
            );
            self.table.handle_response(self.now, owner.key, response);
            self.send_actions();
        }
        matched
    }

    /// The registrations waiting for an answer, with the CSeq of their request.
    pub fn waiting(&self) -> Vec<(RegKey, u32)> {
        self.table
            .iter()
            .filter_map(|r| r.in_flight_cseq().map(|cseq| (r.key(), cseq)))
            .collect()
    }

    /// Runs time on until every request in flight now must have ended (answered, timed out, or
    /// ended by the registration's in-flight guard), and checks that each did: whatever
    /// responses came before, no registration is left waiting for good.
    pub fn check_nothing_stuck(&mut self) {
        let before = self.waiting();
        let guard = RetryPolicy::default().in_flight_guard;
        self.advance(guard + Duration::from_secs(60));
        let after = self.waiting();
        for stuck in before.iter().filter(|w| after.contains(w)) {
            panic!(
                "registration {:?} still waits for request {} after {guard:?}",
                stuck.0, stuck.1
            );
        }
        self.check();
    }

    /// The invariants of the core that no response may break: a registration waiting for an
    /// answer always has a timer (so it cannot wait forever), and only as many transactions
    /// are unanswered as registrations wait.
    pub fn check(&self) {
        let mut waiting = 0;
        for registration in self.table.iter() {
            if registration.in_flight_cseq().is_some() {
                waiting += 1;
                assert!(
                    registration.timer().is_some(),
                    "{} waits for an answer without a timer",
                    registration.record().l_uuid()
                );
            }
        }
        assert!(
            self.transactions.pending() <= waiting,
            "{} transactions unanswered for {waiting} registrations waiting",
            self.transactions.pending()
        );
    }
}
