CREATE TABLE IF NOT EXISTS uacreg_cluster_node (
    node_id VARCHAR(128) PRIMARY KEY NOT NULL,
    sip_addr VARCHAR(255) DEFAULT '' NOT NULL,
    started_ms BIGINT NOT NULL,
    seen_ms BIGINT NOT NULL,
    leaving SMALLINT DEFAULT 0 NOT NULL,
    instance BIGINT DEFAULT 0 NOT NULL
);
CREATE TABLE IF NOT EXISTS uacreg_cluster_shard (
    shard INTEGER PRIMARY KEY NOT NULL,
    owner VARCHAR(128) NULL,
    epoch BIGINT DEFAULT 0 NOT NULL,
    expires_ms BIGINT DEFAULT 0 NOT NULL
);
CREATE TABLE IF NOT EXISTS uacreg_dialog (
    l_uuid VARCHAR(64) PRIMARY KEY NOT NULL,
    shard INTEGER NOT NULL,
    call_id VARCHAR(128) NOT NULL,
    from_tag VARCHAR(64) NOT NULL,
    next_cseq BIGINT NOT NULL,
    binding_expires_ms BIGINT DEFAULT 0 NOT NULL,
    granted_expires INTEGER DEFAULT 0 NOT NULL,
    contact VARCHAR(255) DEFAULT '' NOT NULL,
    node_id VARCHAR(128) DEFAULT '' NOT NULL,
    updated_ms BIGINT DEFAULT 0 NOT NULL
);
CREATE INDEX IF NOT EXISTS uacreg_dialog_shard_idx ON uacreg_dialog (shard);
-- Which node last wrote each status row: a cluster node deletes, clears and marks only its own.
ALTER TABLE uacreg_status ADD COLUMN node_id VARCHAR(128) DEFAULT '' NOT NULL;
