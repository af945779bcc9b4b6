//! Kamailio's `flags` bitmask, as its `uac.reg_dump` and `uac.reg_info` show it.
//!
//! uacreg keeps a registration's state as named facts (in flight, authentication sent, disabled
//! by the operator …); the bitmask is only how Kamailio prints them, kept so that tools written
//! for Kamailio (`flags & 4` = online, `flags & 1` = disabled) go on working. It is a detail of
//! the RPC answers, so it lives here rather than in the state machine.

use crate::registration::{Snapshot, Status};

/// Kamailio's bits (`UAC_REG_DISABLED` … `UAC_REG_INIT` in its uac module).
pub mod flag {
    pub const DISABLED: i32 = 1;
    pub const ONGOING: i32 = 2;
    pub const ONLINE: i32 = 4;
    pub const AUTHSENT: i32 = 8;
    pub const INIT: i32 = 16;
}

/// The bitmask Kamailio would show for the registration `snapshot` describes.
pub fn flags(snapshot: &Snapshot) -> i32 {
    let mut flags = 0;
    if snapshot.operator_disabled {
        flags |= flag::DISABLED;
    }
    if snapshot.in_flight {
        flags |= flag::ONGOING;
    }
    if snapshot.status == Status::Registered {
        flags |= flag::ONLINE;
    }
    if snapshot.in_flight && snapshot.auth_sent {
        flags |= flag::AUTHSENT;
    }
    if snapshot.initialized {
        flags |= flag::INIT;
    }
    flags
}

/// The bitmask for a row known only by its state name, as `uacreg_status` stores it (the
/// cluster-wide dump): in flight, authentication sent and the operator's switch are not
/// stored, so they are read from the state alone.
pub fn flags_of_state(state: &str) -> i32 {
    match state {
        "registered" => flag::ONLINE | flag::INIT,
        "registering" | "unregistering" => flag::ONGOING | flag::INIT,
        "authenticating" => flag::ONGOING | flag::AUTHSENT | flag::INIT,
        "disabled" => flag::DISABLED | flag::INIT,
        "retry_wait" | "failed" | "auth_failed" | "realm_mismatch" | "unregistered" => flag::INIT,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::{CoreConfig, RegistrationTable};
    use crate::store::{RawRow, RowDefaults, validate};
    use rand::SeedableRng;
    use std::time::Instant;

    /// A snapshot of a freshly loaded row, for setting the facts one by one.
    fn snapshot() -> Snapshot {
        let defaults = RowDefaults {
            contact_addr: "127.0.0.1:5062".into(),
            sockets: Vec::new(),
        };
        let record = validate(&RawRow::new("u1", "alice", "example.com"), &defaults).unwrap();
        let mut table =
            RegistrationTable::new(CoreConfig::default(), rand::rngs::StdRng::seed_from_u64(1));
        table.reload(Instant::now(), vec![record]);
        table.get("u1").unwrap().snapshot()
    }

    #[test]
    fn each_fact_sets_kamailios_bit() {
        let mut snap = snapshot();
        snap.in_flight = false;
        snap.auth_sent = false;
        snap.initialized = false;
        snap.operator_disabled = false;
        snap.status = Status::Pending;
        assert_eq!(flags(&snap), 0);

        snap.operator_disabled = true;
        assert_eq!(flags(&snap), flag::DISABLED);
        snap.operator_disabled = false;

        snap.status = Status::Registered;
        snap.initialized = true;
        // What uac.reg_dump shows for a registered row: ONLINE | INIT.
        assert_eq!(flags(&snap), 20);

        // Authentication sent counts only while the answer is in flight.
        snap.auth_sent = true;
        assert_eq!(flags(&snap) & flag::AUTHSENT, 0);
        snap.status = Status::Authenticating;
        snap.in_flight = true;
        assert_eq!(flags(&snap), flag::ONGOING | flag::AUTHSENT | flag::INIT);
    }

    /// A stored state gives the bits a live row in that state would show at rest.
    #[test]
    fn stored_states_map_to_the_same_bits() {
        assert_eq!(flags_of_state("registered"), 20);
        assert_eq!(flags_of_state("authenticating"), 26);
        assert_eq!(flags_of_state("disabled") & flag::DISABLED, flag::DISABLED);
        assert_eq!(flags_of_state("retry_wait"), flag::INIT);
        assert_eq!(flags_of_state("unreported"), 0);
        assert_eq!(flags_of_state("pending"), 0);
    }
}
