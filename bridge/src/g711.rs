//! ITU-T G.711 PCMU (mu-law) and PCMA (A-law) at 8 kHz.
//!
//! Linear samples are 16-bit, left-justified as in ITU-T G.191: mu-law uses the top 14 bits,
//! A-law the top 13. Negative inputs use the one's complement magnitude like the G.191
//! reference, so `encode` matches that reference bit for bit. Decoding is a 256-entry table,
//! encoding a 16 KiB (mu-law) or 4 KiB (A-law) table, all built at compile time from the
//! segment arithmetic.

/// Which G.711 law a leg speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711 {
    /// mu-law, RTP static payload type 0.
    Pcmu,
    /// A-law, RTP static payload type 8.
    Pcma,
}

impl G711 {
    /// Static RTP payload type (RFC 3551).
    pub const fn payload_type(self) -> u8 {
        match self {
            G711::Pcmu => 0,
            G711::Pcma => 8,
        }
    }

    /// The law for a static RTP payload type, if it is one of the two.
    pub const fn from_payload_type(pt: u8) -> Option<G711> {
        match pt {
            0 => Some(G711::Pcmu),
            8 => Some(G711::Pcma),
            _ => None,
        }
    }

    /// Encodes one sample.
    #[inline]
    pub fn encode_sample(self, x: i16) -> u8 {
        match self {
            G711::Pcmu => ulaw_encode(x),
            G711::Pcma => alaw_encode(x),
        }
    }

    /// Decodes one code.
    #[inline]
    pub fn decode_sample(self, c: u8) -> i16 {
        match self {
            G711::Pcmu => ULAW_DECODE[c as usize],
            G711::Pcma => ALAW_DECODE[c as usize],
        }
    }

    /// Encodes `min(input.len(), output.len())` samples; returns how many.
    pub fn encode(self, input: &[i16], output: &mut [u8]) -> usize {
        let n = input.len().min(output.len());
        match self {
            G711::Pcmu => {
                for (o, &x) in output.iter_mut().zip(input) {
                    *o = ulaw_encode(x);
                }
            }
            G711::Pcma => {
                for (o, &x) in output.iter_mut().zip(input) {
                    *o = alaw_encode(x);
                }
            }
        }
        n
    }

    /// Decodes `min(input.len(), output.len())` codes; returns how many.
    pub fn decode(self, input: &[u8], output: &mut [i16]) -> usize {
        let table = match self {
            G711::Pcmu => &ULAW_DECODE,
            G711::Pcma => &ALAW_DECODE,
        };
        for (o, &c) in output.iter_mut().zip(input) {
            *o = table[c as usize];
        }
        input.len().min(output.len())
    }

    /// The code that decodes to silence (used to fill frames nobody sends).
    pub const fn silence(self) -> u8 {
        match self {
            G711::Pcmu => 0xFF,
            G711::Pcma => 0xD5,
        }
    }
}

/// mu-law code -> linear sample.
pub static ULAW_DECODE: [i16; 256] = ulaw_table();
/// A-law code -> linear sample.
pub static ALAW_DECODE: [i16; 256] = alaw_table();

const fn ulaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut c = 0;
    while c < 256 {
        let v = !(c as u8);
        let exp = ((v >> 4) & 7) as i32;
        let mant = (v & 0x0F) as i32;
        // Reconstruction level (2m + 33) * 2^e - 33 in 14-bit units, left-justified to 16 bits.
        let mag = (((2 * mant + 33) << exp) - 33) << 2;
        t[c] = if v & 0x80 != 0 {
            -mag as i16
        } else {
            mag as i16
        };
        c += 1;
    }
    t
}

const fn alaw_table() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut c = 0;
    while c < 256 {
        let v = (c as u8) ^ 0x55;
        let exp = ((v >> 4) & 7) as i32;
        let mant = (v & 0x0F) as i32;
        // Segment 0 and 1 share a step; from segment 2 on the step doubles, in 13-bit units.
        let mag = if exp == 0 {
            2 * mant + 1
        } else {
            (2 * mant + 33) << (exp - 1)
        } << 3;
        t[c] = if v & 0x80 != 0 {
            mag as i16
        } else {
            -mag as i16
        };
        c += 1;
    }
    t
}

/// mu-law code for every 14-bit input (the encoder looks only at the top 14 bits).
static ULAW_ENCODE: [u8; 1 << 14] = {
    let mut t = [0u8; 1 << 14];
    let mut i = 0;
    while i < 1 << 14 {
        t[i] = ulaw_compute(((i as u16) << 2) as i16);
        i += 1;
    }
    t
};

/// A-law code for every 12-bit input (the encoder looks only at the top 12 bits).
static ALAW_ENCODE: [u8; 1 << 12] = {
    let mut t = [0u8; 1 << 12];
    let mut i = 0;
    while i < 1 << 12 {
        t[i] = alaw_compute(((i as u16) << 4) as i16);
        i += 1;
    }
    t
};

const fn ulaw_compute(x: i16) -> u8 {
    let x = x as i32;
    let (mag, sign) = if x < 0 { (!x, 0x00u8) } else { (x, 0x80u8) };
    // Biased 14-bit magnitude, clipped to the top of segment 7.
    let mut biased = ((mag >> 2) + 33) as u32;
    if biased > 0x1FFF {
        biased = 0x1FFF;
    }
    let exp = 32 - (biased >> 6).leading_zeros();
    let mant = (biased >> (exp + 1)) & 0x0F;
    sign | ((7 - exp) << 4) as u8 | (15 - mant) as u8
}

const fn alaw_compute(x: i16) -> u8 {
    let x = x as i32;
    let (mag, sign) = if x < 0 { (!x, 0x00u8) } else { (x, 0x80u8) };
    let ix = (mag >> 4) as u32; // 12-bit magnitude, 0..=2047
    let code = if ix < 16 {
        ix
    } else {
        let exp = 32 - ix.leading_zeros() - 4; // 1..=7
        (exp << 4) | ((ix >> (exp - 1)) & 0x0F)
    };
    (sign | code as u8) ^ 0x55
}

/// Linear sample -> mu-law code. The code depends on the top 14 bits only (the one's
/// complement of a negative sample shifts like the sample), so one table lookup does it.
#[inline]
pub fn ulaw_encode(x: i16) -> u8 {
    ULAW_ENCODE[((x >> 2) as u16 & 0x3FFF) as usize]
}

/// Linear sample -> A-law code, from the top 12 bits by table.
#[inline]
pub fn alaw_encode(x: i16) -> u8 {
    ALAW_ENCODE[((x >> 4) as u16 & 0x0FFF) as usize]
}

/// mu-law code -> linear sample.
#[inline]
pub fn ulaw_decode(c: u8) -> i16 {
    ULAW_DECODE[c as usize]
}

/// A-law code -> linear sample.
#[inline]
pub fn alaw_decode(c: u8) -> i16 {
    ALAW_DECODE[c as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference decoders written from the G.711 segment definition in the style of the
    // ITU-T G.191 `ulaw_expand` / `alaw_expand`, independent of the table builders above.
    fn ref_ulaw_expand(y: u8) -> i16 {
        let sign: i32 = if y < 0x80 { -1 } else { 1 };
        let m = !y;
        let exponent = ((m >> 4) & 7) as i32;
        let segment = exponent + 1;
        let mantissa = (m & 0x0F) as i32;
        let step = 4 << segment;
        (sign * ((0x80 << exponent) + step * mantissa + step / 2 - 4 * 33)) as i16
    }

    fn ref_alaw_expand(y: u8) -> i16 {
        let ix = (y ^ 0x55) & 0x7F;
        let iexp = (ix >> 4) as i32;
        let mut mant = (ix & 0x0F) as i32;
        if iexp > 0 {
            mant += 16;
        }
        mant = (mant << 4) + 8;
        if iexp > 1 {
            mant <<= iexp - 1;
        }
        (if y > 127 { mant } else { -mant }) as i16
    }

    // Reference encoders: G.191 `ulaw_compress` / `alaw_compress` (segment search by loop).
    fn ref_ulaw_compress(x: i16) -> u8 {
        let x = x as i32;
        let mut absno = if x < 0 {
            ((!x) >> 2) + 33
        } else {
            (x >> 2) + 33
        };
        if absno > 0x1FFF {
            absno = 0x1FFF;
        }
        let mut i = absno >> 6;
        let mut segno = 1;
        while i != 0 {
            segno += 1;
            i >>= 1;
        }
        let high = 0x8 - segno;
        let low = 0xF - ((absno >> segno) & 0xF);
        let mut out = (high << 4) | low;
        if x >= 0 {
            out |= 0x80;
        }
        out as u8
    }

    fn ref_alaw_compress(x: i16) -> u8 {
        let x = x as i32;
        let mut ix = if x < 0 { (!x) >> 4 } else { x >> 4 };
        if ix > 15 {
            let mut iexp = 1;
            while ix > 16 + 15 {
                ix >>= 1;
                iexp += 1;
            }
            ix -= 16;
            ix += iexp << 4;
        }
        if x >= 0 {
            ix |= 0x80;
        }
        (ix ^ 0x55) as u8
    }

    #[test]
    fn decode_tables_match_reference_for_all_codes() {
        for c in 0..=255u8 {
            assert_eq!(ulaw_decode(c), ref_ulaw_expand(c), "mu-law code {c:#04x}");
            assert_eq!(alaw_decode(c), ref_alaw_expand(c), "A-law code {c:#04x}");
        }
    }

    #[test]
    fn decode_tables_match_published_values() {
        // Values from the widely published G.711 tables.
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7E), -8);
        assert_eq!(ulaw_decode(0xF0), 120);
        assert_eq!(ulaw_decode(0xEF), 132);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_decode(0x80), 5504);
        assert_eq!(alaw_decode(0x01), -5248);
        assert_eq!(alaw_decode(0x02), -6016);
        assert_eq!(alaw_decode(0x00), -5504);
        assert_eq!(ulaw_decode(0x01), -31100);
    }

    #[test]
    fn encode_matches_reference_over_whole_i16_range() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(ulaw_encode(x), ref_ulaw_compress(x), "mu-law x={x}");
            assert_eq!(alaw_encode(x), ref_alaw_compress(x), "A-law x={x}");
        }
    }

    #[test]
    fn encode_of_decode_is_identity() {
        for c in 0..=255u8 {
            let back = ulaw_encode(ulaw_decode(c));
            if c == 0x7F {
                // Negative zero decodes to 0, which encodes as positive zero.
                assert_eq!(back, 0xFF);
            } else {
                assert_eq!(back, c, "mu-law code {c:#04x}");
            }
            assert_eq!(alaw_encode(alaw_decode(c)), c, "A-law code {c:#04x}");
        }
    }

    /// Every sample lands in the quantization interval of its code: the error is at most half
    /// that interval (plus the bits G.711 drops below its resolution), except past the top
    /// level where the codec clips. G.711's decision thresholds sit on segment edges, not
    /// midway between levels, so just above an edge (about 500 inputs per law) the level
    /// below is nearer; the excess is under half a step. Returns how many such inputs.
    fn check_nearest(law: G711, step_of: impl Fn(u8) -> i32, dropped: i32) -> usize {
        let mut not_nearest = 0;
        let mut levels: Vec<i32> = (0..=255u8).map(|c| law.decode_sample(c) as i32).collect();
        levels.sort_unstable();
        let top = *levels.last().unwrap_or(&0);
        for x in i16::MIN..=i16::MAX {
            let c = law.encode_sample(x);
            let y = law.decode_sample(c) as i32;
            let x = x as i32;
            let err = (x - y).abs();
            if x.abs() > top {
                assert!(y.abs() == top, "{law:?} x={x} must clip to {top}, got {y}");
                continue;
            }
            let bound = step_of(c) / 2 + dropped;
            assert!(err <= bound, "{law:?} x={x} -> {y}: error {err} > {bound}");
            let best = levels.iter().map(|l| (x - l).abs()).min().unwrap_or(0);
            assert!(err - best <= step_of(c) / 2, "{law:?} x={x}");
            if err > best {
                not_nearest += 1;
            }
        }
        not_nearest
    }

    #[test]
    fn encode_picks_the_interval_containing_the_sample() {
        assert_eq!(check_nearest(G711::Pcmu, |c| 8 << ((!c >> 4) & 7), 3), 501);
        let pcma = check_nearest(
            G711::Pcma,
            |c| {
                let e = ((c ^ 0x55) >> 4) & 7;
                if e == 0 {
                    16
                } else {
                    16 << (e - 1)
                }
            },
            15,
        );
        assert_eq!(pcma, 498);
    }

    #[test]
    fn frame_helpers_and_payload_types() {
        let pcm = [0i16, 1000, -1000, 32767, -32768];
        let mut enc = [0u8; 5];
        let mut dec = [0i16; 5];
        for law in [G711::Pcmu, G711::Pcma] {
            assert_eq!(law.encode(&pcm, &mut enc), 5);
            assert_eq!(law.decode(&enc, &mut dec), 5);
            for (x, y) in pcm.iter().zip(dec) {
                assert!((*x as i32 - y as i32).abs() <= 1024, "{law:?} {x} {y}");
            }
            assert_eq!(G711::from_payload_type(law.payload_type()), Some(law));
            assert_eq!(
                law.decode_sample(law.silence()).abs(),
                if law == G711::Pcmu { 0 } else { 8 }
            );
        }
        assert_eq!(G711::from_payload_type(9), None);
    }
}
