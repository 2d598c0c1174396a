//! Query-side candidates: extra views of a query image whose PDQ can match a listed original
//! that the whole image's PDQ misses. PDQ is a global hash of the frame: a border around a known
//! picture, a screenshot's UI around it or a small rotation moves most of its bits. Each
//! candidate undoes one such edit (removes the border, cuts the embedded picture out of its
//! frame, rotates the picture back) and is hashed like the image. Candidates work against any
//! PDQ list, with no data beyond the hashes.
//!
//! Candidates are built from the decoded pixels in memory and never re-encoded: the bytes stay
//! for the call only, as the whole image does.

use serde::Serialize;

use super::PdqOutput;
use super::pdq::{self, PdqHash, PdqMode, PixelView};

pub mod border;
pub mod deskew;
pub mod frame;

pub use border::{BorderParams, border_box, border_boxes};
pub use deskew::{DeskewParams, Skew, skew_angle};
pub use frame::{FrameParams, frame_box, frame_boxes};

/// Which derived views to hash. Off by default: each costs a PDQ and some false-match risk,
/// and is turned on where measurements justify it (docs/robustness.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CandidateOptions {
    /// The picture inside a uniform border of any colour (letterbox, pillarbox, padding).
    pub border: bool,
    /// The picture rotated back when it sits rotated inside its canvas (fill-coloured corners).
    pub deskew: bool,
    /// The picture inside a frame of flat regions of several colours (a screenshot's UI, a
    /// caption band).
    pub frame: bool,
    /// At most this many derived views per image, in the order border, frame, deskew.
    pub limit: usize,
    pub border_params: BorderParams,
    pub deskew_params: DeskewParams,
    pub frame_params: FrameParams,
}

/// The default bound on derived views per image: two border views, two frame views, a deskew.
pub const DEFAULT_LIMIT: usize = 5;

impl Default for CandidateOptions {
    fn default() -> Self {
        CandidateOptions {
            border: false,
            deskew: false,
            frame: false,
            limit: DEFAULT_LIMIT,
            border_params: BorderParams::default(),
            deskew_params: DeskewParams::default(),
            frame_params: FrameParams::default(),
        }
    }
}

/// The kinds a configuration or a command line can name.
pub const KINDS: [&str; 3] = ["border", "deskew", "frame"];

impl CandidateOptions {
    /// Every candidate kind on, with default parameters.
    pub fn all() -> Self {
        CandidateOptions {
            border: true,
            deskew: true,
            frame: true,
            ..Default::default()
        }
    }

    pub fn any(&self) -> bool {
        (self.border || self.deskew || self.frame) && self.limit > 0
    }

    /// The kinds a configuration names (`"border"`, `"deskew"`, `"frame"`), or a message
    /// naming the unknown one.
    pub fn from_kinds<S: AsRef<str>>(kinds: &[S]) -> Result<Self, String> {
        let mut o = CandidateOptions::default();
        for k in kinds {
            match k.as_ref() {
                "border" => o.border = true,
                "deskew" => o.deskew = true,
                "frame" => o.frame = true,
                other => {
                    return Err(format!(
                        "unknown candidate {other:?} (known: \"border\", \"deskew\", \"frame\")"
                    ));
                }
            }
        }
        Ok(o)
    }
}

/// The border-removal candidate's name, in outputs, matches and reports.
pub const BORDER_REMOVED: &str = "border_removed";
/// The picture cut out of a frame of flat UI regions.
pub const FRAME_REMOVED: &str = "frame_removed";
/// The picture rotated back.
pub const DESKEWED: &str = "deskewed";

/// Every name a candidate match can carry.
pub const NAMES: [&str; 3] = [BORDER_REMOVED, FRAME_REMOVED, DESKEWED];

/// One derived view's PDQ, and where in the image the view is (`[x0, y0, x1, y1]`, pixels of
/// the decoded image; for a deskewed view, the region of the canvas rotated back).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateOutput {
    pub name: &'static str,
    pub region: [usize; 4],
    /// The rotation undone, degrees counter-clockwise as seen (deskewed views only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub angle: Option<f32>,
    pub pdq: PdqOutput,
}

/// One derived view: its name, region, the rotation undone (deskew only) and its PDQ.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: &'static str,
    pub region: Rect,
    pub angle: Option<f32>,
    pub hash: PdqHash,
}

/// The PDQ of each derived view `opts` asks for that applies to this image, at most
/// `opts.limit`, regions that another view already covers skipped.
pub fn hash_candidates(
    view: PixelView<'_>,
    opts: &CandidateOptions,
    mode: PdqMode,
) -> Vec<Candidate> {
    let (w, h, c) = (view.width, view.height, view.channels);
    if !opts.any() || w < 8 || h < 8 || !(c == 1 || c == 3) || view.data.len() < w * h * c {
        return Vec::new();
    }
    let mut crops: Vec<(&'static str, Rect)> = Vec::new();
    if opts.border {
        crops.extend(
            border_boxes(view, &opts.border_params)
                .into_iter()
                .map(|r| (BORDER_REMOVED, r)),
        );
    }
    if opts.frame {
        for r in frame_boxes(view, &opts.frame_params) {
            if !crops.iter().any(|(_, c)| near(c, &r)) {
                crops.push((FRAME_REMOVED, r));
            }
        }
    }
    let mut out = Vec::new();
    for (name, r) in crops.into_iter().take(opts.limit) {
        let pixels = crop(view, r);
        let hash = pdq::pdq_hash(
            PixelView {
                width: r.width(),
                height: r.height(),
                channels: c,
                data: &pixels,
            },
            mode,
        );
        out.push(Candidate {
            name,
            region: r,
            angle: None,
            hash,
        });
    }
    if opts.deskew
        && out.len() < opts.limit
        && let Some(skew) = skew_angle(view, &opts.deskew_params)
    {
        let (luma, region) = deskew::deskewed_luma(view, &skew);
        out.push(Candidate {
            name: DESKEWED,
            region,
            angle: Some(skew.degrees),
            hash: pdq::pdq_hash_luma(&luma, region.width(), region.height()),
        });
    }
    out
}

/// Two regions within a few pixels of each other on every side hash alike: one is enough.
pub(crate) fn near(a: &Rect, b: &Rect) -> bool {
    a.x0.abs_diff(b.x0) + a.y0.abs_diff(b.y0) + a.x1.abs_diff(b.x1) + a.y1.abs_diff(b.y1) <= 3
}

/// A region of an image in pixels: columns `x0..x1`, rows `y0..y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl Rect {
    pub fn width(&self) -> usize {
        self.x1 - self.x0
    }
    pub fn height(&self) -> usize {
        self.y1 - self.y0
    }
}

/// The pixels of `r` as a tightly packed buffer of `view`'s channel count.
pub fn crop(view: PixelView<'_>, r: Rect) -> Vec<u8> {
    let c = view.channels;
    let mut out = Vec::with_capacity(r.width() * r.height() * c);
    for y in r.y0..r.y1 {
        let row = (y * view.width + r.x0) * c;
        out.extend_from_slice(&view.data[row..row + r.width() * c]);
    }
    out
}
