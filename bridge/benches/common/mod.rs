//! What the bridge's benches share: a browser-like str0m client connected to a `WebRtcLeg` in
//! memory, and the percentiles they print. Each bench uses a part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialbridge_bridge::webrtc::{WebRtcLeg, WebRtcLegConfig};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A browser-like client connected to a leg in memory.
pub struct Pair {
    pub now: Instant,
    pub client: Rtc,
    pub mid: Mid,
    /// The client's camera m-line, with `video`.
    pub video_mid: Option<Mid>,
    pub leg: WebRtcLeg,
    pub client_addr: SocketAddr,
    pub server: SocketAddr,
}

impl Pair {
    /// A connected pair, the client offering audio (and with `video` a sending and receiving
    /// VP8 m-line), starting at `now`.
    pub fn connect(now: Instant, video: bool) -> Pair {
        let (client_addr, server) = (addr("127.0.0.1:5000"), addr("127.0.0.1:10000"));
        let mut client = Rtc::builder()
            .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(video)
            .build(now);
        let candidate = Candidate::host(client_addr, "udp").unwrap_or_else(|e| panic!("{e}"));
        client.add_local_candidate(candidate);
        let mut change = client.sdp_api();
        let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let video_mid = video
            .then(|| change.add_media(MediaKind::Video, Direction::SendRecv, None, None, None));
        let (offer, pending) = change.apply().unwrap_or_else(|| panic!("no offer"));
        let cfg = WebRtcLegConfig::new(server, 48000);
        let (leg, answer) =
            WebRtcLeg::accept(now, &offer.to_sdp_string(), &cfg).unwrap_or_else(|e| panic!("{e}"));
        let answer = SdpAnswer::from_sdp_string(&answer).unwrap_or_else(|e| panic!("{e}"));
        client
            .sdp_api()
            .accept_answer(pending, answer)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut pair = Pair {
            now,
            client,
            mid,
            video_mid,
            leg,
            client_addr,
            server,
        };
        for _ in 0..500 {
            if pair.leg.is_connected() {
                return pair;
            }
            pair.step(Duration::from_millis(10));
        }
        panic!("no connection");
    }

    /// Client datagrams go to the leg (into `hold` instead, when given), leg datagrams to
    /// the client.
    pub fn pump(&mut self, hold: Option<&mut Vec<Vec<u8>>>) {
        let mut hold = hold;
        loop {
            match self.client.poll_output() {
                Ok(Output::Timeout(_)) => break,
                Ok(Output::Transmit(t)) => match hold.as_mut() {
                    Some(h) => h.push(t.contents.to_vec()),
                    None => {
                        let _ = self.leg.handle_input(
                            self.now,
                            self.client_addr,
                            self.server,
                            &t.contents,
                        );
                    }
                },
                Ok(Output::Event(Event::Connected)) | Ok(Output::Event(_)) => {}
                Err(e) => panic!("client: {e}"),
            }
        }
        self.deliver_to_client();
    }

    pub fn deliver_to_client(&mut self) {
        while let Some(t) = self.leg.poll_transmit() {
            let r = Receive::new(Protocol::Udp, self.server, self.client_addr, &t.contents)
                .unwrap_or_else(|e| panic!("{e}"));
            let _ = self.client.handle_input(Input::Receive(self.now, r));
        }
    }

    pub fn step(&mut self, by: Duration) {
        self.pump(None);
        self.now += by;
        let _ = self.client.handle_input(Input::Timeout(self.now));
        if self.leg.poll_timeout() <= self.now {
            self.leg.handle_timeout(self.now);
        }
        self.pump(None);
    }
}

pub fn percentiles(name: &str, samples: &mut [Duration]) {
    samples.sort_unstable();
    if samples.is_empty() {
        return;
    }
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{name}: {} packets, p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
