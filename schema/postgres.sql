-- The tables uacreg uses, for PostgreSQL (psql -f schema/postgres.sql). uacregd creates them
-- itself on first start (migrations/postgres runs the same statements; a test checks that this
-- file and the migrations agree).
--
-- uacreg: Kamailio's `uac` module table (table version 5) plus the optional `contact_user`
-- column of version 6. A table Kamailio created is used as it is.
CREATE TABLE IF NOT EXISTS uacreg (
    id SERIAL PRIMARY KEY NOT NULL,
    l_uuid VARCHAR(64) DEFAULT '' NOT NULL,
    l_username VARCHAR(64) DEFAULT '' NOT NULL,
    l_domain VARCHAR(64) DEFAULT '' NOT NULL,
    r_username VARCHAR(64) DEFAULT '' NOT NULL,
    r_domain VARCHAR(64) DEFAULT '' NOT NULL,
    realm VARCHAR(64) DEFAULT '' NOT NULL,
    auth_username VARCHAR(64) DEFAULT '' NOT NULL,
    auth_password VARCHAR(64) DEFAULT '' NOT NULL,
    auth_ha1 VARCHAR(128) DEFAULT '' NOT NULL,
    auth_proxy VARCHAR(255) DEFAULT '' NOT NULL,
    expires INTEGER DEFAULT 0 NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    reg_delay INTEGER DEFAULT 0 NOT NULL,
    contact_addr VARCHAR(255) DEFAULT '' NOT NULL,
    socket VARCHAR(128) DEFAULT '' NOT NULL,
    contact_user VARCHAR(64) DEFAULT '' NOT NULL,
    CONSTRAINT uacreg_l_uuid_idx UNIQUE (l_uuid)
);

-- uacreg_status: written by uacregd when [database] status_table = true, never read back.
CREATE TABLE IF NOT EXISTS uacreg_status (
    l_uuid VARCHAR(64) PRIMARY KEY NOT NULL,
    state VARCHAR(32) DEFAULT '' NOT NULL,
    last_code INTEGER DEFAULT 0 NOT NULL,
    last_reason VARCHAR(255) DEFAULT '' NOT NULL,
    last_success BIGINT DEFAULT 0 NOT NULL,
    next_refresh BIGINT DEFAULT 0 NOT NULL,
    binding_expires BIGINT DEFAULT 0 NOT NULL,
    failures INTEGER DEFAULT 0 NOT NULL,
    updated_at BIGINT DEFAULT 0 NOT NULL
);

-- Any change to uacreg sends NOTIFY uacreg_changed; uacregd LISTENs and reloads the difference.
CREATE OR REPLACE FUNCTION uacreg_notify_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('uacreg_changed', TG_OP);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS uacreg_notify_change ON uacreg;
CREATE TRIGGER uacreg_notify_change AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON uacreg
    FOR EACH STATEMENT EXECUTE FUNCTION uacreg_notify_change();

-- Cluster mode ([cluster] enabled): the nodes sharing this database, the shards of rows and
-- the lease on each (owner, epoch, expiry in ms of the database's clock), and the SIP dialog of
-- each registration, so that a node taking a shard over continues its REGISTER dialog.
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
