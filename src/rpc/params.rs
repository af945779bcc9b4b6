//! Parameters of the `uac.*` methods: one parsing function per method, from the JSON-RPC
//! `params` to typed values, with Kamailio's fault codes and texts.
//!
//! The parameters come from whoever reaches the RPC port, so they are parsed here, apart from
//! what the methods then do, and that is what [`parse_params_for_fuzzing`] runs: the fuzz
//! targets reach exactly the code the server uses, without a driver behind it.

use jsonrpsee::types::{ErrorObjectOwned, Params};
use serde_json::Value;

use crate::registration::{Attribute, Record, Secret};
use crate::sip::UriParts;
use crate::store::{RawRow, RowDefaults};

/// Kamailio fault codes and texts.
pub(super) fn fault(code: i32, message: &str) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, message.to_string(), None::<()>)
}

/// Positional string parameters; Kamailio also takes numbers where strings are expected.
fn string_params(params: &Params<'_>, wanted: usize) -> Result<Vec<String>, ErrorObjectOwned> {
    // Kamailio's text first (scripts match on it), then what exactly is wrong.
    let invalid = |detail: &str| fault(400, &format!("Invalid Parameters - {detail}"));
    if params.is_object() {
        return Err(invalid("parameters must be positional (a JSON array)"));
    }
    let values: Vec<Value> = params
        .parse::<Option<Vec<Value>>>()
        .map_err(|_| invalid("parameters must be a JSON array"))?
        .unwrap_or_default();
    if values.len() < wanted {
        return Err(invalid(&format!(
            "expected {wanted} value{}, got {}",
            if wanted == 1 { "" } else { "s" },
            values.len()
        )));
    }
    values
        .into_iter()
        .take(wanted)
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(invalid(&format!(
                "value {} must be a string, not {other}",
                i + 1
            ))),
        })
        .collect()
}

/// The one string of `uac.reg_refresh` (l_uuid), `uac.reg_remove` (l_uuid) and
/// `uac.reg_lookup` (see [`LookupKey`]).
pub(super) fn one_string(params: &Params<'_>) -> Result<String, ErrorObjectOwned> {
    let mut values = string_params(params, 1)?;
    Ok(values.swap_remove(0))
}

/// An integer given as a JSON number or a numeric string.
fn as_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `attr value` pair selecting a record: `uac.reg_info`, `reg_enable`, `reg_disable`,
/// `reg_register`, `reg_unregister`.
pub(super) fn attribute(params: &Params<'_>) -> Result<(Attribute, String), ErrorObjectOwned> {
    let mut values = string_params(params, 2)?;
    if values[0].is_empty() || values[1].is_empty() {
        return Err(fault(400, "Invalid Parameter Values"));
    }
    let attribute =
        Attribute::parse(&values[0]).ok_or_else(|| {
            fault(
                400,
                &format!(
                    "Unsupported filter attribute - {:?}; use l_uuid, l_username, r_username or auth_username",
                    values[0]
                ),
            )
        })?;
    Ok((attribute, values.swap_remove(1)))
}

/// `uac.reg_reload`: nothing (Kamailio's form), or `"force"` (ours): apply a reload that would
/// remove more than `[database] max_removed_share` of the running rows. Returns whether forced.
pub(super) fn reload_force(params: &Params<'_>) -> Result<bool, ErrorObjectOwned> {
    one_optional_word(params, "force")
}

/// `uacreg.shutdown`: nothing, or `"unregister"` (un-REGISTER every binding even where the
/// daemon would not: `unregister_on_shutdown = false`, or a cluster node with live peers).
pub(super) fn shutdown_unregister(params: &Params<'_>) -> Result<bool, ErrorObjectOwned> {
    one_optional_word(params, "unregister")
}

/// No parameter (false) or exactly `word` (true).
fn one_optional_word(params: &Params<'_>, word: &str) -> Result<bool, ErrorObjectOwned> {
    if params.is_object() {
        return Err(fault(
            400,
            "Invalid Parameters - parameters must be positional",
        ));
    }
    let values: Vec<Value> = params
        .parse::<Option<Vec<Value>>>()
        .map_err(|_| fault(400, "Invalid Parameters - parameters must be a JSON array"))?
        .unwrap_or_default();
    match values.as_slice() {
        [] => Ok(false),
        [Value::String(given)] if given == word => Ok(true),
        _ => Err(fault(
            400,
            &format!("Invalid Parameters - expected nothing or \"{word}\""),
        )),
    }
}

/// `uac.reg_active`: the new mode, an integer (0 stops sending REGISTERs).
pub(super) fn active_mode(params: &Params<'_>) -> Result<i64, ErrorObjectOwned> {
    let values: Vec<Value> = params
        .parse::<Option<Vec<Value>>>()
        .ok()
        .flatten()
        .unwrap_or_default();
    values
        .first()
        .and_then(as_int)
        .ok_or_else(|| fault(500, "Missing parameter"))
}

/// `uac.reg_add` parameters in Kamailio's order: l_uuid, l_username, l_domain, r_username,
/// r_domain, realm, auth_username, auth_password, auth_ha1, auth_proxy, expires, flags,
/// reg_delay, socket[, contact_addr]. A lone `.` means "none" for realm, auth_password,
/// auth_ha1, socket and contact_addr.
fn reg_add_row(params: &Params<'_>) -> Result<RawRow, ErrorObjectOwned> {
    let values: Vec<Value> = params
        .parse::<Option<Vec<Value>>>()
        .map_err(|_| fault(400, "Invalid Parameters"))?
        .unwrap_or_default();
    if values.len() != 14 && values.len() != 15 {
        return Err(fault(
            400,
            &format!(
                "Invalid Parameters - expected 14 or 15 values, got {}",
                values.len()
            ),
        ));
    }
    let text = |i: usize, name: &str| -> Result<String, ErrorObjectOwned> {
        match &values[i] {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => Err(fault(
                400,
                &format!("Invalid Parameters - {name} must be a string"),
            )),
        }
    };
    let none_dot = |s: String| if s == "." { String::new() } else { s };
    let int = |i: usize, name: &str| -> Result<i64, ErrorObjectOwned> {
        as_int(&values[i]).ok_or_else(|| {
            fault(
                400,
                &format!("Invalid Parameters - {name} must be an integer"),
            )
        })
    };
    let mut row = RawRow::new(
        &text(0, "l_uuid")?,
        &text(3, "r_username")?,
        &text(4, "r_domain")?,
    );
    row.l_username = text(1, "l_username")?;
    row.l_domain = text(2, "l_domain")?;
    row.realm = none_dot(text(5, "realm")?);
    row.auth_username = text(6, "auth_username")?;
    row.auth_password = Secret::new(none_dot(text(7, "auth_password")?));
    row.auth_ha1 = Secret::new(none_dot(text(8, "auth_ha1")?));
    row.auth_proxy = text(9, "auth_proxy")?;
    row.expires = int(10, "expires")?;
    row.flags = int(11, "flags")?;
    row.reg_delay = int(12, "reg_delay")?;
    row.socket = none_dot(text(13, "socket")?);
    if values.len() == 15 {
        row.contact_addr = none_dot(text(14, "contact_addr")?);
    }
    Ok(row)
}

/// `uac.reg_add`: the row its parameters describe, validated as a stored row would be.
pub(super) fn reg_add_record(
    params: &Params<'_>,
    defaults: &RowDefaults,
) -> Result<Record, ErrorObjectOwned> {
    let row = reg_add_row(params)?;
    if row.auth_password.is_empty() && row.auth_ha1.is_empty() {
        return Err(fault(500, "Failed to add record - invalid password or ha1"));
    }
    crate::store::validate(&row, defaults)
        .map_err(|err| fault(400, &format!("Invalid Parameter Values - {err}")))
}

/// What `uac.reg_lookup` looks for: what Kamailio's `uac_reg_lookup()` takes, a contact user
/// (an l_uuid) or a local URI (`sip:l_username@l_domain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum LookupKey {
    LUuid(String),
    LocalUri {
        user: String,
        host: String,
    },
    /// A `sip:`/`sips:` value that is no URI: matches nothing.
    BadUri,
}

/// `uac.reg_lookup`.
pub(super) fn lookup_key(params: &Params<'_>) -> Result<LookupKey, ErrorObjectOwned> {
    let wanted = one_string(params)?;
    let lower = wanted.to_ascii_lowercase();
    if !lower.starts_with("sip:") && !lower.starts_with("sips:") {
        return Ok(LookupKey::LUuid(wanted));
    }
    Ok(match UriParts::parse(&wanted) {
        Ok(uri) => LookupKey::LocalUri {
            user: uri.user.unwrap_or_default(),
            host: uri.host,
        },
        Err(_) => LookupKey::BadUri,
    })
}

/// Runs the parameter parsing of `method` on `params` (the JSON text of a request's `params`,
/// `None` when it has none) and nothing else; `uac.reg_add` validates its row against a
/// contact address of 127.0.0.1:5062 and no extra sockets. Methods without parameters accept
/// anything; an unknown method is an error.
///
/// It exists for the fuzz targets (`fuzz/fuzz_targets/rpc_params.rs`), which cannot reach these
/// private functions otherwise; it calls the very functions the server's methods call. Not part
/// of the library's interface.
#[doc(hidden)]
/// `uacreg.rows`' named parameters, checked (no parameters: the first page of every row).
pub(super) fn rows_query(
    params: &Params<'_>,
) -> Result<super::console::CheckedQuery, ErrorObjectOwned> {
    let query: super::console::RowsQuery = if params.as_str().is_none() {
        super::console::RowsQuery::default()
    } else {
        params
            .parse()
            .map_err(|e| fault(400, &format!("invalid parameters: {e}")))?
    };
    query.check()
}

/// `uacreg.row`'s one named parameter, `{"l_uuid": "…"}`.
pub(super) fn named_l_uuid(params: &Params<'_>) -> Result<String, ErrorObjectOwned> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct One {
        l_uuid: String,
    }
    params
        .parse::<One>()
        .map(|one| one.l_uuid)
        .map_err(|e| fault(400, &format!("invalid parameters: {e}")))
}

pub fn parse_params_for_fuzzing(
    method: &str,
    params: Option<&str>,
) -> Result<(), ErrorObjectOwned> {
    let params = Params::new(params);
    match method {
        "uac.reg_info" | "uac.reg_enable" | "uac.reg_disable" | "uac.reg_register"
        | "uac.reg_unregister" => attribute(&params).map(drop),
        "uac.reg_refresh" | "uac.reg_remove" => one_string(&params).map(drop),
        "uac.reg_lookup" => lookup_key(&params).map(drop),
        "uac.reg_reload" => reload_force(&params).map(drop),
        "uac.reg_active" => active_mode(&params).map(drop),
        "uac.reg_add" => {
            let defaults = RowDefaults {
                contact_addr: "127.0.0.1:5062".into(),
                sockets: Vec::new(),
            };
            reg_add_record(&params, &defaults).map(drop)
        }
        "uacreg.shutdown" => shutdown_unregister(&params).map(drop),
        "uacreg.rows" => rows_query(&params).map(drop),
        "uacreg.row" => named_l_uuid(&params).map(drop),
        "uac.reg_dump"
        | "uacreg.status"
        | "uacreg.cluster"
        | "uacreg.cluster_dump"
        | "uacreg.debug_panic"
        | "uacreg.overview" => Ok(()),
        _ => Err(fault(-32601, "Method not found")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: &str, json: &str) -> Result<(), String> {
        parse_params_for_fuzzing(method, Some(json)).map_err(|e| e.message().to_string())
    }

    #[test]
    fn kamailio_forms_parse() {
        assert_eq!(parse("uac.reg_info", r#"["l_uuid", "uuid1"]"#), Ok(()));
        assert_eq!(parse("uac.reg_refresh", r#"[42]"#), Ok(()));
        assert_eq!(parse("uac.reg_active", r#"["1"]"#), Ok(()));
        assert_eq!(parse("uac.reg_reload", r#"["force"]"#), Ok(()));
        assert_eq!(parse("uac.reg_reload", "[]"), Ok(()));
        assert_eq!(
            parse(
                "uac.reg_add",
                r#"["u1","alice","pbx.test","alice","registrar.test",".","alice","pw",".",
                    "",3600,0,0,"."]"#
            ),
            Ok(())
        );
        assert_eq!(
            parse_params_for_fuzzing("uac.reg_reload", None).ok(),
            Some(())
        );
    }

    #[test]
    fn bad_parameters_get_kamailio_faults() {
        let err = parse("uac.reg_info", r#"{"attr": "l_uuid"}"#).unwrap_err();
        assert!(err.starts_with("Invalid Parameters"), "{err}");
        let err = parse("uac.reg_info", r#"["realm", "x"]"#).unwrap_err();
        assert!(err.starts_with("Unsupported filter attribute"), "{err}");
        assert_eq!(
            parse("uac.reg_active", "[]").unwrap_err(),
            "Missing parameter"
        );
        let err = parse("uac.reg_reload", r#"["now"]"#).unwrap_err();
        assert!(err.starts_with("Invalid Parameters"), "{err}");
        let err = parse("uac.reg_add", r#"["u1"]"#).unwrap_err();
        assert!(err.contains("expected 14 or 15 values, got 1"), "{err}");
        assert_eq!(parse("uac.nonsense", "[]").unwrap_err(), "Method not found");
    }

    #[test]
    fn lookup_takes_an_l_uuid_or_a_local_uri() {
        let key = |json: &str| lookup_key(&Params::new(Some(json))).unwrap();
        assert_eq!(key(r#"["uuid1"]"#), LookupKey::LUuid("uuid1".into()));
        assert_eq!(
            key(r#"["SIP:alice@PBX.test;line=1"]"#),
            LookupKey::LocalUri {
                user: "alice".into(),
                host: "PBX.test".into()
            }
        );
        assert_eq!(key(r#"["sip:"]"#), LookupKey::BadUri);
    }
}
