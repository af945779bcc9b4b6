//! One node's part in the cluster: which shards it holds, until when it may send for them, and
//! what it should claim or give back after each round with the database.
//!
//! A round is: the cluster task notes the instant it sends the query (`sent_at`), the database
//! renews this node's unexpired leases and answers with every node and lease as of its own clock
//! ([`RoundView`]), and [`Membership::handle_round`] turns that into a [`RoundPlan`]. Deadlines
//! are counted from `sent_at`, which is before the database stamped the renewal, so the local
//! deadline always comes before the lease can lapse at the database.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::shard::ShardSet;

/// How one node takes part.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    pub node_id: String,
    pub shards: u32,
    /// How long a lease lasts at the database once claimed or renewed.
    pub lease: Duration,
    /// How much before the lease lapses the node stops sending for the shard.
    pub safety_margin: Duration,
    /// Shards given back per round when holding more than the fair share, so a joining node
    /// fills up gradually and no round moves many rows at once.
    pub max_releases_per_round: usize,
}

impl MembershipConfig {
    /// A margin of a fifth of the lease, at least 500 ms and never more than half of it.
    pub fn default_margin(lease: Duration) -> Duration {
        (lease / 5).max(Duration::from_millis(500)).min(lease / 2)
    }
}

/// A node as the database last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSeen {
    pub node_id: String,
    /// The database's clock at the node's last round, ms since the Unix epoch.
    pub seen_ms: i64,
    /// Handing its shards over: wants none.
    pub leaving: bool,
}

/// A shard's lease as the database holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSeen {
    pub shard: u32,
    pub owner: Option<String>,
    pub epoch: i64,
    /// ms since the Unix epoch on the database's clock; at or before `db_now_ms`: lapsed.
    pub expires_ms: i64,
}

/// What one round with the database returned (after it renewed this node's leases).
#[derive(Clone, Debug, Default)]
pub struct RoundView {
    pub db_now_ms: i64,
    pub nodes: Vec<NodeSeen>,
    pub shards: Vec<LeaseSeen>,
}

/// What the node must do after a round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundPlan {
    /// Held before, not any more (taken over, or lapsed at the database): drop the rows
    /// without un-REGISTERing.
    pub lost: Vec<u32>,
    /// Free or lapsed shards to claim (compare-and-set; some may go to another node).
    pub claim: Vec<u32>,
    /// Held shards to give back (shard, epoch): above the fair share, or leases in this node's
    /// name it does not know of (a previous run of the same node id).
    pub release: Vec<(u32, i64)>,
}

/// Why a shard stopped being held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardLeave {
    /// Its deadline passed without a renewal: stop sending at once.
    Lapsed,
    /// Another node holds it now, or the database let it lapse.
    Lost,
    /// Given back on purpose (rebalancing or a handover on stop).
    Released,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    epoch: i64,
    /// The node sends nothing for the shard from this instant on unless a round renews it.
    deadline: Instant,
    /// Being given back: the rows are handed over and the release is under way.
    releasing: bool,
}

/// One node's shards and deadlines.
#[derive(Debug)]
pub struct Membership {
    config: MembershipConfig,
    held: BTreeMap<u32, Held>,
    leaving: bool,
    /// Rounds seen; the first only announces the node, so that nodes starting together see
    /// each other before anyone claims.
    rounds: u64,
}

impl Membership {
    pub fn new(config: MembershipConfig) -> Membership {
        Membership {
            config,
            held: BTreeMap::new(),
            leaving: false,
            rounds: 0,
        }
    }

    pub fn config(&self) -> &MembershipConfig {
        &self.config
    }

    /// The shards this node may send for (held, not lapsed, not being given back).
    pub fn sending(&self) -> ShardSet {
        let mut set = ShardSet::empty(self.config.shards);
        for (shard, held) in &self.held {
            if !held.releasing {
                set.insert(*shard);
            }
        }
        set
    }

    /// Every held shard with its epoch and deadline.
    pub fn held(&self) -> impl Iterator<Item = (u32, i64, Instant)> + '_ {
        self.held.iter().map(|(s, h)| (*s, h.epoch, h.deadline))
    }

    pub fn deadline(&self, shard: u32) -> Option<Instant> {
        self.held.get(&shard).map(|h| h.deadline)
    }

    /// The earliest deadline: when [`Membership::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held.values().map(|h| h.deadline).min()
    }

    /// Drops every shard whose deadline is at or before `now`; returns them.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<u32> {
        let lapsed: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for shard in &lapsed {
            self.held.remove(shard);
        }
        lapsed
    }

    fn deadline_from(&self, sent_at: Instant) -> Instant {
        sent_at + self.config.lease.saturating_sub(self.config.safety_margin)
    }

    /// The fair share of `node_id` among the live nodes (every node computes the same).
    fn share_of(&self, live: &[&str], node_id: &str) -> usize {
        let Some(index) = live.iter().position(|n| *n == node_id) else {
            return 0;
        };
        let shards = self.config.shards as usize;
        let n = live.len().max(1);
        shards / n + usize::from(index < shards % n)
    }

    /// Nodes whose last round is younger than a lease and who are not leaving, this node
    /// included unless it is leaving; sorted, so every node ranks them alike.
    fn live_nodes<'v>(&'v self, view: &'v RoundView) -> Vec<&'v str> {
        let lease_ms = i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX);
        let mut live: Vec<&str> = view
            .nodes
            .iter()
            .filter(|n| !n.leaving && n.seen_ms > view.db_now_ms.saturating_sub(lease_ms))
            .map(|n| n.node_id.as_str())
            .filter(|id| *id != self.config.node_id)
            .collect();
        if !self.leaving {
            live.push(&self.config.node_id);
        }
        live.sort_unstable();
        live.dedup();
        live
    }

    /// A round answered: renews deadlines of the shards the database still has in this node's
    /// name, reports the ones it lost, and plans claims and releases toward the fair share.
    pub fn handle_round(&mut self, sent_at: Instant, view: &RoundView) -> RoundPlan {
        self.rounds += 1;
        let me = self.config.node_id.as_str();
        let mut plan = RoundPlan::default();
        let deadline = self.deadline_from(sent_at);
        let by_shard: BTreeMap<u32, &LeaseSeen> =
            view.shards.iter().map(|l| (l.shard, l)).collect();

        // What we believed we held.
        let mut lost = Vec::new();
        for (shard, held) in self.held.iter_mut() {
            match by_shard.get(shard) {
                Some(lease)
                    if lease.owner.as_deref() == Some(me)
                        && lease.epoch == held.epoch
                        && lease.expires_ms > view.db_now_ms =>
                {
                    held.deadline = held.deadline.max(deadline);
                }
                _ => lost.push(*shard),
            }
        }
        for shard in &lost {
            self.held.remove(shard);
        }
        plan.lost = lost;

        // Leases in our name we do not know of: an earlier run of this node id. Given back, so
        // their rows are claimed (and continued) the regular way.
        for lease in &view.shards {
            if lease.owner.as_deref() == Some(me)
                && lease.expires_ms > view.db_now_ms
                && !self.held.contains_key(&lease.shard)
                && lease.shard < self.config.shards
            {
                plan.release.push((lease.shard, lease.epoch));
            }
        }

        if self.leaving {
            for (shard, held) in self.held.iter_mut() {
                if !held.releasing {
                    held.releasing = true;
                    plan.release.push((*shard, held.epoch));
                }
            }
            return plan;
        }
        if self.rounds == 1 {
            // First round: be seen before taking anything.
            return plan;
        }

        let live = self.live_nodes(view);
        let share = self.share_of(&live, me);
        let holding = self.held.values().filter(|h| !h.releasing).count();
        if holding > share {
            let excess = (holding - share).min(self.config.max_releases_per_round);
            let giving: Vec<u32> = self
                .held
                .iter()
                .rev()
                .filter(|(_, h)| !h.releasing)
                .take(excess)
                .map(|(s, _)| *s)
                .collect();
            for shard in giving {
                if let Some(held) = self.held.get_mut(&shard) {
                    held.releasing = true;
                    plan.release.push((shard, held.epoch));
                }
            }
        } else if holding < share {
            // Free or lapsed shards, starting at a place of our own so that nodes claiming at
            // the same time mostly ask for different ones.
            let shards = self.config.shards;
            let offset = super::shard::shard_of(me, shards);
            let mut free: Vec<u32> = view
                .shards
                .iter()
                .filter(|l| l.shard < shards && !self.held.contains_key(&l.shard))
                .filter(|l| l.owner.is_none() || l.expires_ms <= view.db_now_ms)
                .map(|l| l.shard)
                .collect();
            free.sort_unstable_by_key(|s| (s + shards - offset) % shards);
            free.truncate(share - holding);
            plan.claim = free;
        }
        plan
    }

    /// Claims answered: the leases won, counted from when the claim was sent. Returns the
    /// shards newly held.
    pub fn handle_claimed(&mut self, sent_at: Instant, won: &[LeaseSeen]) -> Vec<u32> {
        let deadline = self.deadline_from(sent_at);
        let mut new = Vec::new();
        for lease in won {
            if lease.owner.as_deref() != Some(self.config.node_id.as_str())
                || lease.shard >= self.config.shards
            {
                continue;
            }
            let fresh = self
                .held
                .insert(
                    lease.shard,
                    Held {
                        epoch: lease.epoch,
                        deadline,
                        releasing: false,
                    },
                )
                .is_none();
            if fresh {
                new.push(lease.shard);
            }
        }
        new
    }

    /// Releases done (or given up): the shards are no longer held.
    pub fn handle_released(&mut self, shards: &[u32]) {
        for shard in shards {
            self.held.remove(shard);
        }
    }

    /// Stopping with peers alive: give everything back in the next round.
    pub fn leave(&mut self) {
        self.leaving = true;
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    fn member(id: &str) -> Membership {
        Membership::new(MembershipConfig {
            node_id: id.into(),
            shards: 16,
            lease: LEASE,
            safety_margin: Duration::from_secs(2),
            max_releases_per_round: 3,
        })
    }

    fn node(id: &str, seen_ms: i64) -> NodeSeen {
        NodeSeen {
            node_id: id.into(),
            seen_ms,
            leaving: false,
        }
    }

    fn lease(shard: u32, owner: Option<&str>, epoch: i64, expires_ms: i64) -> LeaseSeen {
        LeaseSeen {
            shard,
            owner: owner.map(String::from),
            epoch,
            expires_ms,
        }
    }

    /// A view at `now_ms` where `owners[i]` owns shard i with a live lease.
    fn view(now_ms: i64, nodes: &[&str], owners: &[Option<&str>]) -> RoundView {
        RoundView {
            db_now_ms: now_ms,
            nodes: nodes.iter().map(|n| node(n, now_ms)).collect(),
            shards: owners
                .iter()
                .enumerate()
                .map(|(i, o)| lease(i as u32, *o, 1, now_ms + 10_000))
                .collect(),
        }
    }

    #[test]
    fn a_lone_node_waits_one_round_then_claims_every_free_shard() {
        let mut a = member("a");
        let t0 = Instant::now();
        let free = view(1_000, &["a"], &[None; 16]);
        assert_eq!(a.handle_round(t0, &free), RoundPlan::default());
        let plan = a.handle_round(t0, &free);
        assert_eq!(plan.claim.len(), 16);
        let won: Vec<LeaseSeen> = plan
            .claim
            .iter()
            .map(|s| lease(*s, Some("a"), 1, 11_000))
            .collect();
        let new = a.handle_claimed(t0, &won);
        assert_eq!(new.len(), 16);
        assert_eq!(a.sending().len(), 16);
        assert_eq!(
            a.poll_timeout(),
            Some(t0 + Duration::from_secs(8)),
            "lease minus margin"
        );
    }

    #[test]
    fn the_deadline_passes_without_a_renewal_and_the_shard_is_dropped() {
        let mut a = member("a");
        let t0 = Instant::now();
        a.handle_claimed(t0, &[lease(3, Some("a"), 7, 0)]);
        assert!(a.handle_timeout(t0 + Duration::from_secs(7)).is_empty());
        assert_eq!(a.handle_timeout(t0 + Duration::from_secs(8)), vec![3]);
        assert!(a.sending().is_empty());
    }

    #[test]
    fn a_renewal_moves_the_deadline_from_when_the_round_was_sent() {
        let mut a = member("a");
        let t0 = Instant::now();
        a.handle_round(t0, &RoundView::default());
        a.handle_claimed(t0, &[lease(0, Some("a"), 2, 0)]);
        let mut owners = [None; 16];
        owners[0] = Some("a");
        let mut seen = view(5_000, &["a"], &owners);
        seen.shards[0].epoch = 2;
        let t1 = t0 + Duration::from_secs(3);
        let plan = a.handle_round(t1, &seen);
        assert!(plan.lost.is_empty());
        assert_eq!(a.deadline(0), Some(t1 + Duration::from_secs(8)));
    }

    #[test]
    fn a_shard_taken_by_another_node_or_lapsed_at_the_database_is_lost() {
        let mut a = member("a");
        let t0 = Instant::now();
        a.handle_round(t0, &RoundView::default());
        a.handle_claimed(
            t0,
            &[
                lease(0, Some("a"), 1, 0),
                lease(1, Some("a"), 1, 0),
                lease(2, Some("a"), 1, 0),
            ],
        );
        let mut seen = view(50_000, &["a", "b"], &[Some("b"), Some("a"), Some("a")]);
        seen.shards[0].epoch = 2; // b claimed it after our lease lapsed
        seen.shards[2].expires_ms = 50_000; // lapsed, nobody claimed it yet
        let plan = a.handle_round(t0, &seen);
        assert_eq!(plan.lost, vec![0, 2]);
        assert_eq!(a.sending().iter().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn a_new_node_gets_shards_a_few_per_round_and_both_settle_at_half() {
        let (mut a, mut b) = (member("a"), member("b"));
        let t = Instant::now();
        // a holds all 16.
        a.handle_round(t, &RoundView::default());
        a.handle_claimed(
            t,
            &(0..16)
                .map(|s| lease(s, Some("a"), 1, 0))
                .collect::<Vec<_>>(),
        );
        b.handle_round(t, &RoundView::default());
        let mut owners: Vec<Option<&str>> = vec![Some("a"); 16];
        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds < 10, "did not settle");
            let seen = view(1_000 * rounds, &["a", "b"], &owners);
            let plan_a = a.handle_round(t, &seen);
            assert!(plan_a.release.len() <= 3, "{plan_a:?}");
            for (shard, _) in &plan_a.release {
                owners[*shard as usize] = None;
            }
            a.handle_released(&plan_a.release.iter().map(|(s, _)| *s).collect::<Vec<_>>());
            let seen = view(1_000 * rounds, &["a", "b"], &owners);
            let plan_b = b.handle_round(t, &seen);
            let won: Vec<LeaseSeen> = plan_b
                .claim
                .iter()
                .map(|s| lease(*s, Some("b"), 1, 0))
                .collect();
            for l in &won {
                owners[l.shard as usize] = Some("b");
            }
            b.handle_claimed(t, &won);
            if a.sending().len() == 8 && b.sending().len() == 8 {
                break;
            }
        }
        assert_eq!(rounds, 3, "8 shards at 3 per round");
        // Settled: nothing moves any more.
        let seen = view(99_000, &["a", "b"], &owners);
        assert_eq!(a.handle_round(t, &seen).release, vec![]);
    }

    #[test]
    fn a_dead_nodes_shards_are_claimed_once_its_leases_lapse() {
        let mut a = member("a");
        let t = Instant::now();
        a.handle_round(t, &RoundView::default());
        a.handle_claimed(
            t,
            &(0..8)
                .map(|s| lease(s, Some("a"), 1, 0))
                .collect::<Vec<_>>(),
        );
        let now = 100_000;
        let mut seen = RoundView {
            db_now_ms: now,
            nodes: vec![node("a", now), node("b", now - 30_000)],
            shards: (0..16)
                .map(|s| {
                    if s < 8 {
                        lease(s, Some("a"), 1, now + 10_000)
                    } else {
                        lease(s, Some("b"), 1, now - 20_000)
                    }
                })
                .collect(),
        };
        let plan = a.handle_round(t, &seen);
        assert_eq!(plan.claim.len(), 8, "b is not live: a's share is all 16");
        // While b's leases run, they are not claimed even though b looks dead.
        for l in &mut seen.shards[8..] {
            l.expires_ms = now + 1;
        }
        seen.nodes[1].seen_ms = now;
        assert!(a.handle_round(t, &seen).claim.is_empty());
    }

    #[test]
    fn a_leaving_node_releases_everything_and_others_count_it_out() {
        let mut a = member("a");
        let t = Instant::now();
        a.handle_round(t, &RoundView::default());
        a.handle_claimed(
            t,
            &(0..4)
                .map(|s| lease(s, Some("a"), 5, 0))
                .collect::<Vec<_>>(),
        );
        a.leave();
        let mut owners = vec![None; 16];
        for o in owners.iter_mut().take(4) {
            *o = Some("a");
        }
        let mut seen = view(1_000, &["a", "b"], &owners);
        for l in &mut seen.shards[..4] {
            l.epoch = 5;
        }
        let plan = a.handle_round(t, &seen);
        assert_eq!(plan.release, vec![(0, 5), (1, 5), (2, 5), (3, 5)]);
        assert!(plan.claim.is_empty());
        assert!(a.sending().is_empty(), "nothing is sent while handing over");

        let mut b = member("b");
        b.handle_round(t, &RoundView::default());
        seen.nodes[0].leaving = true;
        assert_eq!(
            b.handle_round(t, &seen).claim.len(),
            12,
            "the free ones; a's follow when released"
        );
    }

    #[test]
    fn leases_in_our_name_from_an_earlier_run_are_given_back() {
        let mut a = member("a");
        let t = Instant::now();
        let mut owners = vec![None; 16];
        owners[5] = Some("a");
        let plan = a.handle_round(t, &view(1_000, &["a"], &owners));
        assert_eq!(plan.release, vec![(5, 1)]);
    }

    #[test]
    fn shares_add_up_to_the_shard_count() {
        let a = member("a");
        let live = ["a", "b", "c"];
        let total: usize = live.iter().map(|n| a.share_of(&live, n)).sum();
        assert_eq!(total, 16);
        assert_eq!(a.share_of(&live, "a"), 6);
        assert_eq!(a.share_of(&live, "c"), 5);
        assert_eq!(a.share_of(&live, "z"), 0);
    }
}
