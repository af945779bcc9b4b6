//! `uacreg.cluster_dump`: every row of the cluster, answered by any node from the database.
//!
//! Each node's `uac.reg_dump` lists the rows it runs. An operator looking for one trunk should
//! not have to ask every node, and a dead node cannot answer at all; the database knows every
//! row (`uacreg`), which node holds its shard (`uacreg_cluster_shard`) and the state the
//! running node last wrote (`uacreg_status`, every `status_interval`). This answer joins the
//! three, read in one go on the node's own connection, in `uac.reg_dump`'s shape with `node`
//! set. It is as fresh as the last status write: the running node's `uac.reg_info` is the live
//! word on one row.

use std::collections::HashMap;
use std::sync::Arc;

use serde::ser::SerializeSeq;

use super::view::RecordView;
use crate::cluster::shard_of;
use crate::gateway::Gateway;
use crate::store::{ClusterView, LoadedRows, StatusRow, StoreError};

/// What the database says about every row, rendered while it is serialised (as `reg_dump` is).
#[derive(Clone)]
pub(super) struct ClusterDump {
    rows: Arc<LoadedRows>,
    status: Arc<HashMap<String, StatusRow>>,
    /// The live owner of each shard, by shard number.
    owners: Arc<Vec<Option<String>>>,
    now_unix: i64,
    show_secrets: bool,
}

impl ClusterDump {
    /// Reads the three tables through the gateway's store.
    pub(super) async fn read(gateway: &Gateway, now_unix: i64) -> Result<ClusterDump, String> {
        let defaults = gateway.defaults().clone();
        let read = gateway
            .with_store(move |store| {
                let rows = store.load(&defaults)?;
                let status = store.read_status()?;
                let view = store.cluster_view()?;
                Ok::<_, StoreError>((rows, status, view))
            })
            .await
            .map_err(|err| err.to_string())?;
        let (rows, status, view) = read.map_err(|err| err.to_string())?;
        Ok(ClusterDump {
            rows: Arc::new(rows),
            status: Arc::new(
                status
                    .into_iter()
                    .map(|row| (row.l_uuid.clone(), row))
                    .collect(),
            ),
            owners: Arc::new(live_owners(&view)),
            now_unix,
            show_secrets: gateway.show_secrets,
        })
    }

    fn owner(&self, l_uuid: &str) -> Option<&str> {
        let shards = u32::try_from(self.owners.len()).ok().filter(|&n| n > 0)?;
        let shard = usize::try_from(shard_of(l_uuid, shards)).ok()?;
        self.owners.get(shard)?.as_deref()
    }
}

/// Each shard's owner while its lease runs (a lapsed lease has no owner: nobody may send).
fn live_owners(view: &ClusterView) -> Vec<Option<String>> {
    let mut owners = vec![None; view.shards.len()];
    for lease in &view.shards {
        if let Some(slot) = usize::try_from(lease.shard)
            .ok()
            .and_then(|i| owners.get_mut(i))
        {
            *slot = lease
                .owner
                .clone()
                .filter(|_| lease.expires_ms > view.db_now_ms);
        }
    }
    owners
}

impl serde::Serialize for ClusterDump {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq =
            serializer.serialize_seq(Some(self.rows.records.len() + self.rows.invalid.len()))?;
        for record in &self.rows.records {
            seq.serialize_element(&RecordView::from_stored(
                record,
                self.status.get(record.l_uuid()),
                self.owner(record.l_uuid()),
                self.now_unix,
                self.show_secrets,
            ))?;
        }
        for bad in &self.rows.invalid {
            seq.serialize_element(&RecordView::from_invalid(
                &bad.row,
                bad.error.to_string(),
                self.show_secrets,
            ))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ShardLease;

    #[test]
    fn a_lapsed_lease_has_no_owner() {
        let lease = |shard, owner: Option<&str>, expires_ms| ShardLease {
            shard,
            owner: owner.map(str::to_string),
            epoch: 1,
            expires_ms,
        };
        let view = ClusterView {
            db_now_ms: 1_000,
            nodes: Vec::new(),
            shards: vec![
                lease(0, Some("a"), 2_000),
                lease(1, Some("b"), 1_000),
                lease(2, None, 0),
            ],
        };
        assert_eq!(live_owners(&view), vec![Some("a".to_string()), None, None]);
    }
}
