//! Pixel-model conversions on generated files: alpha, 16-bit, palette, grey, GIF frames, EXIF.

mod common;

use std::io::Cursor;

use baken::decode::{self, Alpha, DecodeLimits, DecodeOptions, Pixels};
use image::codecs::gif::GifEncoder;
use image::{Delay, Frame, ImageBuffer, Rgba, RgbaImage};

fn png(img: &image::DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn decode_with(data: &[u8], alpha: Alpha) -> decode::DecodedImage {
    let opts = DecodeOptions {
        alpha,
        ..DecodeOptions::default()
    };
    decode::decode(data, &DecodeLimits::default(), opts).unwrap()
}

#[test]
fn alpha_is_flattened_onto_white_or_dropped_on_request() {
    // Left half opaque red, right half fully transparent blue, one half-transparent pixel.
    let mut img = RgbaImage::from_fn(8, 2, |x, _| {
        if x < 4 {
            Rgba([200, 10, 10, 255])
        } else {
            Rgba([0, 0, 255, 0])
        }
    });
    img.put_pixel(0, 1, Rgba([0, 0, 0, 128]));
    let data = png(&image::DynamicImage::ImageRgba8(img));

    let white = decode_with(&data, Alpha::White);
    assert!(matches!(white.pixels, Pixels::Rgb(_)));
    let px = white.pixels.data();
    assert_eq!(&px[0..3], &[200, 10, 10]);
    assert_eq!(&px[4 * 3..5 * 3], &[255, 255, 255], "transparent → white");
    assert_eq!(&px[8 * 3..9 * 3], &[127, 127, 127], "half black over white");
    assert!(white.info.alpha);

    let ignore = decode_with(&data, Alpha::Ignore);
    let px = ignore.pixels.data();
    assert_eq!(&px[4 * 3..5 * 3], &[0, 0, 255], "stored colour kept");
    assert_eq!(&px[8 * 3..9 * 3], &[0, 0, 0]);
}

#[test]
fn grey_alpha_and_sixteen_bit_keep_their_meaning() {
    let la = image::DynamicImage::ImageLumaA8(ImageBuffer::from_fn(4, 1, |x, _| {
        image::LumaA([(x * 60) as u8, if x == 3 { 0 } else { 255 }])
    }));
    let d = decode_with(&png(&la), Alpha::White);
    assert!(matches!(d.pixels, Pixels::Grey(_)), "grey stays grey");
    assert_eq!(d.pixels.data(), &[0, 60, 120, 255]);

    let g16 = image::DynamicImage::ImageLuma16(ImageBuffer::from_fn(3, 1, |x, _| {
        image::Luma([[0x0000u16, 0x80FF, 0xFFFF][x as usize]])
    }));
    let d = decode_with(&png(&g16), Alpha::White);
    assert_eq!(
        d.pixels.data(),
        &[0x00, 0x80, 0xFF],
        "16-bit keeps the high byte"
    );
    assert_eq!(d.info.bit_depth, 16);

    let rgb16 = image::DynamicImage::ImageRgb16(ImageBuffer::from_fn(1, 1, |_, _| {
        image::Rgb([0x1234u16, 0xABCD, 0x00FF])
    }));
    let d = decode_with(&png(&rgb16), Alpha::White);
    assert_eq!(d.pixels.data(), &[0x12, 0xAB, 0x00]);
}

#[test]
fn gif_hashes_its_first_frame() {
    let frame = |c: u8| {
        Frame::from_parts(
            RgbaImage::from_pixel(16, 16, Rgba([c, c, c, 255])),
            0,
            0,
            Delay::from_numer_denom_ms(100, 1),
        )
    };
    let mut buf = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut buf);
        enc.encode_frames(vec![frame(30), frame(220)]).unwrap();
    }
    let d = decode_with(&buf, Alpha::White);
    assert_eq!((d.width, d.height), (16, 16));
    assert!(
        d.pixels.data().iter().all(|&v| v.abs_diff(30) <= 2),
        "first frame"
    );
}

#[test]
fn palette_png_expands_to_its_colours() {
    // An indexed PNG written by hand: 2×1, palette [red, green], second pixel transparent.
    let raw = [0u8, 0, 1]; // filter byte, index 0, index 1
    let mut z = vec![0x78, 0x01, 0x01, 3, 0, !3u8, 0xFF];
    z.extend_from_slice(&raw);
    let (mut a, mut b) = (1u32, 0u32);
    for &v in &raw {
        a = (a + u32::from(v)) % 65521;
        b = (b + a) % 65521;
    }
    z.extend(((b << 16) | a).to_be_bytes());
    let mut f = b"\x89PNG\r\n\x1a\n".to_vec();
    f.extend(common::png_chunk(
        b"IHDR",
        &[0, 0, 0, 2, 0, 0, 0, 1, 8, 3, 0, 0, 0],
    ));
    f.extend(common::png_chunk(b"PLTE", &[255, 0, 0, 0, 255, 0]));
    f.extend(common::png_chunk(b"tRNS", &[255, 0]));
    f.extend(common::png_chunk(b"IDAT", &z));
    f.extend(common::png_chunk(b"IEND", &[]));
    let d = decode_with(&f, Alpha::White);
    assert_eq!(d.pixels.data(), &[255, 0, 0, 255, 255, 255]);
    let d = decode_with(&f, Alpha::Ignore);
    assert_eq!(d.pixels.data(), &[255, 0, 0, 0, 255, 0]);
}

#[test]
fn jpeg_grey_stays_grey_and_decodes_at_scale_in_fast_mode() {
    let px = common::generated_image(640, 480, 1, 3);
    let j = decode::jpeg::encode(&px, 640, 480, 1, 90, false).unwrap();
    let d = decode_with(&j, Alpha::White);
    assert!(matches!(d.pixels, Pixels::Grey(_)));
    assert_eq!(d.info.colour, "grey");
    let fast = decode::decode(
        &j,
        &DecodeLimits::default(),
        DecodeOptions {
            jpeg_scale_min_side: Some(100),
            ..DecodeOptions::default()
        },
    )
    .unwrap();
    // 1/4 gives 160×120 (shorter side ≥ 100); 1/8 would give 80×60.
    assert_eq!((fast.width, fast.height), (160, 120));
    assert_eq!(fast.info.decoded_size, Some((160, 120)));
    assert_eq!((fast.info.width, fast.info.height), (640, 480));
}
