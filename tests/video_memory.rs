//! Memory stays bounded on large videos: a 4K stream stays within the decoder-memory estimate
//! `VideoLimits::max_memory` is checked against, and a 2-hour stream needs no more memory than
//! a 1-minute one of the same kind (frames are dropped after hashing; only the per-frame
//! features grow, by a few dozen bytes a sampled second).
//!
//! Its own test binary with one test: the peak RSS of the process (`VmHWM`, reset through
//! `/proc/self/clear_refs`) is then attributable to the hashing being measured.

mod common;

use baken::decode::video::VideoLimits;
use baken::hashing::vpdq::hash_video;
use common::video::ffmpeg;

/// A `kB` field of /proc/self/status (`VmHWM`: peak resident set since the last reset,
/// `VmRSS`: resident now), in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    kb * 1024
}

fn peak_rss() -> u64 {
    status_bytes("VmHWM")
}

fn current_rss() -> u64 {
    status_bytes("VmRSS")
}

/// Reset the peak to the current resident set (Linux ≥ 4.0: writing 5 to clear_refs).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM (clear_refs)");
}

const MB: u64 = 1 << 20;

#[test]
fn rss_is_bounded_on_4k_and_on_two_hours() {
    let limits = VideoLimits::default();
    // Every input is made first, so its bytes are resident before anything is measured.
    // 4K UHD, H.264 with 16 reference frames (the worst case the estimate assumes), 2 s.
    let x264 = "-c:v libx264 -preset ultrafast -pix_fmt yuv420p";
    let args = |src: String| -> Vec<String> {
        format!("-f lavfi -i {src} {x264}")
            .split(' ')
            .map(String::from)
            .collect()
    };
    let uhd_args = args("testsrc2=size=3840x2160:rate=30:duration=2 -refs 16".into());
    let uhd = ffmpeg(
        &uhd_args.iter().map(String::as_str).collect::<Vec<_>>(),
        "uhd.mp4",
    );
    // The same small stream for 1 minute and for 2 hours (5 fps: 36,000 frames, 7,200 hashed).
    let stream = |seconds: u32| {
        let a = args(format!("testsrc2=size=320x180:rate=5:duration={seconds}"));
        ffmpeg(
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
            "long.mp4",
        )
    };
    let minute = stream(60);
    let two_hours = stream(7200);

    // Duration first, before the 4K run leaves freed buffers in the allocator's heap. Peaks are
    // absolute (the process's VmHWM): the 2-hour run must fit in the footprint of the 1-minute
    // one, give or take its features (a few hundred kB) and allocator noise — not grow by frames
    // (36,000 RGB frames of this size would be 6 GB).
    reset_peak();
    let (info, _) = hash_video(&minute, &limits, 1.0).unwrap();
    let minute_peak = peak_rss();
    assert_eq!(info.frames_decoded, 300);
    reset_peak();
    let (info, features) = hash_video(&two_hours, &limits, 1.0).unwrap();
    let long_peak = peak_rss();
    assert_eq!((info.frames_decoded, features.len()), (36_000, 7_200));
    eprintln!(
        "320x180 ({} kB for 2 hours): process peak {} MB for 1 minute, {} MB for 2 hours",
        two_hours.len() / 1024,
        minute_peak / MB,
        long_peak / MB
    );
    assert!(
        long_peak <= minute_peak + 8 * MB,
        "2 hours peaked at {} MB, 1 minute at {} MB: memory grows with duration",
        long_peak / MB,
        minute_peak / MB
    );

    // 4K: the growth above the resident set at the start stays within what the limit check
    // assumes for this size (16 reference frames + 1 at 3 bytes a pixel, plus our RGB frame),
    // with 32 MB more for FFmpeg's per-stream tables and PDQ's float buffers.
    reset_peak();
    let before = current_rss();
    let (info, features) = hash_video(&uhd, &limits, 1.0).unwrap();
    let uhd_growth = peak_rss().saturating_sub(before);
    assert_eq!((info.frames_decoded, features.len()), (60, 2));
    let estimate = 3840 * 2160 * (18 * 3 + 3);
    eprintln!(
        "4K ({} kB): peak {} MB above the start, estimate {} MB",
        uhd.len() / 1024,
        uhd_growth / MB,
        estimate / MB
    );
    assert!(
        uhd_growth <= estimate + 32 * MB,
        "4K hashing took {} MB, over the estimate of {} MB the limits are checked against",
        uhd_growth / MB,
        estimate / MB
    );
}
