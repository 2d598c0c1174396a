//! Border removal: the picture inside a uniform border of any colour (letterbox, pillarbox,
//! padding). PDQ is computed over the whole frame, so a border moves most of its bits.

use super::Rect;
use crate::hashing::pdq::PixelView;

/// How a uniform border is told from the picture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BorderParams {
    /// A pixel belongs to the border when every channel is within this of the border's colour
    /// (JPEG and resampling blur a flat bar by a few levels; 24 keeps dark photo edges apart
    /// from black bars in our measurements).
    pub tolerance: u8,
    /// The share of a line's pixels that must be border for the line to be border: a logo, a
    /// watermark or ringing at the bar's edge does not stop the scan (python-threatexchange's
    /// unletterbox requires every pixel, and one bright pixel defeats it).
    pub line_share: f32,
    /// The crop keeps at least this share of each dimension; more is not a border but the
    /// picture (a flat sky, a white page). 0.15 leaves room for a 2:1 panorama letterboxed
    /// into a 9:16 portrait frame (28 % of the height).
    pub min_keep: f32,
    /// Bars thinner than this share of the dimension (and 2 px) are ignored: they barely move
    /// PDQ, and the whole image's hash already covers them.
    pub min_bar: f32,
}

impl Default for BorderParams {
    fn default() -> Self {
        BorderParams {
            tolerance: 24,
            line_share: 0.98,
            min_keep: 0.15,
            min_bar: 0.02,
        }
    }
}

/// The part of `view` inside a uniform border of any colour, or `None` when no side has a
/// border worth removing or what would be left is too small to hash. Each side is scanned on
/// its own (top and bottom over the whole width, left and right over the rows between them),
/// then the border is taken to be one colour: the thickest bar's. A "bar" of another colour is
/// the picture's own flat margin (a product shot on white inside black letterbox bars) and
/// stays, as it is in the listed original.
pub fn border_box(view: PixelView<'_>, p: &BorderParams) -> Option<Rect> {
    let (w, h, c) = (view.width, view.height, view.channels);
    if w < 8 || h < 8 || !(c == 1 || c == 3) || view.data.len() < w * h * c {
        return None;
    }
    let px = |x: usize, y: usize| -> &[u8] {
        let at = (y * w + x) * c;
        &view.data[at..at + c]
    };
    let keep = |dim: usize| ((dim as f32 * p.min_keep).ceil() as usize).max(8);
    let bar_floor = |dim: usize| ((dim as f32 * p.min_bar).ceil() as usize).max(2);
    let floor = |bar: Bar, dim: usize| (bar.0 >= bar_floor(dim)).then_some(bar);
    let lines = |b: Option<Bar>| b.map_or(0, |b| b.0);

    // The budget for both bars of an axis together is what `min_keep` leaves.
    let row_budget = h.saturating_sub(keep(h));
    let col_budget = w.saturating_sub(keep(w));
    let top = floor(scan(row_budget, w, p, |l, i| px(i, l)), h);
    let bottom = floor(
        scan(row_budget - lines(top), w, p, |l, i| px(i, h - 1 - l)),
        h,
    );
    let sides = |top: Option<Bar>, bottom: Option<Bar>| {
        let (y0, y1) = (lines(top), h - lines(bottom));
        let rows = y1 - y0;
        let left = floor(scan(col_budget, rows, p, |l, i| px(l, y0 + i)), w);
        let right = floor(
            scan(col_budget - lines(left), rows, p, |l, i| {
                px(w - 1 - l, y0 + i)
            }),
            w,
        );
        (left, right)
    };
    let (left, right) = sides(top, bottom);
    let colour = [top, bottom, left, right]
        .into_iter()
        .flatten()
        .max_by_key(|b| b.0)?
        .1;
    let same = |b: Option<Bar>| b.filter(|b| close(&b.1, &colour, p.tolerance));
    let (t, b) = (same(top), same(bottom));
    // Rows given back to the picture change what the columns are scanned over.
    let (left, right) = if (t, b) == (top, bottom) {
        (left, right)
    } else {
        sides(t, b)
    };
    let (l, r) = (same(left), same(right));
    Some(Rect {
        x0: lines(l),
        y0: lines(t),
        x1: w - lines(r),
        y1: h - lines(b),
    })
}

/// The views a border removal tries: [`border_box`], and when an axis has bars on both sides
/// of different thickness, the same with both bars as thin as the thinner one. Letterbox and
/// padding bars are symmetric in practice, and the thicker side is then likely to have run
/// into the picture's own margin of the bar's colour (a product shot on black).
pub fn border_boxes(view: PixelView<'_>, p: &BorderParams) -> Vec<Rect> {
    let Some(r) = border_box(view, p) else {
        return Vec::new();
    };
    let (w, h) = (view.width, view.height);
    let even = |a: usize, b: usize| {
        if a > 0 && b > 0 {
            let t = a.min(b);
            (t, t)
        } else {
            (a, b)
        }
    };
    let (top, bottom) = even(r.y0, h - r.y1);
    let (left, right) = even(r.x0, w - r.x1);
    let sym = Rect {
        x0: left,
        y0: top,
        x1: w - right,
        y1: h - bottom,
    };
    // Two or three lines of difference are rounding and edge blur, not a margin.
    let differs = r.y0.abs_diff(sym.y0)
        + r.y1.abs_diff(sym.y1)
        + r.x0.abs_diff(sym.x0)
        + r.x1.abs_diff(sym.x1)
        > 3;
    if differs { vec![r, sym] } else { vec![r] }
}

/// A bar: its thickness in lines and its colour (unused channels 0).
type Bar = (usize, [u8; 3]);

/// How many lines from one side are border: the border's colour is the per-channel median of
/// the outermost line; a line is border when `line_share` of its `len` pixels are within
/// `tolerance` of that colour. At most `budget` lines.
fn scan<'a>(
    budget: usize,
    len: usize,
    p: &BorderParams,
    pixel: impl Fn(usize, usize) -> &'a [u8],
) -> Bar {
    if budget == 0 || len == 0 {
        return (0, [0; 3]);
    }
    let channels = pixel(0, 0).len();
    let mut colour = [0u8; 3];
    for (ch, out) in colour.iter_mut().enumerate().take(channels) {
        let mut hist = [0usize; 256];
        for i in 0..len {
            hist[usize::from(pixel(0, i)[ch])] += 1;
        }
        let mut seen = 0;
        for (v, n) in hist.iter().enumerate() {
            seen += n;
            if 2 * seen >= len {
                *out = v as u8;
                break;
            }
        }
    }
    let reference = &colour[..channels];
    let needed = (len as f32 * p.line_share).ceil() as usize;
    let mut lines = 0;
    while lines < budget {
        let within = (0..len)
            .filter(|&i| close(pixel(lines, i), reference, p.tolerance))
            .count();
        if within < needed {
            break;
        }
        lines += 1;
    }
    (lines, colour)
}

/// Every channel of `a` within `tolerance` of `b`'s (as many channels as the shorter has).
pub(super) fn close(a: &[u8], b: &[u8], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(*y) <= tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::candidates::crop;

    /// A deterministic "photo": smooth gradients plus texture, nowhere flat.
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

    /// `img` (w×h) inside bars `[top, bottom, left, right]` of colour `col`.
    fn framed(
        img: &[u8],
        w: usize,
        h: usize,
        bars: [usize; 4],
        col: [u8; 3],
    ) -> (Vec<u8>, usize, usize) {
        let [t, b, l, r] = bars;
        let (fw, fh) = (w + l + r, h + t + b);
        let mut out = Vec::with_capacity(fw * fh * 3);
        for y in 0..fh {
            for x in 0..fw {
                if y >= t && y < t + h && x >= l && x < l + w {
                    let at = ((y - t) * w + (x - l)) * 3;
                    out.extend_from_slice(&img[at..at + 3]);
                } else {
                    out.extend_from_slice(&col);
                }
            }
        }
        (out, fw, fh)
    }

    fn view(data: &[u8], w: usize, h: usize) -> PixelView<'_> {
        PixelView {
            width: w,
            height: h,
            channels: 3,
            data,
        }
    }

    #[test]
    fn finds_borders_of_any_colour_and_side() {
        let (w, h) = (200, 120);
        let img = photo(w, h);
        for (t, b, l, r, col) in [
            (20, 20, 0, 0, [0, 0, 0]),
            (0, 0, 30, 30, [255, 255, 255]),
            (10, 25, 5, 40, [128, 128, 128]),
            (0, 17, 0, 0, [200, 30, 90]),
        ] {
            let (f, fw, fh) = framed(&img, w, h, [t, b, l, r], col);
            let got = border_box(view(&f, fw, fh), &BorderParams::default());
            assert_eq!(
                got,
                Some(Rect {
                    x0: l,
                    y0: t,
                    x1: fw - r,
                    y1: fh - b
                }),
                "{t} {b} {l} {r} {col:?}"
            );
            let got = got.unwrap();
            assert_eq!(crop(view(&f, fw, fh), got), img);
        }
    }

    #[test]
    fn the_pictures_own_flat_margin_of_another_colour_stays() {
        // A product shot: the picture's own white margin on the left and right, inside black
        // letterbox bars. Only the black bars are the border; the listed original has the
        // white margin.
        let (w, h) = (200, 120);
        let (shot, sw, sh) = framed(&photo(160, h), 160, h, [0, 0, 20, 20], [255, 255, 255]);
        assert_eq!((sw, sh), (w, h));
        let (f, fw, fh) = framed(&shot, w, h, [50, 50, 0, 0], [0, 0, 0]);
        let got = border_box(view(&f, fw, fh), &BorderParams::default());
        assert_eq!(
            got,
            Some(Rect {
                x0: 0,
                y0: 50,
                x1: w,
                y1: 50 + h
            })
        );
    }

    #[test]
    fn uneven_bars_also_give_the_even_view() {
        // A picture whose own top 12 rows are black, letterboxed with 30 black rows a side:
        // the scan takes 42 from the top; the even view restores the picture's margin.
        let (w, h) = (200, 120);
        let mut pic = photo(w, h);
        pic[..w * 12 * 3].fill(0);
        let (f, fw, fh) = framed(&pic, w, h, [30, 30, 0, 0], [0, 0, 0]);
        let got = border_boxes(view(&f, fw, fh), &BorderParams::default());
        assert_eq!(
            got,
            vec![
                Rect {
                    x0: 0,
                    y0: 42,
                    x1: w,
                    y1: 30 + h
                },
                Rect {
                    x0: 0,
                    y0: 30,
                    x1: w,
                    y1: 30 + h
                },
            ]
        );
        // Even bars: one view.
        let (f, fw, fh) = framed(&photo(w, h), w, h, [30, 30, 10, 10], [0, 0, 0]);
        assert_eq!(
            border_boxes(view(&f, fw, fh), &BorderParams::default()).len(),
            1
        );
    }

    #[test]
    fn tolerates_noise_and_a_logo_in_the_bar() {
        let (w, h) = (200, 120);
        let img = photo(w, h);
        let (mut f, fw, fh) = framed(&img, w, h, [24, 24, 0, 0], [0, 0, 0]);
        // JPEG-like noise of a few levels in the bars, and a small bright logo in the top bar.
        for (i, v) in f.iter_mut().enumerate() {
            let y = i / 3 / fw;
            if y < 24 || y >= 24 + h {
                *v = v.saturating_add((i % 7) as u8 * 3);
            }
        }
        for y in 8..14 {
            for x in 10..13 {
                let at = (y * fw + x) * 3;
                f[at..at + 3].copy_from_slice(&[250, 250, 250]);
            }
        }
        let got = border_box(view(&f, fw, fh), &BorderParams::default());
        assert_eq!(
            got,
            Some(Rect {
                x0: 0,
                y0: 24,
                x1: fw,
                y1: 24 + h
            })
        );
    }

    #[test]
    fn no_candidate_without_a_border_or_for_flat_images() {
        let (w, h) = (200, 120);
        assert_eq!(
            border_box(view(&photo(w, h), w, h), &BorderParams::default()),
            None
        );
        // A 1-pixel line is not worth a candidate.
        let (f, fw, fh) = framed(&photo(w, h), w, h, [1, 0, 0, 0], [0, 0, 0]);
        assert_eq!(border_box(view(&f, fw, fh), &BorderParams::default()), None);
        // A flat image keeps `min_keep` of each dimension, never less.
        let flat = vec![7u8; w * h * 3];
        let r = border_box(view(&flat, w, h), &BorderParams::default()).unwrap();
        assert!(r.width() >= 30 && r.height() >= 18, "{r:?}");
        // Too small, or inconsistent, views give nothing and never panic.
        assert_eq!(
            border_box(view(&flat[..10], 2, 2), &BorderParams::default()),
            None
        );
        assert_eq!(
            border_box(view(&flat[..30], 10, 10), &BorderParams::default()),
            None
        );
    }
}
