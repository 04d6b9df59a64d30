//! Sans-IO SIP protocol core. The service drives it from `src/runtime`; nothing here opens a socket,
//! spawns a task or reads a clock.
//!
//! Layers, bottom up: [`message`] (parse, serialize, typed headers, URIs), [`validate`] (what to do
//! with a received message: accept, answer 4xx/505, drop), [`transport`] (stream framing, Via
//! `received`/`rport`, response routing), [`endpoint`] (the four RFC 3261 transaction machines),
//! [`dialog`] and [`ua`] (calls: INVITE, CANCEL, BYE, ACK for 2xx, re-INVITE, OPTIONS, and the
//! digest retry of a challenged INVITE with [`auth`]; registrations at a registrar), and [`locate`]
//! (which DNS records name a server, and the order to try them in: RFC 3263).
//!
//! A driver owns the sockets and one timer and pumps a [`ua::UserAgent`] (or a bare
//! [`endpoint::Endpoint`]):
//! - each UDP datagram, or each [`transport::Frame::Message`] from a per-connection
//!   [`transport::StreamFramer`], goes to `handle_input(now, Incoming { .. })`; a
//!   [`transport::Frame::Ping`] is answered with [`transport::PONG`] on that connection;
//! - after every call, send everything `poll_transmit()` yields, hand `poll_event()` to the
//!   service, and sleep until `poll_timeout()`, then call `handle_timeout(now)`;
//! - a failed send is reported with `handle_transport_error(now, transport, destination, why)`.

pub mod auth;
pub mod dialog;
pub mod endpoint;
pub mod locate;
pub mod message;
pub mod sdp;
pub mod transport;
pub mod ua;
pub mod validate;
