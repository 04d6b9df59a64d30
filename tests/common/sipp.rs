//! SIPp as a peer of the tests: one process per scenario of tests/sipp/, on loopback, with its
//! SIP and media ports from `ports`, its message trace kept in a directory of its own.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::ports::{sipp_ports, Tp};

pub struct Sipp {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Sipp {
    /// SIPp as the UAS (the phone behind a trunk), running `scenario` for one call; over TCP
    /// it returns once SIPp listens.
    pub async fn uas(scenario: &str, tp: Tp, extra: &[&str]) -> Sipp {
        let sipp = Sipp::spawn(scenario, tp, &[], extra);
        if tp == Tp::Tcp {
            for _ in 0..200 {
                if tokio::net::TcpStream::connect(("127.0.0.1", sipp.port))
                    .await
                    .is_ok()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        sipp
    }

    /// SIPp as the UAC (a trunk): runs `scenario` for one call to `number` at `target`. `ua` is
    /// the User-Agent (`[ua]` in scenarios).
    pub fn uac(
        target: SocketAddr,
        scenario: &str,
        tp: Tp,
        number: &str,
        ua: &str,
        extra: &[&str],
    ) -> Sipp {
        let auth_uri = format!("{number}@{target}");
        let role = [
            &target.to_string(),
            "-s",
            number,
            "-key",
            "ua",
            ua,
            // SIPp's digest names the host alone unless told the Request-URI.
            "-auth_uri",
            &auth_uri,
        ];
        Sipp::spawn(scenario, tp, &role, extra)
    }

    fn spawn(scenario: &str, tp: Tp, role: &[&str], extra: &[&str]) -> Sipp {
        let ports = sipp_ports();
        let dir = tempfile::tempdir().expect("tempdir");
        let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "sipp", scenario]
            .iter()
            .collect();
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(&path)
            .args(role)
            .args(["-i", "127.0.0.1", "-p", &ports.sip.to_string(), "-m", "1"])
            .args(["-t", if tp == Tp::Tcp { "t1" } else { "u1" }])
            .args(["-timeout", "60s", "-nostdin", "-trace_msg", "-trace_err"])
            .args(["-mi", "127.0.0.1", "-mp", &ports.media.to_string()])
            .args(extra)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp must be installed (scripts/setup installs sip-tester)");
        Sipp {
            child,
            port: ports.sip,
            dir,
        }
    }

    /// A phone (SIPp as the UAS, running `scenario`) with a 3PCC twin (`-3pcc`) that places
    /// the calls SIPp cannot place inside the phone's own scenario (one Call-ID each): the twin
    /// runs `twin_scenario`, which starts with `recvCmd`, sends its SIP to `target`, and
    /// listens on the twin socket that the phone's scenario (whose first command is a
    /// `sendCmd`) connects to. Returns the phone and the twin.
    pub async fn uas_with_twin(
        scenario: &str,
        twin_scenario: &str,
        target: SocketAddr,
        extra: &[&str],
    ) -> (Sipp, Sipp) {
        let twin_port = sipp_ports().sip;
        let twin_socket = format!("127.0.0.1:{twin_port}");
        let twin = Sipp::spawn(
            twin_scenario,
            Tp::Udp,
            &[&target.to_string()],
            &["-3pcc", &twin_socket],
        );
        // The phone connects once, at its start: the twin must listen by then. A probe
        // connection would be taken for the phone, so the listening socket is looked up.
        for _ in 0..200 {
            if tcp_listening(twin_port) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let phone_args: Vec<&str> = extra
            .iter()
            .copied()
            .chain(["-3pcc", twin_socket.as_str()])
            .collect();
        let phone = Sipp::uas(scenario, Tp::Udp, &phone_args).await;
        (phone, twin)
    }

    /// A placeholder for a SIPp already handed to `finish`.
    pub fn dummy() -> Sipp {
        Sipp {
            child: Command::new("true").spawn().expect("true"),
            port: 0,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The messages SIPp sent and received so far.
    pub fn trace(&self) -> String {
        let mut trace = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for entry in entries.flatten() {
                trace.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        trace
    }

    /// Waits for SIPp to finish; returns whether every step of its scenario succeeded, and its
    /// message trace.
    pub async fn finish(mut self) -> (bool, String) {
        let mut success = None;
        for _ in 0..1200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                success = Some(status.success());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if success.is_none() {
            let _ = self.child.kill();
        }
        (success == Some(true), self.trace())
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The messages SIPp received, as its trace shows them.
pub fn received(trace: &str) -> Vec<&str> {
    trace
        .split("----------------------------------------------- ")
        .filter_map(|entry| {
            let (head, message) = entry.split_once("\n\n")?;
            head.contains("message received").then_some(message)
        })
        .collect()
}

/// The first request of `method` SIPp received; fails the test, showing the trace, when none came.
pub fn received_request<'a>(trace: &'a str, method: &str) -> &'a str {
    let start = format!("{method} ");
    received(trace)
        .into_iter()
        .find(|m| m.starts_with(&start))
        .unwrap_or_else(|| panic!("no {method} reached SIPp:\n{trace}"))
}

/// The NOTIFYs SIPp received, their sipfrag status lines in order.
pub fn notified_status_lines(trace: &str) -> Vec<String> {
    received(trace)
        .into_iter()
        .filter(|m| m.starts_with("NOTIFY "))
        .filter_map(|m| {
            let (_, body) = m.split_once("\r\n\r\n").or_else(|| m.split_once("\n\n"))?;
            body.lines().next().map(|l| l.trim().to_string())
        })
        .collect()
}

/// Whether a socket listens on TCP port `port` (from /proc/net/tcp: a local address ending
/// in `:PORT` in hex, state `0A`; SIPp binds its twin socket on every address).
fn tcp_listening(port: u16) -> bool {
    let suffix = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(1).is_some_and(|a| a.ends_with(&suffix)) && fields.get(3) == Some(&"0A")
        })
}
