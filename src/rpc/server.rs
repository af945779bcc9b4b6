//! The JSON-RPC 2.0 HTTP server and its `uac.*` methods.
//!
//! Method names, positional parameters, result shapes and fault codes/texts are Kamailio 5.6's
//! (its `uac_reg.c`), so existing scripts and dashboards can
//! point at uacreg instead. jsonrpsee serves any POST path, so `/RPC` (Kamailio's usual path) and
//! `/` both work.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::answer::{
    ActiveModes, Empty, Lookup, ReloadAnswer, ShutdownStarted, StatusAnswer, state_counts,
};
use super::cluster_dump::ClusterDump;
use super::dump::DumpCursor;
use super::dump_http::StreamDumpLayer;
use super::params::{self, LookupKey, fault};
use super::token::TokenLayer;
use super::view::RecordView;
use crate::gateway::Gateway;
use crate::registration::{Attribute, Snapshot};
use jsonrpsee::RpcModule;
use jsonrpsee::server::{Server, ServerHandle};
use jsonrpsee::types::ErrorObjectOwned;

fn not_found() -> ErrorObjectOwned {
    fault(404, "Record not found")
}

pub(super) fn internal(message: impl std::fmt::Display) -> ErrorObjectOwned {
    fault(500, &message.to_string())
}

pub(super) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One record as a JSON value: a single answer (reg_info) owns what it returns.
pub(super) fn render(gateway: &Gateway, snapshot: &Snapshot) -> serde_json::Value {
    let node = gateway.node_id();
    let view = RecordView {
        node: node.as_deref().map(Cow::Borrowed),
        ..RecordView::from_snapshot(
            snapshot,
            &gateway.driver.clock(),
            now_unix(),
            gateway.show_secrets,
        )
    };
    serde_json::to_value(view).unwrap_or(serde_json::Value::Null)
}

/// The `uac.reg_dump` answer as one value, for callers that take answers whole (a batch
/// request, an in-process call). The HTTP server streams a single call instead
/// ([`super::dump_http`]); both render through one [`DumpCursor`], so they show the same.
#[derive(Clone)]
struct DumpAnswer(Arc<(DumpCursor, Vec<super::dump::Slice>)>);

impl serde::Serialize for DumpAnswer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let (cursor, slices) = &*self.0;
        let mut seq = serializer.serialize_seq(None)?;
        for slice in slices {
            for view in cursor.views(slice) {
                seq.serialize_element(&view)?;
            }
        }
        seq.end()
    }
}

/// Builds the module with every method registered.
pub fn methods(gateway: Arc<Gateway>) -> RpcModule<Gateway> {
    let mut module = RpcModule::from_arc(gateway);
    let registered = register_all(&mut module);
    debug_assert!(registered.is_ok(), "method names are unique");
    module
}

fn register_all(
    module: &mut RpcModule<Gateway>,
) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    module.register_async_method("uac.reg_dump", |_params, gw, _| async move {
        let mut cursor = DumpCursor::new(gw);
        let mut slices = Vec::new();
        while let Some(slice) = cursor.next().await.map_err(internal)? {
            slices.push(slice);
        }
        Ok::<_, ErrorObjectOwned>(DumpAnswer(Arc::new((cursor, slices))))
    })?;

    module.register_async_method("uac.reg_info", |params, gw, _| async move {
        let (attribute, value) = params::attribute(&params)?;
        match gw.driver.find(attribute, &value).await.map_err(internal)? {
            Some(snapshot) => Ok::<_, ErrorObjectOwned>(render(&gw, &snapshot)),
            None => {
                // A row that failed validation is still something the operator asks about.
                let invalid = gw.invalid_rows().into_iter().find(|bad| match attribute {
                    Attribute::LUuid => bad.row.l_uuid == value,
                    Attribute::LUsername => bad.row.l_username == value,
                    Attribute::RUsername => bad.row.r_username == value,
                    Attribute::AuthUsername => bad.row.auth_username == value,
                });
                match invalid {
                    Some(bad) => Ok(serde_json::to_value(RecordView::from_invalid(
                        &bad.row,
                        bad.error.to_string(),
                        gw.show_secrets,
                    ))
                    .unwrap_or(serde_json::Value::Null)),
                    None => Err(not_found()),
                }
            }
        }
    })?;

    module.register_async_method("uac.reg_reload", |params, gw, _| async move {
        // Kamailio's reg_reload takes no parameter; `force` is ours: apply a reload that would
        // remove more than `[database] max_removed_share` of the running rows.
        let force = params::reload_force(&params)?;
        let outcome = if force {
            gw.reload_forced().await
        } else {
            gw.reload().await
        };
        match outcome {
            Ok(report) => Ok::<_, ErrorObjectOwned>(ReloadAnswer::from(report)),
            // Kamailio's text; the cause goes in `data` for those who look.
            Err(err) => Err(ErrorObjectOwned::owned(
                500,
                "Failed to reload records - check log messages".to_string(),
                Some(err.to_string()),
            )),
        }
    })?;

    for (name, disabled) in [("uac.reg_enable", false), ("uac.reg_disable", true)] {
        module.register_async_method(name, move |params, gw, _| async move {
            let (attribute, value) = params::attribute(&params)?;
            let hit = gw.driver.set_disabled(attribute, &value, disabled).await;
            empty_or_not_found(hit.map_err(internal)?)
        })?;
    }

    module.register_async_method("uac.reg_refresh", |params, gw, _| async move {
        let l_uuid = params::one_string(&params)?;
        match gw.refresh_one(&l_uuid).await {
            Ok(found) => empty_or_not_found(found),
            Err(err) => Err(ErrorObjectOwned::owned(
                500,
                "Failed to refresh record - check log messages".to_string(),
                Some(err.to_string()),
            )),
        }
    })?;

    for (name, register) in [("uac.reg_register", true), ("uac.reg_unregister", false)] {
        module.register_async_method(name, move |params, gw, _| async move {
            let (attribute, value) = params::attribute(&params)?;
            let hit = gw.driver.register_now(attribute, &value, register).await;
            empty_or_not_found(hit.map_err(internal)?)
        })?;
    }

    module.register_async_method("uac.reg_active", |params, gw, _| async move {
        let mode = params::active_mode(&params)?;
        let old = gw.driver.set_active(mode != 0).await.map_err(internal)?;
        // Kamailio echoes the value given as the new mode.
        Ok::<_, ErrorObjectOwned>(ActiveModes {
            omode: i64::from(old),
            nmode: mode,
        })
    })?;

    module.register_async_method("uac.reg_add", |params, gw, _| async move {
        let record = params::reg_add_record(&params, gw.defaults())?;
        let added = gw.driver.add(record).await.map_err(internal)?;
        match added {
            Ok(()) => Ok::<_, ErrorObjectOwned>(Empty {}),
            Err(_) => Err(fault(409, "uuid already exists")),
        }
    })?;

    module.register_async_method("uac.reg_remove", |params, gw, _| async move {
        let l_uuid = params::one_string(&params)?;
        let hit = gw.driver.remove(&l_uuid).await;
        empty_or_not_found(hit.map_err(internal)?)
    })?;

    // What Kamailio's uac_reg_lookup() does in a script, for proxies that prefer to ask: the
    // contact user (l_uuid) gives the local URI; a local URI (`sip:l_username@l_domain`) gives
    // the registration back.
    module.register_async_method("uac.reg_lookup", |params, gw, _| async move {
        let wanted = params::lookup_key(&params)?;
        let found = match &wanted {
            LookupKey::LUuid(l_uuid) => gw.driver.find(Attribute::LUuid, l_uuid).await,
            LookupKey::LocalUri { user, host } => gw.driver.find_by_local_uri(user, host).await,
            LookupKey::BadUri => Ok(None),
        }
        .map_err(internal)?;
        let record = found
            .map(|snapshot| snapshot.record)
            .ok_or_else(not_found)?;
        Ok::<_, ErrorObjectOwned>(Lookup {
            l_uuid: record.l_uuid().to_string(),
            local_uri: format!("sip:{}@{}", record.l_username(), record.l_domain()),
            contact: record.contact_uri(),
        })
    })?;

    module.register_async_method("uacreg.shutdown", |params, gw, _| async move {
        let unregister = params::shutdown_unregister(&params)?;
        let counts = gw.driver.status_counts().await.map_err(internal)?;
        if unregister {
            gw.shutdown().request_unregister();
        } else {
            gw.request_shutdown();
        }
        // What will be un-registered; progress shows in uacreg.status → sip.leaving.
        let bound = counts.get("registered").copied().unwrap_or(0);
        Ok::<_, ErrorObjectOwned>(ShutdownStarted {
            stopping: true,
            registered: bound,
        })
    })?;

    // The cluster as this node saw it at its last round (an error when not clustered).
    module.register_async_method("uacreg.cluster", |_params, gw, _| async move {
        match gw.cluster_status() {
            Some(status) => Ok::<_, ErrorObjectOwned>(status),
            None => Err(fault(
                404,
                "Not clustered - [cluster] enabled = false on this node",
            )),
        }
    })?;

    // Every row of the cluster with the node running it, from the database (any node answers;
    // an error when not clustered).
    module.register_async_method("uacreg.cluster_dump", |_params, gw, _| async move {
        if gw.node_id().is_none() {
            return Err(fault(
                404,
                "Not clustered - [cluster] enabled = false on this node",
            ));
        }
        ClusterDump::read(&gw, now_unix())
            .await
            .map_err(|err| fault(500, &format!("cannot read the cluster's rows: {err}")))
    })?;

    // Test builds only (cargo feature `fault-injection`): makes the driver task panic, so a
    // test can check that the daemon then exits with an error instead of living on without it.
    #[cfg(feature = "fault-injection")]
    module.register_async_method("uacreg.debug_panic", |_params, gw, _| async move {
        tracing::warn!("uacreg.debug_panic: making the driver task panic (fault injection)");
        gw.driver.panic_for_test().await.map_err(internal)?;
        Ok::<_, ErrorObjectOwned>(Empty {})
    })?;

    module.register_async_method("uacreg.status", |_params, gw, _| async move {
        let counts = gw.driver.status_counts().await.map_err(internal)?;
        let stats = gw.driver.stats().await.map_err(internal)?;
        Ok::<_, ErrorObjectOwned>(StatusAnswer {
            registrations: state_counts(counts),
            invalid_rows: gw.invalid_count(),
            database: gw.database_health(),
            sip: stats,
        })
    })?;
    super::console::register(module)?;
    register_core(module)?;
    Ok(())
}

/// Kamailio's answer to a command on one record: `{}` when a record matched, else 404.
fn empty_or_not_found(matched: bool) -> Result<Empty, ErrorObjectOwned> {
    if matched {
        Ok(Empty {})
    } else {
        Err(not_found())
    }
}

fn server_config() -> jsonrpsee::server::ServerConfig {
    // A dump of 100,000 records is far larger than jsonrpsee's 10 MB default.
    jsonrpsee::server::ServerConfig::builder()
        .max_response_body_size(u32::MAX)
        .build()
}

/// The HTTP middleware in front of the methods: the console's files (which need no token),
/// then the token check, then the streamed `uac.reg_dump`.
type HttpLayers = tower::ServiceBuilder<
    tower::layer::util::Stack<
        StreamDumpLayer,
        tower::layer::util::Stack<
            TokenLayer,
            tower::layer::util::Stack<super::web::ConsoleLayer, tower::layer::util::Identity>,
        >,
    >,
>;

fn http_layers(gateway: Arc<Gateway>, token: Option<String>, console: bool) -> HttpLayers {
    tower::ServiceBuilder::new()
        .layer(super::web::ConsoleLayer::new(console))
        .layer(TokenLayer::new(token))
        .layer(StreamDumpLayer::new(gateway))
}

/// `at` as C's `ctime()` prints it ("Thu Dec  3 23:10:34 2026"), which is how Kamailio's
/// `core.uptime` shows its times; in UTC, where Kamailio uses the host's time zone.
fn ctime_utc(at: SystemTime) -> String {
    // "Thu, 03 Dec 2026 23:10:34 GMT", rearranged.
    let http = httpdate::fmt_http_date(at);
    let parts: Vec<&str> = http.split(' ').collect();
    match parts.as_slice() {
        [weekday, day, month, year, time, _zone] => {
            let day: u32 = day.parse().unwrap_or(0);
            format!(
                "{} {month} {day:>2} {time} {year}",
                weekday.trim_end_matches(',')
            )
        }
        _ => http,
    }
}

/// The introspection methods Kamailio's own tools call (`kamcmd` completes method names with
/// `system.listMethods`; scripts check `core.version` and `core.uptime`).
fn register_core(
    module: &mut RpcModule<Gateway>,
) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    let started = SystemTime::now();
    let started_text = ctime_utc(started);
    module.register_method("core.version", |_params, _gw, _| {
        format!("uacreg {}", env!("CARGO_PKG_VERSION"))
    })?;
    module.register_method("core.uptime", move |_params, _gw, _| {
        let now = SystemTime::now();
        serde_json::json!({
            "now": ctime_utc(now),
            "up_since": started_text,
            "uptime": now.duration_since(started).map_or(0, |d| d.as_secs()),
        })
    })?;
    let mut names: Vec<String> = module.method_names().map(str::to_string).collect();
    names.extend([
        "system.listMethods".to_string(),
        "system.methodHelp".to_string(),
    ]);
    names.sort();
    let listed = names.clone();
    module.register_method("system.listMethods", move |_params, _gw, _| listed.clone())?;
    module.register_method("system.methodHelp", move |params, _gw, _| {
        let name: String = params.one().unwrap_or_default();
        if names.contains(&name) {
            Ok(format!("{name}: see uacregctl --help and the README"))
        } else {
            Err(fault(500, "command not found"))
        }
    })?;
    Ok(())
}

/// Starts the HTTP server on `addr`; with `token`, every request must carry it.
pub async fn serve(
    addr: SocketAddr,
    gateway: Arc<Gateway>,
    token: Option<String>,
    console: bool,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let server = Server::builder()
        .set_config(server_config())
        .set_http_middleware(http_layers(gateway.clone(), token, console))
        .build(addr)
        .await?;
    let local = server.local_addr()?;
    let handle = server.start(methods(gateway));
    Ok((local, handle))
}

/// Serves the same methods on a Unix socket at `path` (mode 0660), for operators who prefer
/// file permissions to ports. A stale socket file from an earlier run is replaced.
#[cfg(unix)]
pub async fn serve_unix(
    path: &std::path::Path,
    gateway: Arc<Gateway>,
    token: Option<String>,
) -> std::io::Result<ServerHandle> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let (stop, handle) = jsonrpsee::server::stop_channel();
    let builder = Server::builder()
        .set_config(server_config())
        .set_http_middleware(http_layers(gateway.clone(), token, false))
        .to_service_builder();
    let methods: jsonrpsee::server::Methods = methods(gateway).into();
    tokio::spawn(async move {
        let mut backoff = crate::transport::admission::AcceptBackoff::new();
        loop {
            let socket = tokio::select! {
                (socket, _) = backoff.accept("JSON-RPC Unix socket", || listener.accept(), || {}) => socket,
                _ = stop.clone().shutdown() => break,
            };
            let service = builder.clone().build(methods.clone(), stop.clone());
            tokio::spawn(jsonrpsee::server::serve_with_graceful_shutdown(
                socket,
                service,
                stop.clone().shutdown(),
            ));
        }
    });
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_print_as_ctime_does() {
        // 2026-12-03 23:10:34 UTC and 2026-12-13 01:02:03 UTC.
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(ctime_utc(at(1_796_339_434)), "Thu Dec  3 23:10:34 2026");
        assert_eq!(ctime_utc(at(1_797_123_723)), "Sun Dec 13 01:02:03 2026");
    }
}
