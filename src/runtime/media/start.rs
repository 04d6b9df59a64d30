//! Starting the engine: the WebRTC socket, the reader thread and the media threads.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use dialbridge_bridge::opus_codec::OpusConfig;
use dialbridge_bridge::webrtc::WebRtcLegConfig;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::command::Command;
use super::demux;
use super::handle::MediaHandle;
use super::reader::{Datagram, Reader};
use super::registry::{Registry, SharedRegistry};
use super::room::MIX_RATE;
use super::shard::{Shard, ShardParts, Totals};
use crate::config::MediaConfig;
use crate::events::EventBus;

/// Datagram buffers per shard: the reader's pool and the depth of each shard's queue.
const BUFFERS_PER_SHARD: usize = 256;

/// Binds the WebRTC socket and starts the reader and media threads. Candidates announce
/// `public_ip` when set, else the listen IP, with the bound port.
/// Key presses on the legs are published as room events on `events`.
pub fn start(config: &MediaConfig, events: Arc<EventBus>) -> anyhow::Result<MediaHandle> {
    let socket = demux::bind_shared(config.webrtc_listen)
        .with_context(|| format!("cannot bind media.webrtc_listen = {}", config.webrtc_listen))?;
    let local_addr = socket.local_addr()?;
    let demux = demux::kernel_demuxes(local_addr.ip()).then_some(local_addr);
    let ip = config.public_ip.unwrap_or(local_addr.ip());
    let leg_config = leg_config(config, SocketAddr::new(ip, local_addr.port()));
    let announced = leg_config.candidate;
    let threads = config.media_threads();
    let registry: SharedRegistry = Arc::new(Mutex::new(Registry::new(threads)));
    let totals = Arc::new(Totals::default());
    let (routes, route_rx) = mpsc::unbounded_channel();
    let (pool_tx, pool_rx) = std::sync::mpsc::sync_channel(BUFFERS_PER_SHARD * threads);
    for _ in 0..BUFFERS_PER_SHARD * threads {
        let _ = pool_tx.try_send(Datagram::empty());
    }
    // Shards send on clones of the socket: the same non-blocking file, no lock.
    let sender = Arc::new(
        socket
            .try_clone()
            .context("cannot share the media socket")?,
    );
    let (shards, receivers): (Vec<_>, Vec<_>) =
        (0..threads).map(|_| mpsc::unbounded_channel()).unzip();
    let peers: Arc<[mpsc::WeakUnboundedSender<Command>]> =
        shards.iter().map(|s| s.downgrade()).collect();
    let mut inboxes = Vec::with_capacity(threads);
    for (index, receiver) in receivers.into_iter().enumerate() {
        let (inbox, datagrams) = mpsc::channel(BUFFERS_PER_SHARD);
        let parts = ShardParts {
            index,
            socket: sender.clone(),
            local: announced,
            demux,
            commands: receiver,
            datagrams,
            pool: pool_tx.clone(),
            routes: routes.clone(),
            registry: registry.clone(),
            totals: totals.clone(),
            events: events.clone(),
            peers: peers.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build a media runtime")?;
        std::thread::Builder::new()
            .name(format!("dialbridge-media-{index}"))
            .spawn(move || runtime.block_on(Shard::new(parts).run()))
            .context("cannot start a media thread")?;
        inboxes.push(inbox);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the media reader runtime")?;
    std::thread::Builder::new()
        .name("dialbridge-media-rx".into())
        .spawn(move || {
            runtime.block_on(async move {
                match UdpSocket::from_std(socket) {
                    Ok(socket) => {
                        Reader::new(socket, inboxes, pool_rx, pool_tx, route_rx)
                            .run()
                            .await
                    }
                    Err(e) => tracing::error!(error = %e, "media socket unusable"),
                }
            })
        })
        .context("cannot start the media reader thread")?;
    metrics::gauge!("dialbridge_media_threads").set(threads as f64);
    for index in 0..threads {
        metrics::gauge!("dialbridge_media_shard_legs", "shard" => index.to_string()).set(0.0);
    }
    tracing::info!(
        %local_addr,
        candidate = %leg_config.candidate,
        threads,
        peer_sockets = demux.is_some(),
        "WebRTC media listening"
    );
    Ok(MediaHandle {
        shards: shards.into(),
        registry,
        routes,
        leg_config,
        max_video_senders: config.max_video_senders,
        local_addr,
    })
}

/// WebRTC legs' settings: announced at `candidate`, encoding as `[media.opus]` says.
pub(super) fn leg_config(config: &MediaConfig, candidate: SocketAddr) -> WebRtcLegConfig {
    let mut leg = WebRtcLegConfig::new(candidate, MIX_RATE);
    let opus = &config.opus;
    leg.opus = OpusConfig {
        complexity: opus.complexity,
        bitrate: opus.bitrate,
        fec: opus.fec,
        expected_loss_percent: opus.expected_loss,
        dtx: opus.dtx,
        ..leg.opus
    };
    leg.direct_complexity = opus.phone_complexity;
    leg
}
