//! vPDQ, Meta's video hash: a PDQ hash (with its quality) of sampled frames. This module holds
//! the frame sampling and hashing over our in-memory decoder (`decode::video`), the two
//! interchange forms and the reference matching rule.
//!
//! Hashing follows Meta's C++ (`vpdq/cpp/hashing/filehasher.cpp`): frames are numbered in the
//! decoder's output order from 0; one frame in `int(seconds_per_hash × fps)` (at least 1) is
//! hashed, from frame 0; each is converted to RGB24 at the stream's size (swscale, SWS_AREA) and
//! hashed by PDQ with the C++ float luma at full resolution (no 512 px squash); the timestamp is
//! `float(frame) / float(fps)`.
//!
//! Forms, as the references write them:
//! - Meta's C++ tool (`vpdq/cpp`, `vpdqio.cpp`): one line per frame,
//!   `frameNumber,quality,pdqHex,timestamp`, the timestamp with 3 decimals, no header.
//! - python-threatexchange's `vpdq` signal (`extensions/vpdq/vpdq_util.py`): a JSON list of
//!   `"pdqHex,quality,timestamp"` strings (no frame number), the timestamp formatted with
//!   Python's `:.3` — 3 *significant* digits, so `0.0334`, `12.5`, `1.23e+02`.
//!
//! Matching follows python-threatexchange's `match_VPDQ_hash_brute` (what HMA deployments use):
//! each side deduplicated by exact hash (first occurrence kept), frames under the quality floor
//! dropped, a frame matched when any frame of the other side is within the distance (≤ 31); the
//! result is the share of matched frames on each side. Meta's C++ matcher differs (no dedupe,
//! strict `< 31`); lists carrying vPDQ come from the Python side.

use std::collections::HashSet;

use serde::Serialize;

use super::pdq::{self, Hash256};
use crate::decode::video::{VideoDecoder, VideoInfo, VideoLimits};
use crate::error::DecodeError;

/// The product's sampling: one frame a second, as python-threatexchange hashes (Meta's C++ CLI
/// defaults to every frame: `seconds_per_hash = 0`).
pub const DEFAULT_SECONDS_PER_HASH: f64 = 1.0;

/// Frames with a PDQ quality below this are not matched (python-threatexchange and Meta alike).
pub const QUALITY_THRESHOLD: u8 = 50;
/// Largest Hamming distance at which two frames match (python-threatexchange: `<= 31`).
pub const DISTANCE_THRESHOLD: u32 = 31;
/// python-threatexchange's verdict: at least this share of the query's frames matched…
pub const QUERY_MATCH_PERCENT: f64 = 80.0;
/// …and at least this share of the compared (listed) video's frames.
pub const COMPARED_MATCH_PERCENT: f64 = 0.0;

/// The hash of one sampled frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VpdqFeature {
    /// The frame's index in decoding order (0-based). The signal form has none: its features
    /// are numbered in order.
    pub frame_number: u64,
    pub quality: u8,
    pub hash: Hash256,
    /// Seconds from the start.
    pub timestamp: f64,
}

/// One frame in Baken's JSON output.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FrameOutput {
    pub frame: u64,
    pub quality: u8,
    pub hash: String,
    /// Seconds, rounded to milliseconds as Meta's file form writes them.
    pub timestamp: f64,
}

/// vPDQ of one video in Baken's JSON output.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VpdqOutput {
    pub seconds_per_hash: f64,
    pub frames: Vec<FrameOutput>,
}

impl VpdqOutput {
    pub fn new(seconds_per_hash: f64, features: &[VpdqFeature]) -> Self {
        VpdqOutput {
            seconds_per_hash,
            frames: features
                .iter()
                .map(|f| FrameOutput {
                    frame: f.frame_number,
                    quality: f.quality,
                    hash: f.hash.to_hex(),
                    timestamp: format!("{:.3}", f.timestamp).parse().unwrap_or(f.timestamp),
                })
                .collect(),
        }
    }

    /// Back to features (hex decoded), e.g. for matching what a caller sent.
    pub fn features(&self) -> Result<Vec<VpdqFeature>, VpdqError> {
        self.frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                Ok(VpdqFeature {
                    frame_number: f.frame,
                    quality: f.quality,
                    hash: Hash256::from_hex(&f.hash).map_err(|e| VpdqError::Line {
                        line: i + 1,
                        message: e.to_string(),
                    })?,
                    timestamp: f.timestamp,
                })
            })
            .collect()
    }
}

/// Frames between two hashed ones: Meta's `int(seconds_per_hash * fps)`, at least 1.
pub fn frame_interval(seconds_per_hash: f64, fps: f64) -> u64 {
    let n = seconds_per_hash * fps;
    if n.is_finite() && n >= 1.0 {
        // Truncation toward zero, as C++'s static_cast<int>.
        n as u64
    } else {
        1
    }
}

/// Decode a video held in memory and hash its sampled frames. Frames are hashed as they are
/// decoded and dropped at once; at most one RGB frame exists at a time.
pub fn hash_video(
    data: &[u8],
    limits: &VideoLimits,
    seconds_per_hash: f64,
) -> Result<(VideoInfo, Vec<VpdqFeature>), DecodeError> {
    let decoder = VideoDecoder::open(data, limits)?;
    let fps = decoder.info().fps;
    let every = frame_interval(seconds_per_hash, fps);
    let fps32 = fps as f32;
    let mut features = Vec::new();
    let info = decoder.decode(
        |n| n % every == 0,
        |n, frame| {
            let h = pdq::pdq_hash_rgb_f32(pdq::StridedRgb {
                width: frame.width,
                height: frame.height,
                stride: frame.stride,
                data: frame.data,
            });
            features.push(VpdqFeature {
                frame_number: n,
                quality: h.quality,
                hash: h.hash,
                timestamp: f64::from(n as f32 / fps32),
            });
        },
    )?;
    Ok((info, features))
}

/// A vPDQ document that cannot be read, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VpdqError {
    #[error("vPDQ line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("vPDQ signal: {0}")]
    Signal(String),
}

/// A malformed field as an error message shows it: quoted, and cut short, since a list file's
/// "field" may be a megabyte of anything and an error must stay a line a person can read.
fn shown(field: &str) -> String {
    const MAX: usize = 24;
    let field = field.trim();
    match field.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &field[..cut]),
        None => format!("{field:?}"),
    }
}

fn feature(
    hash: &str,
    quality: &str,
    timestamp: &str,
    frame_number: u64,
) -> Result<VpdqFeature, String> {
    let hash = Hash256::from_hex(hash.trim()).map_err(|e| e.to_string())?;
    let quality: u8 = quality
        .trim()
        .parse()
        .ok()
        .filter(|q| *q <= 100)
        .ok_or_else(|| format!("quality {} is not a number from 0 to 100", shown(quality)))?;
    let timestamp: f64 = timestamp
        .trim()
        .parse()
        .ok()
        .filter(|t: &f64| t.is_finite() && *t >= 0.0)
        .ok_or_else(|| format!("timestamp {} is not a time in seconds", shown(timestamp)))?;
    Ok(VpdqFeature {
        frame_number,
        quality,
        hash,
        timestamp,
    })
}

/// Read Meta's file form. Blank lines are skipped; anything else malformed is refused with its
/// line number.
pub fn parse_meta(text: &str) -> Result<Vec<VpdqFeature>, VpdqError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |message: String| VpdqError::Line {
            line: line_no,
            message,
        };
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let [frame, quality, hash, timestamp] = fields[..] else {
            return Err(err(format!(
                "expected frameNumber,quality,pdqHex,timestamp, got {} fields",
                fields.len()
            )));
        };
        let frame: u64 = frame
            .trim()
            .parse()
            .map_err(|_| err(format!("frame number {} is not a number", shown(frame))))?;
        out.push(feature(hash, quality, timestamp, frame).map_err(err)?);
    }
    Ok(out)
}

/// Either form, told apart by the first non-blank character (`[`: the JSON signal).
pub fn parse_any(text: &str) -> Result<Vec<VpdqFeature>, VpdqError> {
    if text.trim_start().starts_with('[') {
        parse_signal(text)
    } else {
        parse_meta(text)
    }
}

/// The id under which a video's frames are listed: SHA-256 of its usable frame hashes in
/// order, so the same hash imported twice is the same entry and two different videos never
/// share frame rows.
pub fn video_id(usable: &[&VpdqFeature]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for f in usable {
        h.update(f.hash.to_bytes());
    }
    h.finalize().into()
}

/// Write Meta's file form (one line per feature, timestamps with 3 decimals).
pub fn to_meta(features: &[VpdqFeature]) -> String {
    features
        .iter()
        .map(|f| {
            format!(
                "{},{},{},{:.3}\n",
                f.frame_number,
                f.quality,
                f.hash.to_hex(),
                f.timestamp
            )
        })
        .collect()
}

/// Read python-threatexchange's signal form: a JSON list of `"pdqHex,quality,timestamp"`.
pub fn parse_signal(json: &str) -> Result<Vec<VpdqFeature>, VpdqError> {
    let items: Vec<String> = serde_json::from_str(json)
        .map_err(|e| VpdqError::Signal(format!("not a JSON list of strings: {e}")))?;
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let fields: Vec<&str> = s.split(',').collect();
            let [hash, quality, timestamp] = fields[..] else {
                return Err(VpdqError::Signal(format!(
                    "item {i}: expected pdqHex,quality,timestamp, got {} fields",
                    fields.len()
                )));
            };
            feature(hash, quality, timestamp, i as u64)
                .map_err(|m| VpdqError::Signal(format!("item {i}: {m}")))
        })
        .collect()
}

/// Write python-threatexchange's signal form, byte for byte as `json.dumps` writes it.
pub fn to_signal(features: &[VpdqFeature]) -> String {
    let items: Vec<String> = features
        .iter()
        .map(|f| {
            let s = format!(
                "{},{},{}",
                f.hash.to_hex(),
                f.quality,
                py_format_3(f.timestamp)
            );
            // Hex, digits, '.', 'e', '+', '-': nothing JSON would escape.
            format!("\"{s}\"")
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// Python's `format(x, ".3")`: like `g` with 3 significant digits, except that fixed notation
/// keeps at least one digit after the point and scientific notation starts at exponent 2
/// (`p - 1`), as the format-spec mini-language defines for floats without a type.
pub fn py_format_3(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` rounds correctly, as Python's float formatting does.
    let sci = format!("{x:.2e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..2).contains(&exp) {
        let m = mantissa.trim_end_matches('0').trim_end_matches('.');
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{m}e{sign}{:02}", exp.unsigned_abs());
    }
    let decimals = (2 - exp) as usize;
    let fixed = format!("{x:.decimals$}");
    let trimmed = fixed.trim_end_matches('0');
    if trimmed.ends_with('.') {
        format!("{trimmed}0")
    } else {
        trimmed.to_string()
    }
}

/// How much of two videos matched, as shares of each side's usable frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VpdqMatch {
    /// Percent of the query's frames within the distance of some compared frame.
    pub query_percent: f64,
    /// Percent of the compared video's frames within the distance of some query frame.
    pub compared_percent: f64,
}

impl VpdqMatch {
    /// python-threatexchange's verdict with its thresholds.
    pub fn is_match(&self) -> bool {
        self.query_percent >= QUERY_MATCH_PERCENT && self.compared_percent >= COMPARED_MATCH_PERCENT
    }
}

/// The frames the match rule counts, as python-threatexchange selects them: the first
/// occurrence of each hash, then those of at least `quality` (deduplicating first means a
/// hash seen first at low quality is dropped entirely).
pub fn usable_frames(features: &[VpdqFeature], quality: u8) -> Vec<&VpdqFeature> {
    let mut seen = HashSet::new();
    features
        .iter()
        .filter(|f| seen.insert(f.hash))
        .filter(|f| f.quality >= quality)
        .collect()
}

fn usable(features: &[VpdqFeature], quality: u8) -> Vec<Hash256> {
    usable_frames(features, quality)
        .into_iter()
        .map(|f| f.hash)
        .collect()
}

/// Compare two videos frame by frame (every pair: fine for the frame counts of one video).
/// `None` when a side has no usable frame: no share can be computed, so nothing matches.
pub fn match_brute(
    query: &[VpdqFeature],
    compared: &[VpdqFeature],
    distance: u32,
    quality: u8,
) -> Option<VpdqMatch> {
    let (q, c) = (usable(query, quality), usable(compared, quality));
    if q.is_empty() || c.is_empty() {
        return None;
    }
    let mut c_hit = vec![false; c.len()];
    let mut q_hits = 0usize;
    for a in &q {
        let mut hit = false;
        for (j, b) in c.iter().enumerate() {
            if a.hamming(b) <= distance {
                hit = true;
                c_hit[j] = true;
            }
        }
        q_hits += usize::from(hit);
    }
    let c_hits = c_hit.iter().filter(|h| **h).count();
    Some(VpdqMatch {
        query_percent: q_hits as f64 * 100.0 / q.len() as f64,
        compared_percent: c_hits as f64 * 100.0 / c.len() as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(seed: u16) -> Hash256 {
        let mut words = [0u16; 16];
        for (i, w) in words.iter_mut().enumerate() {
            *w = seed.wrapping_mul(0x9E37).rotate_left(i as u32) ^ (i as u16).wrapping_mul(0x3C6E);
        }
        Hash256 { words }
    }

    /// `base` with its first `k` bits flipped.
    fn flip(base: Hash256, k: usize) -> Hash256 {
        let mut out = base;
        for b in 0..k {
            out.words[b / 16] ^= 1 << (b % 16);
        }
        out
    }

    fn feat(n: u64, quality: u8, hash: Hash256, t: f64) -> VpdqFeature {
        VpdqFeature {
            frame_number: n,
            quality,
            hash,
            timestamp: t,
        }
    }

    #[test]
    fn python_format_spec_point_three() {
        // Each pair checked against CPython 3.11's format(x, ".3").
        for (x, want) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (0.03336666, "0.0334"),
            (1.0, "1.0"),
            (2.0, "2.0"),
            (10.0, "10.0"),
            (12.5, "12.5"),
            (33.366, "33.4"),
            (99.94, "99.9"),
            (99.95, "1e+02"),
            (100.0, "1e+02"),
            (123.4, "1.23e+02"),
            (999.5, "1e+03"),
            (1234.5, "1.23e+03"),
            (0.0001, "0.0001"),
            (0.0005, "0.0005"),
            (1.234e-05, "1.23e-05"),
            (1e-05, "1e-05"),
            (0.125, "0.125"),
            (2.675, "2.67"),
            (1e16, "1e+16"),
        ] {
            assert_eq!(py_format_3(x), want, "{x}");
        }
    }

    #[test]
    fn both_forms_round_trip_and_read_what_the_references_write() {
        let fs = vec![
            feat(0, 100, h(1), 0.0),
            feat(1, 87, h(2), 1.001),
            feat(2, 49, h(3), 123.4),
        ];
        let meta = to_meta(&fs);
        assert!(
            meta.starts_with(&format!("0,100,{},0.000\n", h(1).to_hex())),
            "{meta}"
        );
        assert!(
            meta.ends_with(&format!("2,49,{},123.400\n", h(3).to_hex())),
            "{meta}"
        );
        assert_eq!(parse_meta(&meta).unwrap(), fs);

        let signal = to_signal(&fs);
        assert_eq!(
            signal,
            format!(
                "[\"{},100,0.0\", \"{},87,1.0\", \"{},49,1.23e+02\"]",
                h(1).to_hex(),
                h(2).to_hex(),
                h(3).to_hex()
            )
        );
        let back = parse_signal(&signal).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[2].frame_number, 2);
        assert_eq!(
            back[2].timestamp, 123.0,
            "the signal keeps 3 significant digits"
        );
        assert_eq!(back[1].hash, h(2));
        // Exponent timestamps, as python-threatexchange writes them past 99.95 s.
        let exp = format!("[\"{},90,1e+02\"]", h(4).to_hex());
        assert_eq!(parse_signal(&exp).unwrap()[0].timestamp, 100.0);
    }

    #[test]
    fn malformed_documents_are_refused_with_where() {
        let good = format!("0,100,{},0.000", h(1).to_hex());
        let bad_hash = format!("{good}\n1,100,xyz,1.000\n");
        assert!(matches!(
            parse_meta(&bad_hash),
            Err(VpdqError::Line { line: 2, .. })
        ));
        for line in [
            format!("1,101,{},1.0", h(1).to_hex()),
            format!("1,100,{},-1.0", h(1).to_hex()),
            format!("1,100,{},nan", h(1).to_hex()),
            format!("x,100,{},1.0", h(1).to_hex()),
            format!("1,100,{}", h(1).to_hex()),
        ] {
            let e = parse_meta(&format!("{good}\n\n{line}\n")).unwrap_err();
            assert!(matches!(e, VpdqError::Line { line: 3, .. }), "{line}: {e}");
        }
        assert!(parse_signal("{\"a\": 1}").is_err());
        let e = parse_signal(&format!("[\"{},100\"]", h(1).to_hex())).unwrap_err();
        assert!(e.to_string().contains("item 0"), "{e}");
        // A huge malformed field is named, not echoed whole.
        let junk = "9".repeat(100_000);
        let e = parse_meta(&format!("{good}\n1,{junk},{},1.0\n", h(1).to_hex())).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, VpdqError::Line { line: 2, .. }), "{msg}");
        assert!(msg.contains("quality \"999") && msg.len() < 120, "{msg}");
    }

    #[test]
    fn matching_follows_python_threatexchange() {
        let video: Vec<VpdqFeature> = (0..10)
            .map(|i| feat(i, 100, h(i as u16 + 10), i as f64))
            .collect();
        // `video` with every frame `k` bits off.
        let off = |k: usize| -> Vec<VpdqFeature> {
            let shift = |f: &VpdqFeature| VpdqFeature {
                hash: flip(f.hash, k),
                ..*f
            };
            video.iter().map(shift).collect()
        };
        // The same video re-encoded: every frame a little off (31 bits is still a match).
        let m = match_brute(&off(31), &video, DISTANCE_THRESHOLD, QUALITY_THRESHOLD).unwrap();
        assert_eq!((m.query_percent, m.compared_percent), (100.0, 100.0));
        assert!(m.is_match());
        // 32 bits off is not.
        let m = match_brute(&off(32), &video, DISTANCE_THRESHOLD, QUALITY_THRESHOLD).unwrap();
        assert!(!m.is_match(), "{m:?}");
        // A clip of the first 3 frames: all of the query, 30 % of the listed video — a match,
        // since the compared side needs 0 %.
        let m = match_brute(&video[..3], &video, DISTANCE_THRESHOLD, QUALITY_THRESHOLD).unwrap();
        assert_eq!((m.query_percent, m.compared_percent), (100.0, 30.0));
        assert!(m.is_match());
        // Repeated frames count once; low-quality frames not at all.
        let mut padded = video[..2].to_vec();
        padded.extend(std::iter::repeat_n(video[0], 5));
        padded.push(feat(99, 10, h(999), 9.0));
        let m = match_brute(&padded, &video, DISTANCE_THRESHOLD, QUALITY_THRESHOLD).unwrap();
        assert_eq!(m.query_percent, 100.0);
        assert_eq!(m.compared_percent, 20.0);
        // No usable frame on a side: nothing to compute.
        let dark = vec![feat(0, 0, h(1), 0.0)];
        assert_eq!(
            match_brute(&dark, &video, DISTANCE_THRESHOLD, QUALITY_THRESHOLD),
            None
        );
    }
}
