//! In-memory video decoding with FFmpeg's libraries, under hard limits.
//!
//! The bytes stay in the caller's slice: FFmpeg reads them through a custom `AVIOContext` whose
//! callbacks copy from that slice, so no temporary file and no URL protocol is ever involved. The
//! demuxer is the one our sniffing chose (never FFmpeg's own probing, which would reach formats
//! such as HLS or concat that open other resources), and the decoder is looked up only for a
//! video codec on our list.
//!
//! Limits, each checked as early as the information exists: input bytes (before anything is
//! parsed), resolution and a memory estimate (from the stream header, and again for every
//! decoded frame, since a stream may change size), duration (from the container, and again from
//! the decoded frame count, since a header may lie), decoded frames, and wall time (polled by the
//! read callback, FFmpeg's interrupt callback and the frame loop).
//!
//! Frames are handed to the caller one at a time as RGB24 at the stream's declared size and are
//! dropped before the next is decoded. FFmpeg's own log output is silenced: nothing about an
//! input reaches stderr.

use std::ffi::{CStr, c_int, c_void};
use std::ptr;
use std::time::{Duration, Instant};

use ff::ffi;
use ffmpeg_next as ff;
use serde::Serialize;

use crate::error::DecodeError;

/// Limits applied to every video. Defaults admit a 4-hour 4K upload and refuse bombs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, Serialize)]
#[serde(default)]
pub struct VideoLimits {
    /// Largest accepted input, in bytes (the whole video is held in memory while it is hashed).
    pub max_input_bytes: u64,
    /// Largest accepted width or height.
    pub max_dimension: u32,
    /// Largest accepted width × height.
    pub max_pixels: u64,
    /// Longest accepted duration, in seconds (container header and decoded frames alike).
    pub max_duration_seconds: f64,
    /// Most frames decoded (sampled or not).
    pub max_frames: u64,
    /// Longest wall time for one video, in seconds.
    pub max_decode_seconds: f64,
    /// Largest estimated decoder memory (reference frames + one RGB frame), in bytes.
    pub max_memory: u64,
}

impl Default for VideoLimits {
    fn default() -> Self {
        VideoLimits {
            max_input_bytes: 1 << 30,
            max_dimension: 8192,
            // 4096 × 2304: UHD and DCI 4K in either orientation.
            max_pixels: 4096 * 2304,
            max_duration_seconds: 4.0 * 3600.0,
            max_frames: 1_000_000,
            max_decode_seconds: 900.0,
            max_memory: 1 << 30,
        }
    }
}

/// Containers we demux, identified by their magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Container {
    /// ISO base media: MP4, MOV, M4V, 3GP.
    Mp4,
    /// Matroska and WebM.
    Matroska,
    Avi,
    /// GIF through FFmpeg's demuxer (every frame), for vPDQ of animations.
    Gif,
    Flv,
    /// MPEG transport stream.
    MpegTs,
}

impl Container {
    pub fn name(self) -> &'static str {
        match self {
            Container::Mp4 => "MP4",
            Container::Matroska => "Matroska",
            Container::Avi => "AVI",
            Container::Gif => "GIF",
            Container::Flv => "FLV",
            Container::MpegTs => "MPEG-TS",
        }
    }

    /// FFmpeg's demuxer for it (`av_find_input_format` names).
    fn demuxer(self) -> &'static CStr {
        match self {
            Container::Mp4 => c"mov",
            Container::Matroska => c"matroska",
            Container::Avi => c"avi",
            Container::Gif => c"gif",
            Container::Flv => c"flv",
            Container::MpegTs => c"mpegts",
        }
    }
}

/// Identify a video container from the first bytes. GIF is included: whether a GIF is treated
/// as an image or a video is the caller's choice.
pub fn sniff(data: &[u8]) -> Option<Container> {
    let at = |o: usize, m: &[u8]| data.len() >= o + m.len() && &data[o..o + m.len()] == m;
    // ISO BMFF starts with a box: size (4 bytes) then type. `ftyp` is required by MP4; QuickTime
    // files may start with other top-level atoms.
    if ["ftyp", "moov", "mdat", "wide", "free", "skip", "pnot"]
        .iter()
        .any(|t| at(4, t.as_bytes()))
    {
        Some(Container::Mp4)
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        Some(Container::Matroska)
    } else if at(0, b"RIFF") && at(8, b"AVI ") {
        Some(Container::Avi)
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        Some(Container::Gif)
    } else if at(0, b"FLV\x01") {
        Some(Container::Flv)
    } else if data.len() >= 189 && data[0] == 0x47 && data[188] == 0x47 {
        Some(Container::MpegTs)
    } else {
        None
    }
}

/// Video codecs we decode. Others are refused by name: every decoder is attack surface, and these
/// cover what uploads carry.
const CODECS: &[ffi::AVCodecID] = &[
    ffi::AVCodecID::AV_CODEC_ID_H264,
    ffi::AVCodecID::AV_CODEC_ID_HEVC,
    ffi::AVCodecID::AV_CODEC_ID_VP8,
    ffi::AVCodecID::AV_CODEC_ID_VP9,
    ffi::AVCodecID::AV_CODEC_ID_AV1,
    ffi::AVCodecID::AV_CODEC_ID_MPEG4,
    ffi::AVCodecID::AV_CODEC_ID_MPEG1VIDEO,
    ffi::AVCodecID::AV_CODEC_ID_MPEG2VIDEO,
    ffi::AVCodecID::AV_CODEC_ID_MSMPEG4V2,
    ffi::AVCodecID::AV_CODEC_ID_MSMPEG4V3,
    ffi::AVCodecID::AV_CODEC_ID_H263,
    ffi::AVCodecID::AV_CODEC_ID_FLV1,
    ffi::AVCodecID::AV_CODEC_ID_MJPEG,
    ffi::AVCodecID::AV_CODEC_ID_GIF,
    ffi::AVCodecID::AV_CODEC_ID_PNG,
    ffi::AVCodecID::AV_CODEC_ID_THEORA,
    ffi::AVCodecID::AV_CODEC_ID_WMV1,
    ffi::AVCodecID::AV_CODEC_ID_WMV2,
    ffi::AVCodecID::AV_CODEC_ID_WMV3,
    ffi::AVCodecID::AV_CODEC_ID_VC1,
    ffi::AVCodecID::AV_CODEC_ID_PRORES,
    ffi::AVCodecID::AV_CODEC_ID_RAWVIDEO,
];

/// Decoded packets that fail before a video is called corrupt: a damaged packet here and there
/// is skipped (as FFmpeg's own tools do), a stream of them is not a video.
const MAX_BAD_PACKETS: u64 = 64;

/// What we learnt about a video besides its frames; safe to log and report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VideoInfo {
    pub container: Container,
    /// FFmpeg's short codec name (`h264`, `vp9`, …).
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Frames per second as vPDQ uses it: the stream's average rate, else its base rate.
    pub fps: f64,
    /// The container's duration, when it states one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Frames decoded (every frame, sampled or not). Filled in once decoding ends.
    pub frames_decoded: u64,
    /// Packets the decoder refused and that were skipped.
    #[serde(skip_serializing_if = "is_zero")]
    pub bad_packets: u64,
    /// The data ended before the container's index said it would (fewer packets than
    /// announced): the frames hashed are those that were there.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One decoded frame as RGB24, rows `stride` bytes apart (`stride ≥ 3 × width`).
pub struct RgbFrame<'f> {
    pub width: usize,
    pub height: usize,
    pub stride: usize,
    pub data: &'f [u8],
}

/// The caller's bytes as FFmpeg sees them, and the clock.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    deadline: Instant,
    timed_out: bool,
}

impl Reader<'_> {
    fn check_deadline(&mut self) -> bool {
        if Instant::now() >= self.deadline {
            self.timed_out = true;
        }
        self.timed_out
    }
}

const IO_BUFFER: usize = 64 * 1024;

unsafe extern "C" fn read_packet(opaque: *mut c_void, buf: *mut u8, size: c_int) -> c_int {
    // SAFETY: `opaque` is the `Reader` boxed in `Opened`, alive until the AVIOContext is freed,
    // and FFmpeg calls this only from the thread that drives the demuxer (ours).
    let r = unsafe { &mut *(opaque as *mut Reader<'_>) };
    if r.check_deadline() {
        return ffi::AVERROR_EXIT;
    }
    let left = r.data.len() - r.pos;
    let n = left.min(usize::try_from(size).unwrap_or(0));
    if n == 0 {
        return ffi::AVERROR_EOF;
    }
    // SAFETY: FFmpeg hands a buffer of `size` ≥ n writable bytes; the source range is in bounds.
    unsafe { ptr::copy_nonoverlapping(r.data.as_ptr().add(r.pos), buf, n) };
    r.pos += n;
    n as c_int
}

unsafe extern "C" fn seek(opaque: *mut c_void, offset: i64, whence: c_int) -> i64 {
    // SAFETY: as in `read_packet`.
    let r = unsafe { &mut *(opaque as *mut Reader<'_>) };
    let len = r.data.len() as i64;
    if whence & ffi::AVSEEK_SIZE as c_int != 0 {
        return len;
    }
    let base = match whence & !(ffi::AVSEEK_FORCE as c_int) {
        0 => 0,            // SEEK_SET
        1 => r.pos as i64, // SEEK_CUR
        2 => len,          // SEEK_END
        _ => return -22,   // EINVAL
    };
    match base.checked_add(offset) {
        Some(p) if (0..=len).contains(&p) => {
            r.pos = p as usize;
            p
        }
        _ => -22,
    }
}

unsafe extern "C" fn interrupt(opaque: *mut c_void) -> c_int {
    // SAFETY: as in `read_packet`; FFmpeg polls this from the demuxing thread only.
    let r = unsafe { &mut *(opaque as *mut Reader<'_>) };
    c_int::from(r.check_deadline())
}

/// FFmpeg's log goes to stderr by default; an input's oddities must not reach it.
fn silence_ffmpeg() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: sets a global integer inside libavutil; no other state is touched.
    ONCE.call_once(|| unsafe { ffi::av_log_set_level(ffi::AV_LOG_QUIET) });
}

/// An open demuxer over the caller's bytes. Field order is drop order's opposite concern: `Drop`
/// closes the format context before the AVIO context it reads through, and the reader goes last.
struct Opened<'a> {
    input: Option<ff::format::context::Input>,
    avio: *mut ffi::AVIOContext,
    reader: Box<Reader<'a>>,
}

impl Drop for Opened<'_> {
    fn drop(&mut self) {
        // avformat_close_input leaves a custom AVIOContext alone (AVFMT_FLAG_CUSTOM_IO).
        drop(self.input.take());
        if !self.avio.is_null() {
            // SAFETY: `avio` came from avio_alloc_context and no format context uses it any
            // more; its buffer may have been reallocated by FFmpeg, so it is freed through the
            // context's current pointer.
            unsafe {
                ffi::av_freep(&mut (*self.avio).buffer as *mut *mut u8 as *mut c_void);
                ffi::avio_context_free(&mut self.avio);
            }
        }
    }
}

fn open<'a>(
    data: &'a [u8],
    container: Container,
    deadline: Instant,
) -> Result<Opened<'a>, DecodeError> {
    silence_ffmpeg();
    let mut opened = Opened {
        input: None,
        avio: ptr::null_mut(),
        reader: Box::new(Reader {
            data,
            pos: 0,
            deadline,
            timed_out: false,
        }),
    };
    let opaque = &mut *opened.reader as *mut Reader<'a> as *mut c_void;
    let fmt = container.name();
    // SAFETY: plain FFmpeg allocation and set-up calls; every pointer is checked before use, and
    // ownership is handed to `opened` (freed in its Drop) as soon as each object exists. The
    // `opaque` pointer stays valid because the Box is never moved out of `opened`.
    unsafe {
        let buf = ffi::av_malloc(IO_BUFFER) as *mut u8;
        if buf.is_null() {
            return Err(DecodeError::MemoryLimit {
                format: fmt,
                limit: IO_BUFFER as u64,
            });
        }
        opened.avio = ffi::avio_alloc_context(
            buf,
            IO_BUFFER as c_int,
            0,
            opaque,
            Some(read_packet),
            None,
            Some(seek),
        );
        if opened.avio.is_null() {
            ffi::av_free(buf as *mut c_void);
            return Err(DecodeError::MemoryLimit {
                format: fmt,
                limit: IO_BUFFER as u64,
            });
        }
        let mut ctx = ffi::avformat_alloc_context();
        if ctx.is_null() {
            return Err(DecodeError::MemoryLimit {
                format: fmt,
                limit: 0,
            });
        }
        (*ctx).pb = opened.avio;
        (*ctx).flags |= ffi::AVFMT_FLAG_CUSTOM_IO as c_int;
        (*ctx).interrupt_callback = ffi::AVIOInterruptCB {
            callback: Some(interrupt),
            opaque,
        };
        let demuxer = ffi::av_find_input_format(container.demuxer().as_ptr());
        if demuxer.is_null() {
            ffi::avformat_free_context(ctx);
            return Err(DecodeError::Unsupported {
                format: fmt,
                detail: "this FFmpeg build has no demuxer for it".into(),
            });
        }
        // On failure avformat_open_input frees the context and nulls the pointer.
        let rc = ffi::avformat_open_input(&mut ctx, ptr::null(), demuxer as _, ptr::null_mut());
        if rc < 0 {
            return Err(open_error(fmt, rc, &opened.reader));
        }
        opened.input = Some(ff::format::context::Input::wrap(ctx));
        let rc = ffi::avformat_find_stream_info(ctx, ptr::null_mut());
        if rc < 0 {
            return Err(open_error(fmt, rc, &opened.reader));
        }
    }
    Ok(opened)
}

fn open_error(format: &'static str, rc: c_int, reader: &Reader<'_>) -> DecodeError {
    if reader.timed_out {
        return DecodeError::Timeout { format };
    }
    match ff::Error::from(rc) {
        ff::Error::Eof => DecodeError::Truncated {
            format,
            detail: "the data ends inside the container's header".into(),
        },
        e => DecodeError::Corrupt {
            format,
            detail: format!("container not readable ({})", ff_message(e)),
        },
    }
}

/// FFmpeg's message for an error code: fixed strings about structure, never content.
fn ff_message(e: ff::Error) -> String {
    super::sanitize(&e.to_string())
}

fn rational(r: ff::Rational) -> f64 {
    if r.denominator() == 0 {
        0.0
    } else {
        f64::from(r.numerator()) / f64::from(r.denominator())
    }
}

/// Bytes a decoder may hold for a stream of this size: up to 16 reference frames and the one
/// being decoded (H.264/HEVC's worst case) at up to 3 bytes a pixel (10-bit 4:2:0), plus our RGB
/// frame. Conservative for other codecs.
fn memory_estimate(width: u32, height: u32) -> u64 {
    u64::from(width) * u64::from(height) * (18 * 3 + 3)
}

fn check_size(
    format: &'static str,
    width: u32,
    height: u32,
    limits: &VideoLimits,
) -> Result<(), DecodeError> {
    super::check_dimensions(
        format,
        width,
        height,
        &super::DecodeLimits {
            max_input_bytes: limits.max_input_bytes,
            max_pixels: limits.max_pixels,
            max_dimension: limits.max_dimension,
            max_alloc: limits.max_memory,
        },
    )?;
    if memory_estimate(width, height) > limits.max_memory {
        return Err(DecodeError::MemoryLimit {
            format,
            limit: limits.max_memory,
        });
    }
    Ok(())
}

/// A video opened for decoding: header read, limits on the header checked, decoder ready.
pub struct VideoDecoder<'a> {
    opened: Opened<'a>,
    stream_index: usize,
    decoder: ff::decoder::Video,
    info: VideoInfo,
    limits: VideoLimits,
    announced_packets: Option<u64>,
    started: Instant,
}

impl<'a> VideoDecoder<'a> {
    /// Open a video held in memory. Fails with a typed error for anything not a decodable video
    /// within the limits; nothing is decoded yet beyond what FFmpeg reads to learn the streams.
    pub fn open(data: &'a [u8], limits: &VideoLimits) -> Result<Self, DecodeError> {
        super::check_input(data, limits.max_input_bytes)?;
        let container = sniff(data).ok_or(DecodeError::UnsupportedFormat)?;
        let format = container.name();
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(limits.max_decode_seconds.max(0.0));
        let mut opened = open(data, container, deadline)?;
        let Some(input) = opened.input.as_mut() else {
            return Err(DecodeError::Corrupt {
                format,
                detail: "container not readable".into(),
            });
        };
        // The first video stream, as Meta's vPDQ takes it.
        let stream = input
            .streams()
            .find(|s| s.parameters().medium() == ff::media::Type::Video)
            .ok_or(DecodeError::NoVideoStream { format })?;
        let stream_index = stream.index();
        let params = stream.parameters();
        // SAFETY: `params` wraps the stream's live AVCodecParameters; only read here.
        let (codec_id, width, height) = unsafe {
            let p = &*params.as_ptr();
            (p.codec_id, p.width, p.height)
        };
        let width = u32::try_from(width).unwrap_or(0);
        let height = u32::try_from(height).unwrap_or(0);
        check_size(format, width, height, limits)?;
        let codec_name = ff::codec::Id::from(codec_id).name().to_string();
        if !CODECS.contains(&codec_id) {
            return Err(DecodeError::Unsupported {
                format,
                detail: format!("video codec {}", super::sanitize(&codec_name)),
            });
        }
        let mut fps = rational(stream.avg_frame_rate());
        if fps <= 0.0 || !fps.is_finite() {
            fps = rational(stream.rate());
        }
        if fps <= 0.0 || !fps.is_finite() {
            return Err(DecodeError::Corrupt {
                format,
                detail: "the video stream has no frame rate".into(),
            });
        }
        // SAFETY: reading a field of the open format context.
        let container_duration = unsafe { (*input.as_ptr()).duration };
        let duration_seconds = (container_duration != ffi::AV_NOPTS_VALUE
            && container_duration > 0)
            .then(|| container_duration as f64 / f64::from(ffi::AV_TIME_BASE));
        if let Some(d) = duration_seconds
            && d > limits.max_duration_seconds
        {
            return Err(DecodeError::TooLong {
                format,
                seconds: d,
                limit: limits.max_duration_seconds,
            });
        }
        let announced_packets = u64::try_from(stream.frames()).ok().filter(|n| *n > 0);
        let mut ctx = ff::codec::context::Context::from_parameters(params).map_err(|e| {
            DecodeError::Corrupt {
                format,
                detail: format!("codec parameters not usable ({})", ff_message(e)),
            }
        })?;
        // One thread: parallelism comes from hashing many videos (and frames) at once, and a
        // single-threaded decoder keeps memory to the estimate above.
        ctx.set_threading(ff::codec::threading::Config {
            kind: ff::codec::threading::Type::None,
            count: 1,
            ..Default::default()
        });
        // The decoder itself refuses frames over the pixel limit (ff_get_buffer checks it), so a
        // stream that grows mid-way never allocates them.
        // SAFETY: sets an AVOption on the codec context we own, before it is opened.
        unsafe {
            ffi::av_opt_set_int(
                ctx.as_mut_ptr() as *mut c_void,
                c"max_pixels".as_ptr(),
                i64::try_from(limits.max_pixels).unwrap_or(i64::MAX),
                0,
            );
        }
        let decoder = ctx
            .decoder()
            .video()
            .map_err(|e| DecodeError::Unsupported {
                format,
                detail: format!(
                    "video codec {} not decodable here ({})",
                    super::sanitize(&codec_name),
                    ff_message(e)
                ),
            })?;
        Ok(VideoDecoder {
            opened,
            stream_index,
            decoder,
            info: VideoInfo {
                container,
                codec: super::sanitize(&codec_name),
                width,
                height,
                fps,
                duration_seconds,
                frames_decoded: 0,
                bad_packets: 0,
                truncated: false,
            },
            limits: *limits,
            announced_packets,
            started,
        })
    }

    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    fn format(&self) -> &'static str {
        self.info.container.name()
    }

    fn timed_out(&mut self) -> bool {
        self.opened.reader.check_deadline()
    }

    /// Decode every frame; for those whose frame number (0-based, in decoding output order, as
    /// Meta's vPDQ counts) `keep` accepts, convert to RGB24 at the stream's size and call `each`.
    /// Returns the final info (frame count, skipped packets, truncation).
    pub fn decode(
        mut self,
        keep: impl Fn(u64) -> bool,
        mut each: impl FnMut(u64, RgbFrame<'_>),
    ) -> Result<VideoInfo, DecodeError> {
        let format = self.format();
        let mut frame = ff::frame::Video::empty();
        let mut rgb: Option<ff::frame::Video> = None;
        let mut scaler: Option<(ff::format::Pixel, u32, u32, ff::software::scaling::Context)> =
            None;
        let mut packets = 0u64;
        let mut eof = false;
        loop {
            if self.timed_out() {
                return Err(DecodeError::Timeout { format });
            }
            if !eof {
                let mut packet = ff::Packet::empty();
                let Some(input) = self.opened.input.as_mut() else {
                    return self.finish(packets);
                };
                match packet.read(input) {
                    Ok(()) => {
                        if packet.stream() != self.stream_index {
                            continue;
                        }
                        packets += 1;
                        match self.decoder.send_packet(&packet) {
                            Ok(()) => {}
                            Err(ff::Error::InvalidData) => self.bad_packet()?,
                            Err(e) => return Err(self.decode_error(e)),
                        }
                    }
                    Err(ff::Error::Eof) => {
                        eof = true;
                    }
                    // A demuxer resyncs past one damaged packet.
                    Err(ff::Error::InvalidData) => {
                        self.bad_packet()?;
                        continue;
                    }
                    Err(ff::Error::Exit) if self.timed_out() => {
                        return Err(DecodeError::Timeout { format });
                    }
                    // Any other read error ends the data: decode what arrived.
                    Err(_) => {
                        eof = true;
                        self.info.truncated = true;
                    }
                }
                if eof {
                    // Drain the decoder's delayed frames.
                    let _ = self.decoder.send_eof();
                }
            }
            // Frames out.
            loop {
                match self.decoder.receive_frame(&mut frame) {
                    Ok(()) => {}
                    Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => {
                        if eof {
                            return self.finish(packets);
                        }
                        break;
                    }
                    Err(ff::Error::Eof) => {
                        return self.finish(packets);
                    }
                    Err(ff::Error::InvalidData) => {
                        self.bad_packet()?;
                        break;
                    }
                    Err(e) => return Err(self.decode_error(e)),
                }
                let frame_number = self.info.frames_decoded;
                self.info.frames_decoded += 1;
                if self.info.frames_decoded > self.limits.max_frames {
                    return Err(DecodeError::TooManyFrames {
                        format,
                        limit: self.limits.max_frames,
                    });
                }
                let at = frame_number as f64 / self.info.fps;
                if at > self.limits.max_duration_seconds {
                    return Err(DecodeError::TooLong {
                        format,
                        seconds: at,
                        limit: self.limits.max_duration_seconds,
                    });
                }
                if !keep(frame_number) {
                    continue;
                }
                check_size(format, frame.width(), frame.height(), &self.limits)?;
                let (tw, th) = (self.info.width, self.info.height);
                let stale = !matches!(&scaler, Some((f, w, h, _))
                    if *f == frame.format() && *w == frame.width() && *h == frame.height());
                if stale {
                    // Meta's vPDQ: RGB24 at the stream's declared size, SWS_AREA.
                    let ctx = ff::software::scaling::Context::get(
                        frame.format(),
                        frame.width(),
                        frame.height(),
                        ff::format::Pixel::RGB24,
                        tw,
                        th,
                        ff::software::scaling::Flags::AREA,
                    )
                    .map_err(|e| DecodeError::Unsupported {
                        format,
                        detail: format!("pixel format not convertible ({})", ff_message(e)),
                    })?;
                    scaler = Some((frame.format(), frame.width(), frame.height(), ctx));
                }
                let out = rgb
                    .get_or_insert_with(|| ff::frame::Video::new(ff::format::Pixel::RGB24, tw, th));
                if let Some((_, _, _, ctx)) = scaler.as_mut() {
                    ctx.run(&frame, out).map_err(|e| DecodeError::Corrupt {
                        format,
                        detail: format!("frame conversion failed ({})", ff_message(e)),
                    })?;
                }
                let stride = out.stride(0);
                let (w, h) = (tw as usize, th as usize);
                let data = out.data(0);
                if stride < w * 3 || data.len() < stride * (h - 1) + w * 3 {
                    return Err(DecodeError::Corrupt {
                        format,
                        detail: "frame conversion produced a short buffer".into(),
                    });
                }
                each(
                    frame_number,
                    RgbFrame {
                        width: w,
                        height: h,
                        stride,
                        data,
                    },
                );
            }
        }
    }

    fn bad_packet(&mut self) -> Result<(), DecodeError> {
        self.info.bad_packets += 1;
        if self.info.bad_packets > MAX_BAD_PACKETS {
            return Err(DecodeError::Corrupt {
                format: self.format(),
                detail: format!("more than {MAX_BAD_PACKETS} damaged packets"),
            });
        }
        Ok(())
    }

    fn decode_error(&mut self, e: ff::Error) -> DecodeError {
        let format = self.format();
        if self.timed_out() {
            return DecodeError::Timeout { format };
        }
        DecodeError::Corrupt {
            format,
            detail: format!("decoding failed ({})", ff_message(e)),
        }
    }

    fn finish(mut self, packets: u64) -> Result<VideoInfo, DecodeError> {
        if self.info.frames_decoded == 0 {
            return Err(DecodeError::Corrupt {
                format: self.format(),
                detail: "no decodable video frame".into(),
            });
        }
        if self.announced_packets.is_some_and(|n| packets < n) {
            self.info.truncated = true;
        }
        tracing::debug!(
            container = self.format(),
            frames = self.info.frames_decoded,
            ms = self.started.elapsed().as_millis() as u64,
            "video decoded"
        );
        Ok(self.info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_containers() {
        assert_eq!(sniff(b"\0\0\0\x20ftypisom\0\0"), Some(Container::Mp4));
        assert_eq!(sniff(b"\0\0\0\x08wide\0\0"), Some(Container::Mp4));
        assert_eq!(
            sniff(&[0x1A, 0x45, 0xDF, 0xA3, 0x9f]),
            Some(Container::Matroska)
        );
        assert_eq!(sniff(b"RIFF\0\0\0\0AVI LIST"), Some(Container::Avi));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), None);
        assert_eq!(sniff(b"GIF89a"), Some(Container::Gif));
        assert_eq!(sniff(b"FLV\x01\x05"), Some(Container::Flv));
        let mut ts = vec![0u8; 376];
        ts[0] = 0x47;
        ts[188] = 0x47;
        assert_eq!(sniff(&ts), Some(Container::MpegTs));
        assert_eq!(sniff(b"\xFF\xD8\xFF"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn hostile_bytes_get_typed_errors() {
        let l = VideoLimits::default();
        assert!(matches!(
            VideoDecoder::open(b"", &l),
            Err(DecodeError::Empty)
        ));
        assert!(matches!(
            VideoDecoder::open(b"hello world", &l),
            Err(DecodeError::UnsupportedFormat)
        ));
        // A box header and nothing else.
        let r = VideoDecoder::open(b"\0\0\0\x20ftypisom", &l);
        assert!(
            matches!(
                r,
                Err(DecodeError::Truncated { .. } | DecodeError::Corrupt { .. })
            ),
            "{:?}",
            r.err()
        );
        let small = VideoLimits {
            max_input_bytes: 4,
            ..l
        };
        assert!(matches!(
            VideoDecoder::open(b"\0\0\0\x20ftypisom", &small),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn memory_estimate_admits_4k_by_default() {
        let l = VideoLimits::default();
        assert!(check_size("MP4", 3840, 2160, &l).is_ok());
        assert!(check_size("MP4", 2160, 3840, &l).is_ok());
        assert!(check_size("MP4", 7680, 4320, &l).is_err());
        assert!(check_size("MP4", 0, 10, &l).is_err());
    }
}
