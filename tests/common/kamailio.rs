//! Kamailio as the softswitch of the tests: started in the foreground on 127.0.0.1 with
//! tests/kamailio/kamailio.cfg (registrar with digest auth, contacts in memory, a proxy to the
//! registered contacts and to one SIPp phone), on a free port over UDP and TCP (and TLS on the
//! port above it, with the test PKI's certificate), and stopped (SIGTERM, so that its child
//! processes go too) when dropped.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::pki::Pki;
use super::ports::sipp_ports;

/// The digest realm of the configuration.
pub const REALM: &str = "kamailio.test";
/// A user of its table, with its password.
pub const GATEWAY_USER: &str = "gateway";
pub const GATEWAY_PASSWORD: &str = "gateway-secret";
/// Another user of its table (a phone), with its password.
pub const ALICE: &str = "alice";
pub const ALICE_PASSWORD: &str = "alice-secret";
/// A user whose REGISTER is always answered 403.
pub const BLOCKED_USER: &str = "blocked";

pub struct Kamailio {
    child: Option<Child>,
    /// SIP over UDP and TCP.
    pub port: u16,
    /// SIP over TLS, when started with a certificate.
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
}

impl Kamailio {
    /// Starts Kamailio; calls that reach no registered user go to `phone` (a SIPp UAS), or
    /// get 404 without one. Returns once it answers an OPTIONS.
    pub async fn start(phone: Option<SocketAddr>) -> Kamailio {
        Kamailio::start_on(sipp_ports().sip, phone).await
    }

    /// [`Kamailio::start`] on `port` (from [`sipp_ports`]), for a gateway told of it before.
    pub async fn start_on(port: u16, phone: Option<SocketAddr>) -> Kamailio {
        Kamailio::launch(port, phone, None).await
    }

    /// [`Kamailio::start`] that serves TLS too (on the port above the UDP/TCP one), with `pki`'s
    /// certificate; it does not check the certificates of the peers it connects to.
    pub async fn start_tls(phone: Option<SocketAddr>, pki: &Pki) -> Kamailio {
        Kamailio::launch(sipp_ports().sip, phone, Some(pki)).await
    }

    async fn launch(port: u16, phone: Option<SocketAddr>, pki: Option<&Pki>) -> Kamailio {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg: PathBuf = [
            env!("CARGO_MANIFEST_DIR"),
            "tests",
            "kamailio",
            "kamailio.cfg",
        ]
        .iter()
        .collect();
        let log = std::fs::File::create(dir.path().join("kamailio.log")).expect("log file");
        let ctl = format!("CTL=\"unix:{}\"", dir.path().join("ctl").display());
        let mut command = Command::new("kamailio");
        command
            .arg("-f")
            .arg(&cfg)
            // Foreground, logging to stderr; small memory, as one test needs little.
            .args(["-DD", "-E", "-m", "32", "-M", "8"])
            .args(["-l", &format!("udp:127.0.0.1:{port}")])
            .args(["-l", &format!("tcp:127.0.0.1:{port}")])
            .arg("-Y")
            .arg(dir.path())
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"))
            .args(["-A", &ctl]);
        if let Some(phone) = phone {
            command.args(["-A", &format!("PHONE=\"sip:{phone}\"")]);
        }
        let tls_port = pki.map(|pki| {
            let tls_cfg = dir.path().join("tls.cfg");
            let server = format!(
                "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\ncertificate = {}\nprivate_key = {}\n\n[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n",
                pki.certificate().display(),
                pki.private_key().display()
            );
            std::fs::write(&tls_cfg, server).expect("write tls.cfg");
            command
                .args(["-l", &format!("tls:127.0.0.1:{}", port + 1)])
                .args(["-A", &format!("TLS_CFG=\"{}\"", tls_cfg.display())]);
            port + 1
        });
        let child = command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kamailio must be installed (scripts/setup installs it)");
        let kamailio = Kamailio {
            child: Some(child),
            port,
            tls_port,
            dir,
        };
        kamailio.wait_ready().await;
        kamailio
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The port of `transport` ("udp", "tcp" or "tls").
    pub fn port_of(&self, transport: &str) -> u16 {
        match transport {
            "tls" => self.tls_port.expect("kamailio started with TLS"),
            _ => self.port,
        }
    }

    async fn wait_ready(&self) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("udp");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let local = socket.local_addr().expect("local");
        let mut buf = [0u8; 4096];
        for i in 0..200 {
            let options = format!(
                "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKready{i}\r\nMax-Forwards: 70\r\nFrom: <sip:test@127.0.0.1>;tag=ready\r\nTo: <sip:127.0.0.1:{port}>\r\nCall-ID: ready-{i}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                port = self.port
            );
            let _ = socket.send_to(options.as_bytes(), self.addr());
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                if buf[..n].starts_with(b"SIP/2.0 200") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("kamailio did not start:\n{}", self.log());
    }

    /// Everything Kamailio logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }

    /// The lines of the configuration's own log, in order: "recv METHOD URI from ..." for each
    /// request, "registered USER contact=...", "forbidden REGISTER of USER", "METHOD from USER
    /// authenticated".
    pub fn lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("kamailio: ").map(|(_, r)| r.to_string()))
            .collect()
    }

    /// The registrar's contacts of `user` (`kamcmd ul.lookup`): empty when it has none.
    pub fn contacts(&self, user: &str) -> String {
        let output = Command::new("kamcmd")
            .arg("-s")
            .arg(format!("unix:{}", self.dir.path().join("ctl").display()))
            .args(["ul.lookup", "location", user])
            .output()
            .expect("kamcmd");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if text.contains("Contact:") {
            text
        } else {
            String::new()
        }
    }

    /// Stops Kamailio and its children; returns once the main process is gone.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
    }
}
