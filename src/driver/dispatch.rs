//! The driver's one loop: wait for whatever comes first (a datagram on the main socket, a
//! connection event, an event from the listeners or resolver tasks, a command, or the engine's
//! deadline), hand it to the engine (or to the inbound side for requests and relayed
//! responses), then carry out what the engine asks for.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{debug, info};

use super::handle::Command;
use super::inbound::Origin;
use super::listen::Input;
use super::{Driver, DriverStats};
use crate::engine::{Event, FlowEvent, TransmitRoute};
use crate::transport::resolve::Query;
use crate::transport::stream::StreamEvent;
use crate::transport::udp::{MAX_DATAGRAM, UdpTransport};

/// Datagrams taken from the main socket in one go before timers and commands get their turn.
const DRAIN_LIMIT: usize = 256;

/// How long the loop waits, after a wake-up that brought a datagram, before it looks again.
/// Each wake-up costs a trip through the kernel's scheduler (on a VM about as much as handling
/// a response); under load two milliseconds' gathering turns one wake-up per datagram into one
/// per batch (one millisecond took 0.5 µs more CPU per row at a million rows). Nothing SIP
/// measures notices two milliseconds, and an idle socket is answered at once: the wait follows
/// traffic, it never precedes the first datagram.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(2);

impl Driver {
    pub(super) async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut traffic = false;
        loop {
            if std::mem::take(&mut traffic) {
                // Datagrams are flowing: let the next ones gather for a moment and take them in
                // one wake-up (see COALESCE).
                tokio::time::sleep(COALESCE).await;
            }
            let now = Instant::now();
            // Answers already waiting in the socket are read before timers fire: after the
            // loop was held up (a reload of a million rows, the machine busy elsewhere) a
            // retransmission timer may be due for a request whose answer is right there, and
            // firing it first would send the request again for nothing.
            let udp = self.udp.clone();
            if self.drain(now, &udp, &mut buf) > 0 {
                traffic = true;
            }
            self.engine.handle_timeout(now);
            self.carry_out(now);
            if let Some(remaining) = self.engine.shutdown_finished(now) {
                if let Some(reply) = self.shutdown_reply.take() {
                    let _ = reply.send(remaining);
                }
                return;
            }
            let deadline = self.engine.poll_timeout(now);
            tokio::select! {
                received = udp.recv(&mut buf) => {
                    match received {
                        Ok((len, from)) => {
                            traffic = true;
                            let now = Instant::now();
                            self.handle_datagram(now, &buf[..len], from, None);
                            // Drain what else is already queued before doing timer work.
                            self.drain(now, &udp, &mut buf);
                        }
                        Err(err) => {
                            // ICMP errors surface here on some systems; they are not fatal.
                            debug!("SIP socket receive error: {err}");
                        }
                    }
                }
                Some(event) = self.stream_rx.recv() => {
                    self.handle_stream_event(Instant::now(), event);
                }
                Some(input) = self.events_rx.recv() => {
                    self.handle_input(Instant::now(), input);
                }
                command = self.commands.recv() => {
                    match command {
                        Some(command) => self.handle_command(Instant::now(), command),
                        None => {
                            // Every handle is gone: nobody can ask for anything any more.
                            info!("driver handles dropped; stopping");
                            return;
                        }
                    }
                }
                _ = sleep_until_opt(deadline) => {}
            }
        }
    }

    /// Handles up to [`DRAIN_LIMIT`] datagrams already queued on `udp`; how many there were.
    fn drain(&mut self, now: Instant, udp: &UdpTransport, buf: &mut [u8]) -> usize {
        let mut taken = 0;
        while taken < DRAIN_LIMIT {
            match udp.try_recv(buf) {
                Ok((len, from)) => {
                    taken += 1;
                    self.handle_datagram(now, &buf[..len], from, None);
                }
                Err(_) => break,
            }
        }
        taken
    }

    /// Sends what the engine has to send and does what else it asks.
    pub(super) fn carry_out(&mut self, now: Instant) {
        loop {
            if let Some(transmit) = self.engine.poll_transmit() {
                match transmit.route {
                    TransmitRoute::Udp(route) => {
                        let socket = self.udp_socket(route.local);
                        if let Err(err) = socket.try_send(&transmit.bytes, route.remote) {
                            // Left to the transaction: timer E retransmits, timer F reports.
                            debug!(target = %route.remote, "send failed: {err}");
                            self.stats.send_errors += 1;
                        }
                    }
                    TransmitRoute::Flow(flow) => {
                        self.streams.send_on(flow, transmit.bytes);
                    }
                    TransmitRoute::Connect(key) => {
                        let opened = self.streams.existing(&key).is_none();
                        let flow = self.streams.send(&key, transmit.bytes);
                        self.engine
                            .handle_flow_event(now, FlowEvent::Connected { key, flow, opened });
                    }
                }
                continue;
            }
            let Some(event) = self.engine.poll_event() else {
                return;
            };
            match event {
                Event::Resolve(destination) => self.resolve(destination),
                // The flow task reports Closed, which the engine hears of as any other close.
                Event::CloseFlow(flow) => self.streams.close(flow),
                Event::RegistrarMoved { from, to } => {
                    self.relay.trust_mut().registrar_moved(from, to)
                }
            }
        }
    }

    /// Looks `destination` up on a task of its own; the answer comes back as an input.
    fn resolve(&mut self, destination: crate::registration::Destination) {
        let Some(resolver) = self.resolver.clone() else {
            let _ = self.events_tx.send(Input::Resolved {
                destination,
                result: Err(crate::transport::resolve::ResolveError::NoResolver),
            });
            return;
        };
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let query = Query {
                host: &destination.host,
                port: destination.port,
                transport: destination.transport,
                secure: destination.secure,
            };
            let result = resolver.resolve(&query).await;
            let _ = events.send(Input::Resolved {
                destination,
                result,
            });
        });
    }

    fn handle_stream_event(&mut self, now: Instant, event: StreamEvent) {
        match event {
            StreamEvent::Message { flow, peer, bytes } => {
                self.stats.stream_messages_received += 1;
                self.handle_message(now, &bytes, peer, Origin::Flow(flow));
            }
            StreamEvent::KeepAlive { flow } => {
                self.engine.handle_flow_event(now, FlowEvent::Pong(flow));
            }
            StreamEvent::Closed { flow, why } => {
                let peer = self.streams.peer(flow).map(|(_, addr)| addr);
                self.streams.forget(flow);
                self.relay.trust_mut().flow_closed(flow);
                self.engine.handle_flow_event(
                    now,
                    FlowEvent::Closed {
                        flow,
                        peer,
                        why: why.to_string(),
                    },
                );
            }
        }
        self.carry_out(now);
    }

    fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Datagram { local, from, bytes } => {
                self.handle_datagram(now, &bytes, from, Some(local));
            }
            Input::Accepted {
                stream,
                peer,
                transport,
                permit,
            } => {
                self.stats.connections_accepted += 1;
                let flow = self.streams.adopt(stream, peer, transport, permit);
                self.relay.trust_mut().flow_accepted(flow);
                debug!(flow, %peer, "accepted a {} connection", transport.via_token());
            }
            Input::Resolved {
                destination,
                result,
            } => self.engine.handle_resolved(now, destination, result),
        }
        self.carry_out(now);
    }

    fn handle_command(&mut self, now: Instant, command: Command) {
        let engine = &mut self.engine;
        match command {
            Command::SnapshotPage {
                offset,
                limit,
                reply,
            } => {
                let _ = reply.send(engine.table().snapshot_page(offset, limit));
            }
            Command::Snapshots { after, reply } => {
                let _ = reply.send(engine.snapshots_after(after.as_deref(), super::SNAPSHOT_SLICE));
            }
            Command::Find {
                attribute,
                value,
                reply,
            } => {
                let _ = reply.send(engine.find(attribute, &value));
            }
            Command::FindByLocalUri { user, host, reply } => {
                let _ = reply.send(engine.find_by_local_uri(&user, &host));
            }
            Command::Reload { records, reply } => {
                let _ = reply.send(engine.reload(now, records));
            }
            Command::ReloadGuarded {
                records,
                guard,
                reply,
            } => {
                let _ = reply.send(engine.reload_guarded(now, records, guard));
            }
            Command::ApplyOne {
                l_uuid,
                record,
                reply,
            } => {
                let _ = reply.send(engine.apply_one(now, &l_uuid, record));
            }
            Command::SetDisabled {
                attribute,
                value,
                disabled,
                reply,
            } => {
                let _ = reply.send(engine.set_disabled(now, attribute, &value, disabled));
            }
            Command::RegisterNow {
                attribute,
                value,
                register,
                reply,
            } => {
                let _ = reply.send(engine.register_now(now, attribute, &value, register));
            }
            Command::SetActive { active, reply } => {
                let _ = reply.send(engine.set_active(now, active));
            }
            Command::Add { record, reply } => {
                let _ = reply.send(engine.add(now, record));
            }
            Command::Remove { l_uuid, reply } => {
                let _ = reply.send(engine.remove(now, &l_uuid));
            }
            Command::StatusCounts(reply) => {
                let _ = reply.send(engine.status_counts());
            }
            Command::Transitions {
                l_uuid,
                limit,
                reply,
            } => {
                let _ = reply.send(engine.table().transitions_of(&l_uuid, limit));
            }
            Command::StatusRows { clock, reply } => {
                let rows = crate::status_export::current_rows(engine.table(), &clock, now);
                let _ = reply.send(rows);
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats_now());
            }
            Command::TakeShards {
                shards,
                rows,
                reply,
            } => {
                let _ = reply.send(engine.take_shards(now, &shards, rows));
            }
            Command::DropShards { shards, reply } => {
                let _ = reply.send(engine.drop_shards(now, &shards));
            }
            Command::ExtendShards(renewed) => engine.extend_shards(now, &renewed),
            Command::Dialogs(reply) => {
                let _ = reply.send(engine.dialogs(now));
            }
            #[cfg(feature = "fault-injection")]
            Command::Panic(_reply) => panic!("fault injection: uacreg.debug_panic"),
            Command::Shutdown(unregister_within, reply) => {
                engine.shutdown(now, unregister_within);
                self.shutdown_reply = Some(reply);
            }
        }
        self.carry_out(now);
    }

    /// The shell's counters, the engine's, and the gauges of connections and admission.
    fn stats_now(&self) -> DriverStats {
        let mut stats = self.stats.clone();
        stats.merge(self.engine.stats());
        stats.inbound = self.relay.stats().clone();
        stats.connections = self.streams.count();
        let admitted = self.admission.counts();
        stats.inbound_connections = admitted.open;
        stats.connections_refused = admitted.refused_total;
        stats.connections_refused_per_ip = admitted.refused_per_source;
        stats.accept_errors = admitted.accept_errors;
        let closed = self.streams.counts();
        stats.connections_idle_closed = closed.idle_closed;
        stats.connections_unframeable = closed.unframeable;
        stats.write_queue_overflows = closed.write_queue_overflows;
        stats.write_timeouts = closed.write_timeouts;
        stats.datagrams_dropped = self.events_tx.datagrams_dropped.load(Ordering::Relaxed);
        stats
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
