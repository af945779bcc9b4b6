DROP TABLE IF EXISTS uacreg_dialog;
DROP TABLE IF EXISTS uacreg_cluster_shard;
DROP TABLE IF EXISTS uacreg_cluster_node;
ALTER TABLE `uacreg_status` DROP COLUMN `node_id`;
