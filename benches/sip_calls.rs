//! SIP call setups per second through real sockets on one core.
//!
//! The SIP runtime (driver + user agent) runs on a single-threaded tokio runtime and answers every
//! INVITE with 200 and an SDP answer; SIPp's built-in `uac` scenario calls it over UDP on loopback
//! (INVITE, 200, ACK, BYE, 200) at a fixed rate. Reported: calls completed per second of wall time,
//! failed calls, and the CPU seconds the runtime's thread spent per call.
//!
//!     cargo bench --bench sip_calls -- [RATE] [CALLS]      (defaults: 1000 calls/s, 20000 calls)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dialbridge::config::SipListen;
use dialbridge::runtime::sip;
use dialbridge_sip::ua::{Body, Reply, UaEvent};
use tokio::sync::{mpsc, watch};

const ANSWER: &str =
    "v=0\r\no=dialbridge 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n";

/// CPU time (user + system) of this thread, from /proc.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the state field.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let rate: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let calls: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listen: Vec<SipListen> = vec!["udp:127.0.0.1:0".parse().expect("listen")];
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (_shutdown, shutdown_rx) = watch::channel(false);
        let handle = sip::start(&listen, events_tx, shutdown_rx)
            .await
            .expect("SIP runtime");
        let addr = handle.local_addrs[0].1;
        let answering = handle.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let UaEvent::IncomingCall { call, .. } = event {
                    let _ = answering
                        .respond(call, Reply::new(200, "OK").with_body(Some(Body::sdp(ANSWER.as_bytes().to_vec()))))
                        .await;
                }
            }
        });

        let dir = tempfile::tempdir().expect("tempdir");
        let cpu_before = thread_cpu();
        let started = Instant::now();
        let mut sipp = tokio::process::Command::from({
            let mut c = Command::new("sipp");
            c.args(["-sn", "uac", &addr.to_string()])
                .args(["-i", "127.0.0.1", "-p", "0", "-t", "u1"])
                .args(["-r", &rate.to_string(), "-m", &calls.to_string()])
                .args(["-l", "5000", "-d", "0", "-nostdin", "-timeout", "300s"])
                .args(["-trace_stat", "-fd", "1", "-stf", "stats.csv"])
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c
        })
        .spawn()
        .expect("sipp (apt-get install sip-tester)");
        let status = sipp.wait().await.expect("sipp ran");
        let elapsed = started.elapsed();
        let cpu = thread_cpu().saturating_sub(cpu_before);

        let stats = std::fs::read_to_string(dir.path().join("stats.csv")).unwrap_or_default();
        let last = stats.lines().last().unwrap_or_default();
        let header: Vec<&str> = stats.lines().next().unwrap_or_default().split(';').collect();
        let values: Vec<&str> = last.split(';').collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .and_then(|i| values.get(i))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let ok = column("SuccessfulCall(C)");
        let failed = column("FailedCall(C)");
        let retrans = column("Retransmissions(C)");
        println!("sip_calls: rate {rate}/s offered, {calls} calls, sipp exit {status}");
        println!(
            "sip_calls: {ok} completed, {failed} failed, {retrans} retransmissions, in {:.2} s = {:.0} calls/s",
            elapsed.as_secs_f64(),
            ok as f64 / elapsed.as_secs_f64()
        );
        println!(
            "sip_calls: runtime thread CPU {:.2} s = {:.1} us per call, {:.0}% of one core",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / ok.max(1) as f64,
            100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64()
        );
    });
}
