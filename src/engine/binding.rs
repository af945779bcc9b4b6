//! Where each registration's binding lives, and registering again when that place is lost.
//!
//! A binding made over TCP or TLS is tied to its connection: when it drops, the registrar can
//! no longer reach us through it, so its registrations register again at once — and later and
//! later (jittered [`Backoff`], so that rows sharing a flaky connection do not come back in
//! lockstep) when connections keep dropping within [`DROP_WINDOW`]. A UDP binding stays on
//! the target that accepted it; its keep-alive failing sends it through the same rebind.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashSet};
use rand::rngs::StdRng;
use tracing::info;

use super::transaction::Owner;
use super::{Engine, Event};
use crate::backoff::Backoff;
use crate::registration::RegKey;
use crate::transport::resolve::Target;
use crate::transport::stream::FlowId;

/// Connections that drop again within this window back their registrations off.
pub(crate) const DROP_WINDOW: Duration = Duration::from_secs(120);
/// The second drop in a row waits about this long; each further one twice as long.
const FIRST_REBIND_DELAY: Duration = Duration::from_secs(2);
pub(crate) const MAX_REBIND_DELAY: Duration = Duration::from_secs(300);

/// The target that last answered a registration, and the connection its binding lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Bound {
    pub target: Target,
    pub flow: Option<FlowId>,
}

/// One registration's recent connection losses.
struct DropStreak {
    backoff: Backoff,
    /// Losses in this streak.
    drops: u32,
    last: Instant,
}

/// Each distinct [`Bound`] stored once, with how many registrations use it. Rows on one trunk
/// share a handful of places, so a registration keeps a 4-byte number instead of its own
/// 56-byte copy: at 100,000 rows the map of places went from 8.5 MB to 2.2 MB.
#[derive(Default)]
struct Places {
    slots: Vec<PlaceSlot>,
    numbers: HashMap<Bound, u32>,
    /// Slots no registration uses any more, reused first.
    free: Vec<u32>,
}

struct PlaceSlot {
    bound: Bound,
    users: u32,
}

impl Places {
    fn get(&self, number: u32) -> Bound {
        self.slots[number as usize].bound
    }

    /// The number of `bound`, counting one more user of it.
    fn acquire(&mut self, bound: Bound) -> u32 {
        if let Some(&number) = self.numbers.get(&bound) {
            self.slots[number as usize].users += 1;
            return number;
        }
        let slot = PlaceSlot { bound, users: 1 };
        let number = match self.free.pop() {
            Some(number) => {
                self.slots[number as usize] = slot;
                number
            }
            None => {
                // More distinct places than u32 numbers would need more rows than memory holds.
                let number = u32::try_from(self.slots.len()).expect("fewer than 2^32 places");
                self.slots.push(slot);
                number
            }
        };
        self.numbers.insert(bound, number);
        number
    }

    /// One user fewer of place `number`, which it returns; the last one frees it.
    fn release(&mut self, number: u32) -> Bound {
        let slot = &mut self.slots[number as usize];
        slot.users -= 1;
        if slot.users == 0 {
            self.numbers.remove(&slot.bound);
            self.free.push(number);
        }
        slot.bound
    }
}

pub(crate) struct Bindings {
    /// Where each registration's binding was accepted (the target it stays on), as a number
    /// in `places`.
    bound: HashMap<RegKey, u32>,
    places: Places,
    /// Registrations whose binding lives on each connection.
    flow_members: HashMap<FlowId, HashSet<RegKey>>,
    /// Re-registrations after a lost connection, delayed when connections keep dropping.
    rebind_at: BTreeSet<(Instant, RegKey)>,
    drops: HashMap<RegKey, DropStreak>,
    /// The rebind delays' jitter.
    rng: StdRng,
}

impl Bindings {
    pub(crate) fn new(rng: StdRng) -> Bindings {
        Bindings {
            bound: HashMap::default(),
            places: Places::default(),
            flow_members: HashMap::default(),
            rebind_at: BTreeSet::new(),
            drops: HashMap::default(),
            rng,
        }
    }

    pub(crate) fn target_of(&self, key: RegKey) -> Option<Target> {
        self.bound.get(&key).map(|&n| self.places.get(n).target)
    }

    fn bound_of(&self, key: RegKey) -> Option<Bound> {
        self.bound.get(&key).map(|&n| self.places.get(n))
    }

    /// Records where `key`'s binding lives now; returns where it lived before.
    fn bind(&mut self, key: RegKey, bound: Bound) -> Option<Bound> {
        let number = self.places.acquire(bound);
        let old = self.bound.insert(key, number)?;
        Some(self.places.release(old))
    }

    fn unbind(&mut self, key: RegKey) -> Option<Bound> {
        let old = self.bound.remove(&key)?;
        Some(self.places.release(old))
    }

    pub(crate) fn next_rebind(&self) -> Option<Instant> {
        self.rebind_at.first().map(|(at, _)| *at)
    }

    /// Whether any binding lives on `flow` (only those connections are pinged).
    pub(crate) fn has_members(&self, flow: FlowId) -> bool {
        self.flow_members.get(&flow).is_some_and(|m| !m.is_empty())
    }

    /// Registrations bound over UDP to `remote` (from which of our sockets is the caller's
    /// to check).
    pub(crate) fn on_udp_target(&self, remote: SocketAddr) -> impl Iterator<Item = RegKey> + '_ {
        let wanted: HashSet<u32> = self
            .places
            .numbers
            .iter()
            .filter(|(b, _)| b.flow.is_none() && b.target.addr == remote)
            .map(|(_, &number)| number)
            .collect();
        self.bound
            .iter()
            .filter(move |(_, number)| wanted.contains(number))
            .map(|(key, _)| *key)
    }

    /// Registers `key` again now, or later when its connections keep dropping.
    fn schedule_rebind(&mut self, now: Instant, key: RegKey) {
        let streak = self.drops.entry(key).or_insert_with(|| DropStreak {
            backoff: Backoff::new(FIRST_REBIND_DELAY, MAX_REBIND_DELAY),
            drops: 0,
            last: now,
        });
        let delay = if streak.drops == 0 || now.duration_since(streak.last) >= DROP_WINDOW {
            // The first loss in a while: register again at once, and start a new streak.
            streak.drops = 1;
            streak.backoff.reset();
            Duration::ZERO
        } else {
            streak.drops += 1;
            streak.backoff.next_delay_with(&mut self.rng)
        };
        streak.last = now;
        self.rebind_at.insert((now + delay, key));
    }
}

impl Engine {
    pub(crate) fn set_bound(&mut self, key: RegKey, bound: Bound) {
        let bindings = &mut self.bindings;
        let old = bindings.bind(key, bound);
        let from = old.map(|b| b.target.addr.ip());
        let to = Some(bound.target.addr.ip());
        if from != to {
            self.events.push_back(Event::RegistrarMoved { from, to });
        }
        if let Some(old) = old
            && old.flow != bound.flow
            && let Some(flow) = old.flow
            && let Some(members) = bindings.flow_members.get_mut(&flow)
        {
            members.remove(&key);
        }
        if let Some(flow) = bound.flow {
            bindings.flow_members.entry(flow).or_default().insert(key);
        }
    }

    pub(crate) fn unbind(&mut self, key: RegKey) {
        let bindings = &mut self.bindings;
        let Some(old) = bindings.unbind(key) else {
            // Nothing was bound: the relay trusts nothing less.
            return;
        };
        if let Some(flow) = old.flow
            && let Some(members) = bindings.flow_members.get_mut(&flow)
        {
            members.remove(&key);
        }
        self.events.push_back(Event::RegistrarMoved {
            from: Some(old.target.addr.ip()),
            to: None,
        });
    }

    /// Registers `key` again (now, or after its back-off).
    pub(crate) fn rebind_later(&mut self, now: Instant, key: RegKey) {
        self.bindings.schedule_rebind(now, key);
    }

    /// A connection ended: requests on it fail over, bindings on it are registered again.
    pub(crate) fn flow_closed(
        &mut self,
        now: Instant,
        flow: FlowId,
        peer: Option<SocketAddr>,
        why: &str,
    ) {
        self.keepalive.forget_flow(flow);
        self.stats.connections_closed += 1;
        let broken: Vec<(RegKey, u32, String)> = self
            .attempts
            .iter()
            .filter(|(_, a)| a.flow == Some(flow))
            .map(|(key, a)| (*key, a.queued.request.cseq, a.branch.clone()))
            .collect();
        for (key, cseq, branch) in broken {
            if self.transactions.abandon(&branch).is_some() {
                let why = match peer {
                    Some(peer) => format!("connection to {peer} failed: {why}"),
                    None => format!("connection failed: {why}"),
                };
                self.fail_over_or_report(now, Owner { key, cseq }, why);
            }
        }
        let members = self.bindings.flow_members.remove(&flow).unwrap_or_default();
        if !members.is_empty() {
            info!(
                flow,
                registrations = members.len(),
                "connection lost ({why}); registering again"
            );
        }
        for key in members {
            if let Some(bound) = self.bindings.bound_of(key) {
                self.bindings.bind(
                    key,
                    Bound {
                        flow: None,
                        ..bound
                    },
                );
            }
            self.bindings.schedule_rebind(now, key);
        }
    }

    pub(crate) fn handle_rebinds(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.bindings.rebind_at.first() {
            if at > now {
                break;
            }
            self.bindings.rebind_at.pop_first();
            if self.table.rebind(now, key) {
                self.stats.rebinds += 1;
            }
        }
        if self.bindings.drops.len() > 1024 {
            self.bindings
                .drops
                .retain(|_, streak| now.duration_since(streak.last) < DROP_WINDOW);
        }
    }
}
