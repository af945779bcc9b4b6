//! The session with the database: one connection, opened on first use, reopened once when a
//! statement fails, and an outage with jittered back-off when it cannot be had.
//!
//! Every read and write of the other store modules goes through `Store::run`, so the outage
//! rules hold for all of them: a failed statement drops the connection and is tried once more on
//! a fresh one; when that fails too, calls fail fast with [`StoreError::Unavailable`] until the
//! next attempt is due (1, 2, 4 … 60 s apart).

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::StoreError;
use super::connection::{self, Connection, DbUrl, ServerTimeouts};
use super::layout::{self, TableLayout};
use crate::backoff::Backoff;

/// Spacing of connection attempts while the database is unreachable (jittered by [`Backoff`]).
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// How often a transaction the server rolled back as a deadlock victim is run again before the
/// failure counts as the statement's, and the pauses before each (jittered by [`Backoff`]).
const DEADLOCK_RETRIES: u32 = 3;
const DEADLOCK_FIRST_PAUSE: Duration = Duration::from_millis(5);
const DEADLOCK_MAX_PAUSE: Duration = Duration::from_millis(50);

/// A connection and what was learnt when it opened. Field order matters: the connection is
/// dropped before the runtime it may need.
struct Session {
    connection: Connection,
    layout: TableLayout,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // A runtime may not be dropped (blocking) inside another runtime's context.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Why the store has no connection, and when it tries again.
struct Outage {
    last_error: String,
    attempts: u32,
    next_attempt: Instant,
}

/// The database holding the `uacreg` table.
pub struct Store {
    url: DbUrl,
    /// Run the migrations on connecting (off: the tables must exist, nothing is created).
    migrate: bool,
    /// Statement and lock bounds for server sessions.
    timeouts: ServerTimeouts,
    session: Option<Session>,
    outage: Option<Outage>,
    /// When the next connection attempt of an outage may be made.
    reconnect: Backoff,
    /// Pauses before running a deadlock victim's transaction again.
    deadlock_pause: Backoff,
}

impl Store {
    /// Opens the database at `url`, creating and migrating it as needed.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        let mut store = Store::unconnected(url)?;
        store.connect()?;
        Ok(store)
    }

    /// A store for `url` that connects on first use (or on [`Store::connect`]). Only the URL is
    /// checked here.
    pub fn unconnected(url: &str) -> Result<Store, StoreError> {
        Ok(Store {
            url: DbUrl::parse(url)?,
            migrate: true,
            timeouts: ServerTimeouts::default(),
            session: None,
            outage: None,
            reconnect: Backoff::new(FIRST_RETRY, MAX_RETRY),
            deadlock_pause: Backoff::new(DEADLOCK_FIRST_PAUSE, DEADLOCK_MAX_PAUSE),
        })
    }

    /// Statement and lock timeouts for the next server connection (default: 60 s and 10 s).
    pub fn set_timeouts(&mut self, timeouts: ServerTimeouts) {
        self.timeouts = timeouts;
    }

    /// Whether connecting runs the migrations (default on). Off suits a database user that may
    /// only read `uacreg`: nothing is created, and features whose objects are missing
    /// (`uacreg_status`, the NOTIFY trigger) report that they are missing.
    pub fn set_migrate(&mut self, migrate: bool) {
        self.migrate = migrate;
    }

    /// Connects now, whatever the retry schedule says. A failure starts (or extends) the outage.
    pub fn connect(&mut self) -> Result<(), StoreError> {
        self.session = None;
        match Self::start_session(&self.url, self.migrate, self.timeouts) {
            Ok(session) => {
                self.end_outage();
                self.session = Some(session);
                Ok(())
            }
            // Reached the server, but migrating or reading the layout failed (a table renamed
            // away, missing privileges): not an outage, so no back-off; the next call tries again.
            Err(err) if !matches!(err, StoreError::Open(_)) => {
                self.end_outage();
                Err(err)
            }
            Err(err) => {
                self.note_failure(&err);
                Err(err)
            }
        }
    }

    fn end_outage(&mut self) {
        self.reconnect.reset();
        if let Some(outage) = self.outage.take() {
            info!(
                db = %self.url,
                failed_attempts = outage.attempts,
                "database reachable again"
            );
        }
    }

    fn start_session(
        url: &DbUrl,
        migrate: bool,
        timeouts: ServerTimeouts,
    ) -> Result<Session, StoreError> {
        let opened = connection::open(url, migrate, timeouts)?;
        let mut session = Session {
            connection: opened.connection,
            layout: TableLayout {
                kamailio_version: None,
                has_contact_user: true,
            },
            runtime: opened.runtime,
        };
        let _entered = session.runtime.as_ref().map(|rt| rt.enter());
        session.layout = layout::detect(&mut session.connection)?;
        Ok(session)
    }

    fn note_failure(&mut self, err: &StoreError) {
        let now = Instant::now();
        let attempts = self.outage.as_ref().map_or(0, |o| o.attempts) + 1;
        let delay = self.reconnect.next_delay();
        if attempts == 1 {
            warn!(db = %self.url, "database unreachable: {err}; running registrations are kept, reconnecting with back-off");
        }
        self.outage = Some(Outage {
            last_error: err.to_string(),
            attempts,
            next_attempt: now + delay,
        });
    }

    /// The engine and URL (password hidden when displayed).
    pub fn url(&self) -> &DbUrl {
        &self.url
    }

    /// The table layout seen at the last connection (None: not connected yet).
    pub fn layout(&self) -> Option<TableLayout> {
        self.session.as_ref().map(|s| s.layout)
    }

    /// Whether a connection is open (it may still have died since its last use).
    pub fn is_connected(&self) -> bool {
        self.session.is_some()
    }

    /// Runs `op` on the connection, connecting first if needed. A failure drops the connection
    /// and `op` runs once more on a fresh one; if that cannot be had, the outage begins.
    pub(super) fn run<T>(
        &mut self,
        op: impl Fn(&mut Connection, TableLayout) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let fresh = if self.session.is_none() {
            if let Some(outage) = &self.outage {
                let now = Instant::now();
                if now < outage.next_attempt {
                    return Err(StoreError::Unavailable {
                        last_error: outage.last_error.clone(),
                        retry_in: outage.next_attempt - now,
                    });
                }
            }
            self.connect()?;
            true
        } else {
            false
        };
        let mut first = self.run_on_session(&op);
        // A deadlock victim was rolled back whole and the connection is fine: run it again on
        // the same connection, after a short jittered pause so the two parties do not meet
        // again in step.
        let mut victim = 0;
        while first.as_ref().is_err_and(StoreError::is_deadlock) && victim < DEADLOCK_RETRIES {
            victim += 1;
            debug!(db = %self.url, attempt = victim, "deadlock victim; running the transaction again");
            std::thread::sleep(self.deadlock_pause.next_delay());
            first = self.run_on_session(&op);
        }
        self.deadlock_pause.reset();
        match first {
            Err(err) if !fresh && !err.is_about_the_data() && !err.is_deadlock() => {
                warn!(db = %self.url, "database statement failed: {err}; reconnecting");
                self.connect()?;
                self.run_on_session(&op)
            }
            other => other,
        }
    }

    fn run_on_session<T>(
        &mut self,
        op: &impl Fn(&mut Connection, TableLayout) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(session) = self.session.as_mut() else {
            return Err(StoreError::Open("not connected".into()));
        };
        let _entered = session.runtime.as_ref().map(|rt| rt.enter());
        let result = op(&mut session.connection, session.layout);
        drop(_entered);
        if let Err(err) = &result {
            if !err.is_about_the_data() && !err.is_deadlock() {
                self.session = None;
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::defaults;

    #[test]
    fn url_scheme_picks_the_backend_and_shows_the_real_error() {
        // Nothing listens on port 1: the engine's own error comes back, never a SQLite file.
        let err = Store::open("postgres://u:hunter2@127.0.0.1:1/db")
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Open(_)), "{err}");
        assert!(!err.to_string().contains("hunter2"));
        let err = Store::open("mysql://u:hunter2@127.0.0.1:1/db")
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Open(_)), "{err}");
        assert!(!err.to_string().contains("hunter2"));
        assert!(!std::path::Path::new("postgres:").exists());
        assert!(matches!(Store::open("redis://x"), Err(StoreError::Url(_))));
    }

    #[test]
    fn an_unreachable_database_is_retried_with_back_off() {
        let mut store = Store::unconnected("postgres://u:p@127.0.0.1:1/db").unwrap();
        assert!(matches!(store.load(&defaults()), Err(StoreError::Open(_))));
        // The next call within the back-off fails at once, saying when the next attempt is.
        let err = store.load(&defaults()).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        assert!(
            err.to_string().contains("next connection attempt in"),
            "{err}"
        );
        // The first delay of an outage is FIRST_RETRY at most (jitter only shortens it).
        let StoreError::Unavailable { retry_in, .. } = err else {
            unreachable!()
        };
        assert!(retry_in <= FIRST_RETRY, "{retry_in:?}");
    }
}
