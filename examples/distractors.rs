//! Synthetic distractor hashes for the robustness benchmark (bench/robustness.py).
//!
//! Uniformly random bits would flatter a false-positive rate: two random 256-bit hashes are
//! about 128 bits apart and never come within PDQ's 31. Real false positives come from images
//! that share low-frequency structure, so the distractors here are hashes of generated images
//! with photo-like statistics, made in memory and hashed by the same code as `baken hash`:
//!
//! * `crop` (45 %): a random crop (15–100 % of each side, so the aspect changes too) of one of
//!   the given photos, rescaled, randomly mirrored, with a random gain and offset;
//! * `collage` (20 %): a 2×1, 1×2 or 2×2 grid of such crops;
//! * `noise` (20 %): 1/f^β value noise (β 1–2.5), a shared luma field plus weaker colour fields;
//! * `shapes` (15 %): a linear gradient with 3–12 random rectangles and ellipses, plus a little
//!   noise.
//!
//! Images are 64–128 px a side: the hashes depend on low frequencies (PDQ works on a 64×64
//! downsample, the others on 8–16 px), and small images keep a million of them to minutes.
//! The photos given must not include anything the benchmark queries with (its "known list"
//! side); the benchmark passes its distractor-side photos only.
//!
//! Every image is made from its own generator seeded by (seed, index), so the output does not
//! depend on the number of threads.
//!
//! Output: `count` records of 65 bytes: PDQ hash (32 bytes, the hex digits' byte order), PDQ
//! quality (1 byte), then pHash, dHash, aHash, blockhash (8 bytes each, as `baken hash` prints
//! them in hex). A JSON summary goes to stdout.
//!
//! cargo build --release --example distractors
//! distractors --seed 1 --count 1000000 --photos LIST.txt --out distractors.bin

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use baken::decode::{self, Alpha, DecodeLimits, DecodeOptions, DecodedImage, Format, ImageInfo};
use baken::hashing::imghash::{ImgHashConfig, ImgHashers};
use baken::hashing::pdq::{PdqMode, PixelView, pdq_hash};
use baken::hashing::{Algorithm, read_limited};
use clap::Parser;
use image::RgbImage;
use image::imageops::{self, FilterType};
use rayon::prelude::*;

/// Bytes per output record: PDQ 32 + quality 1 + four 64-bit hashes.
const RECORD: usize = 32 + 1 + 4 * 8;
/// Photos are kept at most this large in memory: crops of them end up ≤ 128 px anyway.
const PHOTO_MAX_SIDE: u32 = 256;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 1_000_000)]
    count: usize,
    /// A text file with one photo path per line (the crop and collage sources). Without it,
    /// only the procedural kinds are made.
    #[arg(long)]
    photos: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
}

/// SplitMix64: tiny, seedable and good enough for picking image parameters.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, index: u64) -> Self {
        let mut r = Rng(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next(); // decorrelate neighbouring indices
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
    /// Uniform integer in lo..=hi.
    fn int(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next() % u64::from(hi - lo + 1)) as u32
    }
}

fn load_photos(list: &PathBuf) -> anyhow::Result<Vec<RgbImage>> {
    let text = std::fs::read_to_string(list).with_context(|| format!("reading {list:?}"))?;
    let limits = DecodeLimits::default();
    let opts = DecodeOptions {
        alpha: Alpha::White,
        jpeg_scale_min_side: None,
    };
    let paths: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    paths
        .par_iter()
        .map(|p| {
            let bytes = read_limited(p.as_ref(), limits.max_input_bytes)?;
            let img = decode::decode(&bytes, &limits, opts)?;
            let rgb = to_rgb(img);
            let (w, h) = rgb.dimensions();
            let scale = PHOTO_MAX_SIDE as f32 / w.max(h) as f32;
            Ok(if scale < 1.0 {
                let nw = ((w as f32 * scale).round() as u32).max(1);
                let nh = ((h as f32 * scale).round() as u32).max(1);
                imageops::resize(&rgb, nw, nh, FilterType::Triangle)
            } else {
                rgb
            })
        })
        .collect::<Result<Vec<_>, baken::error::DecodeError>>()
        .with_context(|| format!("decoding the photos listed in {list:?}"))
}

fn to_rgb(img: DecodedImage) -> RgbImage {
    let (w, h) = (img.width, img.height);
    let data = match img.pixels {
        decode::Pixels::Rgb(d) => d,
        decode::Pixels::Grey(d) => d.iter().flat_map(|&v| [v, v, v]).collect(),
    };
    RgbImage::from_raw(w, h, data).expect("decoder output has exact buffer sizes")
}

/// A random crop of a random photo at `w`×`h`, maybe mirrored, with a random gain and offset.
fn photo_crop(photos: &[RgbImage], rng: &mut Rng, w: u32, h: u32) -> RgbImage {
    let p = &photos[rng.int(0, photos.len() as u32 - 1) as usize];
    let (pw, ph) = p.dimensions();
    let cw = ((pw as f32 * rng.range(0.15, 1.0)) as u32).clamp(1, pw);
    let ch = ((ph as f32 * rng.range(0.15, 1.0)) as u32).clamp(1, ph);
    let x = rng.int(0, pw - cw);
    let y = rng.int(0, ph - ch);
    let crop = imageops::crop_imm(p, x, y, cw, ch).to_image();
    let mut out = imageops::resize(&crop, w, h, FilterType::Triangle);
    if rng.unit() < 0.5 {
        imageops::flip_horizontal_in_place(&mut out);
    }
    let gain = rng.range(0.7, 1.3);
    let offset = rng.range(-30.0, 30.0);
    for v in out.iter_mut() {
        *v = (f32::from(*v) * gain + offset).clamp(0.0, 255.0) as u8;
    }
    out
}

fn collage(photos: &[RgbImage], rng: &mut Rng, w: u32, h: u32) -> RgbImage {
    let (cols, rows) = [(2, 1), (1, 2), (2, 2)][rng.int(0, 2) as usize];
    let mut out = RgbImage::new(w, h);
    for r in 0..rows {
        for c in 0..cols {
            let (x0, x1) = (w * c / cols, w * (c + 1) / cols);
            let (y0, y1) = (h * r / rows, h * (r + 1) / rows);
            let tile = photo_crop(photos, rng, x1 - x0, y1 - y0);
            imageops::replace(&mut out, &tile, i64::from(x0), i64::from(y0));
        }
    }
    out
}

/// Value noise with octaves weighted 1/f^β, in about [-1, 1]; row-major `w`×`h`.
fn fractal_field(rng: &mut Rng, w: u32, h: u32, beta: f32, octaves: u32) -> Vec<f32> {
    let mut field = vec![0f32; (w * h) as usize];
    let mut total = 0f32;
    for o in 0..octaves {
        let cells = 2u32 << o; // 2, 4, 8, … cells across
        let amp = (cells as f32).powf(-beta);
        total += amp;
        let g = (cells + 1) as usize;
        let grid: Vec<f32> = (0..g * g).map(|_| rng.range(-1.0, 1.0)).collect();
        for y in 0..h {
            let fy = y as f32 / h as f32 * cells as f32;
            let (iy, ty) = (fy as usize, smooth(fy.fract()));
            for x in 0..w {
                let fx = x as f32 / w as f32 * cells as f32;
                let (ix, tx) = (fx as usize, smooth(fx.fract()));
                let at = |gx: usize, gy: usize| grid[gy * g + gx];
                let top = at(ix, iy) * (1.0 - tx) + at(ix + 1, iy) * tx;
                let bottom = at(ix, iy + 1) * (1.0 - tx) + at(ix + 1, iy + 1) * tx;
                field[(y * w + x) as usize] += amp * (top * (1.0 - ty) + bottom * ty);
            }
        }
    }
    field.iter_mut().for_each(|v| *v /= total);
    field
}

fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

fn noise_image(rng: &mut Rng, w: u32, h: u32) -> RgbImage {
    let beta = rng.range(1.0, 2.5);
    let luma = fractal_field(rng, w, h, beta, 5);
    let tints: Vec<Vec<f32>> = (0..3).map(|_| fractal_field(rng, w, h, beta, 3)).collect();
    let base: Vec<f32> = (0..3).map(|_| rng.range(60.0, 190.0)).collect();
    let contrast = rng.range(80.0, 200.0);
    let tint = rng.range(0.0, 60.0);
    RgbImage::from_fn(w, h, |x, y| {
        let i = (y * w + x) as usize;
        image::Rgb(std::array::from_fn(|c| {
            (base[c] + contrast * luma[i] + tint * tints[c][i]).clamp(0.0, 255.0) as u8
        }))
    })
}

fn shapes_image(rng: &mut Rng, w: u32, h: u32) -> RgbImage {
    let c0: [f32; 3] = std::array::from_fn(|_| rng.range(0.0, 255.0));
    let c1: [f32; 3] = std::array::from_fn(|_| rng.range(0.0, 255.0));
    let angle = rng.range(0.0, std::f32::consts::TAU);
    let (dx, dy) = (angle.cos(), angle.sin());
    let mut px: Vec<[f32; 3]> = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f32 / w as f32, (i / w) as f32 / h as f32);
            let t = ((x - 0.5) * dx + (y - 0.5) * dy + 0.5).clamp(0.0, 1.0);
            std::array::from_fn(|c| c0[c] * (1.0 - t) + c1[c] * t)
        })
        .collect();
    for _ in 0..rng.int(3, 12) {
        let colour: [f32; 3] = std::array::from_fn(|_| rng.range(0.0, 255.0));
        let (cx, cy) = (rng.range(0.0, w as f32), rng.range(0.0, h as f32));
        let (rx, ry) = (
            rng.range(4.0, w as f32 / 2.0),
            rng.range(4.0, h as f32 / 2.0),
        );
        let ellipse = rng.unit() < 0.5;
        for (i, p) in px.iter_mut().enumerate() {
            let (x, y) = ((i as u32 % w) as f32, (i as u32 / w) as f32);
            let (u, v) = ((x - cx) / rx, (y - cy) / ry);
            let inside = if ellipse {
                u * u + v * v <= 1.0
            } else {
                u.abs() <= 1.0 && v.abs() <= 1.0
            };
            if inside {
                *p = colour;
            }
        }
    }
    let sigma = rng.range(0.0, 8.0);
    let mut out = RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(&px) {
        // Approximately Gaussian: sum of three uniforms.
        let n = sigma * (rng.unit() + rng.unit() + rng.unit() - 1.5) * 2.0;
        o.0 = std::array::from_fn(|c| (p[c] + n).clamp(0.0, 255.0) as u8);
    }
    out
}

/// The image of one index; its kind name is returned for the summary.
fn make(photos: &[RgbImage], seed: u64, index: u64) -> (&'static str, RgbImage) {
    let mut rng = Rng::new(seed, index);
    let (w, h) = (rng.int(64, 128), rng.int(64, 128));
    let k = rng.unit();
    let with_photos = !photos.is_empty();
    if with_photos && k < 0.45 {
        ("crop", photo_crop(photos, &mut rng, w, h))
    } else if with_photos && k < 0.65 {
        ("collage", collage(photos, &mut rng, w, h))
    } else if k < 0.85 {
        ("noise", noise_image(&mut rng, w, h))
    } else {
        ("shapes", shapes_image(&mut rng, w, h))
    }
}

/// Hash an image exactly as `baken hash` hashes decoded pixels (PDQ full mode, 64-bit others).
fn hash(hashers: &ImgHashers, img: RgbImage) -> [u8; RECORD] {
    let (w, h) = img.dimensions();
    let pdq = pdq_hash(
        PixelView {
            width: w as usize,
            height: h as usize,
            channels: 3,
            data: img.as_raw(),
        },
        PdqMode::Full,
    );
    let decoded = DecodedImage {
        info: ImageInfo {
            format: Format::Png,
            width: w,
            height: h,
            colour: "rgb",
            alpha: false,
            bit_depth: 8,
            exif_orientation: None,
            decoded_size: None,
        },
        width: w,
        height: h,
        pixels: decode::Pixels::Rgb(img.into_raw()),
    };
    let others = hashers.hash(decoded);
    let mut rec = [0u8; RECORD];
    rec[..32].copy_from_slice(&pdq.hash.to_bytes());
    rec[32] = pdq.quality;
    for (k, h) in [others.phash, others.dhash, others.ahash, others.blockhash]
        .iter()
        .enumerate()
    {
        let bytes =
            hex::decode(h.as_deref().expect("all four were requested")).expect("image_hasher hex");
        rec[33 + 8 * k..41 + 8 * k].copy_from_slice(&bytes);
    }
    rec
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let start = Instant::now();
    let photos = match &args.photos {
        Some(list) => load_photos(list)?,
        None => Vec::new(),
    };
    if args.photos.is_some() && photos.is_empty() {
        bail!("the photo list is empty");
    }
    let hashers = ImgHashers::new(
        &ImgHashConfig::default(),
        &[
            Algorithm::Phash,
            Algorithm::Dhash,
            Algorithm::Ahash,
            Algorithm::Blockhash,
        ],
    );
    let made: Vec<(&str, [u8; RECORD])> = (0..args.count as u64)
        .into_par_iter()
        .map(|i| {
            let (kind, img) = make(&photos, args.seed, i);
            (kind, hash(&hashers, img))
        })
        .collect();
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&args.out).with_context(|| format!("creating {:?}", args.out))?,
    );
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for (kind, rec) in &made {
        out.write_all(rec)?;
        *kinds.entry(kind).or_default() += 1;
    }
    out.flush()?;
    println!(
        "{}",
        serde_json::json!({
            "count": args.count,
            "seed": args.seed,
            "photos": photos.len(),
            "kinds": kinds,
            "record_bytes": RECORD,
            "seconds": (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        })
    );
    Ok(())
}
