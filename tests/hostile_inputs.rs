//! Hostile and broken inputs, generated here: every class gets a typed error that says what is
//! wrong, and nothing panics, hangs or allocates without bound. Needs no ../shared.

mod common;

use std::io::Cursor;

use baken::decode::{self, DecodeLimits, DecodeOptions, jpeg};
use baken::error::DecodeError;
use baken::hashing::{HashOptions, Hasher};

fn decode_kind(data: &[u8]) -> Result<(), &'static str> {
    decode_kind_with(data, &DecodeLimits::default())
}

fn decode_kind_with(data: &[u8], limits: &DecodeLimits) -> Result<(), &'static str> {
    decode::decode(data, limits, DecodeOptions::default())
        .map(|_| ())
        .map_err(|e| e.kind())
}

fn photo(w: u32, h: u32, seed: u64) -> Vec<u8> {
    common::generated_image(w, h, 3, seed)
}

fn encode(fmt: image::ImageFormat, w: u32, h: u32) -> Vec<u8> {
    let px = photo(w, h, 11);
    let mut out = Cursor::new(Vec::new());
    image::write_buffer_with_format(&mut out, &px, w, h, image::ExtendedColorType::Rgb8, fmt)
        .expect("encode");
    out.into_inner()
}

fn jpeg_file(w: u32, h: u32, progressive: bool) -> Vec<u8> {
    jpeg::encode(&photo(w, h, 12), w, h, 3, 85, progressive).expect("jpeg encode")
}

/// A PNG whose header claims `w`×`h` RGB, followed by a small IDAT of zlib-compressed zeros:
/// the classic decompression bomb when the dimensions are large.
fn png_with_header(w: u32, h: u32, idat: &[u8]) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut f = b"\x89PNG\r\n\x1a\n".to_vec();
    f.extend(common::png_chunk(b"IHDR", &ihdr));
    f.extend(common::png_chunk(b"IDAT", idat));
    f.extend(common::png_chunk(b"IEND", &[]));
    f
}

/// A zlib stream holding `n` (≤ 65535) zero bytes in one stored block.
fn zlib_zeros(n: usize) -> Vec<u8> {
    let n = n.min(65535);
    let mut z = vec![0x78, 0x01, 0x01];
    z.extend_from_slice(&(n as u16).to_le_bytes());
    z.extend_from_slice(&(!(n as u16)).to_le_bytes());
    z.extend(std::iter::repeat_n(0u8, n));
    // Adler-32 of n zeros: a = 1, b = n mod 65521.
    let b = (n % 65521) as u32;
    z.extend_from_slice(&((b << 16) | 1).to_be_bytes());
    z
}

/// Replace the SOF0 height and width of a baseline JPEG.
fn jpeg_with_size(mut data: Vec<u8>, w: u16, h: u16) -> Vec<u8> {
    let pos = data
        .windows(2)
        .position(|m| m == [0xFF, 0xC0] || m == [0xFF, 0xC2])
        .expect("SOF marker");
    data[pos + 5..pos + 7].copy_from_slice(&h.to_be_bytes());
    data[pos + 7..pos + 9].copy_from_slice(&w.to_be_bytes());
    data
}

#[test]
fn valid_generated_files_decode_in_every_format() {
    for fmt in [
        image::ImageFormat::Png,
        image::ImageFormat::WebP,
        image::ImageFormat::Gif,
        image::ImageFormat::Bmp,
        image::ImageFormat::Tiff,
    ] {
        let data = encode(fmt, 96, 64);
        let img = decode::decode(&data, &DecodeLimits::default(), DecodeOptions::default())
            .unwrap_or_else(|e| panic!("{fmt:?}: {e}"));
        assert_eq!((img.width, img.height), (96, 64), "{fmt:?}");
    }
    for progressive in [false, true] {
        let img = decode::decode(
            &jpeg_file(96, 64, progressive),
            &DecodeLimits::default(),
            DecodeOptions::default(),
        )
        .expect("jpeg");
        assert_eq!((img.width, img.height), (96, 64));
    }
}

#[test]
fn empty_and_non_image_inputs() {
    assert_eq!(decode_kind(b""), Err("empty"));
    for junk in [
        &b"hello, this is plain text and not an image"[..],
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj",
        b"PK\x03\x04\x14\x00\x00\x00",
        b"RIFF\x24\x00\x00\x00WAVEfmt ",
        b"\x00\x00\x00\x18ftypmp42",
        b"\x00",
    ] {
        assert_eq!(decode_kind(junk), Err("unsupported_format"), "{junk:?}");
    }
    // An extension-less guess would call this a PNG; the content says otherwise.
    let mut seeded = vec![0u8; 4096];
    let mut s = 0x1234_5678u32;
    for b in seeded.iter_mut() {
        s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (s >> 16) as u8;
    }
    assert_eq!(decode_kind(&seeded), Err("unsupported_format"));
}

#[test]
fn magic_only_files_are_truncated_or_corrupt() {
    for data in [
        &b"\xFF\xD8\xFF"[..],
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a",
        b"RIFF\x00\x00\x00\x00WEBP",
        b"II*\x00",
        b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    ] {
        let k = decode_kind(data).expect_err("must fail");
        assert!(matches!(k, "truncated" | "corrupt"), "{data:?} gave {k}");
    }
}

#[test]
fn truncated_files_say_truncated() {
    let cases = [
        ("jpeg", jpeg_file(200, 150, false)),
        ("jpeg-progressive", jpeg_file(200, 150, true)),
        ("png", encode(image::ImageFormat::Png, 200, 150)),
        ("gif", encode(image::ImageFormat::Gif, 200, 150)),
        ("bmp", encode(image::ImageFormat::Bmp, 200, 150)),
        ("tiff", encode(image::ImageFormat::Tiff, 200, 150)),
        ("webp", encode(image::ImageFormat::WebP, 200, 150)),
    ];
    for (name, full) in cases {
        let cut = &full[..full.len() * 2 / 3];
        let k = decode_kind(cut).expect_err(name);
        assert!(
            matches!(k, "truncated" | "corrupt"),
            "{name}: cut file gave {k}"
        );
    }
    // JPEG specifically reports truncation as such.
    let j = jpeg_file(200, 150, false);
    assert_eq!(decode_kind(&j[..j.len() / 2]), Err("truncated"));
}

#[test]
fn every_prefix_of_small_files_fails_cleanly_or_decodes() {
    // No prefix may panic; each either decodes or gives a typed error.
    for full in [
        jpeg_file(24, 16, false),
        jpeg_file(24, 16, true),
        encode(image::ImageFormat::Png, 24, 16),
        encode(image::ImageFormat::Gif, 24, 16),
        encode(image::ImageFormat::WebP, 24, 16),
        encode(image::ImageFormat::Bmp, 24, 16),
        encode(image::ImageFormat::Tiff, 24, 16),
    ] {
        for n in 0..full.len() {
            let _ = decode::decode(
                &full[..n],
                &DecodeLimits::default(),
                DecodeOptions::default(),
            );
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    // Deterministic byte flips across the whole file, for every format.
    let mut s = 0x9E37_79B9u32;
    for full in [
        jpeg_file(64, 48, false),
        jpeg_file(64, 48, true),
        encode(image::ImageFormat::Png, 64, 48),
        encode(image::ImageFormat::Gif, 64, 48),
        encode(image::ImageFormat::WebP, 64, 48),
        encode(image::ImageFormat::Bmp, 64, 48),
        encode(image::ImageFormat::Tiff, 64, 48),
    ] {
        for _ in 0..150 {
            let mut m = full.clone();
            for _ in 0..4 {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let at = (s as usize >> 8) % m.len();
                m[at] ^= (s >> 24) as u8 | 1;
            }
            if let Err(e) = decode::decode(&m, &DecodeLimits::default(), DecodeOptions::default()) {
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

#[test]
fn zero_dimensions_are_named() {
    assert_eq!(
        decode_kind(&png_with_header(0, 10, &zlib_zeros(10))),
        Err("zero_dimension")
    );
    assert_eq!(
        decode_kind(&png_with_header(10, 0, &zlib_zeros(10))),
        Err("zero_dimension")
    );
    let j = jpeg_with_size(jpeg_file(32, 32, false), 0, 32);
    assert_eq!(decode_kind(&j), Err("zero_dimension"));
    let j = jpeg_with_size(jpeg_file(32, 32, false), 32, 0);
    assert_eq!(decode_kind(&j), Err("zero_dimension"));
    // GIF logical screen and BMP header with a zero side.
    let mut g = encode(image::ImageFormat::Gif, 8, 8);
    g[6..8].copy_from_slice(&0u16.to_le_bytes());
    assert_eq!(decode_kind(&g), Err("zero_dimension"));
    let mut b = encode(image::ImageFormat::Bmp, 8, 8);
    b[18..22].copy_from_slice(&0i32.to_le_bytes());
    assert_eq!(decode_kind(&b), Err("zero_dimension"));
}

#[test]
fn bombs_are_refused_from_the_header_before_allocating() {
    // 60000 × 60000 RGB = 10.8 GB of pixels from a few hundred bytes.
    let bomb = png_with_header(60_000, 60_000, &zlib_zeros(1000));
    assert!(bomb.len() < 2000);
    assert_eq!(decode_kind(&bomb), Err("dimensions_too_large"));
    // Within the side limit but over the pixel limit.
    let wide = png_with_header(29_000, 29_000, &zlib_zeros(1000));
    assert_eq!(decode_kind(&wide), Err("dimensions_too_large"));
    // Absurd: the PNG maximum (2^31 - 1).
    let absurd = png_with_header(0x7FFF_FFFF, 0x7FFF_FFFF, &zlib_zeros(10));
    assert_eq!(decode_kind(&absurd), Err("dimensions_too_large"));
    // JPEG claiming 65000 × 65000.
    let j = jpeg_with_size(jpeg_file(32, 32, false), 65_000, 65_000);
    assert_eq!(decode_kind(&j), Err("dimensions_too_large"));
    // GIF logical screen 65535 × 65535.
    let mut g = encode(image::ImageFormat::Gif, 8, 8);
    g[6..8].copy_from_slice(&65535u16.to_le_bytes());
    g[8..10].copy_from_slice(&65535u16.to_le_bytes());
    assert_eq!(decode_kind(&g), Err("dimensions_too_large"));
    // BMP claiming 100000 × 100000.
    let mut b = encode(image::ImageFormat::Bmp, 8, 8);
    b[18..22].copy_from_slice(&100_000i32.to_le_bytes());
    b[22..26].copy_from_slice(&100_000i32.to_le_bytes());
    assert_eq!(decode_kind(&b), Err("dimensions_too_large"));
}

#[test]
fn decoder_memory_limit_is_enforced() {
    let tight = DecodeLimits {
        max_alloc: 1_000_000,
        ..DecodeLimits::default()
    };
    // 1000×1000 RGB needs 3 MB of output alone.
    let png = encode(image::ImageFormat::Png, 1000, 1000);
    assert_eq!(decode_kind_with(&png, &tight), Err("memory_limit"));
    let jpg = jpeg_file(1000, 1000, true);
    assert_eq!(decode_kind_with(&jpg, &tight), Err("memory_limit"));
    // And the same files decode under the defaults.
    assert_eq!(decode_kind(&png), Ok(()));
    assert_eq!(decode_kind(&jpg), Ok(()));
}

#[test]
fn byte_and_pixel_limits_are_configurable() {
    let png = encode(image::ImageFormat::Png, 300, 200);
    let small = DecodeLimits {
        max_input_bytes: 100,
        ..DecodeLimits::default()
    };
    assert_eq!(decode_kind_with(&png, &small), Err("too_large"));
    let few = DecodeLimits {
        max_pixels: 50_000,
        ..DecodeLimits::default()
    };
    assert_eq!(decode_kind_with(&png, &few), Err("dimensions_too_large"));
    let narrow = DecodeLimits {
        max_dimension: 299,
        ..DecodeLimits::default()
    };
    assert_eq!(decode_kind_with(&png, &narrow), Err("dimensions_too_large"));
    let e = decode::decode(&png, &few, DecodeOptions::default()).unwrap_err();
    assert!(e.is_limit());
    assert!(e.to_string().contains("300x200"), "{e}");
}

#[test]
fn error_messages_carry_no_input_bytes() {
    // A file whose every byte after the magic is a marker string: no message may echo it.
    let mut data = b"\x89PNG\r\n\x1a\n".to_vec();
    data.extend(b"SECRETSECRETSECRET".repeat(20));
    let mut jpg = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x40];
    jpg.extend(b"SECRETSECRETSECRET".repeat(20));
    for d in [data, jpg] {
        let e: DecodeError =
            decode::decode(&d, &DecodeLimits::default(), DecodeOptions::default()).unwrap_err();
        assert!(!e.to_string().contains("SECRET"), "{e}");
    }
}

#[test]
fn batch_keeps_order_and_isolates_errors() {
    let hasher = Hasher::new(HashOptions::default());
    let inputs: Vec<Vec<u8>> = vec![
        encode(image::ImageFormat::Png, 64, 64),
        b"not an image".to_vec(),
        jpeg_file(80, 60, false),
        Vec::new(),
        encode(image::ImageFormat::WebP, 70, 50),
    ];
    let out = hasher.hash_batch(&inputs, |b| Ok(b.clone()));
    assert_eq!(out.len(), 5);
    assert!(out[0].is_ok() && out[2].is_ok() && out[4].is_ok());
    assert_eq!(out[1].as_ref().unwrap_err().kind(), "unsupported_format");
    assert_eq!(out[3].as_ref().unwrap_err().kind(), "empty");
    // Order: each result belongs to its input.
    let single = hasher.hash_bytes(&inputs[2]).unwrap();
    assert_eq!(out[2].as_ref().unwrap(), &single);
    let single = hasher.hash_bytes(&inputs[4]).unwrap();
    assert_eq!(out[4].as_ref().unwrap(), &single);
}
