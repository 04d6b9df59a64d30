//! A TCP relay on loopback between a browser and the gateway that the test can cut: every
//! connection through it is dropped, and new ones are refused, until it is restored. What a
//! lost network looks like to the page's HTTP (its media, on UDP, does not pass here).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Relay {
    /// `http://127.0.0.1:PORT` of the relay.
    pub base: String,
    cut: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// A relay to the HTTP server at `target` (`http://127.0.0.1:PORT`).
    pub async fn start(target: &str) -> Relay {
        let target: SocketAddr = target
            .trim_start_matches("http://")
            .parse()
            .expect("target address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay");
        let base = format!("http://{}", listener.local_addr().expect("relay address"));
        let (cut, watching) = watch::channel(false);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *watching.borrow() {
                    continue;
                }
                let mut cut = watching.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay { base, cut, accept }
    }

    /// Drops every connection and refuses new ones (`true`), or lets them through again.
    pub fn cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
