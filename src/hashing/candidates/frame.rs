//! Frame removal: a picture shown inside a frame made of flat regions of several colours — a
//! screenshot's title bar, tabs, side panel and status bar, an app's chrome, a caption band.
//! A border of one colour is [`super::border`]'s; here every line of the frame may cross
//! several flat regions, so a line belongs to the frame when nearly all its pixels lie in long
//! runs of one colour each. A photograph's lines rarely do: texture and gradients break them
//! into short runs, and where they do not (a clear sky, a studio backdrop) the candidate is one
//! more view, while the whole image is still matched as it is.

use super::Rect;
use super::border::close;
use crate::hashing::pdq::PixelView;

/// How a frame is told from the picture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameParams {
    /// A run goes on while every channel is within this of the run's first pixel: flat UI
    /// colours survive rescaling and JPEG within a few levels.
    pub tolerance: u8,
    /// A run counts when it is at least this share of the line (and 4 px): text and icons
    /// are short runs, the fills between and around them long ones.
    pub min_run: f32,
    /// The share of a line's pixels in counted runs for the line to be frame.
    pub line_share: f32,
    /// The picture keeps at least this share of each dimension.
    pub min_keep: f32,
    /// Frame sides thinner than this share of the dimension (and 2 px) are ignored.
    pub min_bar: f32,
    /// Lines that are not frame, up to this share of the dimension, may sit between frame
    /// lines (a line of caption text).
    pub gap: f32,
}

impl Default for FrameParams {
    fn default() -> Self {
        FrameParams {
            tolerance: 6,
            min_run: 1.0 / 64.0,
            line_share: 0.9,
            min_keep: 0.2,
            min_bar: 0.02,
            gap: 0.1,
        }
    }
}

/// The views a frame removal tries: the frame that ends at its first line that is not frame,
/// and, when different, the frame whose rows cross a few lines that are not (caption text). A
/// photograph whose own edge rows are flat (a clear sky) is eaten into by the second, never by
/// both, so both are hashed.
pub fn frame_boxes(view: PixelView<'_>, p: &FrameParams) -> Vec<Rect> {
    let strict = frame_box(view, &FrameParams { gap: 0.0, ..*p });
    let crossing = frame_box(view, p);
    let mut out: Vec<Rect> = strict.into_iter().collect();
    if let Some(c) = crossing
        && !out.iter().any(|r| super::near(r, &c))
    {
        out.push(c);
    }
    out
}

/// The picture inside a frame of flat regions, or `None` when no side has one. Top and bottom
/// are scanned over the whole width, left and right over the rows between them.
pub fn frame_box(view: PixelView<'_>, p: &FrameParams) -> Option<Rect> {
    let (w, h, c) = (view.width, view.height, view.channels);
    if w < 16 || h < 16 || !(c == 1 || c == 3) || view.data.len() < w * h * c {
        return None;
    }
    let px = |x: usize, y: usize| -> &[u8] {
        let at = (y * w + x) * c;
        &view.data[at..at + c]
    };
    let keep = |dim: usize| ((dim as f32 * p.min_keep).ceil() as usize).max(8);
    let floor = |lines: usize, dim: usize| {
        if lines >= ((dim as f32 * p.min_bar).ceil() as usize).max(2) {
            lines
        } else {
            0
        }
    };
    let gap = |dim: usize| (dim as f32 * p.gap) as usize;
    let row_budget = h.saturating_sub(keep(h));
    let top = floor(scan(row_budget, w, gap(h), p, |l, i| px(i, l)), h);
    let bottom = floor(
        scan(row_budget - top, w, gap(h), p, |l, i| px(i, h - 1 - l)),
        h,
    );
    let (y0, y1) = (top, h - bottom);
    let col_budget = w.saturating_sub(keep(w));
    let rows = y1 - y0;
    let left = floor(scan(col_budget, rows, 0, p, |l, i| px(l, y0 + i)), w);
    let right = floor(
        scan(col_budget - left, rows, 0, p, |l, i| px(w - 1 - l, y0 + i)),
        w,
    );
    if top + bottom + left + right == 0 {
        return None;
    }
    Some(Rect {
        x0: left,
        y0,
        x1: w - right,
        y1,
    })
}

/// How many lines from one side are frame, at most `budget`. A few lines that are not (a line
/// of caption text, an icon row) do not end the frame when frame lines follow within `gap`
/// lines; the frame ends at its last frame line. Only rows get a gap: captions run across.
fn scan<'a>(
    budget: usize,
    len: usize,
    gap: usize,
    p: &FrameParams,
    pixel: impl Fn(usize, usize) -> &'a [u8],
) -> usize {
    if len == 0 {
        return 0;
    }
    let min_run = ((len as f32 * p.min_run).ceil() as usize).max(4);
    let needed = (len as f32 * p.line_share).ceil() as usize;
    let is_frame = |l: usize| {
        let mut covered = 0;
        let mut i = 0;
        while i < len {
            let anchor = pixel(l, i);
            let run = (i..len)
                .take_while(|&j| close(pixel(l, j), anchor, p.tolerance))
                .count();
            if run >= min_run {
                covered += run;
            }
            i += run.max(1);
        }
        covered >= needed
    };
    let mut frame = 0;
    let mut l = 0;
    while l < budget {
        if is_frame(l) {
            l += 1;
            frame = l;
        } else {
            // Three frame lines in a row resume it: one flat line inside a picture does not.
            let resumes = |m: usize| m + 3 <= budget && (m..m + 3).all(is_frame);
            match (l + 1..budget.min(l + 1 + gap)).find(|&m| resumes(m)) {
                Some(m) => l = m,
                None => break,
            }
        }
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(w: usize, h: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let t = ((x * 7 + y * 13) % 29) as u8;
                v.push((40 + (x * 150 / w) as u8).wrapping_add(t));
                v.push((60 + (y * 120 / h) as u8).wrapping_add(t));
                v.push((90 + ((x + y) * 80 / (w + h)) as u8).wrapping_add(t));
            }
        }
        v
    }

    fn view(data: &[u8], w: usize, h: usize) -> PixelView<'_> {
        PixelView {
            width: w,
            height: h,
            channels: 3,
            data,
        }
    }

    /// A light "window": a dark title bar with lighter tabs, a side panel, a status bar and
    /// a light background, with the photo pasted at (px, py).
    fn screenshot(img: &[u8], w: usize, h: usize) -> (Vec<u8>, usize, usize, usize, usize) {
        let (cw, ch) = (w * 5 / 4, h * 3 / 2);
        let bar = ch / 12;
        let side = cw - w - cw / 30;
        let (px, py) = (side, bar + ch / 25);
        let mut out = vec![0u8; cw * ch * 3];
        for y in 0..ch {
            for x in 0..cw {
                let col: [u8; 3] = if y < bar {
                    let tab = x * 7 / cw;
                    if y > bar / 3 && tab % 2 == 1 {
                        [80, 80, 86]
                    } else {
                        [45, 45, 48]
                    }
                } else if y >= ch - ch / 20 {
                    [220, 220, 224]
                } else if x < side - cw / 50 {
                    [232, 232, 236]
                } else {
                    [242, 242, 242]
                };
                out[(y * cw + x) * 3..][..3].copy_from_slice(&col);
            }
        }
        for y in 0..h {
            let src = &img[y * w * 3..(y + 1) * w * 3];
            out[((py + y) * cw + px) * 3..][..w * 3].copy_from_slice(src);
        }
        (out, cw, ch, px, py)
    }

    #[test]
    fn cuts_the_picture_out_of_a_window() {
        let (w, h) = (240, 160);
        let img = photo(w, h);
        let (s, cw, ch, px, py) = screenshot(&img, w, h);
        let r = frame_box(view(&s, cw, ch), &FrameParams::default()).expect("a frame");
        assert_eq!(
            r,
            Rect {
                x0: px,
                y0: py,
                x1: px + w,
                y1: py + h
            }
        );
    }

    #[test]
    fn a_caption_band_with_text_is_frame() {
        // A white band above the photo with black "text": short strokes on long white runs.
        let (w, h) = (240, 160);
        let img = photo(w, h);
        let band = 40;
        let mut s = vec![255u8; w * (h + band) * 3];
        for y in 12..28 {
            for x in (20..220).filter(|x| x % 9 < 2) {
                s[(y * w + x) * 3..][..3].fill(0);
            }
        }
        s[band * w * 3..].copy_from_slice(&img);
        let r = frame_box(view(&s, w, h + band), &FrameParams::default()).expect("a frame");
        assert_eq!(
            r,
            Rect {
                x0: 0,
                y0: band,
                x1: w,
                y1: h + band
            }
        );
    }

    #[test]
    fn a_flat_edge_of_the_picture_gives_two_views() {
        // A caption band with a line of text above a photo whose own top 30 rows are flat
        // (a clear sky): crossing the text also crosses into the sky; the strict view stops
        // at the text, the crossing one at the photo's texture. Both are tried.
        let (w, h) = (240, 200);
        let mut img = photo(w, h);
        img[..w * 30 * 3].fill(200);
        let band = 40;
        let mut s = vec![255u8; w * (h + band) * 3];
        for y in 12..28 {
            for x in (20..220).filter(|x| x % 9 < 2) {
                s[(y * w + x) * 3..][..3].fill(0);
            }
        }
        s[band * w * 3..].copy_from_slice(&img);
        let views = frame_boxes(view(&s, w, h + band), &FrameParams::default());
        assert_eq!(views.len(), 2, "{views:?}");
        assert_eq!(views[0].y0, 12, "{views:?}");
        assert_eq!(views[1].y0, band + 30, "{views:?}");
    }

    #[test]
    fn a_photo_has_no_frame_and_nothing_panics() {
        let (w, h) = (240, 160);
        assert_eq!(
            frame_box(view(&photo(w, h), w, h), &FrameParams::default()),
            None
        );
        let flat = vec![3u8; w * h * 3];
        let r = frame_box(view(&flat, w, h), &FrameParams::default()).expect("flat");
        assert!(r.width() >= w / 5 && r.height() >= h / 5, "{r:?}");
        assert_eq!(
            frame_box(view(&flat[..9], 3, 1), &FrameParams::default()),
            None
        );
        assert_eq!(
            frame_box(view(&flat[..9], 100, 100), &FrameParams::default()),
            None
        );
    }
}
