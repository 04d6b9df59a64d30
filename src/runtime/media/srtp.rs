//! SRTP and SRTCP of a phone leg (RFC 3711) with the SDES keys its SDP agreed (RFC 4568): the
//! transform is webrtc-rs's; the leg protects what it sends and checks what it receives.

use std::net::SocketAddr;

use dialbridge_sip::sdp::{CryptoSuite, SrtpKeys};
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

use super::types::MediaId;

/// Master key length of AES_CM_128; the salt follows it in an `inline:` key.
const KEY_LEN: usize = 16;

pub(super) struct Srtp {
    keys: SrtpKeys,
    /// Sending and receiving; none when the library refused the keys (nothing then goes out in
    /// the clear: every packet is dropped).
    contexts: Option<(Context, Context)>,
    /// Packets refused since the leg started: the first one is logged as a warning.
    refused: u64,
}

fn context(suite: CryptoSuite, key_salt: &[u8]) -> Result<Context, String> {
    let profile = match suite {
        CryptoSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        CryptoSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
    };
    let (key, salt) = key_salt.split_at(KEY_LEN);
    Context::new(key, salt, profile, None, None).map_err(|e| e.to_string())
}

impl Srtp {
    /// The transform for `keys`, or none for plain RTP; keys the library refuses are logged and
    /// the leg stays silent rather than sending in the clear.
    pub(super) fn for_keys(id: MediaId, keys: Option<SrtpKeys>) -> Option<Srtp> {
        let keys = keys?;
        let contexts = context(keys.suite, &keys.local)
            .and_then(|send| Ok((send, context(keys.suite, &keys.remote)?)))
            .map_err(|e| tracing::warn!(media = %id, error = %e, "SRTP keys unusable: the leg stays silent"))
            .ok();
        Some(Srtp {
            keys,
            contexts,
            refused: 0,
        })
    }

    pub(super) fn keys(&self) -> SrtpKeys {
        self.keys
    }

    /// The packet to send, encrypted and authenticated.
    pub(super) fn protect(&mut self, id: MediaId, rtcp: bool, packet: &[u8]) -> Option<Vec<u8>> {
        let (send, _) = self.contexts.as_mut()?;
        let sealed = if rtcp {
            send.encrypt_rtcp(packet)
        } else {
            send.encrypt_rtp(packet)
        };
        match sealed {
            Ok(bytes) => Some(bytes.to_vec()),
            Err(e) => {
                tracing::debug!(media = %id, error = %e, "SRTP: packet not protected");
                None
            }
        }
    }

    /// The received packet in the clear, or none when it fails authentication (a wrong key, a
    /// replay, or not SRTP at all).
    pub(super) fn unprotect(
        &mut self,
        id: MediaId,
        from: SocketAddr,
        rtcp: bool,
        packet: &[u8],
    ) -> Option<Vec<u8>> {
        let (_, receive) = self.contexts.as_mut()?;
        let opened = if rtcp {
            receive.decrypt_rtcp(packet)
        } else {
            receive.decrypt_rtp(packet)
        };
        match opened {
            Ok(bytes) => Some(bytes.to_vec()),
            Err(e) => {
                self.refused += 1;
                if self.refused == 1 {
                    tracing::warn!(media = %id, %from, error = %e, "SRTP packet refused: authentication failed (wrong key?)");
                } else {
                    tracing::debug!(media = %id, %from, error = %e, refused = self.refused, "SRTP packet refused");
                }
                None
            }
        }
    }
}
