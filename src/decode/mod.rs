//! In-memory image decoding with hard limits.
//!
//! The format is sniffed from the content, never from a file name. Every decoder runs under
//! limits on input bytes, pixel count, side length and decoder memory, checked from the header
//! before any pixel buffer is allocated. Output is 8-bit grey or RGB: palettes are expanded,
//! 16-bit samples keep their high byte, alpha is flattened onto white, CMYK is converted as
//! Pillow does. EXIF orientation is read and reported, never applied: shared hash lists are
//! computed on stored pixels, and rotations are caught by PDQ's dihedral hashes.
//!
//! Decoded pixels live only in the returned value; nothing here writes or logs them.

pub mod jpeg;
pub mod video;

use std::io::Cursor;

use image::{ColorType, DynamicImage, ImageDecoder, ImageReader};
use serde::Serialize;

use crate::error::DecodeError;

/// Limits applied to every decode. Defaults suit an upload pipeline: a 50-megapixel photo
/// decodes, a decompression bomb does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(default)]
pub struct DecodeLimits {
    /// Largest accepted input, in bytes.
    pub max_input_bytes: u64,
    /// Largest accepted width × height.
    pub max_pixels: u64,
    /// Largest accepted width or height.
    pub max_dimension: u32,
    /// Largest memory a decoder may allocate (output buffer and working memory), in bytes.
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_input_bytes: 64 * 1024 * 1024,
            max_pixels: 50_000_000,
            max_dimension: 30_000,
            max_alloc: 512 * 1024 * 1024,
        }
    }
}

/// Formats we accept, identified by their magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Jpeg,
    Png,
    Webp,
    Gif,
    Bmp,
    Tiff,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "JPEG",
            Format::Png => "PNG",
            Format::Webp => "WebP",
            Format::Gif => "GIF",
            Format::Bmp => "BMP",
            Format::Tiff => "TIFF",
        }
    }

    fn image_format(self) -> image::ImageFormat {
        match self {
            Format::Jpeg => image::ImageFormat::Jpeg,
            Format::Png => image::ImageFormat::Png,
            Format::Webp => image::ImageFormat::WebP,
            Format::Gif => image::ImageFormat::Gif,
            Format::Bmp => image::ImageFormat::Bmp,
            Format::Tiff => image::ImageFormat::Tiff,
        }
    }
}

/// Identify the format from the first bytes.
pub fn sniff(data: &[u8]) -> Option<Format> {
    if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if data.len() >= 12 && &data[0..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        Some(Format::Webp)
    } else if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
        Some(Format::Gif)
    } else if data.starts_with(b"BM") && data.len() >= 14 {
        Some(Format::Bmp)
    } else if data.starts_with(b"II*\0") || data.starts_with(b"MM\0*") {
        Some(Format::Tiff)
    } else {
        None
    }
}

/// Decoded 8-bit pixels, row-major without padding.
#[derive(Clone)]
pub enum Pixels {
    Grey(Vec<u8>),
    Rgb(Vec<u8>),
}

impl Pixels {
    pub fn channels(&self) -> usize {
        match self {
            Pixels::Grey(_) => 1,
            Pixels::Rgb(_) => 3,
        }
    }
    pub fn data(&self) -> &[u8] {
        match self {
            Pixels::Grey(d) | Pixels::Rgb(d) => d,
        }
    }
}

// Never print pixel values.
impl std::fmt::Debug for Pixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Pixels({} channel(s), {} bytes)",
            self.channels(),
            self.data().len()
        )
    }
}

/// What we learnt about an image besides its pixels; safe to log and report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: Format,
    pub width: u32,
    pub height: u32,
    /// The stored colour model: grey, rgb, palette, cmyk (with `alpha` when present).
    pub colour: &'static str,
    pub alpha: bool,
    pub bit_depth: u8,
    /// EXIF orientation (1–8) when present. Reported, not applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exif_orientation: Option<u8>,
    /// Decoded at reduced size by the JPEG decoder's DCT scaling (fast mode); `None` = full size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoded_size: Option<(u32, u32)>,
}

#[derive(Debug)]
pub struct DecodedImage {
    pub info: ImageInfo,
    /// Dimensions of `pixels` (differs from `info` only in fast mode).
    pub width: u32,
    pub height: u32,
    pub pixels: Pixels,
}

impl DecodedImage {
    pub fn view(&self) -> crate::hashing::pdq::PixelView<'_> {
        crate::hashing::pdq::PixelView {
            width: self.width as usize,
            height: self.height as usize,
            channels: self.pixels.channels(),
            data: self.pixels.data(),
        }
    }
}

/// What to do with an alpha channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Alpha {
    /// Composite onto white: hash what a viewer sees. The default, and the corpus reference's.
    #[default]
    White,
    /// Drop the alpha channel and keep the stored colour, as Pillow's `convert("RGB")` does
    /// (python-threatexchange / HMA). For matching lists built that way.
    Ignore,
}

crate::from_str_by_name!(Alpha, "alpha handling");

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Alpha handling for formats that carry it.
    pub alpha: Alpha,
    /// JPEG only: decode with DCT-domain scaling to the smallest size whose shorter side is
    /// at least this many pixels. Faster, and no longer bit-exact with the reference.
    pub jpeg_scale_min_side: Option<u32>,
}

/// The checks every input gets before its format is even looked at: not empty, not over `limit`.
pub(crate) fn check_input(data: &[u8], limit: u64) -> Result<(), DecodeError> {
    if data.is_empty() {
        return Err(DecodeError::Empty);
    }
    check_input_size(data, limit)
}

/// `data` is at most `limit` bytes.
pub(crate) fn check_input_size(data: &[u8], limit: u64) -> Result<(), DecodeError> {
    if data.len() as u64 > limit {
        return Err(DecodeError::TooLarge {
            size: data.len() as u64,
            limit,
        });
    }
    Ok(())
}

pub(crate) fn check_dimensions(
    format: &'static str,
    width: u32,
    height: u32,
    limits: &DecodeLimits,
) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::ZeroDimension {
            format,
            width,
            height,
        });
    }
    if width > limits.max_dimension
        || height > limits.max_dimension
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(DecodeError::DimensionsTooLarge {
            format,
            width,
            height,
            max_dimension: limits.max_dimension,
            max_pixels: limits.max_pixels,
        });
    }
    Ok(())
}

/// Decoder messages describe structure, not content, but are capped and made printable anyway
/// so nothing odd from a file reaches a log line or a caller.
pub(crate) fn sanitize(msg: &str) -> String {
    let clean: String = msg
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(160)
        .collect();
    clean.trim().to_string()
}

/// Decode an image held in memory.
pub fn decode(
    data: &[u8],
    limits: &DecodeLimits,
    opts: DecodeOptions,
) -> Result<DecodedImage, DecodeError> {
    check_input(data, limits.max_input_bytes)?;
    let format = sniff(data).ok_or(DecodeError::UnsupportedFormat)?;
    if format == Format::Jpeg {
        let img = jpeg::decode(data, limits, opts.jpeg_scale_min_side)?;
        let full = (img.header_width, img.header_height);
        let info = ImageInfo {
            format,
            width: full.0,
            height: full.1,
            colour: img.colour,
            alpha: false,
            bit_depth: 8,
            exif_orientation: img.markers.orientation,
            decoded_size: ((img.width, img.height) != full).then_some((img.width, img.height)),
        };
        return Ok(DecodedImage {
            info,
            width: img.width,
            height: img.height,
            pixels: img.pixels,
        });
    }
    decode_with_image(data, format, limits, opts.alpha)
}

fn map_image_error(
    format: &'static str,
    e: image::ImageError,
    limits: &DecodeLimits,
) -> DecodeError {
    use image::ImageError as E;
    match e {
        E::Limits(l) => match l.kind() {
            image::error::LimitErrorKind::DimensionError => DecodeError::DimensionsTooLarge {
                format,
                width: 0,
                height: 0,
                max_dimension: limits.max_dimension,
                max_pixels: limits.max_pixels,
            },
            _ => DecodeError::MemoryLimit {
                format,
                limit: limits.max_alloc,
            },
        },
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Truncated {
                format,
                detail: "unexpected end of data".into(),
            }
        }
        E::IoError(io) => DecodeError::Corrupt {
            format,
            detail: sanitize(&io.to_string()),
        },
        E::Unsupported(u) => DecodeError::Unsupported {
            format,
            detail: sanitize(&u.to_string()),
        },
        other => {
            let msg = other.to_string();
            let lower = msg.to_ascii_lowercase();
            if lower.contains("eof") || lower.contains("end of") || lower.contains("truncat") {
                DecodeError::Truncated {
                    format,
                    detail: sanitize(&msg),
                }
            } else {
                DecodeError::Corrupt {
                    format,
                    detail: sanitize(&msg),
                }
            }
        }
    }
}

/// Dimensions from the fixed-layout headers, so zero, absurd and bomb dimensions get their own
/// error before any decoder runs. `None` when the header is too short or not fixed-layout
/// (TIFF): the decoder's limits still apply then.
pub fn peek_dimensions(format: Format, d: &[u8]) -> Option<(u32, u32)> {
    let be32 = |i: usize| {
        d.get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let le16 = |i: usize| {
        d.get(i..i + 2)
            .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let le24 = |i: usize| {
        d.get(i..i + 3)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], 0]))
    };
    let le32 = |i: usize| {
        d.get(i..i + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    match format {
        Format::Png if d.get(12..16) == Some(b"IHDR") => Some((be32(16)?, be32(20)?)),
        Format::Gif => Some((le16(6)?, le16(8)?)),
        Format::Bmp => {
            if le32(14)? == 12 {
                Some((le16(18)?, le16(20)?))
            } else {
                Some((le32(18)?.unsigned_abs(), le32(22)?.unsigned_abs()))
            }
        }
        Format::Webp => match d.get(12..16)? {
            b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
            b"VP8 " => Some((le16(26)? & 0x3FFF, le16(28)? & 0x3FFF)),
            b"VP8L" => {
                let b = d.get(21..25)?;
                let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                Some(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
            }
            _ => None,
        },
        _ => None,
    }
}

fn decode_with_image(
    data: &[u8],
    format: Format,
    limits: &DecodeLimits,
    alpha_mode: Alpha,
) -> Result<DecodedImage, DecodeError> {
    let name = format.name();
    if let Some((w, h)) = peek_dimensions(format, data) {
        check_dimensions(name, w, h, limits)?;
    }
    let mut reader = ImageReader::with_format(Cursor::new(data), format.image_format());
    let mut il = image::Limits::default();
    il.max_image_width = Some(limits.max_dimension);
    il.max_image_height = Some(limits.max_dimension);
    il.max_alloc = Some(limits.max_alloc);
    reader.limits(il);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(name, e, limits))?;
    let (width, height) = decoder.dimensions();
    check_dimensions(name, width, height, limits)?;
    let orientation = decoder
        .orientation()
        .ok()
        .map(image::metadata::Orientation::to_exif)
        .filter(|&o| o != 1 || exif_present(&mut decoder));
    // `from_decoder` does not apply `max_alloc` itself: check the output buffer plus our own
    // 8-bit conversion against it before decoding.
    let need = decoder
        .total_bytes()
        .saturating_add(u64::from(width) * u64::from(height) * 3);
    if need > limits.max_alloc {
        return Err(DecodeError::MemoryLimit {
            format: name,
            limit: limits.max_alloc,
        });
    }
    let original = decoder.original_color_type();
    let colour_type = decoder.color_type();
    let img = DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(name, e, limits))?;
    let (colour, alpha, bit_depth) = describe(original, colour_type);
    let pixels = to_pixels(img, alpha_mode);
    Ok(DecodedImage {
        info: ImageInfo {
            format,
            width,
            height,
            colour,
            alpha,
            bit_depth,
            exif_orientation: orientation,
            decoded_size: None,
        },
        width,
        height,
        pixels,
    })
}

fn exif_present(decoder: &mut impl ImageDecoder) -> bool {
    matches!(decoder.exif_metadata(), Ok(Some(_)))
}

fn describe(original: image::ExtendedColorType, ct: ColorType) -> (&'static str, bool, u8) {
    use image::ExtendedColorType as X;
    let alpha = ct.has_alpha();
    let colour = if matches!(original, X::Cmyk8 | X::Cmyk16) {
        "cmyk"
    } else if ct.has_color() {
        "rgb"
    } else {
        "grey"
    };
    let bits = (ct.bits_per_pixel() / u16::from(ct.channel_count())) as u8;
    (colour, alpha, bits)
}

/// Flatten onto white: `round((c·a + 255·(255−a)) / 255)`.
#[inline]
fn over_white(c: u8, a: u8) -> u8 {
    let (c, a) = (u32::from(c), u32::from(a));
    ((c * a + 255 * (255 - a) + 127) / 255) as u8
}

fn to_pixels(img: DynamicImage, alpha: Alpha) -> Pixels {
    let over_white = |c: u8, a: u8| match alpha {
        Alpha::White => over_white(c, a),
        Alpha::Ignore => c,
    };
    let flatten_rgba = |rgba: &[u8]| -> Vec<u8> {
        let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
        for p in rgba.chunks_exact(4) {
            out.extend_from_slice(&[
                over_white(p[0], p[3]),
                over_white(p[1], p[3]),
                over_white(p[2], p[3]),
            ]);
        }
        out
    };
    match img {
        DynamicImage::ImageLuma8(b) => Pixels::Grey(b.into_raw()),
        DynamicImage::ImageRgb8(b) => Pixels::Rgb(b.into_raw()),
        DynamicImage::ImageLumaA8(b) => Pixels::Grey(
            b.into_raw()
                .chunks_exact(2)
                .map(|p| over_white(p[0], p[1]))
                .collect(),
        ),
        DynamicImage::ImageRgba8(b) => Pixels::Rgb(flatten_rgba(b.as_raw())),
        DynamicImage::ImageLuma16(b) => {
            Pixels::Grey(b.as_raw().iter().map(|&v| (v >> 8) as u8).collect())
        }
        DynamicImage::ImageLumaA16(b) => Pixels::Grey(
            b.as_raw()
                .chunks_exact(2)
                .map(|p| over_white((p[0] >> 8) as u8, (p[1] >> 8) as u8))
                .collect(),
        ),
        DynamicImage::ImageRgb16(b) => {
            Pixels::Rgb(b.as_raw().iter().map(|&v| (v >> 8) as u8).collect())
        }
        DynamicImage::ImageRgba16(b) => {
            let hi: Vec<u8> = b.as_raw().iter().map(|&v| (v >> 8) as u8).collect();
            Pixels::Rgb(flatten_rgba(&hi))
        }
        other => {
            // Float (TIFF/EXR-style) and any future layouts: through image's own conversion.
            if other.color().has_alpha() {
                Pixels::Rgb(flatten_rgba(other.to_rgba8().as_raw()))
            } else {
                Pixels::Rgb(other.to_rgb8().into_raw())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_ignores_names_and_needs_magic() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest"), Some(Format::Jpeg));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nxxxx"), Some(Format::Png));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::Webp));
        assert_eq!(sniff(b"GIF89a...."), Some(Format::Gif));
        assert_eq!(sniff(b"II*\0...."), Some(Format::Tiff));
        assert_eq!(sniff(b"%PDF-1.4"), None);
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVE"), None);
    }

    #[test]
    fn white_flattening() {
        assert_eq!(over_white(0, 0), 255);
        assert_eq!(over_white(0, 255), 0);
        assert_eq!(over_white(100, 255), 100);
        assert_eq!(over_white(0, 128), 127);
    }

    #[test]
    fn sanitize_caps_and_strips() {
        let s = sanitize(&format!("bad\u{1}\u{ff}{}", "x".repeat(500)));
        assert!(s.len() <= 160);
        assert!(s.starts_with("bad??"));
    }
}
