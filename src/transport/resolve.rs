//! RFC 3263 §4 server location: from the host, port and transport of a SIP URI to the list of
//! (transport, address) pairs to try, in order, with the time until which the answer may be
//! reused.
//!
//! The procedure:
//! - an IP literal is the one target (the URI's transport or UDP, TLS for `sips:`; the URI's
//!   port or 5060/5061);
//! - a name with an explicit port: its A and AAAA records on that port;
//! - a name with an explicit transport: SRV `_sip._udp`, `_sip._tcp` or `_sips._tcp`, else
//!   A/AAAA on the default port;
//! - otherwise NAPTR (`SIP+D2U`, `SIP+D2T`, `SIPS+D2T`, flag "s") leading to SRV; without a
//!   usable NAPTR the SRV names themselves; without SRV, A/AAAA on port 5060 over UDP (5061 over
//!   TLS for `sips:`).
//!
//! SRV records are ordered per RFC 2782 (priority, then weighted random within a priority) and
//! each target becomes its IPv4 then its IPv6 addresses. A name that does not exist or has no
//! records of the asked type moves on to the next step; any other DNS failure (a timeout, a
//! SERVFAIL) ends the lookup with an error naming the host, so a half-answered lookup is never
//! mistaken for a complete one.
//!
//! The ordering rules are plain functions ([`order_srv`], [`naptr_services`], [`srv_names`],
//! [`ttl_window`]) so they are tested without a network.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{Name, TokioResolver};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use thiserror::Error;

use crate::registration::record::Transport;

/// Why a host could not be resolved, built from hickory's error kinds so a caller can tell a
/// name that does not exist from a server that did not answer. Every variant names the host;
/// the texts are what the driver logs and `uac.reg_info` shows.
#[derive(Debug, Error)]
pub enum ResolveError {
    /// /etc/resolv.conf could not be read or understood.
    #[error("DNS: cannot read the system resolver configuration: {0}")]
    SystemConfig(#[source] hickory_resolver::ResolveError),
    #[error("DNS: empty host")]
    EmptyHost,
    /// The host is not a name DNS can carry (a label over 63 bytes, a name over 255).
    #[error("DNS: {host:?} is not a valid host name: {reason}")]
    BadName { host: String, reason: String },
    /// The system had no usable resolver configuration at start, so no name can be looked up.
    #[error("DNS: no resolver is configured")]
    NoResolver,
    /// NXDOMAIN: the host's name does not exist.
    #[error("DNS: no SIP server found for {host}")]
    NoSuchName { host: String },
    /// The name exists, but has none of the NAPTR, SRV, A or AAAA records a server is found by.
    #[error("DNS: no SIP server found for {host}")]
    NoRecords { host: String },
    /// A query got no answer within the resolver's timeout and attempts.
    #[error("DNS: {rtype} lookup of {name} timed out (resolving {host})")]
    Timeout {
        host: String,
        name: String,
        rtype: RecordType,
    },
    /// A name server answered with an error code (SERVFAIL, REFUSED …).
    #[error("DNS: {rtype} lookup of {name} failed (resolving {host}): {source}")]
    ServerFailure {
        host: String,
        name: String,
        rtype: RecordType,
        code: ResponseCode,
        #[source]
        source: hickory_resolver::ResolveError,
    },
    /// Any other failure of a query (no name server reachable, a socket error …).
    #[error("DNS: {rtype} lookup of {name} failed (resolving {host}): {source}")]
    Lookup {
        host: String,
        name: String,
        rtype: RecordType,
        #[source]
        source: hickory_resolver::ResolveError,
    },
}

impl ResolveError {
    /// The host whose resolution failed (None: no host was given or the system configuration
    /// failed).
    pub fn host(&self) -> Option<&str> {
        match self {
            ResolveError::SystemConfig(_) | ResolveError::NoResolver | ResolveError::EmptyHost => {
                None
            }
            ResolveError::BadName { host, .. }
            | ResolveError::NoSuchName { host }
            | ResolveError::NoRecords { host }
            | ResolveError::Timeout { host, .. }
            | ResolveError::ServerFailure { host, .. }
            | ResolveError::Lookup { host, .. } => Some(host),
        }
    }
}

/// One place to send a request to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// What a lookup gave: targets in the order to try them, and until when to reuse the answer.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub targets: Vec<Target>,
    pub valid_until: Instant,
}

/// What to look up: a host from a SIP URI.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// A name or an IP literal (IPv6 with or without brackets).
    pub host: &'a str,
    /// The URI's explicit port, if any.
    pub port: Option<u16>,
    /// The URI's explicit `;transport=`; `None` lets NAPTR/SRV decide.
    pub transport: Option<Transport>,
    /// A `sips:` URI: only TLS targets are allowed.
    pub secure: bool,
}

/// Shortest and longest time a lookup's answer is reused, whatever the TTLs say.
pub const MIN_REUSE: Duration = Duration::from_secs(5);
pub const MAX_REUSE: Duration = Duration::from_secs(3600);

/// Per-query timeout and attempts of the underlying resolver.
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
const DNS_ATTEMPTS: usize = 2;

/// An RFC 3263 resolver on top of hickory's (which caches answers for their TTL).
pub struct SipResolver {
    resolver: TokioResolver,
}

impl SipResolver {
    /// Uses the system's /etc/resolv.conf.
    pub fn from_system() -> Result<SipResolver, ResolveError> {
        let mut builder = TokioResolver::builder_tokio().map_err(ResolveError::SystemConfig)?;
        tune(builder.options_mut(), DNS_TIMEOUT);
        Ok(SipResolver {
            resolver: builder.build(),
        })
    }

    /// Uses only these name servers (UDP, falling back to TCP), e.g. a test server on loopback.
    /// The hosts file is not consulted.
    pub fn with_nameservers(servers: &[SocketAddr]) -> SipResolver {
        SipResolver::with_nameservers_timeout(servers, DNS_TIMEOUT)
    }

    /// [`SipResolver::with_nameservers`] with another per-query timeout (tests of timeouts).
    pub fn with_nameservers_timeout(servers: &[SocketAddr], timeout: Duration) -> SipResolver {
        let mut config = ResolverConfig::new();
        for &server in servers {
            config.add_name_server(NameServerConfig::new(server, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(server, Protocol::Tcp));
        }
        let mut options = ResolverOpts::default();
        tune(&mut options, timeout);
        options.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(options)
                .build();
        SipResolver { resolver }
    }

    /// Full RFC 3263 §4 client procedure. `Err` says why, naming the host.
    pub async fn resolve(&self, query: &Query<'_>) -> Result<Resolved, ResolveError> {
        let now = Instant::now();
        let host = query.host.trim_start_matches('[').trim_end_matches(']');
        if let Some(target) = literal_target(query) {
            return Ok(Resolved {
                targets: vec![target],
                valid_until: now + MAX_REUSE,
            });
        }
        if host.is_empty() {
            return Err(ResolveError::EmptyHost);
        }
        if let Err(err) = Name::from_utf8(host) {
            return Err(ResolveError::BadName {
                host: host.to_string(),
                reason: err.to_string(),
            });
        }

        let mut walk = Walk {
            dns: &self.resolver,
            host,
            min_ttl: None,
            targets: Vec::new(),
            seen: HashSet::new(),
            host_missing: false,
            rng: StdRng::from_os_rng(),
        };

        if let Some(port) = query.port {
            let transport = pick_transport(query.transport, query.secure);
            walk.addresses(host, port, transport).await?;
        } else {
            if query.transport.is_none() {
                walk.naptr(query.secure).await?;
            }
            if walk.targets.is_empty() {
                for (name, transport) in srv_names(host, query.transport, query.secure) {
                    walk.srv(&name, transport).await?;
                }
            }
            if walk.targets.is_empty() {
                let transport = pick_transport(query.transport, query.secure);
                walk.addresses(host, transport.default_port(), transport)
                    .await?;
            }
        }

        if walk.targets.is_empty() {
            let host = host.to_string();
            // NXDOMAIN for the host, and no record anywhere led on (an SRV to a missing target
            // means the name exists).
            return Err(if walk.host_missing && walk.min_ttl.is_none() {
                ResolveError::NoSuchName { host }
            } else {
                ResolveError::NoRecords { host }
            });
        }
        Ok(Resolved {
            targets: walk.targets,
            valid_until: now + ttl_window(walk.min_ttl),
        })
    }
}

fn tune(options: &mut ResolverOpts, timeout: Duration) {
    options.timeout = timeout;
    options.attempts = DNS_ATTEMPTS;
}

/// The transport for A/AAAA targets: `sips:` means TLS, else the explicit one, else UDP.
fn pick_transport(explicit: Option<Transport>, secure: bool) -> Transport {
    if secure {
        Transport::Tls
    } else {
        explicit.unwrap_or(Transport::Udp)
    }
}

/// 5061 for TLS, 5060 otherwise (RFC 3261 §19.1.2).
/// The one target of an IP-literal host (RFC 3263 §4.1/4.2: no DNS, the named transport or UDP
/// — TLS for `sips:` — on the named port or the transport's default); `None` for a name.
pub fn literal_target(query: &Query<'_>) -> Option<Target> {
    let host = query.host.trim_start_matches('[').trim_end_matches(']');
    let ip = host.parse::<IpAddr>().ok()?;
    let transport = pick_transport(query.transport, query.secure);
    let port = query.port.unwrap_or(transport.default_port());
    Some(Target {
        transport,
        addr: SocketAddr::new(ip, port),
    })
}

/// How long an answer is reused: its smallest TTL, within [`MIN_REUSE`, `MAX_REUSE`]; the
/// longest when no record was involved (IP literals).
pub fn ttl_window(min_ttl: Option<u32>) -> Duration {
    match min_ttl {
        Some(ttl) => Duration::from_secs(u64::from(ttl)).clamp(MIN_REUSE, MAX_REUSE),
        None => MAX_REUSE,
    }
}

/// The SRV names to try, in order, and the transport each stands for: the one for an explicit
/// transport (`_sips._tcp` whenever `secure`), or all three without one (only `_sips._tcp`
/// when `secure`).
pub fn srv_names(
    host: &str,
    transport: Option<Transport>,
    secure: bool,
) -> Vec<(String, Transport)> {
    let host = host.trim_end_matches('.');
    let name = |prefix: &str| format!("{prefix}.{host}.");
    if secure {
        return vec![(name("_sips._tcp"), Transport::Tls)];
    }
    match transport {
        Some(Transport::Udp) => vec![(name("_sip._udp"), Transport::Udp)],
        Some(Transport::Tcp) => vec![(name("_sip._tcp"), Transport::Tcp)],
        Some(Transport::Tls) => vec![(name("_sips._tcp"), Transport::Tls)],
        None => vec![
            (name("_sip._udp"), Transport::Udp),
            (name("_sip._tcp"), Transport::Tcp),
            (name("_sips._tcp"), Transport::Tls),
        ],
    }
}

/// One NAPTR record, as far as RFC 3263 uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Naptr {
    pub order: u16,
    pub preference: u16,
    pub flags: String,
    pub services: String,
    /// The SRV name to follow, absolute ("." or empty for none).
    pub replacement: String,
}

/// The usable NAPTR records in the order to follow them: services `SIP+D2U`, `SIP+D2T` and
/// `SIPS+D2T` (only `SIPS+D2T` when `secure`), flag "s", a replacement present; sorted by order,
/// then preference (ties keep the order given). Gives each replacement with its transport.
pub fn naptr_services(records: &[Naptr], secure: bool) -> Vec<(String, Transport)> {
    let mut usable: Vec<(&Naptr, Transport)> = records
        .iter()
        .filter(|r| r.flags.eq_ignore_ascii_case("s"))
        .filter(|r| !r.replacement.is_empty() && r.replacement != ".")
        .filter_map(|r| {
            let transport = match r.services.to_ascii_uppercase().as_str() {
                "SIP+D2U" => Transport::Udp,
                "SIP+D2T" => Transport::Tcp,
                "SIPS+D2T" => Transport::Tls,
                _ => return None,
            };
            (!secure || transport == Transport::Tls).then_some((r, transport))
        })
        .collect();
    usable.sort_by_key(|(r, _)| (r.order, r.preference));
    usable
        .into_iter()
        .map(|(r, transport)| (r.replacement.clone(), transport))
        .collect()
}

/// One SRV record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host, absolute ("." means the service is not offered).
    pub target: String,
}

/// RFC 2782 order: records whose target is "." dropped; ascending priority; within a priority,
/// repeatedly pick one at random with probability proportional to its weight (zero-weight
/// records keep a small chance, being put first in the running sum as the RFC says).
pub fn order_srv(records: Vec<Srv>, rng: &mut StdRng) -> Vec<Srv> {
    let mut records: Vec<Srv> = records
        .into_iter()
        .filter(|r| !r.target.is_empty() && r.target != ".")
        .collect();
    // Stable: zero weights first within each priority.
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut ordered = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let priority = records[0].priority;
        let end = records
            .iter()
            .position(|r| r.priority != priority)
            .unwrap_or(records.len());
        let mut group: Vec<Srv> = records.drain(..end).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = rng.random_range(0..=total);
            let mut running = 0u32;
            let index = group
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= pick
                })
                .unwrap_or(group.len() - 1);
            ordered.push(group.remove(index));
        }
    }
    ordered
}

/// The state of one [`SipResolver::resolve`] call.
struct Walk<'a> {
    dns: &'a TokioResolver,
    /// The host being resolved, for error messages.
    host: &'a str,
    min_ttl: Option<u32>,
    targets: Vec<Target>,
    seen: HashSet<Target>,
    /// A lookup of the host's own name answered NXDOMAIN.
    host_missing: bool,
    rng: StdRng,
}

impl Walk<'_> {
    fn used(&mut self, record: &Record) {
        let ttl = record.ttl();
        self.min_ttl = Some(self.min_ttl.map_or(ttl, |t| t.min(ttl)));
    }

    fn push(&mut self, target: Target) {
        if self.seen.insert(target) {
            self.targets.push(target);
        }
    }

    /// The records of `rtype` at `name`; empty when the name does not exist or has none.
    /// A name that does not exist is noted when it is the host itself.
    async fn lookup(&mut self, name: &str, rtype: RecordType) -> Result<Vec<Record>, ResolveError> {
        let (records, missing) = lookup(self.dns, self.host, name, rtype).await?;
        if missing && name.trim_end_matches('.') == self.host.trim_end_matches('.') {
            self.host_missing = true;
        }
        Ok(records)
    }

    /// NAPTR at the host, each usable one followed to its SRV.
    async fn naptr(&mut self, secure: bool) -> Result<(), ResolveError> {
        let name = format!("{}.", self.host.trim_end_matches('.'));
        let records = self.lookup(&name, RecordType::NAPTR).await?;
        let mut naptrs = Vec::new();
        let mut ttls = Vec::new();
        for record in &records {
            if let RData::NAPTR(n) = record.data() {
                naptrs.push(Naptr {
                    order: n.order(),
                    preference: n.preference(),
                    flags: String::from_utf8_lossy(n.flags()).into_owned(),
                    services: String::from_utf8_lossy(n.services()).into_owned(),
                    replacement: n.replacement().to_ascii(),
                });
                ttls.push(record);
            }
        }
        let services = naptr_services(&naptrs, secure);
        if services.is_empty() {
            return Ok(());
        }
        for record in ttls {
            self.used(record);
        }
        for (name, transport) in services {
            self.srv(&name, transport).await?;
        }
        Ok(())
    }

    /// The SRV records at `name`, ordered, each target resolved to its addresses.
    async fn srv(&mut self, name: &str, transport: Transport) -> Result<(), ResolveError> {
        let records = self.lookup(name, RecordType::SRV).await?;
        let mut srvs = Vec::new();
        for record in &records {
            if let RData::SRV(s) = record.data() {
                srvs.push(Srv {
                    priority: s.priority(),
                    weight: s.weight(),
                    port: s.port(),
                    target: s.target().to_ascii(),
                });
                self.used(record);
            }
        }
        let ordered = order_srv(srvs, &mut self.rng);
        for srv in ordered {
            self.addresses(&srv.target, srv.port, transport).await?;
        }
        Ok(())
    }

    /// The A then AAAA addresses of `name` as targets on `port` over `transport`.
    async fn addresses(
        &mut self,
        name: &str,
        port: u16,
        transport: Transport,
    ) -> Result<(), ResolveError> {
        let (v4, v6) = tokio::join!(
            lookup(self.dns, self.host, name, RecordType::A),
            lookup(self.dns, self.host, name, RecordType::AAAA)
        );
        let missing =
            |found: &Result<(Vec<Record>, bool), ResolveError>| matches!(found, Ok((_, true)));
        if (missing(&v4) || missing(&v6))
            && name.trim_end_matches('.') == self.host.trim_end_matches('.')
        {
            self.host_missing = true;
        }
        let (v4, v6) = (v4.map(|(r, _)| r), v6.map(|(r, _)| r));
        // One family failing while the other answers still gives usable targets.
        let (v4, v6) = match (v4, v6) {
            (Err(e), Err(_)) => return Err(e),
            (Err(e), Ok(v6)) if v6.is_empty() => return Err(e),
            (Ok(v4), Err(e)) if v4.is_empty() => return Err(e),
            (v4, v6) => (v4.unwrap_or_default(), v6.unwrap_or_default()),
        };
        for record in v4.iter().chain(&v6) {
            let ip = match record.data() {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => continue,
            };
            self.used(record);
            self.push(Target {
                transport,
                addr: SocketAddr::new(ip, port),
            });
        }
        Ok(())
    }
}

/// The records of `rtype` at `name`, and whether the name does not exist (NXDOMAIN). A name
/// without records of the type is an empty answer: the procedure goes on to its next step.
async fn lookup(
    dns: &TokioResolver,
    host: &str,
    name: &str,
    rtype: RecordType,
) -> Result<(Vec<Record>, bool), ResolveError> {
    let err = match dns.lookup(name, rtype).await {
        Ok(lookup) => {
            let records = lookup
                .records()
                .iter()
                .filter(|r| r.record_type() == rtype)
                .cloned()
                .collect();
            return Ok((records, false));
        }
        Err(err) => err,
    };
    let (host, name) = (host.to_string(), name.to_string());
    match err.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => match *response_code {
            ResponseCode::NXDomain => Ok((Vec::new(), true)),
            ResponseCode::NoError => Ok((Vec::new(), false)),
            code => Err(ResolveError::ServerFailure {
                host,
                name,
                rtype,
                code,
                source: err,
            }),
        },
        Some(ProtoErrorKind::Timeout) => Err(ResolveError::Timeout { host, name, rtype }),
        _ => Err(ResolveError::Lookup {
            host,
            name,
            rtype,
            source: err,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::dns::{Record as Rr, TestDns};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

    fn a(name: &str, ttl: u32) -> Rr {
        Rr::A {
            name: name.into(),
            addr: LO,
            ttl,
        }
    }

    fn aaaa(name: &str, ttl: u32) -> Rr {
        Rr::Aaaa {
            name: name.into(),
            addr: Ipv6Addr::LOCALHOST,
            ttl,
        }
    }

    fn srv(name: &str, priority: u16, weight: u16, port: u16, target: &str) -> Rr {
        Rr::Srv {
            name: name.into(),
            priority,
            weight,
            port,
            target: target.into(),
            ttl: 300,
        }
    }

    fn naptr(name: &str, order: u16, flags: &str, services: &str, replacement: &str) -> Rr {
        Rr::Naptr {
            name: name.into(),
            order,
            preference: 10,
            flags: flags.into(),
            services: services.into(),
            replacement: replacement.into(),
            ttl: 300,
        }
    }

    fn target(transport: Transport, port: u16) -> Target {
        Target {
            transport,
            addr: SocketAddr::from((LO, port)),
        }
    }

    fn target6(transport: Transport, port: u16) -> Target {
        Target {
            transport,
            addr: SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        }
    }

    fn q(host: &str) -> Query<'_> {
        Query {
            host,
            port: None,
            transport: None,
            secure: false,
        }
    }

    async fn setup(records: Vec<Rr>) -> (TestDns, SipResolver) {
        let dns = TestDns::start(records).await.unwrap();
        let resolver = SipResolver::with_nameservers(&[dns.local_addr()]);
        (dns, resolver)
    }

    /// A zone with every step of the chain present for example.test.
    fn full_zone() -> Vec<Rr> {
        vec![
            naptr("example.test", 10, "s", "SIP+D2U", "_sip._udp.example.test"),
            naptr(
                "example.test",
                20,
                "S",
                "SIP+D2T",
                "_sip._tcp.example.test.",
            ),
            // Unusable: ENUM service, and a terminal "u" rule.
            naptr("example.test", 5, "u", "E2U+sip", "."),
            naptr("example.test", 5, "s", "SIP+D2X", "_sip._x.example.test"),
            srv("_sip._udp.example.test", 20, 0, 5071, "b.example.test"),
            srv("_sip._udp.example.test", 10, 0, 5070, "a.example.test"),
            srv("_sip._tcp.example.test", 10, 0, 5072, "a.example.test"),
            srv("_sips._tcp.example.test", 10, 0, 5073, "a.example.test"),
            a("a.example.test", 300),
            a("b.example.test", 300),
            a("example.test", 300),
        ]
    }

    #[tokio::test]
    async fn naptr_to_srv_to_a_in_order() {
        let (_dns, resolver) = setup(full_zone()).await;
        let resolved = resolver.resolve(&q("example.test")).await.unwrap();
        assert_eq!(
            resolved.targets,
            vec![
                target(Transport::Udp, 5070),
                target(Transport::Udp, 5071),
                target(Transport::Tcp, 5072),
            ]
        );
    }

    #[tokio::test]
    async fn srv_without_naptr_uses_all_that_exist() {
        let mut zone = full_zone();
        zone.retain(|r| !matches!(r, Rr::Naptr { .. }));
        let (_dns, resolver) = setup(zone).await;
        let resolved = resolver.resolve(&q("Example.Test.")).await.unwrap();
        assert_eq!(
            resolved.targets,
            vec![
                target(Transport::Udp, 5070),
                target(Transport::Udp, 5071),
                target(Transport::Tcp, 5072),
                target(Transport::Tls, 5073),
            ]
        );
    }

    #[tokio::test]
    async fn naptr_without_usable_records_falls_back_to_srv() {
        let zone = vec![
            naptr("example.test", 10, "u", "E2U+sip", "."),
            srv("_sip._tcp.example.test", 10, 0, 5072, "a.example.test"),
            a("a.example.test", 300),
        ];
        let (_dns, resolver) = setup(zone).await;
        let resolved = resolver.resolve(&q("example.test")).await.unwrap();
        assert_eq!(resolved.targets, vec![target(Transport::Tcp, 5072)]);
    }

    #[tokio::test]
    async fn a_only_falls_back_to_5060_udp_or_5061_tls() {
        let (_dns, resolver) = setup(vec![a("plain.test", 300)]).await;
        let resolved = resolver.resolve(&q("plain.test")).await.unwrap();
        assert_eq!(resolved.targets, vec![target(Transport::Udp, 5060)]);

        let secure = Query {
            secure: true,
            ..q("plain.test")
        };
        let resolved = resolver.resolve(&secure).await.unwrap();
        assert_eq!(resolved.targets, vec![target(Transport::Tls, 5061)]);

        let tcp = Query {
            transport: Some(Transport::Tcp),
            ..q("plain.test")
        };
        let resolved = resolver.resolve(&tcp).await.unwrap();
        assert_eq!(resolved.targets, vec![target(Transport::Tcp, 5060)]);
    }

    #[tokio::test]
    async fn explicit_port_skips_naptr_and_srv() {
        let (dns, resolver) = setup(full_zone()).await;
        let query = Query {
            port: Some(5999),
            ..q("example.test")
        };
        let resolved = resolver.resolve(&query).await.unwrap();
        assert_eq!(resolved.targets, vec![target(Transport::Udp, 5999)]);
        // Only A and AAAA were asked.
        assert_eq!(dns.queries(), 2);

        let query = Query {
            port: Some(5999),
            transport: Some(Transport::Tcp),
            ..q("example.test")
        };
        let resolved = resolver.resolve(&query).await.unwrap();
        assert_eq!(resolved.targets, vec![target(Transport::Tcp, 5999)]);
    }

    #[tokio::test]
    async fn explicit_tcp_uses_only_sip_tcp_srv() {
        let (_dns, resolver) = setup(full_zone()).await;
        let query = Query {
            transport: Some(Transport::Tcp),
            ..q("example.test")
        };
        let resolved = resolver.resolve(&query).await.unwrap();
        assert_eq!(resolved.targets, vec![target(Transport::Tcp, 5072)]);
    }

    #[tokio::test]
    async fn secure_uses_only_sips_tcp() {
        // NAPTR offers only non-TLS services, so it is unusable for sips: and _sips._tcp is
        // asked directly.
        let (_dns, resolver) = setup(full_zone()).await;
        let query = Query {
            secure: true,
            ..q("example.test")
        };
        let resolved = resolver.resolve(&query).await.unwrap();
        assert_eq!(resolved.targets, vec![target(Transport::Tls, 5073)]);

        // With a SIPS+D2T NAPTR, only that one is followed.
        let mut zone = full_zone();
        zone.push(naptr(
            "example.test",
            30,
            "s",
            "SIPS+D2T",
            "_sips._tcp.tls.example.test",
        ));
        zone.push(srv(
            "_sips._tcp.tls.example.test",
            1,
            0,
            5081,
            "a.example.test",
        ));
        let (_dns, resolver) = setup(zone).await;
        let resolved = resolver.resolve(&query).await.unwrap();
        assert_eq!(resolved.targets, vec![target(Transport::Tls, 5081)]);
    }

    #[tokio::test]
    async fn ipv6_targets_come_after_ipv4_of_the_same_srv_target() {
        let zone = vec![
            srv("_sip._udp.six.test", 10, 0, 5070, "only6.six.test"),
            srv("_sip._udp.six.test", 20, 0, 5071, "both.six.test"),
            aaaa("only6.six.test", 300),
            aaaa("both.six.test", 300),
            a("both.six.test", 300),
        ];
        let (_dns, resolver) = setup(zone).await;
        let resolved = resolver.resolve(&q("six.test")).await.unwrap();
        assert_eq!(
            resolved.targets,
            vec![
                target6(Transport::Udp, 5070),
                target(Transport::Udp, 5071),
                target6(Transport::Udp, 5071),
            ]
        );
    }

    #[tokio::test]
    async fn ip_literals_need_no_dns() {
        let (dns, resolver) = setup(full_zone()).await;
        let resolved = resolver.resolve(&q("127.0.0.1")).await.unwrap();
        assert_eq!(resolved.targets, vec![target(Transport::Udp, 5060)]);

        let query = Query {
            secure: true,
            ..q("::1")
        };
        let resolved = resolver.resolve(&query).await.unwrap();
        assert_eq!(resolved.targets, vec![target6(Transport::Tls, 5061)]);

        let query = Query {
            port: Some(5080),
            transport: Some(Transport::Tcp),
            ..q("[::1]")
        };
        let resolved = resolver.resolve(&query).await.unwrap();
        assert_eq!(resolved.targets, vec![target6(Transport::Tcp, 5080)]);
        assert_eq!(dns.queries(), 0);
    }

    #[tokio::test]
    async fn missing_name_is_an_error_naming_it() {
        let (dns, resolver) = setup(full_zone()).await;
        let err = resolver.resolve(&q("missing.test")).await.unwrap_err();
        assert_eq!(err.to_string(), "DNS: no SIP server found for missing.test");
        assert!(matches!(err, ResolveError::NoSuchName { .. }), "{err:?}");
        // NAPTR, three SRV names, A and AAAA.
        assert_eq!(dns.queries(), 6);

        // An SRV whose targets have no address gives nothing either.
        dns.set_records(vec![srv(
            "_sip._udp.dangling.test",
            1,
            0,
            5060,
            "nowhere.test",
        )]);
        let err = resolver.resolve(&q("dangling.test")).await.unwrap_err();
        assert_eq!(err.host(), Some("dangling.test"));
        assert!(err.to_string().contains("dangling.test"), "{err}");
        assert!(matches!(err, ResolveError::NoRecords { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn timeout_is_an_error_naming_the_host() {
        // A UDP socket that never answers (and no TCP listener behind it).
        let silent = tokio::net::UdpSocket::bind((LO, 0)).await.unwrap();
        let resolver = SipResolver::with_nameservers_timeout(
            &[silent.local_addr().unwrap()],
            Duration::from_millis(200),
        );
        let err = resolver.resolve(&q("slow.test")).await.unwrap_err();
        assert!(matches!(err, ResolveError::Timeout { .. }), "{err:?}");
        assert_eq!(err.host(), Some("slow.test"));
        assert!(err.to_string().contains("slow.test"), "{err}");
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[tokio::test]
    async fn a_name_dns_cannot_carry_is_refused_before_asking() {
        let (dns, resolver) = setup(full_zone()).await;
        let long_label = format!("{}.test", "x".repeat(64));
        let err = resolver.resolve(&q(&long_label)).await.unwrap_err();
        assert!(matches!(err, ResolveError::BadName { .. }), "{err:?}");
        assert_eq!(dns.queries(), 0);
        let err = resolver.resolve(&q("")).await.unwrap_err();
        assert!(matches!(err, ResolveError::EmptyHost), "{err:?}");
    }

    #[tokio::test]
    async fn valid_until_is_the_smallest_ttl_clamped() {
        let zone = vec![
            srv("_sip._udp.ttl.test", 10, 0, 5070, "a.ttl.test"),
            Rr::A {
                name: "a.ttl.test".into(),
                addr: LO,
                ttl: 60,
            },
            a("short.test", 1),
            a("long.test", 100_000),
        ];
        let (_dns, resolver) = setup(zone).await;
        let close = |resolved: &Resolved, secs: u64| {
            let left = resolved
                .valid_until
                .saturating_duration_since(Instant::now());
            assert!(
                left <= Duration::from_secs(secs)
                    && left + Duration::from_secs(3) >= Duration::from_secs(secs),
                "{left:?} vs {secs}s"
            );
        };
        // SRV ttl 300, A ttl 60: 60 wins.
        close(&resolver.resolve(&q("ttl.test")).await.unwrap(), 60);
        close(&resolver.resolve(&q("short.test")).await.unwrap(), 5);
        close(&resolver.resolve(&q("long.test")).await.unwrap(), 3600);
        close(&resolver.resolve(&q("10.0.0.1")).await.unwrap(), 3600);
    }

    #[test]
    fn ttl_window_clamps() {
        assert_eq!(ttl_window(Some(0)), MIN_REUSE);
        assert_eq!(ttl_window(Some(30)), Duration::from_secs(30));
        assert_eq!(ttl_window(Some(u32::MAX)), MAX_REUSE);
        assert_eq!(ttl_window(None), MAX_REUSE);
    }

    fn s(priority: u16, weight: u16, port: u16) -> Srv {
        Srv {
            priority,
            weight,
            port,
            target: "t.test.".into(),
        }
    }

    #[test]
    fn order_srv_sorts_by_priority_and_drops_dot_targets() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut dot = s(0, 10, 9);
        dot.target = ".".into();
        let ordered = order_srv(vec![s(30, 5, 3), dot, s(10, 5, 1), s(20, 5, 2)], &mut rng);
        let ports: Vec<u16> = ordered.iter().map(|r| r.port).collect();
        assert_eq!(ports, vec![1, 2, 3]);
    }

    #[test]
    fn order_srv_is_weighted_and_deterministic_with_a_seed() {
        let records = vec![s(10, 0, 1), s(10, 10, 2), s(10, 90, 3), s(5, 1, 4)];
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            order_srv(records.clone(), &mut rng)
                .iter()
                .map(|r| r.port)
                .collect::<Vec<u16>>()
        };
        assert_eq!(run(42), run(42));

        let mut first = [0u32; 5];
        for seed in 0..2000 {
            let order = run(seed);
            assert_eq!(order.len(), 4);
            assert_eq!(order[0], 4, "lower priority value always first");
            let mut rest = order[1..].to_vec();
            rest.sort();
            assert_eq!(rest, vec![1, 2, 3]);
            first[usize::from(order[1])] += 1;
        }
        // Within priority 10: weight 90 leads about 90% of the time, weight 10 about 10%, and
        // weight 0 only when the random pick is exactly 0 (about 1 in 101).
        assert!((1700..=1900).contains(&first[3]), "{first:?}");
        assert!((120..=300).contains(&first[2]), "{first:?}");
        assert!(first[1] < 60, "{first:?}");
    }

    #[test]
    fn order_srv_all_zero_weights_still_orders_everything() {
        let mut rng = StdRng::seed_from_u64(7);
        let ordered = order_srv(vec![s(1, 0, 1), s(1, 0, 2), s(1, 0, 3)], &mut rng);
        let mut ports: Vec<u16> = ordered.iter().map(|r| r.port).collect();
        ports.sort();
        assert_eq!(ports, vec![1, 2, 3]);
    }

    fn n(order: u16, preference: u16, flags: &str, services: &str, replacement: &str) -> Naptr {
        Naptr {
            order,
            preference,
            flags: flags.into(),
            services: services.into(),
            replacement: replacement.into(),
        }
    }

    #[test]
    fn naptr_services_filters_and_sorts() {
        let records = vec![
            n(20, 10, "s", "SIP+D2U", "_sip._udp.x."),
            n(10, 20, "s", "SIP+D2T", "_sip._tcp.x."),
            n(10, 10, "S", "sips+d2t", "_sips._tcp.x."),
            n(5, 10, "u", "E2U+sip", "."),
            n(5, 10, "s", "SIP+D2S", "_sip._sctp.x."),
            n(5, 10, "a", "SIP+D2U", "x."),
            n(5, 10, "s", "SIP+D2U", "."),
        ];
        assert_eq!(
            naptr_services(&records, false),
            vec![
                ("_sips._tcp.x.".to_string(), Transport::Tls),
                ("_sip._tcp.x.".to_string(), Transport::Tcp),
                ("_sip._udp.x.".to_string(), Transport::Udp),
            ]
        );
        assert_eq!(
            naptr_services(&records, true),
            vec![("_sips._tcp.x.".to_string(), Transport::Tls)]
        );
        assert!(naptr_services(&records[3..], false).is_empty());
    }

    #[test]
    fn srv_names_per_transport() {
        let names = |t, secure| {
            srv_names("h.test.", t, secure)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(None, false),
            vec![
                "_sip._udp.h.test.",
                "_sip._tcp.h.test.",
                "_sips._tcp.h.test."
            ]
        );
        assert_eq!(names(None, true), vec!["_sips._tcp.h.test."]);
        assert_eq!(
            names(Some(Transport::Udp), false),
            vec!["_sip._udp.h.test."]
        );
        assert_eq!(
            names(Some(Transport::Tcp), true),
            vec!["_sips._tcp.h.test."]
        );
    }
}
