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
