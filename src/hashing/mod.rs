//! Hashing: bytes in, hashes out. Decoding happens here in memory; the pixels are dropped as
//! soon as the perceptual hashes are computed and are never stored or logged.

pub mod candidates;
pub mod exact;
pub mod imghash;
pub mod pdq;
pub mod vpdq;

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;
use serde::Serialize;

use crate::decode::video::{VideoInfo, VideoLimits};
use crate::decode::{self, DecodeLimits, DecodeOptions, ImageInfo};
use crate::error::DecodeError;
pub use pdq::{Hash256, PdqHash, PdqMode};

/// Every algorithm Baken computes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Pdq,
    Phash,
    Dhash,
    Ahash,
    Blockhash,
    Md5,
    Sha1,
    Sha256,
    /// Meta's video hash: PDQ of sampled frames. Applies to videos (and animated GIFs); the
    /// image hashes apply to images.
    Vpdq,
}

impl Algorithm {
    pub const ALL: [Algorithm; 9] = [
        Algorithm::Pdq,
        Algorithm::Phash,
        Algorithm::Dhash,
        Algorithm::Ahash,
        Algorithm::Blockhash,
        Algorithm::Md5,
        Algorithm::Sha1,
        Algorithm::Sha256,
        Algorithm::Vpdq,
    ];

    pub fn name(self) -> &'static str {
        crate::names::name(&self)
    }

    /// Exact hashes are of the original bytes and need no decoding.
    pub fn is_exact(self) -> bool {
        matches!(self, Algorithm::Md5 | Algorithm::Sha1 | Algorithm::Sha256)
    }

    /// Perceptual hashes of a still image (a video's are [`Algorithm::Vpdq`]).
    pub fn is_image(self) -> bool {
        !self.is_exact() && self != Algorithm::Vpdq
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::names::parse("algorithm", s).map_err(|e| format!("{e} (or all)"))
    }
}

/// Parse `pdq,md5` or `all`.
pub fn parse_algorithms(spec: &str) -> Result<Vec<Algorithm>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "all" {
            out.extend(Algorithm::ALL);
        } else {
            out.push(part.parse()?);
        }
    }
    if out.is_empty() {
        return Err("no algorithm given".into());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// How to hash.
#[derive(Debug, Clone)]
pub struct HashOptions {
    pub algorithms: Vec<Algorithm>,
    pub pdq_mode: PdqMode,
    /// JPEG fast mode: decode with DCT-domain scaling so the shorter side is at least this
    /// many pixels. Not bit-exact with the reference; see docs/conformance.md.
    pub fast_min_side: Option<u32>,
    pub limits: DecodeLimits,
    pub alpha: decode::Alpha,
    pub imghash: imghash::ImgHashConfig,
    pub video: VideoLimits,
    /// vPDQ frame sampling: one frame every this many seconds (0 = every frame).
    pub seconds_per_hash: f64,
    /// Derived views of an image to hash besides the image ([`candidates`]).
    pub candidates: candidates::CandidateOptions,
}

impl Default for HashOptions {
    fn default() -> Self {
        HashOptions {
            algorithms: Algorithm::ALL.to_vec(),
            pdq_mode: PdqMode::Full,
            fast_min_side: None,
            limits: DecodeLimits::default(),
            alpha: decode::Alpha::White,
            imghash: imghash::ImgHashConfig::default(),
            video: VideoLimits::default(),
            seconds_per_hash: vpdq::DEFAULT_SECONDS_PER_HASH,
            candidates: candidates::CandidateOptions::default(),
        }
    }
}

impl HashOptions {
    /// The most bytes worth reading for one input: the larger of the image and video limits
    /// (each is enforced once the content says which it is).
    pub fn max_read_bytes(&self) -> u64 {
        if self.algorithms.contains(&Algorithm::Vpdq)
            || self.algorithms.iter().any(|a| a.is_exact())
        {
            self.limits.max_input_bytes.max(self.video.max_input_bytes)
        } else {
            self.limits.max_input_bytes
        }
    }
}

/// The fast mode's default target: DCT scaling stops before the shorter side drops below this.
pub const FAST_MIN_SIDE: u32 = 256;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PdqOutput {
    pub hash: String,
    pub quality: u8,
    pub dihedral: Vec<String>,
    pub mode: PdqMode,
    /// Present when the fast mode decoded at reduced size.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fast: bool,
}

impl PdqOutput {
    fn new(h: &PdqHash, mode: PdqMode, fast: bool) -> Self {
        PdqOutput {
            hash: h.hash.to_hex(),
            quality: h.quality,
            dihedral: h.dihedral.iter().map(Hash256::to_hex).collect(),
            mode,
            fast,
        }
    }
}

/// Hashes of one input. Absent fields were not requested.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HashOutput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpdq: Option<vpdq::VpdqOutput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pdq: Option<PdqOutput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dhash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ahash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blockhash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// PDQ of derived views of the image (a border removed, …), matched besides the image.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<candidates::CandidateOutput>,
}

impl HashOutput {
    /// The hashes other than PDQ, by their type names, in a fixed order.
    pub fn others(&self) -> [(&'static str, &Option<String>); 7] {
        [
            ("phash", &self.phash),
            ("dhash", &self.dhash),
            ("ahash", &self.ahash),
            ("blockhash", &self.blockhash),
            ("md5", &self.md5),
            ("sha1", &self.sha1),
            ("sha256", &self.sha256),
        ]
    }

    /// Set a non-PDQ hash by its type name; false when the type is not one of [`Self::others`].
    pub fn set_other(&mut self, name: &str, value: String) -> bool {
        let slot = match name {
            "phash" => &mut self.phash,
            "dhash" => &mut self.dhash,
            "ahash" => &mut self.ahash,
            "blockhash" => &mut self.blockhash,
            "md5" => &mut self.md5,
            "sha1" => &mut self.sha1,
            "sha256" => &mut self.sha256,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

/// A reusable hasher: holds the configured `image_hasher` instances (their DCT tables are
/// built once) and is shared across rayon workers.
pub struct Hasher {
    opts: HashOptions,
    img: imghash::ImgHashers,
}

impl Hasher {
    pub fn new(opts: HashOptions) -> Self {
        let img = imghash::ImgHashers::new(&opts.imghash, &opts.algorithms);
        Hasher { opts, img }
    }

    pub fn options(&self) -> &HashOptions {
        &self.opts
    }

    fn wants(&self, a: Algorithm) -> bool {
        self.opts.algorithms.contains(&a)
    }

    /// Hash one input held in memory. The media type comes from the content: image hashes
    /// apply to images, vPDQ to videos (and to GIFs, through FFmpeg, when it is asked for), the
    /// exact hashes to any bytes.
    pub fn hash_bytes(&self, data: &[u8]) -> Result<HashOutput, DecodeError> {
        let mut out = HashOutput::default();
        let container = decode::video::sniff(data);
        // A GIF is an image to the image hashes and a video to vPDQ.
        let video = container.filter(|c| *c != decode::video::Container::Gif);
        let wants_image = self.opts.algorithms.iter().any(|a| a.is_image());
        let wants_exact = self.opts.algorithms.iter().any(|a| a.is_exact());
        if container.is_some() && self.wants(Algorithm::Vpdq) {
            let (info, frames) =
                vpdq::hash_video(data, &self.opts.video, self.opts.seconds_per_hash)?;
            out.video = Some(info);
            out.vpdq = Some(vpdq::VpdqOutput::new(self.opts.seconds_per_hash, &frames));
        }
        if let Some(c) = video {
            if out.video.is_none() && !wants_exact {
                return Err(DecodeError::NotApplicable(format!(
                    "the input is a video ({}): image hashes do not apply, vpdq does",
                    c.name()
                )));
            }
            decode::check_input_size(data, self.opts.video.max_input_bytes)?;
        } else if wants_image {
            let decoded = decode::decode(
                data,
                &self.opts.limits,
                DecodeOptions {
                    jpeg_scale_min_side: self.opts.fast_min_side,
                    alpha: self.opts.alpha,
                },
            )?;
            if self.wants(Algorithm::Pdq) {
                let h = pdq::pdq_hash(decoded.view(), self.opts.pdq_mode);
                out.pdq = Some(PdqOutput::new(
                    &h,
                    self.opts.pdq_mode,
                    decoded.info.decoded_size.is_some(),
                ));
                out.candidates = candidates::hash_candidates(
                    decoded.view(),
                    &self.opts.candidates,
                    self.opts.pdq_mode,
                )
                .into_iter()
                .map(|c| candidates::CandidateOutput {
                    name: c.name,
                    region: [c.region.x0, c.region.y0, c.region.x1, c.region.y1],
                    angle: c.angle,
                    pdq: PdqOutput::new(&c.hash, self.opts.pdq_mode, false),
                })
                .collect();
            }
            out.image = Some(decoded.info.clone());
            let hashes = self.img.hash(decoded);
            out.phash = hashes.phash;
            out.dhash = hashes.dhash;
            out.ahash = hashes.ahash;
            out.blockhash = hashes.blockhash;
        } else if out.video.is_none() {
            decode::check_input_size(data, self.opts.limits.max_input_bytes)?;
            if !wants_exact {
                return Err(if decode::sniff(data).is_some() {
                    DecodeError::NotApplicable(
                        "the input is an image: vpdq applies to videos, pdq to images".into(),
                    )
                } else {
                    DecodeError::UnsupportedFormat
                });
            }
        }
        // A video's MD5 comes with its vPDQ: NCMEC's and HMA's video lists carry it.
        if self.wants(Algorithm::Md5) || out.vpdq.is_some() {
            out.md5 = Some(exact::md5_hex(data));
        }
        if self.wants(Algorithm::Sha1) {
            out.sha1 = Some(exact::sha1_hex(data));
        }
        if self.wants(Algorithm::Sha256) {
            out.sha256 = Some(exact::sha256_hex(data));
        }
        Ok(out)
    }

    /// Hash many inputs in parallel on the current rayon pool. Results keep the input order;
    /// one input's error does not stop the others. `load` fetches an input's bytes inside the
    /// worker, so at most one input per worker is in memory at a time.
    pub fn hash_batch<T, F>(&self, items: &[T], load: F) -> Vec<Result<HashOutput, DecodeError>>
    where
        T: Sync,
        F: Fn(&T) -> Result<Vec<u8>, DecodeError> + Sync,
    {
        items
            .par_iter()
            .map(|item| load(item).and_then(|bytes| self.hash_bytes(&bytes)))
            .collect()
    }
}

/// Read a file for hashing, refusing it before reading when it is over the byte limit.
pub fn read_limited(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, DecodeError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| DecodeError::Io(e.kind().to_string()))?;
    let len = f
        .metadata()
        .map_err(|e| DecodeError::Io(e.kind().to_string()))?
        .len();
    if len > limit {
        return Err(DecodeError::TooLarge { size: len, limit });
    }
    let mut buf = Vec::with_capacity(len as usize);
    // A file can grow between stat and read; never read past the limit.
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| DecodeError::Io(e.kind().to_string()))?;
    if buf.len() as u64 > limit {
        return Err(DecodeError::TooLarge {
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_lists_parse() {
        assert_eq!(parse_algorithms("all").unwrap().len(), 9);
        assert_eq!(
            parse_algorithms("md5, pdq,md5").unwrap(),
            vec![Algorithm::Pdq, Algorithm::Md5]
        );
        assert!(parse_algorithms("pdq,foo").is_err());
        assert!(parse_algorithms("").is_err());
    }

    #[test]
    fn exact_only_does_not_need_an_image() {
        let h = Hasher::new(HashOptions {
            algorithms: vec![Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha256],
            ..HashOptions::default()
        });
        let out = h.hash_bytes(b"abc").unwrap();
        assert_eq!(out.md5.as_deref(), Some("900150983cd24fb0d6963f7d28e17f72"));
        assert_eq!(
            out.sha1.as_deref(),
            Some("a9993e364706816aba3e25717850c26c9cd0d89d")
        );
        assert_eq!(
            out.sha256.as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert!(out.image.is_none());
    }
}
