//! Picking up changes to the `uacreg` table without an RPC call.
//!
//! Two ways, both ending in the same diff reload (only rows that changed act):
//! * **Periodic** (`[database] reload_interval_secs`, off by default) — works on every engine.
//! * **PostgreSQL NOTIFY** (`[database] notify`, on by default) — the migrations install a
//!   statement-level trigger that sends `NOTIFY uacreg_changed` after any INSERT, UPDATE, DELETE
//!   or TRUNCATE on uacreg; a dedicated connection LISTENs. A burst of notifications (a script
//!   updating rows one by one) is gathered for [`SETTLE`] and answered with one reload. When the
//!   listening connection is lost it is re-established with back-off, and a reload follows so
//!   changes made in between are not missed.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::gateway::{Gateway, ReloadCause};
use crate::store::{DbUrl, ServerTimeouts};

/// The channel the trigger notifies.
pub const CHANNEL: &str = "uacreg_changed";

/// Quiet time after a notification before reloading: a burst of changes costs one reload.
const SETTLE: Duration = Duration::from_millis(200);

/// Spacing of LISTEN attempts while they fail: 1 s doubling to a minute, jittered.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Reloads every `interval`, for ever.
pub async fn periodic(gateway: Arc<Gateway>, interval: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // Failures are logged by the gateway (once per outage) and shown in uacreg.status.
        let _ = gateway.reload_because(ReloadCause::Automatic).await;
    }
}

/// LISTENs on PostgreSQL and reloads after each burst of notifications, for ever.
pub async fn listen(gateway: Arc<Gateway>, url: DbUrl, timeouts: ServerTimeouts) {
    let mut retry = Backoff::new(FIRST_RETRY, MAX_RETRY);
    let mut failing = false;
    loop {
        match subscribe(&url, timeouts).await {
            Ok((mut conn, has_trigger)) => {
                if failing {
                    info!("listening for uacreg changes again");
                } else {
                    info!("listening for uacreg changes (PostgreSQL NOTIFY {CHANNEL})");
                }
                failing = false;
                retry.reset();
                gateway.update_health(|h| {
                    h.listening = true;
                    h.notify_trigger = Some(has_trigger);
                });
                // Whatever changed while nobody listened.
                let _ = gateway.reload_because(ReloadCause::Automatic).await;
                let lost = follow(&gateway, &mut conn).await;
                gateway.update_health(|h| h.listening = false);
                warn!("lost the PostgreSQL LISTEN connection ({lost}); reconnecting");
            }
            Err(err) => {
                if !failing {
                    warn!("cannot LISTEN for uacreg changes: {err}; retrying with back-off");
                    failing = true;
                }
                tokio::time::sleep(retry.next_delay()).await;
            }
        }
    }
}

/// Connects and LISTENs; also says whether the trigger that sends the notifications exists.
async fn subscribe(
    url: &DbUrl,
    timeouts: ServerTimeouts,
) -> Result<(AsyncPgConnection, bool), String> {
    // Its TCP keep-alives notice a server that vanished without closing the connection.
    let mut conn = crate::store::postgres::connect(url, timeouts)
        .await
        .map_err(|e| e.to_string())?;
    diesel::sql_query(format!("LISTEN {CHANNEL}"))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    // With `migrate = false` the trigger exists only if the operator created it.
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let triggers = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM pg_trigger WHERE tgname = 'uacreg_notify_change' \
         AND tgrelid = 'uacreg'::regclass",
    )
    .get_result::<Count>(&mut conn)
    .await
    .map_or(1, |c| c.n);
    if triggers == 0 {
        warn!(
            "no uacreg_notify_change trigger on uacreg: NOTIFY will not come \
             (create it with the last statements of schema/postgres.sql)"
        );
    }
    Ok((conn, triggers > 0))
}

/// Reloads after each burst of notifications until the connection fails; returns why.
async fn follow(gateway: &Gateway, conn: &mut AsyncPgConnection) -> String {
    let mut notifications = std::pin::pin!(conn.notifications_stream());
    loop {
        match notifications.next().await {
            Some(Ok(_)) => {}
            Some(Err(err)) => return err.to_string(),
            None => return "connection closed".into(),
        }
        let mut count = 1u64;
        // Gather the rest of the burst.
        loop {
            match tokio::time::timeout(SETTLE, notifications.next()).await {
                Err(_) => break,
                Ok(Some(Ok(_))) => count += 1,
                Ok(Some(Err(err))) => return err.to_string(),
                Ok(None) => return "connection closed".into(),
            }
        }
        gateway.update_health(|h| h.notifications += count);
        let _ = gateway.reload_because(ReloadCause::Automatic).await;
    }
}
