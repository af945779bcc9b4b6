//! The cluster's I/O shell: one task that holds rounds with the database for the sans-I/O
//! [`Membership`] and tells the driver which shards to run.
//!
//! Every `lease / 3` the task renews its leases and reads the cluster ([`Store::cluster_round`]),
//! notes the instant it asked (deadlines count from there), drops shards it lost, hands over the
//! ones it gives back (their rows stop here, their dialogs are written, then the lease is
//! released), claims free or lapsed ones and starts their rows with the dialogs the previous
//! owner wrote, and writes the dialogs that changed. It has a database connection of its own,
//! so a long reload never delays a renewal. When a round fails the deadlines are not moved:
//! the engine stops sending for the shards at their deadlines by itself.
//!
//! Times in `uacreg_dialog` are on the database's clock: each round maps the local monotonic
//! clock onto it ([`DbClock`]), so no two nodes' clocks are ever compared.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::cluster::{
    LeaseSeen, Membership, MembershipConfig, NodeSeen, RoundPlan, RoundView, shard_of,
};
use crate::config::ClusterSettings;
use crate::driver::DriverHandle;
use crate::engine::RowDialog;
use crate::registration::Continuation;
use crate::store::{
    ClusterView, DialogRow, NodeInfo, RowDefaults, ServerTimeouts, ShardLease, Store, StoreError,
};

/// Why the cluster task could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ClusterTaskError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking database call did not come back (it panicked, or the runtime is stopping).
    #[error("cluster database call failed: {0}")]
    Task(String),
}

/// What `uacreg.cluster` shows, kept up to date by the task.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: String,
    pub shards: u32,
    pub lease_secs: u64,
    /// Shards this node may send for now (held, deadline not passed).
    pub held: Vec<u32>,
    /// Each held shard's deadline; `held` is read from it at the moment of asking, so a
    /// node whose database hangs shows its shards going as their deadlines pass.
    #[serde(skip)]
    deadlines: Vec<(u32, Instant)>,
    /// Database time (ms since the epoch) of the last successful round.
    pub last_round_ms: i64,
    /// The last round's failure, if the last round failed.
    pub last_error: Option<String>,
    pub nodes: Vec<NodeStatus>,
    pub takeovers: u64,
    pub rows_taken: u64,
    pub handovers: u64,
    pub rows_handed_over: u64,
    pub shards_lost: u64,
    pub shards_lapsed: u64,
    pub dialogs_written: u64,
    /// Dialog writes the database refused because the lease was no longer held.
    pub dialog_writes_fenced: u64,
}

/// One node as the last round saw it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub sip_addr: String,
    /// Database time of its last round.
    pub seen_ms: i64,
    pub live: bool,
    pub leaving: bool,
    /// Shards it holds on an unexpired lease.
    pub shards: Vec<u32>,
}

/// How the daemon stops the cluster task.
enum Stop {
    /// Hand every shard to the peers (if any are live); reply whether it did.
    HandOver(oneshot::Sender<bool>),
    /// Release whatever is still held, forget the node, end the task.
    Finish(oneshot::Sender<()>),
}

/// The daemon's end of the cluster task.
pub struct ClusterHandle {
    status: Arc<Mutex<ClusterStatus>>,
    stop: mpsc::Sender<Stop>,
    task: tokio::task::JoinHandle<()>,
}

impl ClusterStatus {
    /// The status with `held` as of `now`.
    pub fn held_at(mut self, now: Instant) -> ClusterStatus {
        self.held = self
            .deadlines
            .iter()
            .filter(|(_, deadline)| *deadline > now)
            .map(|(shard, _)| *shard)
            .collect();
        self
    }
}

impl ClusterHandle {
    pub fn status(&self) -> ClusterStatus {
        let status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        status.held_at(Instant::now())
    }

    /// A shared view of the status for the RPC server.
    pub fn status_board(&self) -> Arc<Mutex<ClusterStatus>> {
        self.status.clone()
    }

    /// Stopping with live peers: stops running every shard here and hands them over. False
    /// when no peer is live (the caller un-REGISTERs as a single node does).
    pub async fn hand_over(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.stop.send(Stop::HandOver(tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Releases what is left and removes this node from the table; ends the task.
    pub async fn finish(self) {
        let (tx, rx) = oneshot::channel();
        if self.stop.send(Stop::Finish(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
        self.task.abort();
    }
}

/// Everything the task needs to start.
pub struct ClusterParams {
    pub settings: ClusterSettings,
    pub node_id: String,
    pub sip_addr: String,
    pub db_url: String,
    pub defaults: RowDefaults,
}

/// Maps the local clock onto the database's, as of the last round.
#[derive(Clone, Copy, Debug)]
struct DbClock {
    db_ms: i64,
    at: Instant,
}

impl DbClock {
    fn now_ms(&self, now: Instant) -> i64 {
        self.db_ms + now.saturating_duration_since(self.at).as_millis() as i64
    }
}

/// Starts the cluster task (after the driver, before anything loads rows into it).
pub async fn start(
    params: ClusterParams,
    driver: DriverHandle,
) -> Result<ClusterHandle, ClusterTaskError> {
    let shards = params.settings.shards;
    let mut store = Store::unconnected(&params.db_url)?;
    // The cluster's connection is bounded by the lease, not by [database]'s timeouts (made for
    // loading 100,000 rows): see ServerTimeouts::for_cluster.
    store.set_timeouts(ServerTimeouts::for_cluster(params.settings.lease));
    let store = tokio::task::spawn_blocking(move || {
        store.connect()?;
        store.cluster_prepare(shards)?;
        Ok::<_, StoreError>(store)
    })
    .await
    .map_err(|err| ClusterTaskError::Task(err.to_string()))??;
    let lease = params.settings.lease;
    let membership = Membership::new(MembershipConfig {
        node_id: params.node_id.clone(),
        shards,
        lease,
        safety_margin: MembershipConfig::default_margin(lease),
        max_releases_per_round: params.settings.max_releases_per_round,
    });
    let status = Arc::new(Mutex::new(ClusterStatus {
        node_id: params.node_id.clone(),
        shards,
        lease_secs: lease.as_secs(),
        ..ClusterStatus::default()
    }));
    let (stop_tx, stop_rx) = mpsc::channel(4);
    let node = ClusterNode {
        membership,
        store: Arc::new(Mutex::new(store)),
        driver,
        status: status.clone(),
        info: NodeInfo {
            node_id: params.node_id,
            sip_addr: params.sip_addr,
            started_ms: 0,
            leaving: false,
            // Tells this process from another started under the same node_id (thread_rng is
            // a CSPRNG seeded by the OS).
            instance: i64::try_from(rand::random::<u64>() >> 1)
                .unwrap_or(1)
                .max(1),
        },
        defaults: params.defaults,
        clock: None,
        written: HashMap::new(),
        peers_live: false,
        epoch: Instant::now(),
    };
    let task = tokio::spawn(node.run(stop_rx));
    Ok(ClusterHandle {
        status,
        stop: stop_tx,
        task,
    })
}

struct ClusterNode {
    membership: Membership,
    /// The task's own connection; locked by the blocking call that uses it.
    store: Arc<Mutex<Store>>,
    driver: DriverHandle,
    status: Arc<Mutex<ClusterStatus>>,
    info: NodeInfo,
    defaults: RowDefaults,
    clock: Option<DbClock>,
    /// Fingerprint of each dialog as last written, by l_uuid.
    written: HashMap<String, u64>,
    /// Another node was live at the last round.
    peers_live: bool,
    /// Where dialog fingerprints count binding expiries from.
    epoch: Instant,
}

impl ClusterNode {
    async fn run(mut self, mut stop: mpsc::Receiver<Stop>) {
        let period = (self.membership.config().lease / 3).max(Duration::from_millis(300));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.round().await,
                request = stop.recv() => match request {
                    Some(Stop::HandOver(reply)) => {
                        let handed = self.hand_over().await;
                        let _ = reply.send(handed);
                    }
                    Some(Stop::Finish(reply)) => {
                        self.finish().await;
                        let _ = reply.send(());
                        return;
                    }
                    None => return,
                },
            }
        }
    }

    /// Runs `f` on the store off the async threads, giving up after a lease: a database that
    /// hangs must not hold the task (the call itself finishes or fails on its own thread, and
    /// until then further calls fail at once as busy).
    async fn with_store<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ClusterTaskError> {
        let store = self.store.clone();
        let call = tokio::task::spawn_blocking(move || {
            let Ok(mut store) = store.try_lock() else {
                return Err(ClusterTaskError::Task(
                    "an earlier database call has not returned".into(),
                ));
            };
            Ok(f(&mut store)?)
        });
        match tokio::time::timeout(self.membership.config().lease, call).await {
            Ok(Ok(result)) => result,
            Ok(Err(err)) => Err(ClusterTaskError::Task(err.to_string())),
            Err(_) => Err(ClusterTaskError::Task(format!(
                "no answer from the database within {:?}",
                self.membership.config().lease
            ))),
        }
    }

    /// Copies the held shards' deadlines to the status board.
    fn publish_deadlines(&self) {
        let deadlines: Vec<(u32, Instant)> =
            self.membership.held().map(|(s, _, d)| (s, d)).collect();
        self.update_status(|s| s.deadlines = deadlines);
    }

    fn update_status(&self, f: impl FnOnce(&mut ClusterStatus)) {
        if let Ok(mut status) = self.status.lock() {
            f(&mut status);
        }
    }

    async fn round(&mut self) {
        // Shards whose deadline passed are no longer ours (the engine stopped them already).
        let lapsed = self.membership.handle_timeout(Instant::now());
        if !lapsed.is_empty() {
            warn!(shards = ?lapsed, "shard leases lapsed before a renewal: their rows stopped");
            let _ = self.driver.drop_shards(lapsed.clone()).await;
            self.update_status(|s| s.shards_lapsed += lapsed.len() as u64);
        }
        let sent_at = Instant::now();
        let info = self.info.clone();
        let lease_ms = self.membership.config().lease.as_millis() as i64;
        let view = match self
            .with_store(move |store| store.cluster_round(&info, lease_ms))
            .await
        {
            Ok(view) => view,
            Err(ClusterTaskError::Store(err @ StoreError::NodeIdInUse { .. })) => {
                self.step_aside(&err).await;
                return;
            }
            Err(err) => {
                warn!("cluster round failed: {err}; leases run on until their deadlines");
                self.update_status(|s| s.last_error = Some(err.to_string()));
                return;
            }
        };
        self.clock = Some(DbClock {
            db_ms: view.db_now_ms,
            at: sent_at,
        });
        if self.info.started_ms == 0 {
            self.info.started_ms = view.db_now_ms;
        }
        let round_view = to_round_view(&view);
        let plan = self.membership.handle_round(sent_at, &round_view);
        self.publish_deadlines();
        self.apply_plan(&view, plan).await;
        self.publish_deadlines();
        self.driver
            .extend_shards(self.membership.held().map(|(s, _, d)| (s, d)).collect())
            .await
            .ok();
        self.write_dialogs().await;
        self.publish(&view);
    }

    /// Another process runs under this node_id: whatever this one believed it held, it stops
    /// sending for now (the leases are the other's as much as its own), and it claims nothing
    /// until the other is gone.
    async fn step_aside(&mut self, err: &StoreError) {
        let held: Vec<u32> = self.membership.held().map(|(s, _, _)| s).collect();
        if !held.is_empty() {
            let _ = self.driver.drop_shards(held.clone()).await;
            self.membership.handle_released(&held);
            self.publish_deadlines();
            self.update_status(|s| s.shards_lost += held.len() as u64);
        }
        let first = self
            .status
            .lock()
            .map(|s| s.last_error.as_deref() != Some(&err.to_string()))
            .unwrap_or(true);
        if first {
            tracing::error!(
                dropped = held.len(),
                "{err}; holding no shards until it stops"
            );
        }
        self.update_status(|s| s.last_error = Some(err.to_string()));
    }

    async fn apply_plan(&mut self, view: &ClusterView, plan: RoundPlan) {
        if !plan.lost.is_empty() {
            warn!(shards = ?plan.lost, "shards taken over by another node or lapsed at the database");
            let _ = self.driver.drop_shards(plan.lost.clone()).await;
            self.update_status(|s| s.shards_lost += plan.lost.len() as u64);
        }
        if !plan.release.is_empty() {
            self.release(plan.release).await;
        }
        if !plan.claim.is_empty() {
            self.claim(plan.claim).await;
        }
        self.peers_live = view.nodes.iter().any(|n| {
            n.node_id != self.info.node_id
                && !n.leaving
                && is_live(n.seen_ms, view, &self.membership)
        });
    }

    /// Hands shards over: their rows stop here, their dialogs are written, the leases go back.
    async fn release(&mut self, leases: Vec<(u32, i64)>) {
        let shards: Vec<u32> = leases.iter().map(|(s, _)| *s).collect();
        let ours: Vec<(u32, i64)> = leases
            .iter()
            .copied()
            .filter(|(s, _)| self.membership.deadline(*s).is_some())
            .collect();
        // A driver that has stopped (the last node, after its un-REGISTERs) runs nothing.
        let dialogs = self
            .driver
            .drop_shards(shards.clone())
            .await
            .unwrap_or_default();
        let rows = dialogs.len();
        if !ours.is_empty() {
            let held: HashMap<u32, i64> = ours.iter().copied().collect();
            let upserts = self.dialog_rows(&dialogs);
            let node_id = self.info.node_id.clone();
            if let Err(err) = self
                .with_store(move |store| store.write_dialogs(&node_id, &held, &upserts, &[]))
                .await
            {
                warn!("could not write the dialogs of shards being handed over: {err}");
            }
        }
        for dialog in &dialogs {
            self.written.remove(&dialog.l_uuid);
        }
        let node_id = self.info.node_id.clone();
        let released = self
            .with_store(move |store| store.cluster_release(&node_id, &leases))
            .await;
        // Released or not, they are not ours any more: what was not released lapses.
        self.membership.handle_released(&shards);
        self.publish_deadlines();
        match released {
            Ok(done) => info!(shards = done.len(), rows, "shards handed over"),
            Err(err) => warn!("releasing shards failed ({err}); they lapse instead"),
        }
        self.update_status(|s| {
            s.handovers += shards.len() as u64;
            s.rows_handed_over += rows as u64;
        });
    }

    /// Claims free or lapsed shards and starts the rows of the ones won.
    async fn claim(&mut self, shards: Vec<u32>) {
        let sent_at = Instant::now();
        let node_id = self.info.node_id.clone();
        let lease_ms = self.membership.config().lease.as_millis() as i64;
        let won = match self
            .with_store(move |store| store.cluster_claim(&node_id, &shards, lease_ms))
            .await
        {
            Ok(won) => won,
            Err(err) => {
                warn!("claiming shards failed: {err}");
                return;
            }
        };
        let won: Vec<LeaseSeen> = won.iter().map(to_lease_seen).collect();
        let new = self.membership.handle_claimed(sent_at, &won);
        if new.is_empty() {
            return;
        }
        self.publish_deadlines();
        let count = self.membership.config().shards;
        let defaults = self.defaults.clone();
        let wanted: HashSet<u32> = new.iter().copied().collect();
        let reading = new.clone();
        let loaded = self
            .with_store(move |store| {
                let loaded = store.load(&defaults)?;
                let dialogs = store.read_dialogs(&reading)?;
                Ok((loaded, dialogs))
            })
            .await;
        let (loaded, dialogs) = match loaded {
            Ok(both) => both,
            Err(err) => {
                // Keep the leases (they lapse if rounds fail); the rows come with a retry:
                // give the shards back so that a claim runs again.
                warn!("could not read the rows of claimed shards: {err}; giving them back");
                let leases: Vec<(u32, i64)> = self
                    .membership
                    .held()
                    .filter(|(s, _, _)| wanted.contains(s))
                    .map(|(s, e, _)| (s, e))
                    .collect();
                self.release(leases).await;
                return;
            }
        };
        let now = Instant::now();
        let db_now = self.clock.map(|c| c.now_ms(now));
        let mut by_uuid: HashMap<String, Continuation> = HashMap::new();
        for row in dialogs {
            if let (Some(db_now), Ok(next_cseq)) = (db_now, u32::try_from(row.next_cseq)) {
                let left_ms = row.binding_expires_ms - db_now;
                let binding = (left_ms > 0 && row.granted_expires > 0).then(|| {
                    (
                        row.granted_expires as u32,
                        Duration::from_millis(left_ms as u64),
                    )
                });
                by_uuid.insert(
                    row.l_uuid,
                    Continuation {
                        call_id: row.call_id,
                        from_tag: row.from_tag,
                        next_cseq,
                        binding,
                        contact: row.contact,
                    },
                );
            }
        }
        let rows: Vec<_> = loaded
            .records
            .into_iter()
            .filter(|r| wanted.contains(&shard_of(r.l_uuid(), count)))
            .map(|r| {
                let dialog = by_uuid.remove(r.l_uuid());
                (r, dialog)
            })
            .collect();
        let deadlines: Vec<(u32, Instant)> = self
            .membership
            .held()
            .filter(|(s, _, _)| wanted.contains(s))
            .map(|(s, _, d)| (s, d))
            .collect();
        match self.driver.take_shards(deadlines, rows).await {
            Ok(added) => {
                info!(shards = ?new, rows = added, "shards taken");
                self.update_status(|s| {
                    s.takeovers += new.len() as u64;
                    s.rows_taken += added as u64;
                });
            }
            Err(_) => debug!("driver gone while taking shards"),
        }
    }

    /// Writes the dialogs that changed since they were last written.
    async fn write_dialogs(&mut self) {
        let Ok(dialogs) = self.driver.dialogs().await else {
            return;
        };
        let mut changed = Vec::new();
        let mut fingerprints = Vec::new();
        let now = Instant::now();
        for dialog in &dialogs {
            let fingerprint = fingerprint(&dialog.dialog, now, self.epoch);
            if self.written.get(&dialog.l_uuid) != Some(&fingerprint) {
                changed.push(dialog.clone());
                fingerprints.push((dialog.l_uuid.clone(), fingerprint));
            }
        }
        let present: HashSet<&str> = dialogs.iter().map(|d| d.l_uuid.as_str()).collect();
        self.written
            .retain(|l_uuid, _| present.contains(l_uuid.as_str()));
        if changed.is_empty() {
            return;
        }
        let held: HashMap<u32, i64> = self.membership.held().map(|(s, e, _)| (s, e)).collect();
        let upserts = self.dialog_rows(&changed);
        let node_id = self.info.node_id.clone();
        match self
            .with_store(move |store| store.write_dialogs(&node_id, &held, &upserts, &[]))
            .await
        {
            Ok(skipped) => {
                for (l_uuid, fingerprint) in fingerprints {
                    self.written.insert(l_uuid, fingerprint);
                }
                let written = changed.len() - skipped;
                self.update_status(|s| {
                    s.dialogs_written += written as u64;
                    s.dialog_writes_fenced += skipped as u64;
                });
            }
            Err(err) => warn!("could not write dialogs: {err}"),
        }
    }

    fn dialog_rows(&self, dialogs: &[RowDialog]) -> Vec<DialogRow> {
        let now = Instant::now();
        let db_now = self.clock.map_or(0, |c| c.now_ms(now));
        dialogs
            .iter()
            .map(|d| {
                let (granted, expires_ms) = match d.dialog.binding {
                    Some((granted, left)) => (granted as i32, db_now + left.as_millis() as i64),
                    None => (0, 0),
                };
                DialogRow {
                    l_uuid: d.l_uuid.clone(),
                    shard: d.shard,
                    call_id: d.dialog.call_id.clone(),
                    from_tag: d.dialog.from_tag.clone(),
                    next_cseq: i64::from(d.dialog.next_cseq),
                    binding_expires_ms: expires_ms,
                    granted_expires: granted,
                    contact: d.dialog.contact.clone(),
                    node_id: self.info.node_id.clone(),
                    updated_ms: db_now,
                }
            })
            .collect()
    }

    /// Stopping: with live peers, one last round as a leaving node hands every shard over.
    async fn hand_over(&mut self) -> bool {
        if !self.peers_live {
            return false;
        }
        self.membership.leave();
        self.info.leaving = true;
        self.round().await;
        info!("shards handed over to the other nodes");
        true
    }

    async fn finish(&mut self) {
        let leases: Vec<(u32, i64)> = self.membership.held().map(|(s, e, _)| (s, e)).collect();
        if !leases.is_empty() {
            // Whatever still runs here is written down for the next owner first.
            self.write_dialogs().await;
            self.release(leases).await;
        }
        let node_id = self.info.node_id.clone();
        if let Err(err) = self
            .with_store(move |store| store.cluster_forget_node(&node_id))
            .await
        {
            warn!("could not remove this node from the cluster table: {err}");
        }
    }

    fn publish(&self, view: &ClusterView) {
        let nodes = view
            .nodes
            .iter()
            .map(|n| NodeStatus {
                node_id: n.node_id.clone(),
                sip_addr: n.sip_addr.clone(),
                seen_ms: n.seen_ms,
                live: is_live(n.seen_ms, view, &self.membership),
                leaving: n.leaving,
                shards: view
                    .shards
                    .iter()
                    .filter(|l| {
                        l.owner.as_deref() == Some(&n.node_id) && l.expires_ms > view.db_now_ms
                    })
                    .map(|l| l.shard)
                    .collect(),
            })
            .collect();
        self.update_status(|s| {
            s.last_round_ms = view.db_now_ms;
            s.last_error = None;
            s.nodes = nodes;
        });
    }
}

fn is_live(seen_ms: i64, view: &ClusterView, membership: &Membership) -> bool {
    let lease_ms = membership.config().lease.as_millis() as i64;
    seen_ms > view.db_now_ms - lease_ms
}

fn to_lease_seen(lease: &ShardLease) -> LeaseSeen {
    LeaseSeen {
        shard: lease.shard,
        owner: lease.owner.clone(),
        epoch: lease.epoch,
        expires_ms: lease.expires_ms,
    }
}

fn to_round_view(view: &ClusterView) -> RoundView {
    RoundView {
        db_now_ms: view.db_now_ms,
        nodes: view
            .nodes
            .iter()
            .map(|n| NodeSeen {
                node_id: n.node_id.clone(),
                seen_ms: n.seen_ms,
                leaving: n.leaving,
            })
            .collect(),
        shards: view.shards.iter().map(to_lease_seen).collect(),
    }
}

/// What decides whether a dialog must be written again: its ids, its CSeq, and its binding
/// (the grant, and the expiry to the second, counted from `epoch`).
fn fingerprint(dialog: &Continuation, now: Instant, epoch: Instant) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dialog.call_id.hash(&mut hasher);
    dialog.from_tag.hash(&mut hasher);
    dialog.next_cseq.hash(&mut hasher);
    dialog
        .binding
        .map(|(granted, left)| {
            (
                granted,
                (now + left).saturating_duration_since(epoch).as_secs(),
            )
        })
        .hash(&mut hasher);
    hasher.finish()
}
