//! REGISTERs waiting for the pacer, in two lines: requests that carry credentials go first.
//!
//! A row's registration is two requests: the first draws a 401 challenge, the second answers it.
//! With one first-come line, starting 100,000 rows queued every first request before any answer,
//! so nothing was registered for the first half of the start-up, and every answer waited as long
//! as the whole backlog took to send — longer than many registrars keep a nonce (Kamailio's
//! `nonce_expire` is 30 s), which turns into stale-nonce rounds and more REGISTERs. Requests
//! with an Authorization (answers to a challenge, refreshes reusing a nonce) complete work that
//! is already under way, so they overtake new work; within each line the order is kept.
//!
//! The queue is also where the registrations' timers meet the pacer: once [`HIGH_WATER`]
//! requests wait, due timers wait too, in the table, until the pacer has made room. A start-up
//! of a million rows used to turn every first timer into a request at once: a million queued
//! requests of a few hundred bytes each, and seconds in which the driver built requests instead
//! of reading the answers to the ones it had sent, so the whole first in-flight window went out
//! twice. A due timer costs a few bytes where a queued request costs hundreds, and it leaves no
//! later than it would have from the queue.

use std::collections::VecDeque;

use super::attempt::Queued;

/// Queue capacity kept through quiet times.
const SPARE_CAPACITY: usize = 4096;

/// Requests waiting for the pacer beyond which due timers are left for later: at the default
/// rate (5,000 a second) under a second of sending, a few MB of requests.
pub(crate) const HIGH_WATER: usize = 4096;

#[derive(Default)]
pub(crate) struct SendQueue {
    with_credentials: VecDeque<Queued>,
    fresh: VecDeque<Queued>,
}

impl SendQueue {
    pub(crate) fn push(&mut self, queued: Queued) {
        if !queued.request.authorization.is_empty() {
            self.with_credentials.push_back(queued);
        } else {
            self.fresh.push_back(queued);
        }
    }

    /// Puts a request back at the head of its line (it was taken out and must wait again).
    pub(crate) fn push_front(&mut self, queued: Queued) {
        if !queued.request.authorization.is_empty() {
            self.with_credentials.push_front(queued);
        } else {
            self.fresh.push_front(queued);
        }
    }

    /// The request that goes next.
    pub(crate) fn front(&self) -> Option<&Queued> {
        self.with_credentials.front().or_else(|| self.fresh.front())
    }

    pub(crate) fn pop_front(&mut self) -> Option<Queued> {
        let next = self
            .with_credentials
            .pop_front()
            .or_else(|| self.fresh.pop_front());
        // A start-up backlog of 100,000 requests leaves 23 MB of capacity behind; once a line
        // has drained, give it back.
        for line in [&mut self.with_credentials, &mut self.fresh] {
            if line.is_empty() && line.capacity() > SPARE_CAPACITY {
                line.shrink_to_fit();
            }
        }
        next
    }

    pub(crate) fn len(&self) -> usize {
        self.with_credentials.len() + self.fresh.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.with_credentials.is_empty() && self.fresh.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::{Destination, RegKey};
    use crate::sip::register::RegisterRequest;

    fn queued(key: u64, with_credentials: bool) -> Queued {
        Queued {
            key: RegKey(key),
            destination: Destination::udp("127.0.0.1", 5060),
            request: RegisterRequest {
                retire_contact: None,
                request_uri: "sip:example.test".into(),
                aor: format!("sip:u{key}@example.test"),
                from_tag: "tag".into(),
                call_id: format!("call{key}"),
                cseq: 1,
                contact_uri: format!("sip:u{key}@127.0.0.1"),
                expires: 3600,
                authorization: with_credentials
                    .then(|| ("Authorization", "Digest username=\"u\"".to_string()))
                    .into_iter()
                    .collect(),
                user_agent: "test".into(),
            },
        }
    }

    #[test]
    fn answers_overtake_new_work_and_each_line_keeps_its_order() {
        let mut queue = SendQueue::default();
        queue.push(queued(1, false));
        queue.push(queued(2, false));
        queue.push(queued(3, true));
        queue.push(queued(4, true));
        queue.push_front(queued(5, false));
        assert_eq!(queue.len(), 5);
        let order: Vec<u64> = std::iter::from_fn(|| queue.pop_front().map(|q| q.key.0)).collect();
        assert_eq!(order, [3, 4, 5, 1, 2]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_drained_backlog_gives_its_capacity_back() {
        let mut queue = SendQueue::default();
        for key in 0..10_000 {
            queue.push(queued(key, false));
        }
        while queue.pop_front().is_some() {}
        assert!(queue.fresh.capacity() <= SPARE_CAPACITY);
    }
}
