//! A shard's loop: commands, datagrams, ready WebRTC and phone sockets and timers, in that order
//! of priority; the top of the shard's modules.

use std::time::Instant;

use super::command::Command;
use super::shard::Shard;
use super::types::MediaId;

/// Datagrams handled per wake before the loop looks at commands and timers again.
const DATAGRAM_BATCH: usize = 64;

impl Shard {
    pub(super) async fn run(mut self) {
        loop {
            let deadline = self.leg_deadline.min(self.next_tick);
            tokio::select! {
                biased;
                command = self.parts.commands.recv() => match command {
                    Some(Command::Shutdown { done }) => {
                        self.close_all();
                        let _ = done.send(());
                        break;
                    }
                    Some(c) => self.command(c),
                    // Every handle is gone: the service is shutting down.
                    None => break,
                },
                datagram = self.parts.datagrams.recv() => match datagram {
                    Some(d) => {
                        self.datagram(Instant::now(), d);
                        for _ in 1..DATAGRAM_BATCH {
                            match self.parts.datagrams.try_recv() {
                                Ok(d) => self.datagram(Instant::now(), d),
                                Err(_) => break,
                            }
                        }
                        self.open_peer_sockets();
                    }
                    None => break,
                },
                // WebRTC legs with a socket of their own are read as their datagrams arrive.
                _ = self.ready_web.notify.notified() => self.read_ready_web(Instant::now()),
                // Phone legs of two-party rooms are read as their packets arrive.
                _ = self.ready_phones.notify.notified() => self.read_ready_phones(Instant::now()),
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            if now >= self.leg_deadline {
                self.timeouts(now);
            }
            if now >= self.next_tick {
                self.tick(now);
                self.reap(now);
            } else if !self.gone.is_empty() {
                self.reap(now);
            }
        }
        self.close_all();
        tracing::info!(shard = self.parts.index, "media engine stopped");
    }

    fn close_all(&mut self) {
        let ids: Vec<MediaId> = self.legs.keys().copied().collect();
        for id in ids {
            self.remove(id, "shutdown");
        }
        let ids: Vec<MediaId> = self.phones.keys().copied().collect();
        for id in ids {
            self.remove_phone(id, "shutdown");
        }
    }

    pub(super) fn command(&mut self, command: Command) {
        match command {
            Command::Add { id, who, leg, done } => {
                self.add_leg(id, who, leg);
                let _ = done.send(());
            }
            Command::Remove {
                id,
                room_id,
                sessions,
                done,
            } => {
                let _ = done.send(self.remove_owned(id, room_id, &sessions));
            }
            Command::EndSessions { room_id, sessions } => self.end_sessions(room_id, &sessions),
            Command::Shutdown { done } => {
                self.close_all();
                let _ = done.send(());
            }
            Command::Record { room_id, sink } => self.set_tap(room_id, sink),
            Command::AddPhone { id, phone } => self.add_phone(id, *phone),
            Command::PhoneMove { id, who, to } => self.move_phone(id, who, to),
            Command::PhoneAdopt { id, who, slot } => self.adopt_phone(id, who, *slot),
            phone => self.phone_command(phone),
        }
    }
}
