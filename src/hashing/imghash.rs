//! The `img_hash` family (aHash, dHash, pHash, blockhash) through `image_hasher`, the maintained
//! fork of `img_hash`, so our values equal what any `image_hasher` user computes on the same
//! decoded pixels.

use image::{DynamicImage, GrayImage, RgbImage};
use image_hasher::{HashAlg, Hasher, HasherConfig};

use super::Algorithm;
use crate::decode::{DecodedImage, Pixels};

/// Hash side lengths (bits = width × height). Defaults give 64-bit hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct ImgHashConfig {
    pub phash_size: u32,
    pub dhash_size: u32,
    pub ahash_size: u32,
    pub blockhash_size: u32,
}

impl Default for ImgHashConfig {
    fn default() -> Self {
        ImgHashConfig {
            phash_size: 8,
            dhash_size: 8,
            ahash_size: 8,
            blockhash_size: 8,
        }
    }
}

#[derive(Default)]
pub struct ImgHashes {
    pub phash: Option<String>,
    pub dhash: Option<String>,
    pub ahash: Option<String>,
    pub blockhash: Option<String>,
}

pub struct ImgHashers {
    phash: Option<Hasher>,
    dhash: Option<Hasher>,
    ahash: Option<Hasher>,
    blockhash: Option<Hasher>,
}

impl ImgHashers {
    pub fn new(cfg: &ImgHashConfig, algorithms: &[Algorithm]) -> Self {
        let make = |a: Algorithm, size: u32, alg: HashAlg, dct: bool| {
            algorithms.contains(&a).then(|| {
                let c = HasherConfig::new().hash_size(size, size).hash_alg(alg);
                if dct { c.preproc_dct() } else { c }.to_hasher()
            })
        };
        ImgHashers {
            // pHash: DCT of the downscaled image, bits against the median.
            phash: make(Algorithm::Phash, cfg.phash_size, HashAlg::Median, true),
            // dHash: horizontal gradient (img_hash's "Gradient").
            dhash: make(Algorithm::Dhash, cfg.dhash_size, HashAlg::Gradient, false),
            // aHash: bits against the mean.
            ahash: make(Algorithm::Ahash, cfg.ahash_size, HashAlg::Mean, false),
            blockhash: make(
                Algorithm::Blockhash,
                cfg.blockhash_size,
                HashAlg::Blockhash,
                false,
            ),
        }
    }

    pub fn any(&self) -> bool {
        self.phash.is_some()
            || self.dhash.is_some()
            || self.ahash.is_some()
            || self.blockhash.is_some()
    }

    /// Consumes the decoded image so its pixels are moved, not copied, and dropped here.
    pub fn hash(&self, img: DecodedImage) -> ImgHashes {
        if !self.any() {
            return ImgHashes::default();
        }
        let (w, h) = (img.width, img.height);
        let dynimg = match img.pixels {
            Pixels::Grey(d) => GrayImage::from_raw(w, h, d).map(DynamicImage::ImageLuma8),
            Pixels::Rgb(d) => RgbImage::from_raw(w, h, d).map(DynamicImage::ImageRgb8),
        };
        let Some(dynimg) = dynimg else {
            // Unreachable for decoder output (buffer sizes are exact); no hash rather than a panic.
            return ImgHashes::default();
        };
        let run = |h: &Option<Hasher>| {
            h.as_ref()
                .map(|h| hex::encode(h.hash_image(&dynimg).as_bytes()))
        };
        ImgHashes {
            phash: run(&self.phash),
            dhash: run(&self.dhash),
            ahash: run(&self.ahash),
            blockhash: run(&self.blockhash),
        }
    }
}
