//! A `uacreg` row exactly as stored, before validation.

use diesel::prelude::*;

use super::schema::uacreg;
use crate::registration::Secret;

/// All columns of one row. Secrets are wrapped so that printing a row never shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRow {
    pub id: i64,
    pub l_uuid: String,
    pub l_username: String,
    pub l_domain: String,
    pub r_username: String,
    pub r_domain: String,
    pub realm: String,
    pub auth_username: String,
    pub auth_password: Secret,
    pub auth_ha1: Secret,
    pub auth_proxy: String,
    pub expires: i64,
    pub flags: i64,
    pub reg_delay: i64,
    pub contact_addr: String,
    pub socket: String,
    pub contact_user: String,
}

impl RawRow {
    /// A row registering `sip:r_username@r_domain` with `l_uuid`, 3600 s expiry and everything
    /// else empty (`l_username` defaults to `r_username`): a starting point for tests and tools.
    pub fn new(l_uuid: &str, r_username: &str, r_domain: &str) -> RawRow {
        RawRow {
            id: 0,
            l_uuid: l_uuid.into(),
            l_username: r_username.into(),
            l_domain: r_domain.into(),
            r_username: r_username.into(),
            r_domain: r_domain.into(),
            realm: String::new(),
            auth_username: String::new(),
            auth_password: Secret::default(),
            auth_ha1: Secret::default(),
            auth_proxy: String::new(),
            expires: 3600,
            flags: 0,
            reg_delay: 0,
            contact_addr: String::new(),
            socket: String::new(),
            contact_user: String::new(),
        }
    }
}

/// What diesel reads: the columns of Kamailio's table version 5 (`contact_user` is read apart).
#[derive(Queryable, Selectable)]
#[diesel(table_name = uacreg)]
pub(super) struct DbRow {
    id: i32,
    l_uuid: Option<String>,
    l_username: Option<String>,
    l_domain: Option<String>,
    r_username: Option<String>,
    r_domain: Option<String>,
    realm: Option<String>,
    auth_username: Option<String>,
    auth_password: Option<String>,
    auth_ha1: Option<String>,
    auth_proxy: Option<String>,
    expires: Option<i32>,
    flags: Option<i32>,
    reg_delay: Option<i32>,
    contact_addr: Option<String>,
    socket: Option<String>,
}

/// A row as read: the version-5 columns, and `contact_user` where the table has it (version 6,
/// or a table uacreg created).
impl From<(DbRow, Option<String>)> for RawRow {
    fn from((r, contact_user): (DbRow, Option<String>)) -> RawRow {
        RawRow {
            id: i64::from(r.id),
            l_uuid: r.l_uuid.unwrap_or_default(),
            l_username: r.l_username.unwrap_or_default(),
            l_domain: r.l_domain.unwrap_or_default(),
            r_username: r.r_username.unwrap_or_default(),
            r_domain: r.r_domain.unwrap_or_default(),
            realm: r.realm.unwrap_or_default(),
            auth_username: r.auth_username.unwrap_or_default(),
            auth_password: Secret::new(r.auth_password.unwrap_or_default()),
            auth_ha1: Secret::new(r.auth_ha1.unwrap_or_default()),
            auth_proxy: r.auth_proxy.unwrap_or_default(),
            expires: i64::from(r.expires.unwrap_or(0)),
            flags: i64::from(r.flags.unwrap_or(0)),
            reg_delay: i64::from(r.reg_delay.unwrap_or(0)),
            contact_addr: r.contact_addr.unwrap_or_default(),
            socket: r.socket.unwrap_or_default(),
            contact_user: contact_user.unwrap_or_default(),
        }
    }
}

/// What diesel writes, but for `contact_user` (the id is assigned by the database).
#[derive(Insertable, AsChangeset)]
#[diesel(table_name = uacreg)]
pub(super) struct NewDbRow<'a> {
    l_uuid: Option<&'a str>,
    l_username: Option<&'a str>,
    l_domain: Option<&'a str>,
    r_username: Option<&'a str>,
    r_domain: Option<&'a str>,
    realm: Option<&'a str>,
    auth_username: Option<&'a str>,
    auth_password: Option<&'a str>,
    auth_ha1: Option<&'a str>,
    auth_proxy: Option<&'a str>,
    expires: Option<i32>,
    flags: Option<i32>,
    reg_delay: Option<i32>,
    contact_addr: Option<&'a str>,
    socket: Option<&'a str>,
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

impl<'a> From<&'a RawRow> for NewDbRow<'a> {
    fn from(r: &'a RawRow) -> NewDbRow<'a> {
        NewDbRow {
            l_uuid: Some(&r.l_uuid),
            l_username: Some(&r.l_username),
            l_domain: Some(&r.l_domain),
            r_username: Some(&r.r_username),
            r_domain: Some(&r.r_domain),
            realm: Some(&r.realm),
            auth_username: Some(&r.auth_username),
            auth_password: Some(r.auth_password.expose()),
            auth_ha1: Some(r.auth_ha1.expose()),
            auth_proxy: Some(&r.auth_proxy),
            expires: Some(clamp_i32(r.expires)),
            flags: Some(clamp_i32(r.flags)),
            reg_delay: Some(clamp_i32(r.reg_delay)),
            contact_addr: Some(&r.contact_addr),
            socket: Some(&r.socket),
        }
    }
}
