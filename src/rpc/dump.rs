//! `uac.reg_dump` a slice at a time, for the transports that stream its answer.
//!
//! Why: at 1,000,000 rows the answer is ~700 MB of JSON, and copying every registration first
//! (then rendering the lot) costs more memory than the table itself. A [`DumpCursor`] asks the
//! driver for [`SNAPSHOT_SLICE`](crate::driver::SNAPSHOT_SLICE) registrations after the last
//! l_uuid it wrote, the transport renders and writes them, and only then is the next slice
//! asked for: the daemon holds one slice (and the transport's send buffer) at a time, and the
//! driver, which runs every refresh, is held for one slice's copy, not the table's.
//!
//! The answer is the same as the whole-table one: live registrations in l_uuid order, then the
//! rows that failed validation and have no live registration under their l_uuid. A row added
//! or removed while the dump runs may or may not appear, as in any dump of a live table.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::driver::DriverGone;
use crate::gateway::Gateway;
use crate::registration::Snapshot;
use crate::store::InvalidRow;

use super::view::RecordView;

/// The next part of the answer.
pub(super) enum Slice {
    Live(Vec<Snapshot>),
    /// Rows that failed validation (all of them, at the end).
    Invalid(Vec<InvalidRow>),
}

/// Where a dump is: the last l_uuid written, and the invalid rows still to list.
pub(super) struct DumpCursor {
    gateway: Arc<Gateway>,
    after: Option<String>,
    live_done: bool,
    /// Invalid rows with an l_uuid, in l_uuid order; `shadowed[i]` once a live registration
    /// with the same l_uuid went by (merged as the slices pass, so no set of every l_uuid).
    invalid: Vec<InvalidRow>,
    shadowed: Vec<bool>,
    next_invalid: usize,
    invalid_done: bool,
    node: Option<Arc<str>>,
}

impl DumpCursor {
    pub(super) fn new(gateway: Arc<Gateway>) -> DumpCursor {
        let mut invalid: Vec<InvalidRow> = gateway
            .invalid_rows()
            .into_iter()
            .filter(|bad| !bad.row.l_uuid.is_empty())
            .collect();
        invalid.sort_by(|a, b| a.row.l_uuid.cmp(&b.row.l_uuid));
        let node = gateway.node_id().map(Arc::from);
        DumpCursor {
            shadowed: vec![false; invalid.len()],
            gateway,
            after: None,
            live_done: false,
            invalid,
            next_invalid: 0,
            invalid_done: false,
            node,
        }
    }

    /// The next slice; None when the answer is complete.
    pub(super) async fn next(&mut self) -> Result<Option<Slice>, DriverGone> {
        if !self.live_done {
            let slice = self
                .gateway
                .driver
                .snapshot_slice(self.after.take())
                .await?;
            self.live_done = slice.len() < crate::driver::SNAPSHOT_SLICE;
            self.after = slice.last().map(|s| s.record.l_uuid().to_owned());
            for snapshot in &slice {
                self.note_live(snapshot.record.l_uuid());
            }
            if !slice.is_empty() {
                return Ok(Some(Slice::Live(slice)));
            }
        }
        if self.invalid_done {
            return Ok(None);
        }
        self.invalid_done = true;
        let invalid: Vec<InvalidRow> = std::mem::take(&mut self.invalid)
            .into_iter()
            .zip(std::mem::take(&mut self.shadowed))
            .filter_map(|(bad, shadowed)| (!shadowed).then_some(bad))
            .collect();
        Ok((!invalid.is_empty()).then_some(Slice::Invalid(invalid)))
    }

    /// Marks the invalid rows whose l_uuid is a live registration's (`l_uuid` ascending).
    fn note_live(&mut self, l_uuid: &str) {
        while let Some(bad) = self.invalid.get(self.next_invalid) {
            match bad.row.l_uuid.as_str().cmp(l_uuid) {
                Ordering::Less => self.next_invalid += 1,
                Ordering::Equal => {
                    self.shadowed[self.next_invalid] = true;
                    self.next_invalid += 1;
                }
                Ordering::Greater => break,
            }
        }
    }

    /// Each record of `slice` as the answer shows it, rendered at the time of the call.
    pub(super) fn views<'a>(
        &'a self,
        slice: &'a Slice,
    ) -> Box<dyn Iterator<Item = RecordView<'a>> + Send + 'a> {
        let show_secrets = self.gateway.show_secrets;
        match slice {
            Slice::Live(snapshots) => {
                let clock = self.gateway.driver.clock();
                let now_unix = super::server::now_unix();
                let node = self.node.as_deref();
                Box::new(snapshots.iter().map(move |snapshot| RecordView {
                    node: node.map(std::borrow::Cow::Borrowed),
                    ..RecordView::from_snapshot(snapshot, &clock, now_unix, show_secrets)
                }))
            }
            Slice::Invalid(rows) => Box::new(rows.iter().map(move |bad| {
                RecordView::from_invalid(&bad.row, bad.error.to_string(), show_secrets)
            })),
        }
    }
}
