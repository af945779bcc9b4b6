//! Core tests on simulated time: a registrar model answers the table's actions directly, so whole
//! days of refreshes for many rows run in milliseconds and deterministically.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::sip::digest::{Authorization, SecretInput};
use crate::sip::message::{ContactBinding, Response, UriParts};
use crate::sip::register::RegisterRequest;

const REALM: &str = "registrar.test";

fn record(i: usize) -> Record {
    fields(i).try_into().unwrap()
}

fn fields(i: usize) -> RecordFields {
    let l_uuid = format!("uuid{i:06}");
    let user = format!("user{i:06}");
    RecordFields {
        id: i as i64 + 1,
        l_uuid: l_uuid.clone(),
        l_username: format!("local{i:06}"),
        l_domain: "gw.test".into(),
        r_username: user.clone(),
        r_domain: REALM.into(),
        realm: REALM.into(),
        auth_username: user.clone(),
        auth_password: Secret::new(format!("pw-{user}")),
        auth_ha1: Secret::default(),
        auth_proxy: "sip:127.0.0.1:5070".into(),
        expires: 3600,
        flags: 0,
        reg_delay: 0,
        contact_addr: "127.0.0.1:5080".into(),
        socket: String::new(),
        contact_user: String::new(),
        destination: Destination::udp("127.0.0.1", 5070),
        contact_host_port: "127.0.0.1:5080".into(),
    }
}

/// `record`'s copy with some columns changed.
fn changed(record: &Record, change: impl FnOnce(&mut RecordFields)) -> Record {
    let mut fields = record.to_fields();
    change(&mut fields);
    fields.try_into().unwrap()
}

/// The HA1 the model registrar's password for user `i` hashes to: the same secret in another
/// form, so a row switched to it has new credentials that still work.
fn ha1_of(i: usize) -> Secret {
    let text = format!("user{i:06}:{REALM}:pw-user{i:06}");
    Secret::new(crate::sip::digest::Algorithm::Md5.hex_hash(text.as_bytes()))
}

/// What the model registrar does with a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Normal,
    WrongRealm,
    Silent,
    AlwaysStale,
}

/// A registrar model: challenges, verifies digests, keeps one binding expiry per AOR.
struct Model {
    mode: Mode,
    nonce_counter: u64,
    /// AOR user → binding expiry.
    bindings: HashMap<String, Instant>,
    /// Every Authorization that failed verification.
    bad_auth: usize,
    grant: u32,
    /// Accept a nonce only for this long.
    nonce_life: Duration,
    nonces: HashMap<String, Instant>,
    /// Until this instant, answer this share of requests with `fail_code` instead.
    fail_until: Option<Instant>,
    fail_ratio: f64,
    fail_code: u16,
    fail_retry_after: Option<u32>,
    rng: StdRng,
    /// REGISTERs that arrived for a binding that had already expired.
    late: usize,
    /// The least time left on a binding when a REGISTER for it arrived.
    min_margin: Option<Duration>,
    /// An authenticating proxy in front: requests without a good Proxy-Authorization for this
    /// realm get a 407 before the registrar sees them.
    proxy_realm: Option<&'static str>,
    /// Contact expiry to grant whatever was asked (a registrar that overstates its grant).
    overgrant: Option<u32>,
}

impl Model {
    fn new(mode: Mode) -> Model {
        Model {
            mode,
            nonce_counter: 0,
            bindings: HashMap::new(),
            bad_auth: 0,
            grant: 3600,
            nonce_life: Duration::from_secs(300),
            nonces: HashMap::new(),
            fail_until: None,
            fail_ratio: 0.0,
            fail_code: 503,
            fail_retry_after: None,
            rng: StdRng::seed_from_u64(7),
            late: 0,
            min_margin: None,
            proxy_realm: None,
            overgrant: None,
        }
    }

    /// A 407 from the authenticating proxy for `realm`.
    fn proxy_challenge(
        &mut self,
        now: Instant,
        req: &RegisterRequest,
        realm: &str,
    ) -> Response<'static> {
        self.nonce_counter += 1;
        let nonce = format!("p{}", self.nonce_counter);
        self.nonces.insert(nonce.clone(), now);
        let mut r = base_response(req, 407, "Proxy Authentication Required");
        r.proxy_authenticate = vec![
            format!("Digest realm=\"{realm}\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5")
                .into(),
        ];
        r
    }

    fn challenge(
        &mut self,
        now: Instant,
        req: &RegisterRequest,
        realm: &str,
        stale: bool,
    ) -> Response<'static> {
        self.nonce_counter += 1;
        let nonce = format!("n{}", self.nonce_counter);
        self.nonces.insert(nonce.clone(), now);
        let mut r = base_response(req, 401, "Unauthorized");
        r.www_authenticate = vec![
            format!(
                "Digest realm=\"{realm}\", nonce=\"{nonce}\", qop=\"auth\", algorithm=MD5{}",
                if stale { ", stale=true" } else { "" }
            )
            .into(),
        ];
        r
    }

    fn answer(&mut self, now: Instant, req: &RegisterRequest) -> Option<Response<'static>> {
        let user = req
            .aor
            .trim_start_matches("sip:")
            .split('@')
            .next()
            .unwrap_or("")
            .to_string();
        let held = self.bindings.get(&user).filter(|_| req.expires > 0);
        if let Some(expiry) = held {
            match expiry.checked_duration_since(now) {
                Some(left) if !left.is_zero() => {
                    self.min_margin = Some(self.min_margin.map_or(left, |m| m.min(left)));
                }
                _ => self.late += 1,
            }
        }
        if self.fail_until.is_some_and(|until| now < until)
            && self.rng.random::<f64>() < self.fail_ratio
        {
            let mut r = base_response(req, self.fail_code, "Failure");
            r.retry_after = self.fail_retry_after;
            return Some(r);
        }
        match self.mode {
            Mode::Silent => return None,
            Mode::WrongRealm => return Some(self.challenge(now, req, "other.realm", false)),
            _ => {}
        }
        if let Some(realm) = self.proxy_realm {
            let good = req
                .authorization
                .iter()
                .filter(|(name, _)| *name == "Proxy-Authorization")
                .filter_map(|(_, value)| Authorization::parse(value).ok())
                .any(|auth| {
                    auth.realm == realm
                        && auth.verify(
                            SecretInput::Password(&format!("pw-{user}")),
                            "REGISTER",
                            b"",
                        )
                        && self.nonces.contains_key(&auth.nonce)
                });
            if !good {
                return Some(self.proxy_challenge(now, req, realm));
            }
        }
        let Some((_, value)) = req
            .authorization
            .iter()
            .find(|(name, _)| *name == "Authorization")
        else {
            return Some(self.challenge(now, req, REALM, false));
        };
        let auth = Authorization::parse(value).expect("our own Authorization parses");
        let password = format!("pw-{user}");
        if !auth.verify(SecretInput::Password(&password), "REGISTER", b"") || auth.realm != REALM {
            self.bad_auth += 1;
            return Some(self.challenge(now, req, REALM, false));
        }
        let fresh = self
            .nonces
            .get(&auth.nonce)
            .is_some_and(|issued| now.duration_since(*issued) < self.nonce_life);
        if !fresh || self.mode == Mode::AlwaysStale {
            return Some(self.challenge(now, req, REALM, true));
        }
        let mut r = base_response(req, 200, "OK");
        if req.expires == 0 {
            self.bindings.remove(&user);
        } else {
            let granted = req.expires.min(self.grant);
            self.bindings
                .insert(user.clone(), now + Duration::from_secs(u64::from(granted)));
            // Another device's binding first, ours second, as real registrars list them.
            r.contacts = vec![
                contact("sip:other@192.0.2.1:5060", Some(120)),
                contact(&req.contact_uri, Some(self.overgrant.unwrap_or(granted))),
            ];
        }
        Some(r)
    }
}

fn contact(uri: &str, expires: Option<u32>) -> ContactBinding {
    ContactBinding {
        uri: UriParts::parse(uri).expect("test contact parses"),
        uri_text: uri.to_string(),
        expires,
    }
}

fn base_response(req: &RegisterRequest, code: u16, reason: &str) -> Response<'static> {
    Response {
        code,
        reason: reason.to_string().into(),
        branch: Some("z9hG4bKtest".into()),
        call_id: req.call_id.clone().into(),
        cseq: req.cseq,
        cseq_method: "REGISTER".into(),
        contacts: vec![],
        expires: None,
        min_expires: None,
        retry_after: None,
        www_authenticate: vec![],
        proxy_authenticate: vec![],
    }
}

/// Runs the table against the model until `until`, delivering answers after `rtt`. Returns the
/// number of REGISTERs sent.
struct Sim {
    table: RegistrationTable,
    model: Model,
    now: Instant,
    rtt: Duration,
    /// (deliver at, key, response or None for a timeout, cseq). Every message of a run takes the
    /// same time, so arrival order is sending order and a queue stays sorted.
    in_transit: std::collections::VecDeque<(Instant, RegKey, Option<Response<'static>>, u32)>,
    sent: Vec<(RegKey, RegisterRequest)>,
    /// Keep every request in `sent` (off for the big runs, which only count).
    keep_sent: bool,
    sent_count: usize,
    /// When each kept request was sent.
    sent_at: Vec<Instant>,
    /// Keep the send times even when the requests are not kept.
    keep_times: bool,
}

impl Sim {
    fn new(mode: Mode) -> Sim {
        Sim {
            table: RegistrationTable::new(CoreConfig::default(), StdRng::seed_from_u64(42)),
            model: Model::new(mode),
            now: Instant::now(),
            rtt: Duration::from_millis(20),
            in_transit: std::collections::VecDeque::new(),
            sent: Vec::new(),
            keep_sent: true,
            sent_count: 0,
            sent_at: Vec::new(),
            keep_times: false,
        }
    }

    fn with_policy(mode: Mode, policy: RetryPolicy, seed: u64) -> Sim {
        let mut sim = Sim::new(mode);
        sim.table = RegistrationTable::new(
            CoreConfig {
                policy,
                ..CoreConfig::default()
            },
            StdRng::seed_from_u64(seed),
        );
        sim
    }

    fn pump_actions(&mut self) {
        let actions: Vec<Action> = self.table.drain_actions().collect();
        for action in actions {
            let Action::Send { key, request, .. } = action;
            let answer = self.model.answer(self.now, &request);
            let at = match answer {
                Some(_) => self.now + self.rtt,
                None => self.now + Duration::from_secs(32),
            };
            self.in_transit.push_back((at, key, answer, request.cseq));
            self.sent_count += 1;
            if self.keep_sent || self.keep_times {
                self.sent_at.push(self.now);
            }
            if self.keep_sent {
                self.sent.push((key, request));
            }
        }
    }

    fn run_until(&mut self, until: Instant) {
        loop {
            self.pump_actions();
            let next_msg = self.in_transit.front().map(|m| m.0);
            let next_timer = self.table.next_deadline();
            let next = match (next_msg, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = next;
            while self.in_transit.front().is_some_and(|m| m.0 <= self.now) {
                let Some((_, key, response, cseq)) = self.in_transit.pop_front() else {
                    break;
                };
                match response {
                    Some(response) => self.table.handle_response(self.now, key, &response),
                    None => self
                        .table
                        .handle_transaction_failure(self.now, key, cseq, "timeout"),
                }
            }
            self.table.handle_timeout(self.now);
        }
        self.now = until.max(self.now);
    }

    fn status(&self, l_uuid: &str) -> Status {
        self.table.get(l_uuid).expect("row present").status()
    }
}

#[test]
fn registers_after_one_challenge_and_refreshes_before_expiry() {
    let mut sim = Sim::new(Mode::Normal);
    let start = sim.now;
    sim.table.reload(start, vec![record(0)]);
    sim.run_until(start + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
    // Unauthenticated REGISTER, then the answer to the challenge.
    assert_eq!(sim.sent.len(), 2);
    assert!(sim.sent[0].1.authorization.is_empty());
    assert_eq!(sim.sent[1].1.authorization.len(), 1);
    assert_eq!(sim.sent[0].1.call_id, sim.sent[1].1.call_id);
    assert_eq!(sim.sent[1].1.cseq, sim.sent[0].1.cseq + 1);
    let snap = sim.table.get("uuid000000").unwrap().snapshot();
    assert_eq!(snap.granted_expires, Some(3600));

    // Across a day the binding never lapses, the Call-ID never changes, CSeq keeps rising.
    let day = start + Duration::from_secs(86_400);
    let mut t = start + Duration::from_secs(1);
    while t < day {
        t += Duration::from_secs(60);
        sim.run_until(t);
        let expiry = sim.model.bindings.get("user000000").copied();
        assert!(
            expiry.is_some_and(|e| e > t),
            "binding lapsed at {:?}",
            t - start
        );
    }
    let call_ids: std::collections::HashSet<_> =
        sim.sent.iter().map(|(_, r)| r.call_id.clone()).collect();
    assert_eq!(call_ids.len(), 1);
    assert!(sim.sent.windows(2).all(|w| w[1].1.cseq > w[0].1.cseq));
    // Refreshes reuse the nonce while it lives, and are challenged again once it is stale.
    assert_eq!(sim.model.bad_auth, 0);
    let refreshes = sim.sent.len();
    assert!(
        (26..=80).contains(&refreshes),
        "{refreshes} REGISTERs in a day"
    );
}

#[test]
fn realm_mismatch_never_sends_credentials() {
    let mut sim = Sim::new(Mode::WrongRealm);
    let start = sim.now;
    sim.table.reload(start, vec![record(0)]);
    sim.run_until(start + Duration::from_secs(6 * 3600));
    assert!(sim.sent.len() >= 3, "retried: {}", sim.sent.len());
    assert!(sim.sent.iter().all(|(_, r)| r.authorization.is_empty()));
    let snap = sim.table.get("uuid000000").unwrap().snapshot();
    assert_eq!(snap.status, Status::RealmMismatch);
    assert_eq!(snap.expected_realm.as_deref(), Some(REALM));
    assert_eq!(snap.offered_realm.as_deref(), Some("other.realm"));
}

#[test]
fn empty_realm_accepts_any_challenge() {
    let mut sim = Sim::new(Mode::Normal);
    let r = changed(&record(0), |f| f.realm.clear());
    sim.table.reload(sim.now, vec![r]);
    sim.run_until(sim.now + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
}

#[test]
fn wrong_password_is_an_auth_failure_not_a_loop() {
    let mut sim = Sim::new(Mode::Normal);
    let r = changed(&record(0), |f| f.auth_password = Secret::new("wrong"));
    sim.table.reload(sim.now, vec![r]);
    sim.run_until(sim.now + Duration::from_secs(60));
    assert_eq!(sim.status("uuid000000"), Status::AuthFailed);
    assert_eq!(sim.sent.len(), 2, "one challenge answered once");
}

#[test]
fn stale_nonce_is_answered_once_more() {
    let mut sim = Sim::new(Mode::AlwaysStale);
    sim.table.reload(sim.now, vec![record(0)]);
    sim.run_until(sim.now + Duration::from_secs(5));
    // no auth, fresh auth (stale), fresh auth again (stale again → give up).
    assert_eq!(sim.sent.len(), 3);
    assert_eq!(sim.status("uuid000000"), Status::AuthFailed);
}

#[test]
fn silence_is_a_timeout_with_backoff() {
    let mut sim = Sim::new(Mode::Silent);
    let start = sim.now;
    sim.table.reload(start, vec![record(0)]);
    sim.run_until(start + Duration::from_secs(40));
    assert_eq!(sim.status("uuid000000"), Status::RetryWait);
    sim.run_until(start + Duration::from_secs(3600));
    let attempts = sim.sent.len();
    assert!(
        (4..=12).contains(&attempts),
        "{attempts} attempts in an hour of silence"
    );
}

#[test]
fn expires_zero_and_disabled_rows_send_nothing() {
    let mut sim = Sim::new(Mode::Normal);
    let mut zero = record(0);
    zero.expires = 0;
    let mut disabled = record(1);
    disabled.flags = 1;
    sim.table.reload(sim.now, vec![zero, disabled]);
    sim.run_until(sim.now + Duration::from_secs(3600));
    assert!(sim.sent.is_empty());
    assert_eq!(sim.status("uuid000000"), Status::Unregistered);
    assert_eq!(sim.status("uuid000001"), Status::Disabled);
}

#[test]
fn reg_delay_delays_the_first_register() {
    let mut sim = Sim::new(Mode::Normal);
    let start = sim.now;
    let mut r = record(0);
    r.reg_delay = 30;
    sim.table.reload(start, vec![r]);
    sim.run_until(start + Duration::from_secs(29));
    assert!(sim.sent.is_empty());
    sim.run_until(start + Duration::from_secs(31));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
}

#[test]
fn reload_diff_touches_only_changed_rows() {
    let mut sim = Sim::new(Mode::Normal);
    let start = sim.now;
    let rows: Vec<Record> = (0..100).map(record).collect();
    sim.table.reload(start, rows.clone());
    sim.run_until(start + Duration::from_secs(10));
    assert_eq!(sim.table.status_counts()["registered"], 100);
    sim.sent.clear();

    let mut next = rows.clone();
    // Changed reg_delay: a real change to the row, but nothing to tell the registrar.
    next[5] = changed(&next[5], |f| f.reg_delay = 1);
    // Changed binding: new contact address.
    next[7] = changed(&next[7], |f| {
        f.contact_addr = "127.0.0.1:5081".into();
        f.contact_host_port = "127.0.0.1:5081".into();
    });
    // Removed.
    next.remove(9);
    // Added.
    next.push(record(100));
    let t = sim.now;
    let summary = sim.table.reload(t, next);
    assert_eq!(summary.added, 1);
    assert_eq!(summary.removed, 1);
    assert_eq!(summary.changed, 2);
    assert_eq!(summary.unchanged, 97);
    sim.run_until(t + Duration::from_secs(10));
    let mut touched: Vec<String> = sim.sent.iter().map(|(_, r)| r.aor.clone()).collect();
    touched.sort();
    touched.dedup();
    assert_eq!(
        touched,
        vec![
            "sip:user000007@registrar.test",
            "sip:user000009@registrar.test",
            "sip:user000100@registrar.test",
        ],
        "row 5 changed only reg_delay, which needs no REGISTER"
    );
    // The removed row was un-registered and is gone.
    assert!(!sim.model.bindings.contains_key("user000009"));
    assert!(sim.table.get("uuid000009").is_none());
    assert_eq!(sim.table.leaving_count(), 0);
    assert!(
        sim.sent
            .iter()
            .any(|(_, r)| r.aor.ends_with("user000009@registrar.test") && r.expires == 0)
    );
    assert!(
        sim.sent
            .iter()
            .any(|(_, r)| r.contact_uri == "sip:uuid000007@127.0.0.1:5080" && r.expires == 0)
    );
    assert_eq!(sim.status("uuid000007"), Status::Registered);
    assert_eq!(sim.status("uuid000100"), Status::Registered);
}

/// A reload of a running table keeps its changed and added records as copies made on the
/// table's side: the blocks the reading thread allocated are all freed with the rest of what
/// it read, so no allocator page stays pinned by a few kept records. The first load keeps
/// every record it gets, so it copies nothing.
#[test]
fn records_kept_by_a_reload_are_copies_and_the_first_load_keeps_its_own() {
    let mut sim = Sim::new(Mode::Normal);
    let start = sim.now;
    let rows: Vec<Record> = (0..10).map(record).collect();
    let first = rows.clone();
    let first_blocks: Vec<*const u8> = first.iter().map(|r| r.l_uuid().as_ptr()).collect();
    sim.table.reload(start, first);
    for (i, block) in first_blocks.iter().enumerate() {
        let kept = sim.table.get(&format!("uuid{i:06}")).expect("loaded");
        assert_eq!(
            kept.record().l_uuid().as_ptr(),
            *block,
            "row {i} was copied"
        );
    }

    let mut next = rows.clone();
    next[3] = changed(&next[3], |f| f.expires = 7200);
    next.push(record(10));
    let read_blocks = [next[3].l_uuid().as_ptr(), next[10].l_uuid().as_ptr()];
    let summary = sim.table.reload(sim.now, next);
    assert_eq!((summary.changed, summary.added), (1, 1));
    for (l_uuid, read) in ["uuid000003", "uuid000010"].into_iter().zip(read_blocks) {
        let kept = sim.table.get(l_uuid).expect("kept");
        assert_ne!(
            kept.record().l_uuid().as_ptr(),
            read,
            "{l_uuid} kept the read block"
        );
        assert_eq!(kept.record().l_uuid(), l_uuid);
    }
    assert_eq!(
        sim.table.get("uuid000003").expect("kept").record().expires,
        7200
    );
}

/// The diff does not depend on the order rows come in: shuffled, with a duplicate (the first
/// one read wins) and rows removed at both ends and in the middle, it counts and keeps exactly
/// what a sorted table would.
#[test]
fn reload_in_any_order_keeps_the_first_of_duplicates_and_removes_the_gone() {
    let mut sim = Sim::new(Mode::Normal);
    let start = sim.now;
    sim.table.reload(start, (0..50).rev().map(record).collect());
    assert_eq!(sim.table.len(), 50);
    let mut next: Vec<Record> = (1..49).filter(|i| *i != 25).map(record).collect();
    next.reverse();
    next.swap(3, 30);
    let first = changed(&record(10), |f| f.reg_delay = 7);
    next.insert(5, first);
    next.push(changed(&record(10), |f| f.reg_delay = 9));
    next.push(record(77));
    assert_eq!(sim.table.removed_by(&next), 3);
    let summary = sim.table.reload(sim.now, next);
    assert_eq!(
        (
            summary.added,
            summary.changed,
            summary.removed,
            summary.unchanged
        ),
        (1, 1, 3, 46)
    );
    assert_eq!(sim.table.len(), 48);
    for gone in ["uuid000000", "uuid000025", "uuid000049"] {
        assert!(sim.table.get(gone).is_none(), "{gone}");
    }
    assert_eq!(sim.table.get("uuid000010").unwrap().record().reg_delay, 7);
}

#[test]
fn disable_unregisters_and_enable_registers_again() {
    let mut sim = Sim::new(Mode::Normal);
    sim.table.reload(sim.now, vec![record(0)]);
    sim.run_until(sim.now + Duration::from_secs(1));
    assert!(
        sim.table
            .set_disabled(sim.now, Attribute::LUuid, "uuid000000", true)
    );
    sim.run_until(sim.now + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Disabled);
    assert!(!sim.model.bindings.contains_key("user000000"));
    assert!(
        sim.table
            .set_disabled(sim.now, Attribute::RUsername, "user000000", false)
    );
    sim.run_until(sim.now + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
    assert!(
        !sim.table
            .set_disabled(sim.now, Attribute::LUuid, "nope", true)
    );
}

#[test]
fn interval_too_brief_raises_expires() {
    let mut sim = Sim::new(Mode::Normal);
    let mut r = record(0);
    r.expires = 30;
    sim.table.reload(sim.now, vec![r]);
    // Deliver a 423 by hand for the first request.
    let actions: Vec<Action> = sim.table.drain_actions().collect();
    assert!(actions.is_empty(), "first REGISTER waits for its timer");
    sim.table.handle_timeout(sim.now);
    let Action::Send { key, request, .. } = sim.table.drain_actions().next().unwrap();
    let mut too_brief = base_response(&request, 423, "Interval Too Brief");
    too_brief.min_expires = Some(600);
    sim.table.handle_response(sim.now, key, &too_brief);
    let Action::Send { request: again, .. } = sim.table.drain_actions().next().unwrap();
    assert_eq!(again.expires, 600);
    assert_eq!(again.cseq, request.cseq + 1);
}

#[test]
fn a_hundred_thousand_rows_through_a_simulated_day() {
    let mut sim = Sim::new(Mode::Normal);
    sim.keep_sent = false;
    // A registrar that accepts a nonce all day: every refresh reuses it (one REGISTER per
    // refresh), which keeps this large run quick; nonce expiry is covered by the one-row test.
    sim.model.nonce_life = Duration::from_secs(2 * 86_400);
    let start = sim.now;
    let rows: Vec<Record> = (0..100_000).map(record).collect();
    sim.table.reload(start, rows);
    sim.run_until(start + Duration::from_secs(60));
    assert_eq!(sim.table.status_counts()["registered"], 100_000);
    sim.run_until(start + Duration::from_secs(86_400));
    assert_eq!(sim.table.status_counts()["registered"], 100_000);
    assert_eq!(sim.model.bad_auth, 0);
    // Every binding is still valid at the end of the day.
    let end = sim.now;
    assert!(sim.model.bindings.values().all(|e| *e > end));
    let per_row = sim.sent_count as f64 / 100_000.0;
    // Two for the initial challenge, then one refresh roughly every 55 minutes.
    assert!(
        (20.0..40.0).contains(&per_row),
        "{per_row} REGISTERs per row per day"
    );
}

/// A sim whose registrar fails every request with `code` for the first `for_secs` seconds.
fn failing_sim(code: u16, retry_after: Option<u32>, for_secs: u64) -> Sim {
    let mut sim = Sim::new(Mode::Normal);
    sim.model.fail_until = Some(sim.now + Duration::from_secs(for_secs));
    sim.model.fail_ratio = 1.0;
    sim.model.fail_code = code;
    sim.model.fail_retry_after = retry_after;
    sim
}

#[test]
fn unavailable_with_retry_after_waits_at_least_that_long() {
    let mut sim = failing_sim(503, Some(120), 100);
    let start = sim.now;
    sim.table.reload(start, vec![record(0)]);
    sim.run_until(start + Duration::from_secs(1));
    let snap = sim.table.get("uuid000000").unwrap().snapshot();
    assert_eq!(snap.status, Status::RetryWait);
    assert_eq!(snap.last_code, Some(503));
    let next = snap.next_action.unwrap() - start;
    assert!(
        next >= Duration::from_secs(120) && next <= Duration::from_secs(181),
        "{next:?}"
    );
    sim.run_until(start + Duration::from_secs(200));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
}

#[test]
fn forbidden_is_permanent_until_the_operator_acts() {
    let mut sim = failing_sim(403, None, 10);
    let start = sim.now;
    sim.table.reload(start, vec![record(0)]);
    sim.run_until(start + Duration::from_secs(3600));
    let snap = sim.table.get("uuid000000").unwrap().snapshot();
    assert_eq!(snap.status, Status::Failed);
    assert_eq!(snap.next_action, None);
    assert_eq!(sim.sent.len(), 1, "no retry after a 403");
    // An unchanged reload retries it (the registrar recovered meanwhile).
    let summary = sim.table.reload(sim.now, vec![record(0)]);
    assert_eq!(summary.unchanged, 1);
    sim.run_until(sim.now + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
}

#[test]
fn enable_retries_a_row_that_gave_up() {
    let mut sim = failing_sim(404, None, 10);
    sim.table.reload(sim.now, vec![record(0)]);
    sim.run_until(sim.now + Duration::from_secs(60));
    assert_eq!(sim.status("uuid000000"), Status::Failed);
    assert!(
        sim.table
            .set_disabled(sim.now, Attribute::LUuid, "uuid000000", false)
    );
    sim.run_until(sim.now + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
}

#[test]
fn configured_intervals_and_max_retries() {
    let mut sim = failing_sim(404, None, 100_000);
    sim.table = RegistrationTable::new(
        CoreConfig {
            policy: RetryPolicy {
                fatal_retry: Some(Duration::from_secs(600)),
                ..RetryPolicy::default()
            },
            ..CoreConfig::default()
        },
        StdRng::seed_from_u64(1),
    );
    let start = sim.now;
    sim.table.reload(start, vec![record(0)]);
    sim.run_until(start + Duration::from_secs(3600));
    // Every 5–10 minutes (600 s with 50 % jitter): 1 + 6 to 12 attempts in an hour.
    assert!((7..=13).contains(&sim.sent.len()), "{}", sim.sent.len());

    let mut sim = failing_sim(503, None, 100_000);
    sim.table = RegistrationTable::new(
        CoreConfig {
            policy: RetryPolicy {
                max_retries: Some(2),
                ..RetryPolicy::default()
            },
            ..CoreConfig::default()
        },
        StdRng::seed_from_u64(1),
    );
    sim.table.reload(sim.now, vec![record(0)]);
    sim.run_until(sim.now + Duration::from_secs(3600));
    assert_eq!(sim.sent.len(), 3, "first attempt and two retries");
    assert_eq!(sim.status("uuid000000"), Status::Failed);
}

#[test]
fn authenticating_is_visible_while_the_answer_is_in_flight() {
    let mut sim = Sim::new(Mode::Normal);
    sim.table.reload(sim.now, vec![record(0)]);
    // First REGISTER out, its 401 back, the answer out: stop before the 200 arrives.
    sim.run_until(sim.now + Duration::from_millis(30));
    let snap = sim.table.get("uuid000000").unwrap().snapshot();
    assert_eq!(snap.status, Status::Authenticating);
    assert!(snap.in_flight && snap.auth_sent, "the answer is out");
    sim.run_until(sim.now + Duration::from_millis(30));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
}

#[test]
fn ten_thousand_rows_through_an_hour_of_thirty_percent_failures() {
    let mut sim = Sim::new(Mode::Normal);
    sim.keep_sent = true;
    let start = sim.now;
    sim.model.fail_until = Some(start + Duration::from_secs(3600));
    sim.model.fail_ratio = 0.3;
    sim.model.fail_code = 503;
    let rows: Vec<Record> = (0..10_000).map(record).collect();
    sim.table.reload(start, rows);
    sim.run_until(start + Duration::from_secs(3600));
    // While failing: back-off with jitter spreads the retries. All rows start in the same
    // instant (pacing is the transport's job), but no later second carries a burst.
    let mut per_second: HashMap<u64, usize> = HashMap::new();
    for at in &sim.sent_at {
        let second = (*at - start).as_secs();
        if second >= 2 {
            *per_second.entry(second).or_default() += 1;
        }
    }
    let busiest = per_second.values().copied().max().unwrap_or(0);
    assert!(
        busiest <= 1000,
        "{busiest} REGISTERs in one second after the start"
    );
    let retried_seconds = per_second.len();
    assert!(
        retried_seconds > 300,
        "retries bunched into {retried_seconds} distinct seconds"
    );
    // Recovery: every row ends registered within the longest back-off after the outage.
    sim.run_until(start + Duration::from_secs(3600 + 1900));
    assert_eq!(sim.table.status_counts()["registered"], 10_000);
    assert_eq!(sim.model.bad_auth, 0);
}

#[test]
fn start_spread_spreads_the_first_registers() {
    let mut sim = Sim::new(Mode::Normal);
    sim.table = RegistrationTable::new(
        CoreConfig {
            policy: RetryPolicy {
                start_spread: Duration::from_secs(60),
                ..RetryPolicy::default()
            },
            ..CoreConfig::default()
        },
        StdRng::seed_from_u64(5),
    );
    let start = sim.now;
    sim.table.reload(start, (0..1000).map(record).collect());
    sim.run_until(start + Duration::from_secs(61));
    assert_eq!(sim.table.status_counts()["registered"], 1000);
    let first_second = sim
        .sent_at
        .iter()
        .filter(|at| **at < start + Duration::from_secs(1))
        .count();
    assert!(
        first_second < 100,
        "{first_second} REGISTERs in the first second"
    );
}

#[test]
fn dump_slices_cover_every_row_once_in_order() {
    let mut sim = Sim::new(Mode::Normal);
    let start = sim.now;
    sim.table.reload(start, (0..10).map(record).collect());
    let whole: Vec<String> = sim
        .table
        .snapshots()
        .into_iter()
        .map(|s| s.record.l_uuid().to_owned())
        .collect();
    let mut sliced: Vec<String> = Vec::new();
    loop {
        let after = sliced.last().cloned();
        let slice = sim.table.snapshots_after(after.as_deref(), 3);
        let done = slice.len() < 3;
        sliced.extend(slice.into_iter().map(|s| s.record.l_uuid().to_owned()));
        if done {
            break;
        }
    }
    assert_eq!(sliced, whole);
    assert_eq!(whole.len(), 10);
}

/// The busiest second of REGISTERs sent from `from` on, counted in whole seconds since `start`.
fn busiest_second(sent_at: &[Instant], start: Instant, from: Duration) -> (u64, usize) {
    let mut per_second: HashMap<u64, usize> = HashMap::new();
    for at in sent_at.iter().filter(|at| **at >= start + from) {
        *per_second.entry((*at - start).as_secs()).or_default() += 1;
    }
    per_second
        .into_iter()
        .max_by_key(|(second, count)| (*count, std::cmp::Reverse(*second)))
        .unwrap_or((0, 0))
}

/// 100,000 rows registered within ~20 s, refreshed for the first time an hour later.
fn bunched_start(share: f64) -> Sim {
    let policy = RetryPolicy {
        start_spread: Duration::from_secs(20),
        max_refresh_share: share,
        ..RetryPolicy::default()
    };
    let mut sim = Sim::with_policy(Mode::Normal, policy, 42);
    sim.keep_sent = false;
    sim.keep_times = true;
    // One REGISTER per refresh (the nonce stays valid), so sends per second are refreshes.
    sim.model.nonce_life = Duration::from_secs(2 * 86_400);
    let start = sim.now;
    sim.table.reload(start, (0..100_000).map(record).collect());
    sim.run_until(start + Duration::from_secs(25));
    assert_eq!(sim.table.status_counts()["registered"], 100_000);
    assert_eq!(sim.model.late, 0);
    // Every row's first refresh, and none of its second.
    sim.run_until(start + Duration::from_secs(3400));
    sim
}

#[test]
fn refreshes_of_a_bunched_start_stay_under_the_cap() {
    let mut sim = bunched_start(0.002);
    let start = sim.now - Duration::from_secs(3400);
    let cap = sim.table.refresh_cap();
    assert_eq!(cap, 200, "0.2 % of 100,000 rows");
    // All first REGISTERs and their answers went out in the first 21 s; from then on every
    // REGISTER is a refresh.
    let refreshes = sim.sent_at.len() - 200_000;
    assert_eq!(refreshes, 100_000, "one refresh per row");
    let (second, busiest) = busiest_second(&sim.sent_at, start, Duration::from_secs(22));
    assert!(
        busiest <= cap as usize,
        "{busiest} refreshes in second {second}, cap {cap}"
    );
    // Spreading moved refreshes earlier, but never before half the grant...
    let first_refresh = sim.sent_at[200_000..].iter().min().copied().unwrap();
    assert!(first_refresh >= start + Duration::from_secs(1800));
    // ...and never past expiry: the registrar saw every refresh with time to spare.
    assert_eq!(sim.model.late, 0);
    let margin = sim.model.min_margin.unwrap();
    assert!(
        margin >= Duration::from_secs(290),
        "{margin:?} before expiry"
    );
    // Each row is counted once for its next refresh.
    assert_eq!(sim.table.scheduled_refreshes(), 100_000);
    // Removing every row (un-REGISTERs) empties the calendar.
    sim.table.reload(sim.now, Vec::new());
    sim.run_until(sim.now + Duration::from_secs(10));
    assert_eq!(sim.table.leaving_count(), 0);
    assert!(sim.table.is_empty());
    assert_eq!(sim.table.scheduled_refreshes(), 0);
}

#[test]
fn share_zero_refreshes_as_before() {
    let sim = bunched_start(0.0);
    let start = sim.now - Duration::from_secs(3400);
    assert_eq!(sim.table.refresh_cap(), 0);
    assert_eq!(sim.table.scheduled_refreshes(), 0, "nothing counted");
    // Each refresh at grant − 300 s − up to 5 %, so the start-up's bunch comes back bunched:
    // the same rows that stay under 200 a second when spread.
    let (_, busiest) = busiest_second(&sim.sent_at, start, Duration::from_secs(22));
    assert!(busiest > 400, "{busiest} in the busiest second");
    let refreshes = &sim.sent_at[200_000..];
    assert_eq!(refreshes.len(), 100_000);
    let earliest = refreshes.iter().min().copied().unwrap() - start;
    assert!(
        earliest >= Duration::from_secs(3600 - 300 - 180),
        "{earliest:?}"
    );
    assert_eq!(sim.model.late, 0);
}

#[test]
fn calendar_follows_every_change_of_a_refresh_timer() {
    let policy = RetryPolicy {
        max_refresh_share: 0.002,
        ..RetryPolicy::default()
    };
    let mut sim = Sim::with_policy(Mode::Normal, policy, 3);
    sim.keep_sent = false;
    let start = sim.now;
    let rows: Vec<Record> = (0..1000).map(record).collect();
    sim.table.reload(start, rows.clone());
    assert_eq!(
        sim.table.scheduled_refreshes(),
        0,
        "first REGISTERs are not spread"
    );
    sim.run_until(start + Duration::from_secs(5));
    assert_eq!(sim.table.refresh_cap(), 2);
    assert_eq!(sim.table.scheduled_refreshes(), 1000);

    // Disabled rows drop their refresh (and un-REGISTER).
    for i in 0..100 {
        let l_uuid = format!("uuid{i:06}");
        assert!(
            sim.table
                .set_disabled(sim.now, Attribute::LUuid, &l_uuid, true)
        );
    }
    assert_eq!(sim.table.scheduled_refreshes(), 900);
    // An operator refresh re-registers now; the new refresh is counted when it succeeds.
    for i in 100..110 {
        let l_uuid = format!("uuid{i:06}");
        assert!(sim.table.refresh(sim.now, Attribute::LUuid, &l_uuid));
    }
    assert_eq!(sim.table.scheduled_refreshes(), 890);
    sim.run_until(sim.now + Duration::from_secs(5));
    assert_eq!(sim.table.scheduled_refreshes(), 900);

    // A reload: changed credentials re-register in place, a changed contact replaces the
    // registration, a removed row leaves, an added one registers.
    let mut next = rows[100..].to_vec();
    next[0] = changed(&next[0], |f| f.auth_ha1 = ha1_of(100));
    next[1] = changed(&next[1], |f| {
        f.contact_addr = "127.0.0.1:5081".into();
        f.contact_host_port = "127.0.0.1:5081".into();
    });
    next.truncate(800);
    next.push(record(5000));
    sim.table.reload(sim.now, next);
    sim.run_until(sim.now + Duration::from_secs(5));
    assert_eq!(sim.table.status_counts()["registered"], 801);
    assert_eq!(sim.table.leaving_count(), 0);
    assert_eq!(sim.table.scheduled_refreshes(), 801);

    // Refresh timers fire and are re-armed all day; the count holds.
    sim.run_until(start + Duration::from_secs(86_400));
    assert_eq!(sim.table.status_counts()["registered"], 801);
    assert_eq!(sim.table.scheduled_refreshes(), 801);
    assert_eq!(sim.model.late, 0);

    // Sending switched off parks due timers; the calendar lets them go.
    sim.table.set_active(sim.now, false);
    sim.run_until(sim.now + Duration::from_secs(3600));
    assert_eq!(sim.table.scheduled_refreshes(), 0);
    sim.table.set_active(sim.now, true);
    sim.run_until(sim.now + Duration::from_secs(5));
    assert_eq!(sim.table.scheduled_refreshes(), 801);

    sim.table.shutdown(sim.now);
    sim.run_until(sim.now + Duration::from_secs(5));
    assert_eq!(sim.table.scheduled_refreshes(), 0);
}

/// Every row keeps one `Registration` for the daemon's lifetime, boxed; mimalloc's size classes
/// step from 320 to 384 bytes, so growing past 320 costs 64 bytes a row (6 MiB at 100,000).
#[cfg(target_pointer_width = "64")]
#[test]
fn a_registration_fits_the_320_byte_allocator_class() {
    let size = std::mem::size_of::<Registration>();
    eprintln!("Registration is {size} bytes");
    assert!(size <= 320, "Registration is {size} bytes");
}

// ---- requests whose answer never comes, or comes wrong ----

impl Sim {
    /// Fires due timers and takes every request they produce off the wire unanswered, as if
    /// the request or its answer was lost and nobody reported it; returns them.
    fn lose_requests(&mut self) -> Vec<(RegKey, RegisterRequest)> {
        self.table.handle_timeout(self.now);
        let lost: Vec<(RegKey, RegisterRequest)> = self
            .table
            .drain_actions()
            .map(|Action::Send { key, request, .. }| (key, request))
            .collect();
        self.sent.extend(lost.iter().cloned());
        lost
    }

    fn snapshot(&self, l_uuid: &str) -> Snapshot {
        self.table.get(l_uuid).expect("row present").snapshot()
    }
}

const GUARD: Duration = Duration::from_secs(300);

/// A sim with one registered row whose next request (a refresh asked for now) is lost.
fn registered_then_lost() -> (Sim, RegisterRequest) {
    let mut sim = Sim::new(Mode::Normal);
    assert_eq!(RetryPolicy::default().in_flight_guard, GUARD);
    sim.table.reload(sim.now, vec![record(0)]);
    sim.run_until(sim.now + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
    assert!(sim.table.refresh(sim.now, Attribute::LUuid, "uuid000000"));
    let mut lost = sim.lose_requests();
    assert_eq!(lost.len(), 1);
    let (_, request) = lost.remove(0);
    let row = sim.table.get("uuid000000").unwrap();
    assert_eq!(row.in_flight_cseq(), Some(request.cseq));
    assert_eq!(row.timer(), Some(sim.now + GUARD), "the guard is armed");
    (sim, request)
}

#[test]
fn a_lost_answer_ends_when_the_guard_runs_out_and_the_row_registers_again() {
    let (mut sim, _) = registered_then_lost();
    let sent_at = sim.now;
    // Nothing happens before the guard.
    sim.run_until(sent_at + GUARD - Duration::from_secs(1));
    assert!(sim.snapshot("uuid000000").in_flight);
    // Then it is a failure like a timeout, retried by the policy...
    sim.run_until(sent_at + GUARD);
    let snap = sim.snapshot("uuid000000");
    assert!(!snap.in_flight);
    assert_eq!(snap.last_code, Some(408));
    assert_eq!(snap.last_reason, "no final response within 300 s");
    assert_eq!(snap.failures, 1);
    // ...while the binding granted earlier still holds.
    assert_eq!(snap.status, Status::RetryWait);
    assert!(snap.next_action.is_some());
    sim.run_until(sent_at + GUARD + Duration::from_secs(31));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
}

#[test]
fn the_guard_restarts_when_the_request_is_sent_again() {
    let (mut sim, request) = registered_then_lost();
    let key = sim.table.get("uuid000000").unwrap().key();
    let later = sim.now + Duration::from_secs(200);
    sim.run_until(later);
    // The driver sent it now (to a second server, or after a long queue).
    sim.table.request_sent(later, key, request.cseq);
    assert_eq!(
        sim.table.get("uuid000000").unwrap().timer(),
        Some(later + GUARD)
    );
    // Another request's number changes nothing.
    sim.table
        .request_sent(later + Duration::from_secs(1), key, request.cseq + 1);
    assert_eq!(
        sim.table.get("uuid000000").unwrap().timer(),
        Some(later + GUARD)
    );
    sim.run_until(later + GUARD - Duration::from_secs(1));
    assert!(sim.snapshot("uuid000000").in_flight);
    sim.run_until(later + GUARD + Duration::from_secs(31));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
}

#[test]
fn a_response_with_our_cseq_and_another_call_id_does_not_leave_the_row_in_flight() {
    let mut sim = Sim::new(Mode::Normal);
    sim.table.reload(sim.now, vec![record(0)]);
    let (key, request) = sim.lose_requests().remove(0);
    // The transaction layer refuses such a response; if one got through anyway, the core
    // must not take it, and must not wait for an answer that will never come either.
    let forgeries: [fn(&mut Response); 2] = [
        |r| r.call_id = "forged@uacreg".into(),
        |r| r.cseq_method = "OPTIONS".into(),
    ];
    for forge in forgeries {
        let (_, current) = sim.sent.last().unwrap().clone();
        let mut forged = base_response(&current, 200, "OK");
        forge(&mut forged);
        sim.table.handle_response(sim.now, key, &forged);
        let snap = sim.snapshot("uuid000000");
        assert!(!snap.in_flight);
        assert_eq!(snap.status, Status::RetryWait);
        assert_eq!(snap.last_reason, "response for another request");
        assert!(snap.next_action.is_some());
        // The retry goes out and is lost too, so that the second forgery meets a request.
        sim.run_until(snap.next_action.unwrap());
        sim.in_transit.clear();
        let row = sim.table.get("uuid000000").unwrap();
        assert!(row.in_flight_cseq().is_some());
    }
    // A response for an earlier CSeq is just stale: the request in flight keeps its guard.
    let current = sim
        .table
        .get("uuid000000")
        .unwrap()
        .in_flight_cseq()
        .unwrap();
    let guard_at = sim.table.get("uuid000000").unwrap().timer();
    sim.table
        .handle_response(sim.now, key, &base_response(&request, 200, "OK"));
    let row = sim.table.get("uuid000000").unwrap();
    assert_eq!(row.in_flight_cseq(), Some(current));
    assert_eq!(row.timer(), guard_at);
    // And all ends registered.
    sim.run_until(sim.now + GUARD + Duration::from_secs(120));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
    assert_eq!(sim.model.bad_auth, 0);
}

#[test]
fn a_reload_while_the_answer_is_lost_applies_once_the_guard_runs_out() {
    // Changed credentials (same binding: updated in place).
    let (mut sim, _) = registered_then_lost();
    let next = changed(&record(0), |f| f.auth_ha1 = ha1_of(0));
    let summary = sim.table.reload(sim.now, vec![next]);
    assert_eq!(summary.changed, 1);
    assert!(sim.snapshot("uuid000000").in_flight);
    sim.sent.clear();
    sim.run_until(sim.now + GUARD + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
    assert!(
        !sim.sent.is_empty(),
        "registered again at once with the new row"
    );

    // Removed: un-registered and dropped once the guard runs out.
    let (mut sim, _) = registered_then_lost();
    sim.table.reload(sim.now, Vec::new());
    assert!(sim.table.get("uuid000000").is_none());
    assert_eq!(sim.table.leaving_count(), 1);
    sim.run_until(sim.now + GUARD + Duration::from_secs(1));
    assert_eq!(sim.table.leaving_count(), 0);
    assert!(!sim.model.bindings.contains_key("user000000"));

    // Replaced by another binding (new contact): the old one leaves, the new one registers.
    let (mut sim, _) = registered_then_lost();
    let moved = changed(&record(0), |f| {
        f.contact_addr = "127.0.0.1:5081".into();
        f.contact_host_port = "127.0.0.1:5081".into();
    });
    sim.table.reload(sim.now, vec![moved]);
    sim.run_until(sim.now + GUARD + Duration::from_secs(1));
    assert_eq!(sim.table.leaving_count(), 0);
    assert_eq!(sim.status("uuid000000"), Status::Registered);
}

#[test]
fn operator_commands_while_the_answer_is_lost_take_effect() {
    // reg_refresh (again): redone as soon as the guard ends the lost request.
    let (mut sim, _) = registered_then_lost();
    assert!(sim.table.refresh(sim.now, Attribute::LUuid, "uuid000000"));
    let start = sim.now;
    sim.run_until(start + GUARD + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
    let registered = sim.snapshot("uuid000000").last_registered.unwrap();
    assert!(
        registered > start + GUARD,
        "registered again right after the guard"
    );

    // reg_disable, then reg_enable.
    let (mut sim, _) = registered_then_lost();
    assert!(
        sim.table
            .set_disabled(sim.now, Attribute::LUuid, "uuid000000", true)
    );
    sim.run_until(sim.now + GUARD + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Disabled);
    assert!(!sim.model.bindings.contains_key("user000000"));
    assert!(
        sim.table
            .set_disabled(sim.now, Attribute::LUuid, "uuid000000", false)
    );
    sim.run_until(sim.now + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Registered);

    // reg_unregister, then reg_register.
    let (mut sim, _) = registered_then_lost();
    assert!(
        sim.table
            .unregister_now(sim.now, Attribute::LUuid, "uuid000000")
    );
    sim.run_until(sim.now + GUARD + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Unregistered);
    assert!(
        sim.table
            .register_now(sim.now, Attribute::LUuid, "uuid000000")
    );
    sim.run_until(sim.now + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Registered);

    // reg_active 0: the guard still ends the lost request, nothing is sent until reg_active 1.
    let (mut sim, _) = registered_then_lost();
    sim.table.set_active(sim.now, false);
    sim.sent.clear();
    sim.run_until(sim.now + GUARD + Duration::from_secs(600));
    assert!(sim.sent.is_empty());
    assert!(!sim.snapshot("uuid000000").in_flight);
    assert_eq!(sim.status("uuid000000"), Status::RetryWait);
    sim.table.set_active(sim.now, true);
    sim.run_until(sim.now + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Registered);

    // Shutdown: the binding is taken back once the guard ends the lost request.
    let (mut sim, _) = registered_then_lost();
    assert_eq!(sim.table.shutdown(sim.now), 1);
    sim.run_until(sim.now + GUARD + Duration::from_secs(1));
    assert_eq!(sim.table.leaving_count(), 0);
    assert!(!sim.model.bindings.contains_key("user000000"));
}

#[test]
fn a_lost_un_register_ends_too() {
    let (mut sim, _) = registered_then_lost();
    // Let the lost refresh end, then lose the un-REGISTER of a removal as well.
    sim.run_until(sim.now + GUARD);
    sim.in_transit.clear();
    sim.table.reload(sim.now, Vec::new());
    let lost = sim.lose_requests();
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].1.expires, 0);
    assert_eq!(sim.table.leaving_count(), 1);
    sim.run_until(sim.now + GUARD);
    // Best effort: given up on, and the registration is gone.
    assert_eq!(sim.table.leaving_count(), 0);
    assert_eq!(sim.table.next_deadline(), None);
}

/// An authenticating outbound proxy (407, realm "proxy.test") in front of the registrar (401):
/// the second challenge is the next hop asking in turn, not a rejection, and every request from
/// then on answers both (RFC 3261 §22.3).
#[test]
fn a_proxy_challenge_then_a_registrar_challenge_are_both_answered() {
    let mut sim = Sim::new(Mode::Normal);
    sim.model.proxy_realm = Some("proxy.test");
    // Nonces outlive a refresh interval, so refreshes reuse both challenges.
    sim.model.nonce_life = Duration::from_secs(24 * 3600);
    let start = sim.now;
    // An empty realm accepts any challenge; a pinned realm would refuse the proxy's.
    let row = changed(&record(0), |f| f.realm = String::new());
    sim.table.reload(start, vec![row]);
    sim.run_until(start + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
    fn names(sim: &Sim, i: usize) -> Vec<&'static str> {
        sim.sent[i]
            .1
            .authorization
            .iter()
            .map(|(n, _)| *n)
            .collect()
    }
    assert_eq!(
        sim.sent.len(),
        3,
        "no credentials, proxy only, proxy and registrar"
    );
    assert!(names(&sim, 0).is_empty());
    assert_eq!(names(&sim, 1), ["Proxy-Authorization"]);
    assert_eq!(names(&sim, 2), ["Proxy-Authorization", "Authorization"]);
    assert_eq!(sim.model.bad_auth, 0);

    // Refreshes answer both kept challenges up front, with the next nonce counts.
    sim.run_until(start + Duration::from_secs(3600));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
    assert_eq!(sim.sent.len(), 4, "one REGISTER per refresh");
    assert_eq!(names(&sim, 3), ["Proxy-Authorization", "Authorization"]);
    let nc = |i: usize, name: &str| {
        sim.sent[i]
            .1
            .authorization
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| Authorization::parse(v).ok())
            .and_then(|a| a.nc)
    };
    assert_eq!(nc(3, "Proxy-Authorization"), Some(3));
    assert_eq!(nc(3, "Authorization"), Some(2));
}

/// The same realm challenging again right after our fresh answer is a rejection, for the proxy
/// as for the registrar: no loop of answers.
#[test]
fn a_proxy_rejecting_our_answer_is_an_auth_failure() {
    let mut sim = Sim::new(Mode::Normal);
    sim.model.proxy_realm = Some("proxy.test");
    let start = sim.now;
    let row = changed(&record(0), |f| {
        f.realm = String::new();
        f.auth_password = Secret::new("wrong".to_string());
    });
    sim.table.reload(start, vec![row]);
    sim.run_until(start + Duration::from_secs(5));
    assert_eq!(sim.status("uuid000000"), Status::AuthFailed);
    assert_eq!(sim.sent.len(), 2);
}

/// A registrar may shorten the expiry we ask for but never lengthen it: a 200 granting
/// `expires=4294967295` is refreshed as if it had granted what we asked.
#[test]
fn a_grant_longer_than_asked_is_capped_at_the_request() {
    let mut sim = Sim::new(Mode::Normal);
    sim.model.overgrant = Some(u32::MAX);
    sim.model.nonce_life = Duration::from_secs(24 * 3600);
    let start = sim.now;
    sim.table.reload(start, vec![record(0)]);
    sim.run_until(start + Duration::from_secs(1));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
    let snapshot = sim.table.get("uuid000000").unwrap().snapshot();
    assert_eq!(snapshot.granted_expires, Some(3600));
    let refresh = snapshot.next_action.expect("a refresh is scheduled");
    assert!(refresh < start + Duration::from_secs(3600));
    sim.run_until(start + Duration::from_secs(3 * 3600));
    assert_eq!(sim.sent.len(), 5, "first registration and three refreshes");

    // And never longer than the policy's maximum, even when the row asks for more.
    let policy = RetryPolicy {
        max_expires: 600,
        ..RetryPolicy::default()
    };
    let mut sim = Sim::with_policy(Mode::Normal, policy, 3);
    sim.model.overgrant = Some(u32::MAX);
    sim.model.grant = u32::MAX;
    let start = sim.now;
    sim.table.reload(start, vec![record(0)]);
    sim.run_until(start + Duration::from_secs(1));
    let snapshot = sim.table.get("uuid000000").unwrap().snapshot();
    assert_eq!(snapshot.granted_expires, Some(600));
}

/// Row 0 registered by one table, then taken over by a second one continuing its dialog at
/// `after` seconds; returns the second sim (with the registrar model) and what the first sent.
fn taken_over_after(after: u64) -> (Sim, Vec<RegisterRequest>, Continuation) {
    taken_over_with(after, |_| {})
}

/// [`taken_over_after`], with the dialog changed by `edit` on its way.
fn taken_over_with(
    after: u64,
    edit: impl FnOnce(&mut Continuation),
) -> (Sim, Vec<RegisterRequest>, Continuation) {
    let mut first = Sim::new(Mode::Normal);
    let start = first.now;
    first.table.reload(start, vec![record(0)]);
    first.run_until(start + Duration::from_secs(after));
    let (_, mut dialog) = first
        .table
        .abandon(first.now, "uuid000000")
        .expect("the row was there");
    edit(&mut dialog);
    assert!(first.table.get("uuid000000").is_none());
    assert_eq!(
        first.table.next_deadline(),
        None,
        "nothing left to do on the old node"
    );
    let mut second = Sim::with_policy(Mode::Normal, RetryPolicy::default(), 99);
    second.now = first.now;
    second.model = std::mem::replace(&mut first.model, Model::new(Mode::Normal));
    second
        .table
        .add_continued(second.now, record(0), Some(&dialog))
        .expect("a new row");
    let old = first.sent.into_iter().map(|(_, r)| r).collect();
    (second, old, dialog)
}

#[test]
fn a_taken_over_binding_is_refreshed_on_its_old_schedule_with_the_same_call_id() {
    let (mut sim, old, dialog) = taken_over_after(600);
    let takeover = sim.now;
    assert_eq!(sim.status("uuid000000"), Status::Registered);
    let (granted, left) = dialog.binding.expect("a binding with time left");
    assert_eq!(granted, 3600);
    assert!(left > Duration::from_secs(2_900), "{left:?}");
    // Nothing on the wire until the refresh the first node would have sent (granted minus
    // 10 % minus up to 5 % jitter after the grant, which was 600 s ago).
    sim.run_until(takeover + Duration::from_secs(2_400));
    assert!(
        sim.sent.is_empty(),
        "{} REGISTERs right after the takeover",
        sim.sent.len()
    );
    sim.run_until(takeover + Duration::from_secs(86_400));
    let first = &sim.sent.first().expect("refreshed").1;
    assert!(sim.sent_at[0] >= takeover + Duration::from_secs(2_400));
    assert!(sim.sent_at[0] <= takeover + Duration::from_secs(2_640));
    assert_eq!(first.call_id, old[0].call_id, "the same dialog");
    assert!(first.cseq >= old.last().unwrap().cseq + CONTINUED_CSEQ_STEP);
    assert!(sim.sent.iter().all(|(_, r)| r.call_id == old[0].call_id));
    assert_eq!(sim.model.late, 0, "the binding never ran out");
    assert_eq!(sim.status("uuid000000"), Status::Registered);
}

#[test]
fn an_overdue_takeover_refreshes_within_seconds() {
    // The old node wrote its state down long ago: 200 s of the binding left by the record.
    let (mut sim, old, _) = taken_over_with(600, |dialog| {
        dialog.binding = Some((3600, Duration::from_secs(200)));
    });
    let takeover = sim.now;
    sim.run_until(takeover + Duration::from_secs(6));
    assert!(!sim.sent.is_empty(), "refreshed soon");
    assert!(sim.sent_at[0] <= takeover + Duration::from_secs(5));
    assert_eq!(sim.sent[0].1.call_id, old[0].call_id);
    assert_eq!(sim.model.late, 0);
}

#[test]
fn a_dialog_that_cannot_be_continued_starts_afresh() {
    let mut sim = Sim::new(Mode::Normal);
    let start = sim.now;
    let foreign = Continuation {
        call_id: "not-ours@example.com".into(),
        from_tag: "abc".into(),
        next_cseq: 7,
        binding: Some((3600, Duration::from_secs(3000))),
        contact: String::new(),
    };
    sim.table
        .add_continued(start, record(0), Some(&foreign))
        .unwrap();
    assert_eq!(sim.status("uuid000000"), Status::Pending);
    sim.run_until(start + Duration::from_secs(2));
    assert_eq!(sim.status("uuid000000"), Status::Registered);
    assert!(sim.sent[0].1.call_id.ends_with("@uacreg"));
    assert_eq!(sim.sent[0].1.cseq, 1);

    // A CSeq at the top of its range also starts a new dialog rather than wrap.
    let mut at_limit = sim.table.get("uuid000000").unwrap().continuation(sim.now);
    at_limit.next_cseq = (1 << 31) - 5;
    let mut other = Sim::new(Mode::Normal);
    other
        .table
        .add_continued(other.now, record(0), Some(&at_limit))
        .unwrap();
    assert_eq!(other.status("uuid000000"), Status::Pending);
}

#[test]
fn a_takeover_from_a_node_with_another_contact_retires_that_contact_once() {
    let (mut sim, _, _) = taken_over_with(600, |dialog| {
        dialog.contact = "sip:uuid000000@192.0.2.99:5062".into();
        dialog.binding = Some((3600, Duration::from_secs(100)));
    });
    sim.run_until(sim.now + Duration::from_secs(3600));
    let first = &sim.sent[0].1;
    assert_eq!(
        first.retire_contact.as_deref(),
        Some("sip:uuid000000@192.0.2.99:5062")
    );
    let mut encoded = Vec::new();
    first.encode(
        &crate::sip::register::Hop::plain("UDP", "127.0.0.1:5062", "z9hG4bKx"),
        &mut encoded,
    );
    let text = String::from_utf8(encoded).unwrap();
    assert!(
        text.contains("Contact: <sip:uuid000000@192.0.2.99:5062>;expires=0\r\n"),
        "{text}"
    );
    // Once a 2xx came back, later REGISTERs carry only our own contact.
    let ok_at = sim
        .sent
        .iter()
        .position(|(_, r)| !r.authorization.is_empty())
        .unwrap();
    assert!(
        sim.sent[ok_at + 1..]
            .iter()
            .all(|(_, r)| r.retire_contact.is_none())
    );
    assert!(sim.sent.len() > ok_at + 1, "refreshed afterwards");
}

#[test]
fn a_crowd_of_due_timers_fires_a_bounded_number_per_call() {
    let mut sim = Sim::new(Mode::Normal);
    let start = sim.now;
    use super::table::TIMERS_PER_CALL;
    let rows = 2 * TIMERS_PER_CALL + 100;
    sim.table.reload(start, (0..rows).map(record).collect());
    let mut fired = Vec::new();
    for _ in 0..3 {
        sim.table.handle_timeout(start);
        fired.push(sim.table.drain_actions().count());
    }
    // Each call stops at the budget and leaves the rest due; the third finishes the crowd.
    assert_eq!(fired, vec![TIMERS_PER_CALL, TIMERS_PER_CALL, 100]);
    assert!(sim.table.next_deadline().is_some_and(|at| at > start));
}
