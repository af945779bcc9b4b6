//! The process's open-files limit, and how many accepted connections fit under it.
//!
//! Every socket is a file descriptor. A service manager often starts daemons with a soft limit
//! of 1,024 (systemd's default) and a much higher hard limit that the process may raise itself
//! to; staying at 1,024 would let a thousand strangers' connections starve our own registrar
//! connections, DNS lookups and database reconnects. So the daemon raises the soft limit to the
//! hard one at start, and keeps the accepted-connection cap below it with [`RESERVED`]
//! descriptors to spare.

use std::io;

/// Descriptors kept out of reach of accepted connections: outbound TCP/TLS flows, UDP
/// sockets, listeners, DNS queries, the database, RPC and metrics clients, the runtime itself.
pub const RESERVED: u64 = 256;

/// The limit before and after [`raise_open_files_limit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    /// Soft limit the process was started with.
    pub before: u64,
    /// Soft limit in force now.
    pub soft: u64,
    pub hard: u64,
    /// Why raising failed, if it did (the limit then stays at `before`).
    pub raise_failed: Option<String>,
}

/// Largest soft limit asked for when the hard limit is unlimited.
const UNLIMITED_TARGET: u64 = 1 << 20;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere.
pub fn raise_open_files_limit() -> io::Result<OpenFiles> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur as u64;
    let hard = limit.rlim_max as u64;
    let target = if limit.rlim_max == libc::RLIM_INFINITY {
        UNLIMITED_TARGET
    } else {
        hard
    };
    let mut files = OpenFiles {
        before,
        soft: before,
        hard,
        raise_failed: None,
    };
    if target > before {
        let raised = libc::rlimit {
            rlim_cur: target as libc::rlim_t,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass; it changes only this process's limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            files.soft = target;
        } else {
            files.raise_failed = Some(io::Error::last_os_error().to_string());
        }
    }
    Ok(files)
}

#[cfg(not(unix))]
pub fn raise_open_files_limit() -> io::Result<OpenFiles> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no RLIMIT_NOFILE on this platform",
    ))
}

/// The accepted-connection cap that fits a soft limit of `open_files`: the configured one, or
/// less so that [`RESERVED`] descriptors (at most half the limit) stay free.
pub fn fitting_connection_cap(configured: usize, open_files: u64) -> usize {
    let reserve = RESERVED.min(open_files / 2);
    let room = usize::try_from(open_files.saturating_sub(reserve)).unwrap_or(usize::MAX);
    configured.min(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_our_own_descriptors() {
        assert_eq!(fitting_connection_cap(1000, 1024), 768);
        assert_eq!(fitting_connection_cap(1000, 524_288), 1000);
        assert_eq!(fitting_connection_cap(1000, 1256), 1000);
        assert_eq!(fitting_connection_cap(1000, 100), 50);
        assert_eq!(fitting_connection_cap(1000, 0), 0);
    }

    #[cfg(unix)]
    #[test]
    fn raising_ends_at_the_hard_limit() {
        let files = raise_open_files_limit().unwrap();
        assert!(files.soft >= files.before);
        if files.raise_failed.is_none() && files.hard < UNLIMITED_TARGET {
            assert_eq!(files.soft, files.hard);
        }
        // A second call finds it raised already.
        let again = raise_open_files_limit().unwrap();
        assert_eq!(again.before, files.soft);
    }
}
