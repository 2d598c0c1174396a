//! JPEG through libjpeg-turbo's TurboJPEG API: the decoder the PDQ reference outputs were made
//! with (ISLOW IDCT, fancy upsampling — TurboJPEG's defaults), so decoded pixels, and therefore
//! hashes, match the reference exactly. Optionally decodes with DCT-domain scaling (fast mode).

use std::ffi::{CStr, c_int, c_ulong};

use turbojpeg_sys as tj;

use super::{DecodeLimits, Pixels, check_dimensions, sanitize};
use crate::error::DecodeError;

const FORMAT: &str = "JPEG";

/// Owns a TurboJPEG handle and frees it on every path.
struct Handle(tj::tjhandle);

impl Handle {
    fn new() -> Result<Self, DecodeError> {
        // SAFETY: no preconditions; a null return is checked.
        let h = unsafe { tj::tjInitDecompress() };
        if h.is_null() {
            return Err(DecodeError::Unsupported {
                format: FORMAT,
                detail: "could not initialise the JPEG decoder".into(),
            });
        }
        Ok(Handle(h))
    }

    fn last_error(&self) -> (String, bool) {
        // SAFETY: the handle is valid; TurboJPEG returns a pointer to a NUL-terminated string
        // it owns (thread-local per handle), which we copy before the next call.
        let msg = unsafe {
            let p = tj::tjGetErrorStr2(self.0);
            if p.is_null() {
                String::from("unknown error")
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        // SAFETY: valid handle.
        let warning = unsafe { tj::tjGetErrorCode(self.0) } == tj::TJERR_TJERR_WARNING as c_int;
        (msg, warning)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitDecompress and is destroyed once.
        unsafe {
            tj::tjDestroy(self.0);
        }
    }
}

/// What the marker walk found before the first scan.
#[derive(Debug, Default)]
pub struct Markers {
    pub orientation: Option<u8>,
    pub adobe: bool,
    /// (width, height) from the first SOF segment.
    pub frame: Option<(u32, u32)>,
    /// The walk reached the first scan (SOS).
    pub reached_scan: bool,
    /// The input ended inside the marker segments.
    pub ran_out: bool,
}

/// Walk the marker segments up to the first SOS: frame size, EXIF orientation, Adobe APP14.
/// Bounded by the input length; a malformed segment ends the walk (the decoder then reports it).
pub fn scan_markers(data: &[u8]) -> Markers {
    let mut m = Markers::default();
    let mut i = 2usize; // after SOI
    loop {
        if i + 4 > data.len() {
            m.ran_out = true;
            break;
        }
        if data[i] != 0xFF {
            break;
        }
        let marker = data[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        if marker == 0xDA {
            m.reached_scan = true;
            break;
        }
        if marker == 0xD9 {
            break;
        }
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            i += 2;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
        if len < 2 {
            break;
        }
        if i + 2 + len > data.len() {
            m.ran_out = true;
            break;
        }
        let body = &data[i + 4..i + 2 + len];
        let is_sof = (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof && m.frame.is_none() && body.len() >= 5 {
            let h = u16::from_be_bytes([body[1], body[2]]);
            let w = u16::from_be_bytes([body[3], body[4]]);
            m.frame = Some((u32::from(w), u32::from(h)));
        }
        if marker == 0xE1 && body.starts_with(b"Exif\0\0") && m.orientation.is_none() {
            m.orientation = image::metadata::Orientation::from_exif_chunk(&body[6..])
                .map(image::metadata::Orientation::to_exif);
        }
        if marker == 0xEE && body.starts_with(b"Adobe") {
            m.adobe = true;
        }
        i += 2 + len;
    }
    m
}

/// Choose the libjpeg-turbo scaling factor (num/denom) that shrinks the image most while
/// keeping its shorter side at or above `min_side` (1/1 if none does).
fn pick_scale(width: u32, height: u32, min_side: u32) -> (u32, u32) {
    let mut n: c_int = 0;
    // SAFETY: returns a pointer to a static array of `n` factors, or null.
    let ptr = unsafe { tj::tjGetScalingFactors(&mut n) };
    if ptr.is_null() || n <= 0 {
        return (1, 1);
    }
    // SAFETY: ptr/n describe a valid static array owned by the library.
    let factors = unsafe { std::slice::from_raw_parts(ptr, n as usize) };
    let short = width.min(height);
    let mut best = (1u32, 1u32);
    for f in factors {
        let (num, den) = (f.num as u32, f.denom as u32);
        if num == 0 || den == 0 || num > den {
            continue;
        }
        let scaled = (u64::from(short) * u64::from(num)).div_ceil(u64::from(den));
        if scaled >= u64::from(min_side)
            && u64::from(num) * u64::from(best.1) < u64::from(best.0) * u64::from(den)
        {
            best = (num, den);
        }
    }
    best
}

pub struct JpegImage {
    /// Size in the frame header.
    pub header_width: u32,
    pub header_height: u32,
    /// Size of `pixels` (smaller when decoded with DCT scaling).
    pub width: u32,
    pub height: u32,
    pub pixels: Pixels,
    pub markers: Markers,
    pub colour: &'static str,
}

/// Decode a JPEG. `scale_min_side`: when set, decode with DCT-domain scaling down to the
/// smallest size whose shorter side is still at least that many pixels (the fast mode).
pub fn decode(
    data: &[u8],
    limits: &DecodeLimits,
    scale_min_side: Option<u32>,
) -> Result<JpegImage, DecodeError> {
    let len = c_ulong::try_from(data.len()).map_err(|_| DecodeError::TooLarge {
        size: data.len() as u64,
        limit: limits.max_input_bytes,
    })?;
    // Our own walk first: it names truncated headers and zero or oversized frames precisely,
    // before libjpeg-turbo sees the data.
    let markers = scan_markers(data);
    if let Some((fw, fh)) = markers.frame {
        check_dimensions(FORMAT, fw, fh, limits)?;
    }
    if markers.ran_out && !markers.reached_scan {
        return Err(DecodeError::Truncated {
            format: FORMAT,
            detail: "input ends inside the header segments".into(),
        });
    }
    let handle = Handle::new()?;
    let (mut w, mut h, mut subsamp, mut cs): (c_int, c_int, c_int, c_int) = (0, 0, 0, 0);
    // SAFETY: valid handle, data/len describe a live slice, out-pointers are valid.
    let rc = unsafe {
        tj::tjDecompressHeader3(
            handle.0,
            data.as_ptr(),
            len,
            &mut w,
            &mut h,
            &mut subsamp,
            &mut cs,
        )
    };
    if rc != 0 {
        let (msg, _) = handle.last_error();
        return Err(classify(&msg));
    }
    let (width, height) = (u32::try_from(w).unwrap_or(0), u32::try_from(h).unwrap_or(0));
    check_dimensions(FORMAT, width, height, limits)?;
    let cs = cs as u32;
    let (pf, channels, colour) = if cs == tj::TJCS_TJCS_GRAY {
        (tj::TJPF_TJPF_GRAY, 1usize, "grey")
    } else if cs == tj::TJCS_TJCS_CMYK || cs == tj::TJCS_TJCS_YCCK {
        (tj::TJPF_TJPF_CMYK, 4usize, "cmyk")
    } else {
        (tj::TJPF_TJPF_RGB, 3usize, "rgb")
    };
    let (num, den) = match scale_min_side {
        Some(min) => pick_scale(width, height, min),
        None => (1, 1),
    };
    let out_w = (u64::from(width) * u64::from(num)).div_ceil(u64::from(den));
    let out_h = (u64::from(height) * u64::from(num)).div_ceil(u64::from(den));
    // Output buffer plus libjpeg-turbo's own working memory; a progressive image keeps every
    // DCT coefficient (2 bytes per sample per component) until the last scan.
    let components = channels.max(3) as u64;
    let need =
        out_w * out_h * channels as u64 + u64::from(width) * u64::from(height) * components * 2;
    if need > limits.max_alloc {
        return Err(DecodeError::MemoryLimit {
            format: FORMAT,
            limit: limits.max_alloc,
        });
    }
    let size = (out_w * out_h) as usize * channels;
    let mut buf: Vec<u8> = Vec::new();
    buf.try_reserve_exact(size)
        .map_err(|_| DecodeError::MemoryLimit {
            format: FORMAT,
            limit: limits.max_alloc,
        })?;
    // Not zero-filled: the decoder writes every byte, and zeroing a large buffer first costs a
    // full extra pass over memory. The length is set only after a successful decode.
    // TurboJPEG defaults are the reference's: ISLOW IDCT, fancy upsampling. LIMITSCANS refuses
    // progressive images with absurd scan counts (a CPU-exhaustion vector).
    let flags = (tj::TJFLAG_ACCURATEDCT | tj::TJFLAG_LIMITSCANS) as c_int;
    // SAFETY: buf has capacity for out_w*out_h*channels bytes, matching width/height/pixel
    // format with pitch 0 (= width * bytes per pixel); all pointers are live for the call.
    let rc = unsafe {
        tj::tjDecompress2(
            handle.0,
            data.as_ptr(),
            len,
            buf.spare_capacity_mut().as_mut_ptr().cast::<u8>(),
            out_w as c_int,
            0,
            out_h as c_int,
            pf,
            flags,
        )
    };
    if rc != 0 {
        let (msg, warning) = handle.last_error();
        let lower = msg.to_ascii_lowercase();
        if lower.contains("premature end") {
            return Err(DecodeError::Truncated {
                format: FORMAT,
                detail: sanitize(&msg),
            });
        }
        // Non-fatal warnings (e.g. extraneous bytes before a marker) are common in camera files
        // and leave a complete image; anything fatal is an error.
        if !warning {
            return Err(classify(&msg));
        }
    }
    // SAFETY: tjDecompress2 returned success (or a non-fatal warning, after which the image is
    // complete) and so wrote all out_w*out_h*channels = `size` bytes of the reserved capacity.
    unsafe { buf.set_len(size) };
    let pixels = match channels {
        1 => Pixels::Grey(buf),
        3 => Pixels::Rgb(buf),
        _ => Pixels::Rgb(cmyk_to_rgb(&buf, markers.adobe)),
    };
    Ok(JpegImage {
        header_width: width,
        header_height: height,
        width: out_w as u32,
        height: out_h as u32,
        pixels,
        markers,
        colour,
    })
}

/// CMYK → RGB as Pillow converts (Adobe files store inverted CMYK, which Pillow un-inverts):
/// `R = (255-K) - (C·(255-K))/255`, rounded the way Pillow's MULDIV255 rounds.
fn cmyk_to_rgb(cmyk: &[u8], adobe_inverted: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let [c, m, y, k] = if adobe_inverted {
            [255 - px[0], 255 - px[1], 255 - px[2], 255 - px[3]]
        } else {
            [px[0], px[1], px[2], px[3]]
        };
        let nk = 255 - u32::from(k);
        for v in [c, m, y] {
            let t = u32::from(v) * nk + 128;
            let muldiv = ((t >> 8) + t) >> 8;
            out.push((nk - muldiv) as u8);
        }
    }
    out
}

/// Encode 8-bit grey (1 channel) or RGB (3 channels) pixels as a baseline (or progressive)
/// JPEG. Used for demo images and generated test inputs; Baken never writes images it scans.
pub fn encode(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: usize,
    quality: u8,
    progressive: bool,
) -> Result<Vec<u8>, DecodeError> {
    let (pf, samp) = match channels {
        1 => (tj::TJPF_TJPF_GRAY, tj::TJSAMP_TJSAMP_GRAY),
        3 => (tj::TJPF_TJPF_RGB, tj::TJSAMP_TJSAMP_420),
        _ => {
            return Err(DecodeError::Unsupported {
                format: FORMAT,
                detail: "encoder takes 1 or 3 channels".into(),
            });
        }
    };
    if pixels.len() as u64 != u64::from(width) * u64::from(height) * channels as u64 {
        return Err(DecodeError::Corrupt {
            format: FORMAT,
            detail: "pixel buffer does not match the dimensions".into(),
        });
    }
    // SAFETY: no preconditions; null checked.
    let h = unsafe { tj::tjInitCompress() };
    if h.is_null() {
        return Err(DecodeError::Unsupported {
            format: FORMAT,
            detail: "could not initialise the JPEG encoder".into(),
        });
    }
    let handle = Handle(h);
    let mut out: *mut u8 = std::ptr::null_mut();
    let mut size: c_ulong = 0;
    let flags = if progressive {
        (tj::TJFLAG_PROGRESSIVE | tj::TJFLAG_ACCURATEDCT) as c_int
    } else {
        tj::TJFLAG_ACCURATEDCT as c_int
    };
    // SAFETY: pixels holds width*height*channels bytes (checked above), pitch 0 = packed rows;
    // TurboJPEG allocates `out`, which we copy and free with tjFree.
    let rc = unsafe {
        tj::tjCompress2(
            handle.0,
            pixels.as_ptr(),
            width as c_int,
            0,
            height as c_int,
            pf,
            &mut out,
            &mut size,
            samp as c_int,
            c_int::from(quality.clamp(1, 100)),
            flags,
        )
    };
    let result = if rc != 0 || out.is_null() {
        let (msg, _) = handle.last_error();
        Err(DecodeError::Corrupt {
            format: FORMAT,
            detail: sanitize(&msg),
        })
    } else {
        // SAFETY: TurboJPEG wrote `size` bytes at `out`.
        Ok(unsafe { std::slice::from_raw_parts(out, size as usize) }.to_vec())
    };
    if !out.is_null() {
        // SAFETY: `out` was allocated by TurboJPEG.
        unsafe { tj::tjFree(out) };
    }
    result
}

fn classify(msg: &str) -> DecodeError {
    let lower = msg.to_ascii_lowercase();
    let detail = sanitize(msg);
    if lower.contains("premature end") {
        DecodeError::Truncated {
            format: FORMAT,
            detail,
        }
    } else if lower.contains("empty jpeg image") {
        DecodeError::ZeroDimension {
            format: FORMAT,
            width: 0,
            height: 0,
        }
    } else if lower.contains("unsupported") || lower.contains("not supported") {
        DecodeError::Unsupported {
            format: FORMAT,
            detail,
        }
    } else if lower.contains("empty input") {
        DecodeError::Truncated {
            format: FORMAT,
            detail,
        }
    } else {
        DecodeError::Corrupt {
            format: FORMAT,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pillow_cmyk_conversion() {
        // White, black, pure cyan, and an inverted-Adobe white.
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 0], false), vec![255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 255], false), vec![0, 0, 0]);
        assert_eq!(cmyk_to_rgb(&[255, 0, 0, 0], false), vec![0, 255, 255]);
        assert_eq!(
            cmyk_to_rgb(&[255, 255, 255, 255], true),
            vec![255, 255, 255]
        );
    }

    #[test]
    fn marker_walk_stops_on_garbage() {
        let m = scan_markers(&[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF]);
        assert_eq!(m.orientation, None);
        let m = scan_markers(&[0xFF, 0xD8]);
        assert!(!m.adobe);
        assert!(m.ran_out);
        let m = scan_markers(&[0xFF, 0xD8, 0xFF, 0xC0, 0, 11, 8, 0, 7, 0, 9, 3, 1, 0x11, 0]);
        assert_eq!(m.frame, Some((9, 7)));
    }
}
