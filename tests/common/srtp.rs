//! The test phone's own SRTP (RFC 3711, AES_CM_128 with HMAC-SHA1), written from the RFC on
//! the AES and HMAC primitives alone, so that what the gateway encrypts is checked by another
//! implementation than its own (webrtc-srtp). Keys come as SDES `inline:` key||salt.

#![allow(dead_code)]

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha1::Sha1;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// The keystream of AES in counter mode from `iv`.
fn keystream(key: &[u8], iv: [u8; 16], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut cipher = Aes128Ctr::new(key.into(), &iv.into());
    cipher.apply_keystream(&mut out);
    out
}

/// RFC 3711 section 4.3.1 with a key derivation rate of 0.
pub fn derive(master_key: &[u8; 16], master_salt: &[u8; 14], label: u8, len: usize) -> Vec<u8> {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(master_salt);
    iv[7] ^= label;
    keystream(master_key, iv, len)
}

/// One direction of SRTP for one SSRC.
pub struct SrtpStream {
    key: Vec<u8>,
    salt: Vec<u8>,
    auth: Vec<u8>,
    tag_len: usize,
    roc: u32,
    /// Highest sequence number seen (receiving) or sent.
    last: Option<u16>,
}

fn header_len(packet: &[u8]) -> Option<usize> {
    let first = *packet.first()?;
    let mut len = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = u16::from_be_bytes([*packet.get(len + 2)?, *packet.get(len + 3)?]);
        len += 4 + 4 * usize::from(words);
    }
    (packet.len() >= len).then_some(len)
}

impl SrtpStream {
    /// From an `inline:` key||salt; `tag_len` 10 (`_80`) or 4 (`_32`).
    pub fn new(key_salt: &[u8; 30], tag_len: usize) -> SrtpStream {
        let mut master_key = [0u8; 16];
        let mut master_salt = [0u8; 14];
        master_key.copy_from_slice(&key_salt[..16]);
        master_salt.copy_from_slice(&key_salt[16..]);
        SrtpStream {
            key: derive(&master_key, &master_salt, 0, 16),
            auth: derive(&master_key, &master_salt, 1, 20),
            salt: derive(&master_key, &master_salt, 2, 14),
            tag_len,
            roc: 0,
            last: None,
        }
    }

    fn crypt(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        for (i, b) in ssrc.to_be_bytes().iter().enumerate() {
            iv[4 + i] ^= b;
        }
        for (i, b) in index.to_be_bytes()[2..].iter().enumerate() {
            iv[8 + i] ^= b;
        }
        let stream = keystream(&self.key, iv, data.len());
        for (d, k) in data.iter_mut().zip(stream) {
            *d ^= k;
        }
    }

    fn tag(&self, authenticated: &[u8], roc: u32) -> Vec<u8> {
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(&self.auth).expect("any key length");
        mac.update(authenticated);
        mac.update(&roc.to_be_bytes());
        mac.finalize().into_bytes()[..self.tag_len].to_vec()
    }

    /// An RTP packet made SRTP.
    pub fn protect(&mut self, packet: &[u8]) -> Vec<u8> {
        let header = header_len(packet).expect("an RTP packet");
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
        if self
            .last
            .is_some_and(|last| seq < last && last - seq > 0x8000)
        {
            self.roc = self.roc.wrapping_add(1);
        }
        self.last = Some(seq);
        let index = (u64::from(self.roc) << 16) | u64::from(seq);
        let mut out = packet.to_vec();
        self.crypt(ssrc, index, &mut out[header..]);
        let tag = self.tag(&out, self.roc);
        out.extend_from_slice(&tag);
        out
    }

    /// An SRTP packet in the clear, or `None` when its tag is wrong.
    pub fn unprotect(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        let body = packet.len().checked_sub(self.tag_len)?;
        let (sealed, tag) = packet.split_at(body);
        let header = header_len(sealed)?;
        let seq = u16::from_be_bytes([sealed[2], sealed[3]]);
        let ssrc = u32::from_be_bytes([sealed[8], sealed[9], sealed[10], sealed[11]]);
        // RFC 3711 appendix A: the rollover counter this packet most likely belongs to.
        let roc = match self.last {
            None => self.roc,
            Some(last) if last < 0x8000 => {
                if seq > last && seq - last > 0x8000 {
                    self.roc.wrapping_sub(1)
                } else {
                    self.roc
                }
            }
            Some(last) => {
                if last - 0x8000 > seq {
                    self.roc.wrapping_add(1)
                } else {
                    self.roc
                }
            }
        };
        if self.tag(sealed, roc) != tag {
            return None;
        }
        let newer = match self.last {
            None => true,
            Some(last) => roc == self.roc.wrapping_add(1) || (roc == self.roc && seq > last),
        };
        if newer {
            self.roc = roc;
            self.last = Some(seq);
        }
        let index = (u64::from(roc) << 16) | u64::from(seq);
        let mut out = sealed.to_vec();
        self.crypt(ssrc, index, &mut out[header..]);
        Some(out)
    }
}

/// The SDES key||salt in an SDP body's first `a=crypto` line.
pub fn inline_key(sdp: &str) -> Option<[u8; 30]> {
    use base64::Engine;
    let line = sdp.lines().find(|l| l.starts_with("a=crypto:"))?;
    let b64 = line
        .split("inline:")
        .nth(1)?
        .split(['|', ' ', '\r'])
        .next()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    bytes.try_into().ok()
}
