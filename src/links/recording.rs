//! A call's recording: the media engine's mixed frames, encoded to Opus and written to an Ogg
//! Opus file (RFC 7845) by a thread of its own, so the media threads never touch a disk.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use dialbridge_bridge::opus_codec::{OpusConfig, OpusEncoder};
use ogg::writing::{PacketWriteEndInfo, PacketWriter};

use crate::runtime::{RecordingSink, RECORD_FRAME};

/// The recording's rate: the mix's.
const RATE: u32 = 48_000;
/// Frames the channel holds before the media thread drops them (two seconds).
const BACKLOG: usize = 100;
/// libopus's lookahead at 48 kHz, which a player skips (RFC 7845 section 4.2).
const PRE_SKIP: u16 = 312;
const SERIAL: u32 = 0x6462_7263;

/// A finished recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub path: PathBuf,
    pub duration_ms: i64,
    pub bytes: i64,
}

/// Starts a recording into `path`; the returned sink takes its frames, and once every clone of it
/// is dropped the file is completed and `done` is told (with None when nothing was recorded or
/// the file could not be written, which is logged).
pub fn start(
    path: PathBuf,
    done: impl FnOnce(Option<Finished>) + Send + 'static,
) -> std::io::Result<RecordingSink> {
    let file = File::create(&path)?;
    let (sink, frames) = mpsc::sync_channel::<Vec<i16>>(BACKLOG);
    std::thread::Builder::new()
        .name("recording".into())
        .spawn(move || {
            let result = write(BufWriter::new(file), &frames);
            let finished = match result {
                Ok(0) => {
                    let _ = std::fs::remove_file(&path);
                    None
                }
                Ok(samples) => Some(Finished {
                    duration_ms: i64::try_from(samples / u64::from(RATE / 1000))
                        .unwrap_or(i64::MAX),
                    bytes: file_size(&path),
                    path,
                }),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "recording failed");
                    None
                }
            };
            done(finished);
        })?;
    Ok(sink)
}

fn file_size(path: &Path) -> i64 {
    std::fs::metadata(path)
        .map(|m| i64::try_from(m.len()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// The identification header (RFC 7845 section 5.1): one channel at 48 kHz.
fn opus_head() -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1);
    head.push(1);
    head.extend_from_slice(&PRE_SKIP.to_le_bytes());
    head.extend_from_slice(&RATE.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes());
    head.push(0);
    head
}

/// The comment header (section 5.2): the vendor, no comments.
fn opus_tags() -> Vec<u8> {
    let vendor = b"dialbridge";
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
    tags.extend_from_slice(vendor);
    tags.extend_from_slice(&0u32.to_le_bytes());
    tags
}

/// Writes the stream until the frames end; returns the samples recorded.
fn write<W: Write>(out: W, frames: &mpsc::Receiver<Vec<i16>>) -> std::io::Result<u64> {
    let mut encoder = OpusEncoder::new(OpusConfig {
        sample_rate: RATE,
        frame_ms: 20,
        complexity: 5,
        bitrate: 48_000,
        fec: false,
        expected_loss_percent: 0,
        dtx: false,
    })
    .map_err(io_error)?;
    let mut ogg = PacketWriter::new(out);
    ogg.write_packet(opus_head(), SERIAL, PacketWriteEndInfo::EndPage, 0)?;
    ogg.write_packet(opus_tags(), SERIAL, PacketWriteEndInfo::EndPage, 0)?;
    let mut samples: u64 = 0;
    let mut buf = vec![0u8; 4000];
    // Each packet is written once the next exists, so the last can end the stream.
    let mut held: Option<(Vec<u8>, u64)> = None;
    for frame in frames.iter() {
        if frame.len() != RECORD_FRAME {
            continue;
        }
        let n = encoder.encode(&frame, &mut buf).map_err(io_error)?;
        samples += RECORD_FRAME as u64;
        let packet = (buf[..n].to_vec(), samples + u64::from(PRE_SKIP));
        if let Some((data, granule)) = held.replace(packet) {
            ogg.write_packet(data, SERIAL, PacketWriteEndInfo::NormalPacket, granule)?;
        }
    }
    match held {
        Some((data, granule)) => {
            ogg.write_packet(data, SERIAL, PacketWriteEndInfo::EndStream, granule)?
        }
        None => return Ok(0),
    }
    ogg.into_inner().flush()?;
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialbridge_bridge::opus_codec::OpusDecoder;
    use dialbridge_bridge::testing::{tone_ratio, Sine};
    use ogg::reading::PacketReader;

    #[test]
    fn a_recording_is_ogg_opus_that_decodes_to_what_was_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.ogg");
        let (tx, rx) = mpsc::channel();
        let sink = start(path.clone(), move |f| {
            let _ = tx.send(f);
        })
        .expect("start");
        let mut tone = Sine::new(440.0, RATE, 8000);
        for _ in 0..100 {
            sink.send(tone.take(RECORD_FRAME)).expect("frame");
        }
        drop(sink);
        let finished = rx.recv().expect("done").expect("a recording");
        assert_eq!(finished.duration_ms, 2000);
        assert!(finished.bytes > 0);

        let mut reader = PacketReader::new(File::open(&path).expect("file"));
        let head = reader.read_packet_expected().expect("head");
        assert!(head.data.starts_with(b"OpusHead"));
        let tags = reader.read_packet_expected().expect("tags");
        assert!(tags.data.starts_with(b"OpusTags"));
        let mut decoder = OpusDecoder::new(RATE, 20).expect("decoder");
        let mut pcm = Vec::new();
        let mut out = vec![0i16; RECORD_FRAME];
        let mut last = None;
        while let Some(packet) = reader.read_packet().expect("packet") {
            let n = decoder.decode(&packet.data, &mut out).expect("decode");
            pcm.extend_from_slice(&out[..n]);
            last = Some((packet.last_in_stream(), packet.absgp_page()));
        }
        assert_eq!(last, Some((true, 100 * RECORD_FRAME as u64 + 312)));
        assert!(tone_ratio(&pcm[RATE as usize / 2..], 440.0, RATE) > 0.5);
    }

    #[test]
    fn nothing_recorded_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty.ogg");
        let (tx, rx) = mpsc::channel();
        let sink = start(path.clone(), move |f| {
            let _ = tx.send(f);
        })
        .expect("start");
        drop(sink);
        assert_eq!(rx.recv().expect("done"), None);
        assert!(!path.exists());
    }
}
