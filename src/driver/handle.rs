//! [`DriverHandle`]: how the RPC server, the loader, the status writer and the daemon ask the
//! driver task for something. Every request is a typed [`Command`] carrying its own reply
//! channel; the task runs it against the engine and answers with a copy, so nothing outside
//! the task ever holds the table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::{DriverStats, WallClock};
use crate::engine::{Removal, RemovalGuard, RowDialog};
use crate::registration::record::Record;
use crate::registration::{AlreadyExists, Attribute, Continuation, ReloadSummary, Snapshot};
use crate::store::StatusRow;

/// Registrations per driver command when dumping (see [`DriverHandle::snapshots`]).
pub const SNAPSHOT_SLICE: usize = 2000;

pub(super) type Reply<T> = oneshot::Sender<T>;

/// What can be asked of the driver task.
pub(super) enum Command {
    /// Up to [`SNAPSHOT_SLICE`] snapshots after this l_uuid (None: from the start).
    Snapshots {
        after: Option<String>,
        reply: Reply<Vec<Snapshot>>,
    },
    /// One page of registrations in l_uuid order, and how many there are.
    SnapshotPage {
        offset: usize,
        limit: usize,
        reply: Reply<(Vec<Snapshot>, usize)>,
    },
    Find {
        attribute: Attribute,
        value: String,
        reply: Reply<Option<Snapshot>>,
    },
    /// The registration whose local URI is `sip:user@host`.
    FindByLocalUri {
        user: String,
        host: String,
        reply: Reply<Option<Snapshot>>,
    },
    Reload {
        records: Vec<Record>,
        reply: Reply<ReloadSummary>,
    },
    /// A reload refused when it would remove more rows than `guard` allows.
    ReloadGuarded {
        records: Vec<Record>,
        guard: RemovalGuard,
        reply: Reply<Result<ReloadSummary, Removal>>,
    },
    /// `uac.reg_refresh`: one row as the database has it now (None: gone).
    ApplyOne {
        l_uuid: String,
        record: Option<Record>,
        reply: Reply<bool>,
    },
    SetDisabled {
        attribute: Attribute,
        value: String,
        disabled: bool,
        reply: Reply<bool>,
    },
    /// `uac.reg_register` (`register`) or `uac.reg_unregister`.
    RegisterNow {
        attribute: Attribute,
        value: String,
        register: bool,
        reply: Reply<bool>,
    },
    SetActive {
        active: bool,
        reply: Reply<bool>,
    },
    Add {
        record: Record,
        reply: Reply<Result<(), AlreadyExists>>,
    },
    Remove {
        l_uuid: String,
        reply: Reply<bool>,
    },
    StatusCounts(Reply<BTreeMap<&'static str, usize>>),
    /// A row's latest state changes, oldest first.
    Transitions {
        l_uuid: String,
        limit: usize,
        reply: Reply<Vec<crate::registration::Transition>>,
    },
    /// Every row as `uacreg_status` stores it, times on `clock`.
    StatusRows {
        clock: WallClock,
        reply: Reply<Vec<StatusRow>>,
    },
    Stats(Reply<DriverStats>),
    /// Clustered: newly held shards (with their deadlines) and their rows, with the dialogs
    /// the previous owner left.
    TakeShards {
        shards: Vec<(u32, Instant)>,
        rows: Vec<(Record, Option<Continuation>)>,
        reply: Reply<usize>,
    },
    /// Clustered: shards no longer held; their rows' dialogs come back.
    DropShards {
        shards: Vec<u32>,
        reply: Reply<Vec<RowDialog>>,
    },
    /// Clustered: renewed deadlines.
    ExtendShards(Vec<(u32, Instant)>),
    /// Clustered: every held row's dialog, for the database.
    Dialogs(Reply<Vec<RowDialog>>),
    Shutdown(Option<Duration>, Reply<usize>),
    /// Test builds only: makes the driver task panic (the reply is never sent).
    #[cfg(feature = "fault-injection")]
    Panic(Reply<()>),
}

/// Cheap, cloneable access to the driver task.
#[derive(Clone)]
pub struct DriverHandle {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) clock: WallClock,
    pub(super) local_addr: SocketAddr,
}

/// The driver has stopped (shutdown finished or the task failed).
#[derive(Debug, thiserror::Error)]
#[error("the registration driver is not running")]
pub struct DriverGone;

impl DriverHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, DriverGone> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| DriverGone)?;
        rx.await.map_err(|_| DriverGone)
    }

    pub fn clock(&self) -> WallClock {
        self.clock
    }

    /// Address the SIP socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Every current registration, in l_uuid order. Taken in slices of [`SNAPSHOT_SLICE`]: a
    /// whole table of 100,000 at once held the driver (and every refresh and response) for a
    /// quarter of a second; slices hold it for a few milliseconds each. A row added or removed
    /// meanwhile may or may not appear, as with any dump of a live table.
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>, DriverGone> {
        let mut all: Vec<Snapshot> = Vec::new();
        loop {
            let after = all.last().map(|s| s.record.l_uuid().to_owned());
            let slice = self
                .ask(|reply| Command::Snapshots { after, reply })
                .await?;
            let done = slice.len() < SNAPSHOT_SLICE;
            all.extend(slice);
            if done {
                return Ok(all);
            }
        }
    }

    /// Up to [`SNAPSHOT_SLICE`] registrations in l_uuid order after `after` (None: from the
    /// start); fewer means the table ends there. One driver command: a dump that streams its
    /// answer asks for the next slice only when the previous one is written.
    pub async fn snapshot_slice(&self, after: Option<String>) -> Result<Vec<Snapshot>, DriverGone> {
        self.ask(|reply| Command::Snapshots { after, reply }).await
    }

    /// The `limit` registrations from position `offset` in l_uuid order (at most
    /// [`SNAPSHOT_SLICE`]), and how many there are.
    pub async fn snapshot_page(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Snapshot>, usize), DriverGone> {
        let limit = limit.min(SNAPSHOT_SLICE);
        self.ask(|reply| Command::SnapshotPage {
            offset,
            limit,
            reply,
        })
        .await
    }

    pub async fn find(
        &self,
        attribute: Attribute,
        value: &str,
    ) -> Result<Option<Snapshot>, DriverGone> {
        let value = value.to_string();
        self.ask(|reply| Command::Find {
            attribute,
            value,
            reply,
        })
        .await
    }

    /// The first registration (in l_uuid order) whose local URI is `sip:user@host`, the host
    /// in any letter case: `uac.reg_lookup`'s reverse search, answered from an index.
    pub async fn find_by_local_uri(
        &self,
        user: &str,
        host: &str,
    ) -> Result<Option<Snapshot>, DriverGone> {
        let (user, host) = (user.to_string(), host.to_string());
        self.ask(|reply| Command::FindByLocalUri { user, host, reply })
            .await
    }

    pub async fn reload(&self, records: Vec<Record>) -> Result<ReloadSummary, DriverGone> {
        self.ask(|reply| Command::Reload { records, reply }).await
    }

    /// A reload refused (nothing changes) when `guard` finds it would remove too many rows;
    /// counted and applied in one step on the driver task, so nothing changes the table
    /// between the check and the diff.
    pub async fn reload_guarded(
        &self,
        records: Vec<Record>,
        guard: RemovalGuard,
    ) -> Result<Result<ReloadSummary, Removal>, DriverGone> {
        self.ask(|reply| Command::ReloadGuarded {
            records,
            guard,
            reply,
        })
        .await
    }

    /// `uac.reg_refresh` with the row just read from the database (None: it is gone there).
    pub async fn apply_one(
        &self,
        l_uuid: &str,
        record: Option<Record>,
    ) -> Result<bool, DriverGone> {
        let l_uuid = l_uuid.to_string();
        self.ask(|reply| Command::ApplyOne {
            l_uuid,
            record,
            reply,
        })
        .await
    }

    pub async fn set_disabled(
        &self,
        attribute: Attribute,
        value: &str,
        disabled: bool,
    ) -> Result<bool, DriverGone> {
        let value = value.to_string();
        self.ask(|reply| Command::SetDisabled {
            attribute,
            value,
            disabled,
            reply,
        })
        .await
    }

    /// `uac.reg_register` (`register`: true) or `uac.reg_unregister`.
    pub async fn register_now(
        &self,
        attribute: Attribute,
        value: &str,
        register: bool,
    ) -> Result<bool, DriverGone> {
        let value = value.to_string();
        self.ask(|reply| Command::RegisterNow {
            attribute,
            value,
            register,
            reply,
        })
        .await
    }

    /// `uac.reg_active`: returns the previous mode.
    pub async fn set_active(&self, active: bool) -> Result<bool, DriverGone> {
        self.ask(|reply| Command::SetActive { active, reply }).await
    }

    pub async fn add(&self, record: Record) -> Result<Result<(), AlreadyExists>, DriverGone> {
        self.ask(|reply| Command::Add { record, reply }).await
    }

    pub async fn remove(&self, l_uuid: &str) -> Result<bool, DriverGone> {
        let l_uuid = l_uuid.to_string();
        self.ask(|reply| Command::Remove { l_uuid, reply }).await
    }

    pub async fn status_counts(&self) -> Result<BTreeMap<&'static str, usize>, DriverGone> {
        self.ask(Command::StatusCounts).await
    }

    /// `l_uuid`'s latest state changes the table remembers (at most `limit`), oldest first.
    pub async fn transitions(
        &self,
        l_uuid: &str,
        limit: usize,
    ) -> Result<Vec<crate::registration::Transition>, DriverGone> {
        let l_uuid = l_uuid.to_string();
        self.ask(|reply| Command::Transitions {
            l_uuid,
            limit,
            reply,
        })
        .await
    }

    /// Every row as `uacreg_status` stores it.
    pub async fn status_rows(&self) -> Result<Vec<StatusRow>, DriverGone> {
        let clock = self.clock;
        self.ask(|reply| Command::StatusRows { clock, reply }).await
    }

    pub async fn stats(&self) -> Result<DriverStats, DriverGone> {
        self.ask(Command::Stats).await
    }

    /// Clustered: start running `shards` (until their deadlines) with these rows; returns how
    /// many rows were added.
    pub async fn take_shards(
        &self,
        shards: Vec<(u32, Instant)>,
        rows: Vec<(Record, Option<Continuation>)>,
    ) -> Result<usize, DriverGone> {
        self.ask(|reply| Command::TakeShards {
            shards,
            rows,
            reply,
        })
        .await
    }

    /// Clustered: stop running `shards` (no un-REGISTER); returns their rows' dialogs.
    pub async fn drop_shards(&self, shards: Vec<u32>) -> Result<Vec<RowDialog>, DriverGone> {
        self.ask(|reply| Command::DropShards { shards, reply })
            .await
    }

    /// Clustered: held shards may send until these later deadlines.
    pub async fn extend_shards(&self, renewed: Vec<(u32, Instant)>) -> Result<(), DriverGone> {
        self.commands
            .send(Command::ExtendShards(renewed))
            .await
            .map_err(|_| DriverGone)
    }

    /// Clustered: the dialog of every row held.
    pub async fn dialogs(&self) -> Result<Vec<RowDialog>, DriverGone> {
        self.ask(Command::Dialogs).await
    }

    /// Test builds only (cargo feature `fault-injection`): makes the driver task panic, so a
    /// test can check that the daemon then exits with an error instead of living on without
    /// it.
    #[cfg(feature = "fault-injection")]
    pub async fn panic_for_test(&self) -> Result<(), DriverGone> {
        self.ask(Command::Panic).await
    }

    /// Stops the task. With `unregister_within`, first un-registers every binding and waits up
    /// to that long for the answers. Returns how many registrations were left unfinished.
    pub async fn shutdown(&self, unregister_within: Option<Duration>) -> Result<usize, DriverGone> {
        self.ask(|reply| Command::Shutdown(unregister_within, reply))
            .await
    }
}
