//! A small authoritative DNS server on loopback for tests: it answers A, AAAA, SRV and NAPTR
//! queries from a zone the test sets (and may replace while it runs), over UDP and TCP on the
//! same port, so a resolver pointed at it walks the RFC 3263 NAPTR → SRV → A/AAAA chain without
//! any traffic leaving 127.0.0.1.
//!
//! Queries are decoded and answers encoded with `hickory-proto`. An unknown name is answered
//! NXDOMAIN; a known name without records of the asked type NOERROR with no answers (both carry
//! an SOA with a zero negative TTL, so a resolver trusts them without caching them). Anything
//! that does not decode as a single standard query is ignored.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NAPTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// One resource record of the test zone. Names may be given with or without the trailing dot
/// and in any case.
#[derive(Clone, Debug)]
pub enum Record {
    A {
        name: String,
        addr: Ipv4Addr,
        ttl: u32,
    },
    Aaaa {
        name: String,
        addr: Ipv6Addr,
        ttl: u32,
    },
    Srv {
        name: String,
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
        ttl: u32,
    },
    Naptr {
        name: String,
        order: u16,
        preference: u16,
        flags: String,
        services: String,
        replacement: String,
        ttl: u32,
    },
}

impl Record {
    fn name(&self) -> &str {
        match self {
            Record::A { name, .. }
            | Record::Aaaa { name, .. }
            | Record::Srv { name, .. }
            | Record::Naptr { name, .. } => name,
        }
    }

    fn record_type(&self) -> RecordType {
        match self {
            Record::A { .. } => RecordType::A,
            Record::Aaaa { .. } => RecordType::AAAA,
            Record::Srv { .. } => RecordType::SRV,
            Record::Naptr { .. } => RecordType::NAPTR,
        }
    }

    /// The wire record, owned by `owner` (the name as the query spelled it). `None` when a
    /// name in the record data is not a valid domain name.
    fn to_wire(&self, owner: &Name) -> Option<hickory_proto::rr::Record> {
        let (ttl, rdata) = match self {
            Record::A { addr, ttl, .. } => (*ttl, RData::A(A(*addr))),
            Record::Aaaa { addr, ttl, .. } => (*ttl, RData::AAAA(AAAA(*addr))),
            Record::Srv {
                priority,
                weight,
                port,
                target,
                ttl,
                ..
            } => (
                *ttl,
                RData::SRV(SRV::new(*priority, *weight, *port, fqdn(target)?)),
            ),
            Record::Naptr {
                order,
                preference,
                flags,
                services,
                replacement,
                ttl,
                ..
            } => (
                *ttl,
                RData::NAPTR(NAPTR::new(
                    *order,
                    *preference,
                    flags.as_bytes().into(),
                    services.as_bytes().into(),
                    Box::default(),
                    fqdn(replacement)?,
                )),
            ),
        };
        Some(hickory_proto::rr::Record::from_rdata(
            owner.clone(),
            ttl,
            rdata,
        ))
    }
}

/// `name` as an absolute domain name ("." is the root).
fn fqdn(name: &str) -> Option<Name> {
    if name.is_empty() || name == "." {
        return Some(Name::root());
    }
    let mut name = Name::from_ascii(name).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// The comparison key of a name: lower case, without the trailing dot.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

struct Shared {
    zone: Mutex<Vec<Record>>,
    queries: AtomicU64,
}

/// The running server; it stops when dropped.
pub struct TestDns {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl TestDns {
    /// Binds UDP on 127.0.0.1 (an ephemeral port) and TCP on the same port when that port is
    /// free for TCP too, and answers from `records` in background tasks.
    pub async fn start(records: Vec<Record>) -> std::io::Result<TestDns> {
        let (udp, tcp) = bind_pair().await?;
        let addr = udp.local_addr()?;
        let shared = Arc::new(Shared {
            zone: Mutex::new(records),
            queries: AtomicU64::new(0),
        });
        let mut tasks = vec![tokio::spawn(serve_udp(udp, shared.clone()))];
        if let Some(tcp) = tcp {
            tasks.push(tokio::spawn(serve_tcp(tcp, shared.clone())));
        }
        Ok(TestDns {
            addr,
            shared,
            tasks,
        })
    }

    /// Where to send queries (UDP, and TCP when it could be bound).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the whole zone; later queries are answered from `records`.
    pub fn set_records(&self, records: Vec<Record>) {
        *self.shared.zone.lock().unwrap_or_else(|e| e.into_inner()) = records;
    }

    /// How many queries have been answered (over UDP and TCP).
    pub fn queries(&self) -> u64 {
        self.shared.queries.load(Ordering::Relaxed)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A UDP socket on an ephemeral loopback port and, if it can be had, a TCP listener on the
/// same port. A few ports are tried before settling for UDP alone.
async fn bind_pair() -> std::io::Result<(UdpSocket, Option<TcpListener>)> {
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    for _ in 0..8 {
        let udp = UdpSocket::bind(loopback).await?;
        let port = udp.local_addr()?.port();
        if let Ok(tcp) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            return Ok((udp, Some(tcp)));
        }
    }
    Ok((UdpSocket::bind(loopback).await?, None))
}

/// The largest UDP answer to a query without EDNS (RFC 1035 §4.2.1).
const UDP_LIMIT: usize = 512;

async fn serve_udp(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            // ICMP errors from an earlier send surface here on some systems: keep serving.
            Err(_) => continue,
        };
        let Some(mut response) = answer(&buf[..len], &shared) else {
            continue;
        };
        let Ok(mut bytes) = response.to_vec() else {
            continue;
        };
        if bytes.len() > UDP_LIMIT {
            response = response.truncate();
            let Ok(truncated) = response.to_vec() else {
                continue;
            };
            bytes = truncated;
        }
        if socket.send_to(&bytes, peer).await.is_ok() {
            shared.queries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    // The connections are owned here, so aborting this task closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_connection(stream, shared.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// DNS over TCP: each message is preceded by its length in two bytes (RFC 1035 §4.2.2).
async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut buf = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let Some(bytes) = answer(&buf, &shared).and_then(|m| m.to_vec().ok()) else {
            continue;
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            continue;
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
        shared.queries.fetch_add(1, Ordering::Relaxed);
    }
}

/// The response to one query message, or `None` when it is not a single standard IN query.
fn answer(packet: &[u8], shared: &Shared) -> Option<Message> {
    let request = Message::from_vec(packet).ok()?;
    if request.message_type() != MessageType::Query
        || request.op_code() != OpCode::Query
        || request.queries().len() != 1
    {
        return None;
    }
    let query = request.queries()[0].clone();
    if query.query_class() != DNSClass::IN {
        return None;
    }

    let mut header = Header::response_from_request(request.header());
    header.set_authoritative(true);
    header.set_recursion_available(true);
    let mut response = Message::new();
    response.set_header(header);
    response.add_query(query.clone());

    let wanted = key(&query.name().to_ascii());
    let zone = shared.zone.lock().unwrap_or_else(|e| e.into_inner());
    let mut known = false;
    for record in zone.iter().filter(|r| key(r.name()) == wanted) {
        known = true;
        if record.record_type() == query.query_type() {
            response.add_answer(record.to_wire(query.name())?);
        }
    }
    drop(zone);

    if !known {
        response.set_response_code(ResponseCode::NXDomain);
    }
    if response.answers().is_empty() {
        response.add_name_server(negative_soa(query.name()));
    }
    Some(response)
}

/// The SOA that makes a negative answer authoritative, with a zero negative TTL so that it is
/// not cached across `set_records`.
fn negative_soa(owner: &Name) -> hickory_proto::rr::Record {
    let invalid = |label: &str| Name::from_ascii(label).unwrap_or_else(|_| Name::root());
    let soa = SOA::new(
        invalid("ns.invalid."),
        invalid("hostmaster.invalid."),
        1,
        3600,
        600,
        86400,
        0,
    );
    hickory_proto::rr::Record::from_rdata(owner.clone(), 0, RData::SOA(soa))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, rtype: RecordType, id: u16) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id);
        m.set_message_type(MessageType::Query);
        m.set_op_code(OpCode::Query);
        m.set_recursion_desired(true);
        m.add_query(hickory_proto::op::Query::query(
            Name::from_ascii(name).unwrap(),
            rtype,
        ));
        m.to_vec().unwrap()
    }

    async fn ask_udp(server: SocketAddr, packet: &[u8]) -> Option<Message> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        socket.send_to(packet, server).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let got =
            tokio::time::timeout(std::time::Duration::from_millis(300), socket.recv(&mut buf))
                .await
                .ok()?
                .unwrap();
        Some(Message::from_vec(&buf[..got]).unwrap())
    }

    fn zone() -> Vec<Record> {
        vec![
            Record::A {
                name: "Host.Example.Test.".into(),
                addr: Ipv4Addr::new(127, 0, 0, 1),
                ttl: 60,
            },
            Record::Srv {
                name: "_sip._udp.example.test".into(),
                priority: 10,
                weight: 5,
                port: 5070,
                target: "host.example.test".into(),
                ttl: 30,
            },
        ]
    }

    #[tokio::test]
    async fn answers_by_type_and_name_case_insensitively() {
        let dns = TestDns::start(zone()).await.unwrap();
        assert!(dns.local_addr().ip().is_loopback());

        let reply = ask_udp(
            dns.local_addr(),
            &query("host.example.test.", RecordType::A, 7),
        )
        .await
        .unwrap();
        assert_eq!(reply.id(), 7);
        assert_eq!(reply.message_type(), MessageType::Response);
        assert_eq!(reply.response_code(), ResponseCode::NoError);
        assert_eq!(reply.answers().len(), 1);
        assert_eq!(
            reply.answers()[0].data(),
            &RData::A(A(Ipv4Addr::new(127, 0, 0, 1)))
        );
        assert_eq!(reply.answers()[0].ttl(), 60);

        let reply = ask_udp(
            dns.local_addr(),
            &query("_SIP._UDP.example.test", RecordType::SRV, 8),
        )
        .await
        .unwrap();
        let RData::SRV(srv) = reply.answers()[0].data() else {
            panic!("not an SRV: {reply:?}");
        };
        assert_eq!((srv.priority(), srv.weight(), srv.port()), (10, 5, 5070));
        assert_eq!(srv.target().to_ascii(), "host.example.test.");
        assert_eq!(dns.queries(), 2);
    }

    #[tokio::test]
    async fn unknown_name_is_nxdomain_and_missing_type_is_empty_noerror() {
        let dns = TestDns::start(zone()).await.unwrap();
        let reply = ask_udp(
            dns.local_addr(),
            &query("nope.example.test", RecordType::A, 1),
        )
        .await
        .unwrap();
        assert_eq!(reply.response_code(), ResponseCode::NXDomain);
        assert!(reply.answers().is_empty());
        assert_eq!(reply.name_servers().len(), 1);

        let reply = ask_udp(
            dns.local_addr(),
            &query("host.example.test", RecordType::AAAA, 2),
        )
        .await
        .unwrap();
        assert_eq!(reply.response_code(), ResponseCode::NoError);
        assert!(reply.answers().is_empty());
    }

    #[tokio::test]
    async fn set_records_replaces_the_zone() {
        let dns = TestDns::start(zone()).await.unwrap();
        dns.set_records(vec![Record::Aaaa {
            name: "six.example.test".into(),
            addr: Ipv6Addr::LOCALHOST,
            ttl: 5,
        }]);
        let reply = ask_udp(
            dns.local_addr(),
            &query("host.example.test", RecordType::A, 3),
        )
        .await
        .unwrap();
        assert_eq!(reply.response_code(), ResponseCode::NXDomain);
        let reply = ask_udp(
            dns.local_addr(),
            &query("six.example.test", RecordType::AAAA, 4),
        )
        .await
        .unwrap();
        assert_eq!(
            reply.answers()[0].data(),
            &RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))
        );
    }

    #[tokio::test]
    async fn malformed_queries_are_ignored() {
        let dns = TestDns::start(zone()).await.unwrap();
        assert!(
            ask_udp(dns.local_addr(), b"\x01\x02garbage")
                .await
                .is_none()
        );
        assert!(ask_udp(dns.local_addr(), &[]).await.is_none());
        // A response is not a query.
        let mut m = Message::from_vec(&query("host.example.test", RecordType::A, 5)).unwrap();
        m.set_message_type(MessageType::Response);
        assert!(
            ask_udp(dns.local_addr(), &m.to_vec().unwrap())
                .await
                .is_none()
        );
        assert_eq!(dns.queries(), 0);
        // Still serving.
        assert!(
            ask_udp(
                dns.local_addr(),
                &query("host.example.test", RecordType::A, 6)
            )
            .await
            .is_some()
        );
    }

    #[tokio::test]
    async fn answers_over_tcp_on_the_same_port() {
        let dns = TestDns::start(zone()).await.unwrap();
        let mut stream = TcpStream::connect(dns.local_addr()).await.unwrap();
        let packet = query("host.example.test", RecordType::A, 9);
        stream.write_u16(packet.len() as u16).await.unwrap();
        stream.write_all(&packet).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        let reply = Message::from_vec(&buf).unwrap();
        assert_eq!(reply.id(), 9);
        assert_eq!(reply.answers().len(), 1);
        assert_eq!(dns.queries(), 1);
    }

    #[tokio::test]
    async fn stops_when_dropped() {
        let dns = TestDns::start(zone()).await.unwrap();
        let addr = dns.local_addr();
        drop(dns);
        tokio::task::yield_now().await;
        assert!(
            ask_udp(addr, &query("host.example.test", RecordType::A, 1))
                .await
                .is_none()
        );
    }
}
