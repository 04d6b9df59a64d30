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
