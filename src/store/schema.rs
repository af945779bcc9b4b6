//! diesel's view of the tables: `uacreg`, `uacreg_status` and the cluster's three.
//!
//! `uacreg`'s text columns are declared nullable although Kamailio's DDL says `NOT NULL`: a
//! table edited by hand may still hold a NULL, and one such row must not make the whole load
//! fail. NULL reads as the empty string, which is what Kamailio assumes too.

diesel::table! {
    uacreg (id) {
        id -> Integer,
        l_uuid -> Nullable<Text>,
        l_username -> Nullable<Text>,
        l_domain -> Nullable<Text>,
        r_username -> Nullable<Text>,
        r_domain -> Nullable<Text>,
        realm -> Nullable<Text>,
        auth_username -> Nullable<Text>,
        auth_password -> Nullable<Text>,
        auth_ha1 -> Nullable<Text>,
        auth_proxy -> Nullable<Text>,
        expires -> Nullable<Integer>,
        flags -> Nullable<Integer>,
        reg_delay -> Nullable<Integer>,
        contact_addr -> Nullable<Text>,
        socket -> Nullable<Text>,
        contact_user -> Nullable<Text>,
    }
}

diesel::table! {
    /// Written by uacregd (`[database] status_table`), one row per registration; times are Unix
    /// seconds, 0 for "never" / "none".
    uacreg_status (l_uuid) {
        l_uuid -> Text,
        state -> Text,
        last_code -> Integer,
        last_reason -> Text,
        last_success -> BigInt,
        next_refresh -> BigInt,
        binding_expires -> BigInt,
        failures -> Integer,
        updated_at -> BigInt,
        node_id -> Text,
    }
}

diesel::table! {
    /// Cluster mode: one row per node sharing the database; `seen_ms` is the database's clock
    /// at the node's last round, `leaving` 1 while it hands its shards over.
    uacreg_cluster_node (node_id) {
        node_id -> Text,
        sip_addr -> Text,
        started_ms -> BigInt,
        seen_ms -> BigInt,
        leaving -> SmallInt,
        instance -> BigInt,
    }
}

diesel::table! {
    /// Cluster mode: one row per shard; the lease is `owner` until `expires_ms` (the database's
    /// clock), and `epoch` grows by one with every claim.
    uacreg_cluster_shard (shard) {
        shard -> Integer,
        owner -> Nullable<Text>,
        epoch -> BigInt,
        expires_ms -> BigInt,
    }
}

diesel::table! {
    /// Cluster mode: the REGISTER dialog of each registration, written by the shard's owner.
    uacreg_dialog (l_uuid) {
        l_uuid -> Text,
        shard -> Integer,
        call_id -> Text,
        from_tag -> Text,
        next_cseq -> BigInt,
        binding_expires_ms -> BigInt,
        granted_expires -> Integer,
        contact -> Text,
        node_id -> Text,
        updated_ms -> BigInt,
    }
}
