//! A push message for one device, as every transport (Web Push, APNs, FCM) takes it.

use std::time::Duration;

/// One message for one device.
#[derive(Debug, Clone)]
pub struct Message {
    pub body: Vec<u8>,
    /// Replaces an undelivered message of the same topic (a cancel replaces its ring).
    pub topic: Option<String>,
    /// How long the push service keeps it for an offline device.
    pub ttl: Duration,
    /// A call's ring (a VoIP push where the device takes them), rather than its end.
    pub ring: bool,
    /// The title of an alert push.
    pub title: String,
}
