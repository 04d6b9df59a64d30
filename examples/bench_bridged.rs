//! Load benchmark of bridged calls: N rooms, each with one WebRTC client (the str0m client of the
//! tests) in the call and one dial-out to a phone that echoes its RTP (SIPp with `-rtp_echo`,
//! `tests/sipp/bench_uas_echo.xml`). Each client sends a one-second loop of Opus frames that
//! starts with a loud burst; the burst comes back through the gateway twice (browser -> phone,
//! echo, phone -> browser). Over a measuring window it reports the gateway's CPU per call (from
//! the scheduler's `schedstat`), the packets the clients lost and the frames they got, and the round trip
//! of the bursts. Then it ends every call.
//!
//! Run by `scripts/bench-dialout N SECONDS webrtc`, which starts the gateway and SIPp:
//! ```sh
//! bench_bridged BASE_URL API_TOKEN N SECONDS GATEWAY_PID
//! ```

#[path = "bench_support/cpu.rs"]
mod cpu;
#[path = "bench_support/talk.rs"]
mod talk;
#[path = "../tests/common/webrtc_client.rs"]
mod webrtc_client;

use std::time::{Duration, Instant};

use cpu::{busiest, cpu_ns, percentile, round_trips, thread_ns};
use talk::{Api, Error, Room};
use webrtc_client::{marked_loop, Offer, Source, WebRtcClient};

/// How long calls may take to connect and start carrying audio.
const SETTLE: Duration = Duration::from_secs(60);

/// One room of the benchmark.
struct Call {
    room: Room,
    client: WebRtcClient,
}

/// A room with the user in its call over WebRTC, and a phone attendee dialled.
async fn call(api: &Api, i: usize, frames: &Source) -> Result<Call, Error> {
    let mut room = api.room(i).await?;
    let offer = Offer::new(false);
    let answer = api.join_media(&mut room, &offer.sdp).await?;
    let client = offer.start_with(&answer, frames.clone());
    api.dial_out(&room).await?;
    Ok(Call { room, client })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, token, n, seconds, pid, phones @ ..] = args.as_slice() else {
        eprintln!("usage: bench_bridged BASE_URL API_TOKEN N SECONDS GATEWAY_PID [PHONE_PID...]");
        std::process::exit(2);
    };
    let n: usize = n.parse()?;
    let seconds: u64 = seconds.parse()?;
    let api = Api::new(base, token);
    let frames = Source::Loop(marked_loop()?);
    let setup = Instant::now();
    let mut calls = Vec::with_capacity(n);
    for i in 0..n {
        calls.push(call(&api, i, &frames).await?);
    }
    println!(
        "{n} rooms set up and dialled in {:.1} s",
        setup.elapsed().as_secs_f64()
    );
    // Every client connected and hearing its own burst back.
    let end = Instant::now() + SETTLE;
    let mut heard = vec![false; n];
    loop {
        for (h, c) in heard.iter_mut().zip(&calls) {
            *h |= c.client.connected() && !c.client.take_timing().1.is_empty();
        }
        let ready = heard.iter().filter(|h| **h).count();
        if ready == n {
            break;
        }
        if Instant::now() > end {
            println!("only {ready} of {n} calls carry audio both ways after {SETTLE:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for c in &calls {
        if let Some(failure) = c.client.failure() {
            println!("a client failed: {failure}");
        }
        c.client.take_timing();
    }
    let lost0: u64 = calls.iter().map(|c| c.client.lost()).sum();
    let frames0: u64 = calls.iter().map(|c| c.client.frames()).sum();
    let (gw0, me0) = (cpu_ns(pid)?, cpu_ns("self")?);
    let phones0 = phones
        .iter()
        .map(|p| cpu_ns(p))
        .sum::<Result<u64, String>>()?;
    let threads0 = thread_ns(pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let window = t0.elapsed().as_secs_f64();
    let (gw1, me1) = (cpu_ns(pid)?, cpu_ns("self")?);
    let phones1 = phones
        .iter()
        .map(|p| cpu_ns(p))
        .sum::<Result<u64, String>>()?;
    let threads1 = thread_ns(pid);
    let lost = calls.iter().map(|c| c.client.lost()).sum::<u64>() - lost0;
    let frames = calls.iter().map(|c| c.client.frames()).sum::<u64>() - frames0;
    // Onsets of the last bursts may still be on their way.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (mut trips, mut bursts) = (Vec::new(), 0);
    for c in &calls {
        let (mut marks, onsets) = c.client.take_timing();
        marks.retain(|m| m.duration_since(t0) < Duration::from_secs(seconds));
        bursts += marks.len();
        trips.extend(round_trips(&marks, &onsets));
    }
    trips.sort_by(f64::total_cmp);
    let gw_cpu = (gw1 - gw0) as f64 / 1e9 / window;
    let my_cpu = (me1 - me0) as f64 / 1e9 / window;
    let expected = (n as f64 * window * 50.0).round();
    println!(
        "gateway CPU: {:.0} % of one core for {n} bridged calls, {:.2} % of a core per call",
        gw_cpu * 100.0,
        gw_cpu * 100.0 / n as f64
    );
    if let Some((name, share)) = busiest(&threads0, &threads1, window) {
        println!(
            "busiest gateway thread: {name} at {:.0} % of one core",
            share * 100.0
        );
    }
    println!(
        "benchmark clients' CPU: {:.0} % of one core",
        my_cpu * 100.0
    );
    if !phones.is_empty() {
        println!(
            "phones' (SIPp) CPU: {:.0} % of one core",
            (phones1 - phones0) as f64 / 1e9 / window * 100.0
        );
    }
    println!(
        "clients received {frames} of about {expected:.0} frames in {window:.1} s ({:.2} %); RTP packets lost (sequence gaps): {lost}",
        frames as f64 * 100.0 / expected
    );
    println!(
        "burst round trip (client -> gateway -> phone echo -> gateway -> client): p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} of {bursts} bursts sent came back",
        percentile(&trips, 0.5),
        percentile(&trips, 0.95),
        percentile(&trips, 0.99),
        trips.last().copied().unwrap_or(f64::NAN),
        trips.len(),
    );
    for c in &calls {
        if let Err(e) = api.hang_up(&c.room).await {
            println!("hang-up failed: {e}");
        }
    }
    drop(calls);
    Ok(())
}
