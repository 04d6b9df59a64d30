//! The HTTP server: hyper's HTTP/1.1 connections over the API router, with what a server facing
//! untrusted clients needs and `axum::serve` lacks: timeouts for headers, bodies and idle
//! keep-alive connections, and caps on concurrent connections, in all and per source address.
//!
//! A cap never locks new work out while connections merely sit there: when it is reached, the
//! connection that has been idle longest (no request in progress) is closed to make room. Only
//! when every connection is busy is a newcomer refused, with a 503.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::ocs::OcsError;
use crate::config::HttpConfig;
use crate::ratelimit::source_key;
use crate::sync::lock;

/// The server's limits, from `[http]` and the process's open-file limit.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
}

impl HttpLimits {
    /// At most half of `open_files` go to HTTP connections: the rest stays for SIP, media
    /// sockets and the store, so a flood of connections cannot starve calls.
    pub fn new(config: &HttpConfig, open_files: Option<u64>) -> HttpLimits {
        let configured = config.max_connections.get() as usize;
        let max_connections = match open_files {
            Some(files) => configured.min(usize::try_from(files / 2).unwrap_or(usize::MAX).max(1)),
            None => configured,
        };
        if max_connections < configured {
            tracing::warn!(
                configured,
                max_connections,
                open_files,
                "http.max_connections lowered to half the open-file limit"
            );
        }
        HttpLimits {
            header_timeout: config.header_timeout.0,
            body_timeout: config.body_timeout.0,
            idle_timeout: config.idle_timeout.0,
            max_connections,
            max_connections_per_source: (config.max_connections_per_source.get() as usize)
                .min(max_connections),
        }
    }
}

/// Raises the soft open-file limit to the hard one (many systems start services at 1,024) and
/// returns the limit in force.
#[cfg(unix)]
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(not(unix))]
pub fn raise_open_file_limit() -> Option<u64> {
    None
}

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let server = Arc::new(Server {
        limits,
        router,
        table: Mutex::new(Table::default()),
        epoch: Instant::now(),
        sockets: AtomicUsize::new(0),
        socket_closed: Notify::new(),
    });
    tracing::info!(
        max_connections = server.limits.max_connections,
        max_connections_per_source = server.limits.max_connections_per_source,
        header_timeout = ?server.limits.header_timeout,
        body_timeout = ?server.limits.body_timeout,
        idle_timeout = ?server.limits.idle_timeout,
        "HTTP limits"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Evicted connections close in their own tasks: do not outrun them, or the sockets
        // awaiting their close could exhaust the descriptors the cap is there to keep.
        while server.sockets.load(Ordering::Relaxed) >= server.limits.max_connections + SOCKET_SLACK
        {
            let _ =
                tokio::time::timeout(Duration::from_millis(50), server.socket_closed.notified())
                    .await;
        }
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: wait, do not spin.
                    metrics::counter!("dialbridge_http_accept_errors_total").increment(1);
                    tracing::warn!(error = %e, "accept error");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
            Some(_) = connections.join_next() => continue,
        };
        let socket = Socket::open(server.clone());
        match server.admit(remote.ip()) {
            Some(conn) => {
                let server = server.clone();
                let stop = stop_rx.clone();
                connections.spawn(async move {
                    server.run(stream, remote, conn, stop).await;
                    drop(socket);
                });
            }
            None => {
                metrics::counter!("dialbridge_http_connections_refused_total").increment(1);
                tracing::warn!(%remote, "HTTP connection refused: every connection slot is busy");
                connections.spawn(async move {
                    refuse(stream).await;
                    drop(socket);
                });
            }
        }
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

/// Answers 503 on a connection there is no room for, then closes it.
async fn refuse(mut stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
}

/// Sockets that may be open beyond `max_connections` at once: evicted ones about to close, and
/// newcomers being refused.
const SOCKET_SLACK: usize = 16;

struct Server {
    limits: HttpLimits,
    router: Router,
    table: Mutex<Table>,
    epoch: Instant,
    /// Accepted sockets not closed yet, whether in the table or on their way out.
    sockets: AtomicUsize,
    socket_closed: Notify,
}

/// An accepted socket, counted until its task ends (when the socket is closed too).
struct Socket(Arc<Server>);

impl Socket {
    fn open(server: Arc<Server>) -> Socket {
        server.sockets.fetch_add(1, Ordering::Relaxed);
        Socket(server)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.0.sockets.fetch_sub(1, Ordering::Relaxed);
        self.0.socket_closed.notify_one();
    }
}

/// The open connections, for the caps.
#[derive(Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Open>,
    per_source: HashMap<IpAddr, usize>,
}

struct Open {
    source: IpAddr,
    activity: Arc<Activity>,
    evict: Arc<Notify>,
}

/// A connection's place in the table; leaving it (drop) frees the slot.
struct Slot {
    id: u64,
    activity: Arc<Activity>,
    evict: Arc<Notify>,
}

impl Table {
    fn remove(&mut self, id: u64) {
        if let Some(open) = self.open.remove(&id) {
            if let Some(count) = self.per_source.get_mut(&open.source) {
                *count -= 1;
                if *count == 0 {
                    self.per_source.remove(&open.source);
                }
            }
        }
    }

    /// Closes the connection idle longest among those `eligible` picks; false if all are busy.
    fn evict_idlest(&mut self, eligible: impl Fn(&Open) -> bool) -> bool {
        let idlest = self
            .open
            .iter()
            .filter(|(_, o)| eligible(o) && o.activity.in_flight.load(Ordering::Relaxed) == 0)
            .min_by_key(|(_, o)| o.activity.idle_since.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        let Some(id) = idlest else {
            return false;
        };
        if let Some(open) = self.open.get(&id) {
            open.evict.notify_one();
        }
        self.remove(id);
        metrics::counter!("dialbridge_http_connections_closed_total", "reason" => "evicted")
            .increment(1);
        true
    }
}

impl Server {
    fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A slot for a new connection from `ip`, making room by closing idle connections if need be.
    fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let source = source_key(ip);
        let mut table = self.table();
        let from_source = table.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.limits.max_connections_per_source
            && !table.evict_idlest(|o| o.source == source)
        {
            return None;
        }
        if table.open.len() >= self.limits.max_connections && !table.evict_idlest(|_| true) {
            return None;
        }
        table.next_id += 1;
        let id = table.next_id;
        let activity = Arc::new(Activity::new(self.now_ms()));
        let evict = Arc::new(Notify::new());
        table.open.insert(
            id,
            Open {
                source,
                activity: activity.clone(),
                evict: evict.clone(),
            },
        );
        *table.per_source.entry(source).or_default() += 1;
        metrics::gauge!("dialbridge_http_connections").set(table.open.len() as f64);
        Some(Slot {
            id,
            activity,
            evict,
        })
    }

    async fn run(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        slot: Slot,
        mut stop: watch::Receiver<bool>,
    ) {
        let activity = slot.activity.clone();
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
            epoch: self.epoch,
        });
        let server = self.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let server = server.clone();
            let activity = activity.clone();
            async move { server.handle(request, remote, activity).await }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // Our own header timeout (below) tells a slow request from an idle keep-alive connection.
        builder.timer(TokioTimer::new()).header_read_timeout(None);
        let mut conn = pin!(builder.serve_connection(io, service));
        let closed_because = loop {
            let wait = self.deadline(&slot.activity);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
                    }
                    break None;
                }
                _ = slot.evict.notified() => break Some("evicted"),
                _ = tokio::time::sleep_until(wait.at) => {
                    // The connection may have moved on since; only its current wait counts.
                    let now = self.deadline(&slot.activity);
                    if let Some(why) = now.expires.filter(|_| now.at <= Instant::now()) {
                        break Some(why);
                    }
                }
                _ = async { stop.wait_for(|stop| *stop).await.map(|_| ()) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                    break None;
                }
            }
        };
        if let Some(why) = closed_because {
            tracing::debug!(%remote, why, "HTTP connection closed");
            if why != "evicted" {
                metrics::counter!("dialbridge_http_connections_closed_total", "reason" => why)
                    .increment(1);
            }
        }
        let mut table = self.table();
        table.remove(slot.id);
        metrics::gauge!("dialbridge_http_connections").set(table.open.len() as f64);
    }

    /// When the connection's current wait runs out, and what it is called then.
    fn deadline(&self, activity: &Activity) -> Wait {
        let at = |ms: u64, limit: Duration| self.epoch + Duration::from_millis(ms) + limit;
        if activity.in_flight.load(Ordering::Relaxed) > 0 {
            // Bodies have their own deadline; a streamed response may last as long as it likes.
            return Wait {
                at: Instant::now() + self.limits.idle_timeout,
                expires: None,
            };
        }
        let first_byte = activity.first_byte.load(Ordering::Relaxed);
        let idle_since = activity.idle_since.load(Ordering::Relaxed);
        if first_byte != 0 {
            Wait {
                at: at(first_byte, self.limits.header_timeout),
                expires: Some("header-timeout"),
            }
        } else if activity.requests.load(Ordering::Relaxed) == 0 {
            Wait {
                at: at(idle_since, self.limits.header_timeout),
                expires: Some("header-timeout"),
            }
        } else {
            Wait {
                at: at(idle_since, self.limits.idle_timeout),
                expires: Some("idle-timeout"),
            }
        }
    }

    async fn handle(
        &self,
        request: Request<Incoming>,
        remote: SocketAddr,
        activity: Arc<Activity>,
    ) -> Result<Response<Body>, std::convert::Infallible> {
        let in_flight = InFlight::start(activity.clone(), self.epoch);
        let body_timed_out = Arc::new(AtomicBool::new(false));
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(remote));
        let body = Deadline {
            inner: body,
            sleep: Box::pin(tokio::time::sleep(self.limits.body_timeout)),
            timed_out: body_timed_out.clone(),
        };
        let request = Request::from_parts(parts, Body::new(body));
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let response = if body_timed_out.load(Ordering::Relaxed) {
            metrics::counter!("dialbridge_http_connections_closed_total", "reason" => "body-timeout")
                .increment(1);
            let mut response = OcsError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request body did not arrive in time",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        } else {
            response
        };
        // The request counts as in progress until its response body is sent or dropped.
        Ok(response.map(|body| {
            Body::new(body.map_frame(move |frame| {
                let _in_flight = &in_flight;
                frame
            }))
        }))
    }
}

struct Wait {
    at: Instant,
    /// What the connection is closed for when `at` passes; `None`: look again then.
    expires: Option<&'static str>,
}

/// What the timeouts and the eviction look at, in milliseconds since the server's start.
struct Activity {
    in_flight: AtomicUsize,
    /// When the connection was accepted, or its last response finished.
    idle_since: AtomicU64,
    /// When the first byte after `idle_since` arrived (the next request's start); 0 if none yet.
    first_byte: AtomicU64,
    requests: AtomicU64,
}

impl Activity {
    fn new(now_ms: u64) -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now_ms),
            first_byte: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }
}

/// A request in progress on its connection.
struct InFlight {
    activity: Arc<Activity>,
    epoch: Instant,
}

impl InFlight {
    fn start(activity: Arc<Activity>, epoch: Instant) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.requests.fetch_add(1, Ordering::Relaxed);
        activity.first_byte.store(0, Ordering::Relaxed);
        InFlight { activity, epoch }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.idle_since.store(now, Ordering::Relaxed);
        self.activity.first_byte.store(0, Ordering::Relaxed);
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The socket, noting when a new request's first byte arrives.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
    epoch: Instant,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before
            && self.activity.in_flight.load(Ordering::Relaxed) == 0
            && self.activity.first_byte.load(Ordering::Relaxed) == 0
        {
            let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            // 0 means "none yet", so a byte in the server's first millisecond counts as 1.
            self.activity
                .first_byte
                .store(now.max(1), Ordering::Relaxed);
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that must arrive in full before its deadline.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<Sleep>>,
    timed_out: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimeout;

impl hyper::body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
