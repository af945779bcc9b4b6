//! Several uacregd nodes sharing one `uacreg` table, coordinated through the database alone.
//!
//! Rows fall into a fixed number of shards (a stable hash of the l_uuid, [`shard_of`]). A node
//! registers only the rows of shards it holds a lease on; leases live in the database and are
//! claimed and renewed compare-and-set, against the database's clock, so two nodes never hold
//! one shard. Every node computes the same fair share from the same view of live nodes, gives
//! back what it holds above its share a few shards per round, and claims free or lapsed shards
//! up to its share: a new node fills up gradually, a dead node's shards are taken once its
//! leases lapse.
//!
//! Leases protect the registrar only if a node stops sending before its lease can lapse at the
//! database. So each held shard has a local *deadline*: when the round that renewed it was
//! sent, plus the lease, minus a safety margin. A node that is paused, partitioned or without
//! its database reaches the deadline before anyone else may claim the shard, and the engine
//! drops the shard's rows at that instant without a word on the wire (no un-REGISTER: the
//! binding is the next owner's to continue).
//!
//! Like the engine, this is sans-I/O: [`Membership`] is fed what the database answered and the
//! time the question was sent, and says what to claim, release and drop. The daemon's cluster
//! task does the database calls.

mod membership;
mod shard;

pub use membership::{
    LeaseSeen, Membership, MembershipConfig, NodeSeen, RoundPlan, RoundView, ShardLeave,
};
pub use shard::{ShardSet, shard_of};
