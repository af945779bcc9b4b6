DROP TABLE IF EXISTS uacreg_dialog;
DROP TABLE IF EXISTS uacreg_cluster_shard;
DROP TABLE IF EXISTS uacreg_cluster_node;
