//! Video decoding and vPDQ on videos the test makes with FFmpeg: containers and codecs, frame
//! sampling as Meta's vPDQ does it, frame hashes equal to PDQ of the very pixels, and hostile
//! videos (truncated, no video stream, over every limit, damaged bytes) getting typed errors.

mod common;

use baken::decode::video::{Container, VideoLimits};
use baken::error::DecodeError;
use baken::hashing::pdq::{self, PixelView, StridedRgb};
use baken::hashing::vpdq::{self, hash_video};
use baken::hashing::{Algorithm, HashOptions, Hasher, PdqMode};
use common::video::{ffmpeg, lossless_rgb, testsrc, write};

const H264: &[&str] = &["-c:v", "libx264", "-pix_fmt", "yuv420p"];

fn every_frame() -> VideoLimits {
    VideoLimits::default()
}

#[test]
fn containers_and_codecs_decode_with_the_right_frame_count() {
    // (what, bytes, container, fps, frames)
    let cases: Vec<(&str, Vec<u8>, Container, f64, u64)> = vec![
        (
            "mp4/h264",
            testsrc("320x240", 30, 2.0, H264, "a.mp4"),
            Container::Mp4,
            30.0,
            60,
        ),
        (
            "mov/h264",
            testsrc("320x240", 25, 2.0, H264, "a.mov"),
            Container::Mp4,
            25.0,
            50,
        ),
        (
            "mkv/hevc",
            testsrc(
                "320x240",
                24,
                2.0,
                &["-c:v", "libx265", "-x265-params", "log-level=error"],
                "a.mkv",
            ),
            Container::Matroska,
            24.0,
            48,
        ),
        (
            "webm/vp8",
            testsrc("320x240", 25, 2.0, &["-c:v", "libvpx"], "a.webm"),
            Container::Matroska,
            25.0,
            50,
        ),
        (
            "webm/vp9",
            testsrc("320x240", 25, 2.0, &["-c:v", "libvpx-vp9"], "b.webm"),
            Container::Matroska,
            25.0,
            50,
        ),
        (
            "avi/mpeg4",
            testsrc("320x240", 25, 2.0, &["-c:v", "mpeg4"], "a.avi"),
            Container::Avi,
            25.0,
            50,
        ),
        (
            "gif",
            testsrc("160x120", 10, 2.0, &[], "a.gif"),
            Container::Gif,
            10.0,
            20,
        ),
    ];
    for (what, bytes, container, fps, frames) in cases {
        let (info, features) =
            hash_video(&bytes, &every_frame(), 0.0).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(info.container, container, "{what}");
        assert_eq!(
            (info.width, info.height),
            if container == Container::Gif {
                (160, 120)
            } else {
                (320, 240)
            },
            "{what}"
        );
        assert!((info.fps - fps).abs() < 1e-9, "{what}: fps {}", info.fps);
        assert_eq!(info.frames_decoded, frames, "{what}");
        assert!(!info.truncated, "{what}");
        // Every frame (seconds_per_hash 0), numbered 0.., timestamp frame/fps.
        assert_eq!(features.len() as u64, frames, "{what}");
        for (i, f) in features.iter().enumerate() {
            assert_eq!(f.frame_number, i as u64, "{what}");
            let want = f64::from(i as f32 / fps as f32);
            assert_eq!(f.timestamp, want, "{what} frame {i}");
            assert!(f.quality >= 50, "{what} frame {i}: quality {}", f.quality);
        }
        // testsrc2 moves: consecutive frames differ, but stay near each other.
        assert_ne!(
            features[0].hash,
            features[features.len() - 1].hash,
            "{what}"
        );
    }
}

#[test]
fn sampling_follows_metas_frame_interval() {
    let bytes = testsrc("320x240", 30, 3.5, H264, "a.mp4");
    let (_, all) = hash_video(&bytes, &every_frame(), 0.0).unwrap();
    assert_eq!(all.len(), 105);
    for (sph, every) in [(1.0, 30u64), (0.5, 15), (0.1, 3), (2.0, 60), (0.01, 1)] {
        assert_eq!(vpdq::frame_interval(sph, 30.0), every);
        let (info, got) = hash_video(&bytes, &every_frame(), sph).unwrap();
        assert_eq!(info.frames_decoded, 105);
        let want: Vec<_> = all.iter().filter(|f| f.frame_number % every == 0).collect();
        assert_eq!(got.len(), want.len(), "seconds_per_hash {sph}");
        for (g, w) in got.iter().zip(want) {
            // Sampling does not change a frame's hash: the same frame, the same pixels.
            assert_eq!(g, w, "seconds_per_hash {sph}");
        }
    }
    // Meta's int(seconds_per_hash * fps), at least 1.
    assert_eq!(vpdq::frame_interval(1.0, 29.97), 29);
    assert_eq!(vpdq::frame_interval(1.0, 0.5), 1);
}

/// Frames the test generated, stored losslessly: each vPDQ frame hash is PDQ (C++ float luma)
/// of exactly those pixels, and — on these images — our image PDQ of the same pixels too.
#[test]
fn frame_hashes_are_pdq_of_the_decoded_pixels() {
    let (w, h) = (200u32, 150u32);
    let frames: Vec<Vec<u8>> = (0..6)
        .map(|i| common::generated_image(w, h, 3, 100 + i))
        .collect();
    let bytes = lossless_rgb(&frames, w, h, 2);
    let (info, features) = hash_video(&bytes, &every_frame(), 0.0).unwrap();
    assert_eq!(info.codec, "rawvideo");
    assert_eq!(features.len(), frames.len());
    for (f, px) in features.iter().zip(&frames) {
        let want = pdq::pdq_hash_rgb_f32(StridedRgb {
            width: w as usize,
            height: h as usize,
            stride: w as usize * 3,
            data: px,
        });
        assert_eq!(f.hash, want.hash, "frame {}", f.frame_number);
        assert_eq!(f.quality, want.quality);
        let image = pdq::pdq_hash(
            PixelView {
                width: w as usize,
                height: h as usize,
                channels: 3,
                data: px,
            },
            PdqMode::Full,
        );
        assert_eq!(f.hash, image.hash, "frame {}: image PDQ", f.frame_number);
    }
    // Distinct generated frames give distinct hashes: nothing is cached across frames.
    assert_ne!(features[0].hash, features[1].hash);
}

#[test]
fn a_hasher_routes_videos_to_vpdq_and_images_to_image_hashes() {
    let video = testsrc("320x240", 10, 1.0, H264, "a.mp4");
    let png = common::generated_png(64, 64, 7);
    let all = Hasher::new(HashOptions::default());
    let v = all.hash_bytes(&video).unwrap();
    assert!(v.image.is_none() && v.pdq.is_none());
    let vp = v.vpdq.as_ref().unwrap();
    assert_eq!(vp.seconds_per_hash, 1.0);
    assert_eq!(vp.frames.len(), 1);
    assert_eq!(v.md5.as_deref().map(str::len), Some(32));
    let i = all.hash_bytes(&png).unwrap();
    assert!(i.vpdq.is_none() && i.pdq.is_some());
    // vPDQ alone on a video brings the file's MD5; image hashes alone on a video are refused.
    let only = |a: Vec<Algorithm>| {
        Hasher::new(HashOptions {
            algorithms: a,
            ..HashOptions::default()
        })
    };
    let v = only(vec![Algorithm::Vpdq]).hash_bytes(&video).unwrap();
    assert!(v.md5.is_some() && v.sha1.is_none());
    let e = only(vec![Algorithm::Pdq]).hash_bytes(&video).unwrap_err();
    assert_eq!(e.kind(), "not_applicable");
    let e = only(vec![Algorithm::Vpdq]).hash_bytes(&png).unwrap_err();
    assert_eq!(e.kind(), "not_applicable");
    // A GIF is both: its first frame as an image, all frames as a video.
    let gif = testsrc("160x120", 10, 1.0, &[], "a.gif");
    let g = all.hash_bytes(&gif).unwrap();
    assert!(g.pdq.is_some());
    assert_eq!(g.video.as_ref().unwrap().frames_decoded, 10);
}

fn err_kind(r: Result<impl Sized, DecodeError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => {
            // Messages name the format and the limit, never content.
            assert!(e.to_string().len() < 300, "{e}");
            e.kind()
        }
    }
}

#[test]
fn hostile_videos_get_typed_errors() {
    let l = every_frame();
    let mp4 = testsrc("320x240", 25, 4.0, H264, "a.mp4");
    // The moov atom at the end (ffmpeg's default): cut → the index is missing.
    let half = &mp4[..mp4.len() / 2];
    assert!(
        matches!(err_kind(hash_video(half, &l, 0.0)), "truncated" | "corrupt"),
        "{:?}",
        hash_video(half, &l, 0.0).err()
    );
    // Index first (faststart), data cut: the frames that are there, flagged truncated.
    let fast = testsrc(
        "320x240",
        25,
        4.0,
        &[
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
        ],
        "f.mp4",
    );
    let cut = &fast[..fast.len() * 2 / 3];
    let (info, frames) = hash_video(cut, &l, 0.0).unwrap();
    assert!(info.truncated);
    assert!(
        !frames.is_empty() && (frames.len() as u64) < 100,
        "{}",
        frames.len()
    );
    // No video stream: audio only, in MP4 and Matroska.
    for name in ["a.m4a", "a.mka"] {
        let audio = ffmpeg(
            &["-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac"],
            name,
        );
        assert_eq!(
            err_kind(hash_video(&audio, &l, 0.0)),
            "no_video_stream",
            "{name}"
        );
    }
    // A codec outside the list.
    let ffv1 = testsrc("64x64", 5, 1.0, &["-c:v", "ffv1"], "a.mkv");
    let e = hash_video(&ffv1, &l, 0.0).unwrap_err();
    assert_eq!(e.kind(), "unsupported_feature");
    assert!(e.to_string().contains("ffv1"), "{e}");
    // Every limit, one at a time.
    let cases: [(&str, VideoLimits); 6] = [
        (
            "too_large",
            VideoLimits {
                max_input_bytes: 1000,
                ..l
            },
        ),
        (
            "dimensions_too_large",
            VideoLimits {
                max_dimension: 200,
                ..l
            },
        ),
        (
            "dimensions_too_large",
            VideoLimits {
                max_pixels: 320 * 239,
                ..l
            },
        ),
        (
            "memory_limit",
            VideoLimits {
                max_memory: 1 << 20,
                ..l
            },
        ),
        (
            "too_long",
            VideoLimits {
                max_duration_seconds: 2.0,
                ..l
            },
        ),
        (
            "too_many_frames",
            VideoLimits {
                max_frames: 30,
                ..l
            },
        ),
    ];
    for (kind, limits) in cases {
        assert_eq!(err_kind(hash_video(&mp4, &limits, 0.0)), kind, "{limits:?}");
    }
    let none = VideoLimits {
        max_decode_seconds: 0.0,
        ..l
    };
    assert_eq!(err_kind(hash_video(&mp4, &none, 0.0)), "timeout");
    let e = hash_video(
        &mp4,
        &VideoLimits {
            max_frames: 30,
            ..l
        },
        0.0,
    )
    .unwrap_err();
    assert!(e.is_limit());
    // Magic bytes and nothing behind them.
    for junk in [
        &b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom"[..],
        &[0x1A, 0x45, 0xDF, 0xA3, 0x01, 0x00],
        b"RIFF\x10\0\0\0AVI LIST\0\0\0\0",
        b"GIF89a\x10\0\x10\0",
    ] {
        let k = err_kind(hash_video(junk, &l, 0.0));
        assert!(
            matches!(k, "truncated" | "corrupt" | "no_video_stream"),
            "{k}"
        );
    }
}

/// The size of the first `avc1` sample entry of an MP4 rewritten to `w`×`h` (what a hostile
/// header can claim; the H.264 stream inside still says 64×64).
fn with_header_size(mp4: &[u8], w: u16, h: u16) -> Vec<u8> {
    let find = |from: usize, tag: &[u8]| {
        mp4[from..]
            .windows(tag.len())
            .position(|x| x == tag)
            .map(|p| p + from)
    };
    let stsd = find(0, b"stsd").expect("stsd box");
    let avc1 = find(stsd, b"avc1").expect("avc1 sample entry");
    // VisualSampleEntry: reserved(6) data_reference_index(2) pre_defined(2) reserved(2)
    // pre_defined(12), then width and height.
    let at = avc1 + 4 + 24;
    let mut out = mp4.to_vec();
    out[at..at + 2].copy_from_slice(&w.to_be_bytes());
    out[at + 2..at + 4].copy_from_slice(&h.to_be_bytes());
    out
}

/// With the default limits (what a caller gets without configuring anything): frames too big
/// to be an upload's — a few kB of H.264 that would decode to 16-megapixel or 9000-wide
/// frames — and headers claiming absurd or zero sizes are refused before any frame is decoded.
#[test]
fn absurd_zero_and_bomb_sizes_are_refused_by_default() {
    let l = VideoLimits::default();
    let black = |size: &str, name: &str| {
        let src = format!("color=black:size={size}:rate=25:duration=0.2");
        ffmpeg(
            &[
                "-f",
                "lavfi",
                "-i",
                &src,
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
            ],
            name,
        )
    };
    let bomb = black("4096x4096", "bomb.mp4");
    assert!(bomb.len() < 200_000, "{} bytes", bomb.len());
    assert_eq!(err_kind(hash_video(&bomb, &l, 0.0)), "dimensions_too_large");
    let wide = black("9000x16", "wide.mp4");
    assert_eq!(err_kind(hash_video(&wide, &l, 0.0)), "dimensions_too_large");

    // A container header that lies about the size (65535² or 0×0 over a 64×64 stream) is not
    // what the limits trust: the decoder's size is, and the frames hash as they really are.
    let small = testsrc("64x64", 25, 1.0, H264, "s.mp4");
    let (_, truth) = hash_video(&small, &l, 0.0).unwrap();
    assert_eq!(truth.len(), 25);
    for (w, h) in [(65535, 65535), (0, 0)] {
        let lying = with_header_size(&small, w, h);
        assert_ne!(lying, small);
        match hash_video(&lying, &l, 0.0) {
            Ok((info, frames)) => {
                assert_eq!((info.width, info.height), (64, 64), "{w}x{h}");
                assert_eq!(frames, truth, "{w}x{h}");
            }
            // A zero size may be refused as such; a huge one must not be.
            Err(e) if w == 0 => assert!(matches!(e.kind(), "zero_dimension" | "corrupt"), "{e}"),
            Err(e) => panic!("{w}x{h}: {e}"),
        }
    }
}

/// Damaged copies of real videos (bytes overwritten, cut at many points): each one either
/// decodes or fails with a typed error, within the wall-time limit.
#[test]
fn damaged_videos_never_crash_or_hang() {
    let limits = VideoLimits {
        max_decode_seconds: 20.0,
        ..every_frame()
    };
    let originals = [
        testsrc("160x120", 15, 1.0, H264, "a.mp4"),
        testsrc("160x120", 15, 1.0, &["-c:v", "libvpx-vp9"], "a.webm"),
        testsrc("160x120", 15, 1.0, &["-c:v", "mpeg4"], "a.avi"),
        testsrc("96x64", 8, 1.0, &[], "a.gif"),
    ];
    let mut rng = common::XorShift(0x5eed);
    let mut outcomes = std::collections::BTreeMap::<&str, usize>::new();
    for original in &originals {
        for round in 0..40 {
            let mut v = original.clone();
            if round % 2 == 0 {
                let n = 1 + (rng.next() % 16) as usize;
                for _ in 0..n {
                    let at = (rng.next() as usize) % v.len();
                    v[at] = rng.next() as u8;
                }
            } else {
                let keep = 8 + (rng.next() as usize) % (v.len() - 8);
                v.truncate(keep);
            }
            let started = std::time::Instant::now();
            *outcomes
                .entry(err_kind(hash_video(&v, &limits, 0.0)))
                .or_default() += 1;
            assert!(started.elapsed().as_secs_f64() < 25.0);
        }
    }
    // Both outcomes occur: the damage is real and decoding is tolerant where it can be.
    assert!(outcomes.contains_key("ok"), "{outcomes:?}");
    assert!(outcomes.len() > 1, "{outcomes:?}");
}

/// The decoder reads from memory only: nothing appears in the working or temporary directory.
#[test]
fn decoding_writes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let input_dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("cwd");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    let video = write(
        input_dir.path(),
        "v.mp4",
        &testsrc("160x120", 10, 1.0, H264, "a.mp4"),
    );
    let o = common::baken_at(&dir.path().join("data"))
        .current_dir(&work)
        .env("TMPDIR", &tmp)
        .args(["hash", "--algo", "vpdq"])
        .arg(&video)
        .output()
        .unwrap();
    common::assert_exit(&o, 0);
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    assert!(!dir.path().join("data").exists());
}

#[test]
fn baken_hash_prints_vpdq() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = testsrc("320x240", 25, 3.0, H264, "a.mp4");
    let video = write(dir.path(), "clip.mp4", &bytes);
    let png = write(dir.path(), "still.png", &common::generated_png(80, 60, 3));
    let o = common::baken_at(&dir.path().join("data"))
        .args(["hash", "--algo", "vpdq", "--seconds-per-hash", "1"])
        .arg(&video)
        .output()
        .unwrap();
    common::assert_exit(&o, 0);
    let lines = common::json_lines(&o.stdout);
    let l = &lines[0];
    assert_eq!(l["file"], video.to_string_lossy().as_ref());
    let frames = l["vpdq"]["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 3);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f["frame"], i as u64 * 25);
        assert_eq!(f["timestamp"].as_f64(), Some(i as f64));
        assert_eq!(f["hash"].as_str().unwrap().len(), 64);
        assert!(f["quality"].as_u64().unwrap() <= 100);
    }
    assert_eq!(l["video"]["codec"], "h264");
    assert_eq!(l["video"]["frames_decoded"], 75);
    assert_eq!(l["md5"].as_str().map(str::len), Some(32));
    // The same hashes as the library gives, frame for frame.
    let (_, lib) = hash_video(&bytes, &VideoLimits::default(), 1.0).unwrap();
    for (f, g) in frames.iter().zip(&lib) {
        assert_eq!(f["hash"].as_str(), Some(g.hash.to_hex().as_str()));
    }
    // Every frame; a still with vpdq only is refused (exit 1, a typed error line).
    let o = common::baken_at(&dir.path().join("data"))
        .args(["hash", "--algo", "vpdq", "--seconds-per-hash", "0"])
        .arg(&video)
        .arg(&png)
        .output()
        .unwrap();
    common::assert_exit(&o, 1);
    let lines = common::json_lines(&o.stdout);
    assert_eq!(lines[0]["vpdq"]["frames"].as_array().unwrap().len(), 75);
    assert_eq!(lines[1]["error"]["kind"], "not_applicable");
    // A bad value is refused by the argument parser.
    let o = common::baken_at(&dir.path().join("data"))
        .args(["hash", "--seconds-per-hash", "-1"])
        .arg(&video)
        .output()
        .unwrap();
    common::assert_exit(&o, 2);
}
