//! An authoritative DNS server on loopback for tests: it answers A, SRV and NAPTR questions
//! from a fixed table over UDP, so that trunk host names resolve without touching the system's
//! resolver. It counts the questions it was asked, per name and type.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, NAPTR, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

pub struct DnsServer {
    pub addr: SocketAddr,
    asked: Arc<Mutex<HashMap<(String, RecordType), u32>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn name(text: &str) -> Name {
    Name::from_str(text).expect("test DNS name")
}

pub fn a(owner: &str, ip: Ipv4Addr) -> Record {
    Record::from_rdata(name(owner), 60, RData::A(A(ip)))
}

pub fn srv(owner: &str, priority: u16, weight: u16, port: u16, target: &str) -> Record {
    Record::from_rdata(
        name(owner),
        60,
        RData::SRV(SRV::new(priority, weight, port, name(target))),
    )
}

pub fn naptr(owner: &str, order: u16, service: &str, replacement: &str) -> Record {
    Record::from_rdata(
        name(owner),
        60,
        RData::NAPTR(NAPTR::new(
            order,
            10,
            b"S".to_vec().into_boxed_slice(),
            service.as_bytes().to_vec().into_boxed_slice(),
            Vec::new().into_boxed_slice(),
            name(replacement),
        )),
    )
}

fn key(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    /// Serves `records` on a free UDP port of 127.0.0.1 until dropped.
    pub fn start(records: Vec<Record>) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind DNS");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let asked = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (asked, stop) = (asked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let Ok(query) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    let reply = answer(&query, &records, &asked);
                    if let Ok(bytes) = reply.to_vec() {
                        let _ = socket.send_to(&bytes, from);
                    }
                }
            })
        };
        DnsServer {
            addr,
            asked,
            stop,
            thread: Some(thread),
        }
    }

    /// How often `owner` was asked for records of type `kind`.
    pub fn asked(&self, owner: &str, kind: RecordType) -> u32 {
        let asked = self.asked.lock().expect("asked");
        asked
            .get(&(owner.to_ascii_lowercase(), kind))
            .copied()
            .unwrap_or(0)
    }
}

fn answer(
    query: &Message,
    records: &[Record],
    asked: &Mutex<HashMap<(String, RecordType), u32>>,
) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.message_type = MessageType::Response;
    let mut known = false;
    for q in &query.queries {
        reply.add_query(q.clone());
        let wanted = key(&q.name);
        *asked
            .lock()
            .expect("asked")
            .entry((wanted.clone(), q.query_type))
            .or_insert(0) += 1;
        for record in records.iter().filter(|r| key(&r.name) == wanted) {
            known = true;
            if record.record_type() == q.query_type {
                reply.add_answer(record.clone());
            }
        }
    }
    if !known {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    reply
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
