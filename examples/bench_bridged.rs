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

#[path = "../tests/common/webrtc_client.rs"]
mod webrtc_client;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use webrtc_client::{marked_loop, Offer, Source, WebRtcClient};

const TALK: &str = "/ocs/v2.php/apps/spreed/api/v4";
/// How long calls may take to connect and start carrying audio.
const SETTLE: Duration = Duration::from_secs(60);

type Error = Box<dyn std::error::Error>;

/// One room of the benchmark.
struct Call {
    http: reqwest::Client,
    token: String,
    media: String,
    client: WebRtcClient,
}

struct Api {
    base: String,
    auth: String,
}

impl Api {
    async fn post(&self, http: &reqwest::Client, path: &str, body: Value) -> Result<Value, Error> {
        let response = http
            .post(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(format!("POST {path}: {status}: {text}").into());
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A room with the user in its call over WebRTC, and a phone attendee dialled.
    async fn call(&self, i: usize, frames: &Source) -> Result<Call, Error> {
        // The cookie jar keeps the room session, as a browser would.
        let http = reqwest::Client::builder().cookie_store(true).build()?;
        let room = self
            .post(
                &http,
                &format!("{TALK}/room"),
                json!({"roomType": 2, "roomName": format!("bench {i}")}),
            )
            .await?;
        let token = room["ocs"]["data"]["token"]
            .as_str()
            .ok_or("room has no token")?
            .to_string();
        let phone = self
            .post(
                &http,
                &format!("{TALK}/room/{token}/participants"),
                json!({"newParticipant": format!("+4930{}", 1_000_000 + i), "source": "phones"}),
            )
            .await?;
        let phone = phone["ocs"]["data"]["attendeeId"]
            .as_i64()
            .ok_or("no phone attendee")?;
        self.post(
            &http,
            &format!("{TALK}/room/{token}/participants/active"),
            json!({}),
        )
        .await?;
        self.post(&http, &format!("{TALK}/call/{token}"), json!({"flags": 3}))
            .await?;
        let offer = Offer::new(false);
        let response = http
            .post(format!("{}/api/v1/rooms/{token}/media", self.base))
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/sdp")
            .body(offer.sdp.clone())
            .send()
            .await?;
        if response.status() != 201 {
            return Err(format!("media join: {}", response.status()).into());
        }
        let media = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or("media join without Location")?
            .to_string();
        let client = offer.start_with(&response.text().await?, frames.clone());
        self.post(
            &http,
            &format!("{TALK}/call/{token}/dialout/{phone}"),
            json!({}),
        )
        .await?;
        Ok(Call {
            http,
            token,
            media,
            client,
        })
    }

    async fn hang_up(&self, call: &Call) -> Result<(), Error> {
        call.http
            .delete(format!("{}{TALK}/call/{}", self.base, call.token))
            .header("Authorization", &self.auth)
            .json(&json!({"all": true}))
            .send()
            .await?;
        let url = if call.media.starts_with("http") {
            call.media.clone()
        } else {
            format!("{}{}", self.base, call.media)
        };
        call.http
            .delete(url)
            .header("Authorization", &self.auth)
            .send()
            .await?;
        Ok(())
    }
}

/// Nanoseconds a process's threads have run on a CPU, from the scheduler's own clock
/// (`/proc/PID/task/*/schedstat`) rather than the tick-sampled utime/stime of `/proc/PID/stat`.
fn cpu_ns(pid: &str) -> Result<u64, Error> {
    Ok(thread_ns(pid).iter().map(|(_, _, ns)| ns).sum())
}

/// CPU nanoseconds per thread of a process, with the thread names.
fn thread_ns(pid: &str) -> Vec<(String, String, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_string_lossy().to_string();
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let schedstat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            let ns = schedstat.split_whitespace().next()?.parse().ok()?;
            Some((tid, name.trim().to_string(), ns))
        })
        .collect()
}

/// The thread that used the most CPU between two samples, and its share of one core.
fn busiest(
    before: &[(String, String, u64)],
    after: &[(String, String, u64)],
    secs: f64,
) -> Option<(String, f64)> {
    after
        .iter()
        .map(|(tid, name, t1)| {
            let t0 = before.iter().find(|(b, _, _)| b == tid).map_or(0, |b| b.2);
            (name.clone(), t1.saturating_sub(t0) as f64 / 1e9 / secs)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Round trips in ms: each mark sent paired with the first onset heard after it and before the
/// next mark; a mark without one was not heard.
fn round_trips(marks: &[Instant], onsets: &[Instant]) -> Vec<f64> {
    marks
        .iter()
        .enumerate()
        .filter_map(|(i, mark)| {
            let next = marks
                .get(i + 1)
                .copied()
                .unwrap_or(*mark + Duration::from_secs(1));
            let onset = onsets.iter().find(|o| **o >= *mark && **o < next)?;
            Some(onset.duration_since(*mark).as_secs_f64() * 1000.0)
        })
        .collect()
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
    let api = Api {
        base: base.trim_end_matches('/').to_string(),
        auth: format!("Bearer {token}"),
    };
    let frames = Source::Loop(marked_loop()?);
    let setup = Instant::now();
    let mut calls = Vec::with_capacity(n);
    for i in 0..n {
        calls.push(api.call(i, &frames).await?);
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
        .sum::<Result<u64, Error>>()?;
    let threads0 = thread_ns(pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let window = t0.elapsed().as_secs_f64();
    let (gw1, me1) = (cpu_ns(pid)?, cpu_ns("self")?);
    let phones1 = phones
        .iter()
        .map(|p| cpu_ns(p))
        .sum::<Result<u64, Error>>()?;
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
        if let Err(e) = api.hang_up(c).await {
            println!("hang-up failed: {e}");
        }
    }
    drop(calls);
    Ok(())
}
