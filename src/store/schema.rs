//! diesel's view of the `uacreg` table.
//!
//! Text columns are declared nullable although Kamailio's DDL says `NOT NULL`: a table edited by
//! hand may still hold a NULL, and one such row must not make the whole load fail. NULL reads as
//! the empty string, which is what Kamailio assumes too.

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
    }
}
