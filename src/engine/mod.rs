//! The data path, owned once: bytes → hashes → query → match → outcome → report and counters.
//!
//! `baken match`, `baken scan` and the gRPC `Scan`/`MatchHashes`/`ScanStream` are adapters over
//! [`Engine`]: they parse their inputs, call it, and render what it returns. Nothing else turns
//! a [`HashOutput`] into a query, picks the hashers a request needs, matches, counts outcomes
//! or creates reports; video and re-framed-image candidates land here, once.
//!
//! Invariant: image bytes enter [`Engine::scan`] by value and are dropped as soon as they are
//! hashed; nothing downstream of the hasher sees them.

pub mod remote;
pub mod report;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crate::decode::DecodeLimits;
use crate::decode::video::VideoLimits;
use crate::error::DecodeError;
use crate::hashing::{self, Algorithm, HashOptions, HashOutput, Hasher, PdqMode};
use crate::index::{MatchResult, Matcher, QueryHash};
use crate::store::{HashType, StoreError};

pub use remote::RemoteMatcher;
pub use report::{CreatedReport, NewReport, ReportOutcome, ReportSink, StoreSink, Tally};

/// Why an item could not be matched.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The image could not be decoded or hashed (the item's own fault).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The local store (unknown list, storage fault).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A remote matcher answered with an error (its gRPC code and message).
    #[error("server: {code}: {message}")]
    Remote { code: tonic::Code, message: String },
    /// A remote matcher could not be reached or set up.
    #[error("{0}")]
    Connect(String),
}

/// A match result, or why there is none.
pub type Matched = Result<MatchResult, EngineError>;

/// Where query hashes are matched: the local index, or a `baken serve` over gRPC.
pub trait HashMatcher: Send + Sync {
    /// The hash types the lists hold, or `None` when this side cannot know (a remote server):
    /// then every type is computed.
    fn hash_types(&self) -> Result<Option<BTreeSet<String>>, EngineError>;

    /// Fail with the store's error when a named list does not exist (checked before any work).
    fn check_lists(&self, lists: &[String]) -> Result<(), EngineError>;

    /// Match one item's query hashes against all lists, or only `only` (negative lists always
    /// apply).
    fn match_query(&self, query: &[QueryHash], only: Option<&[String]>) -> Matched;
}

impl HashMatcher for Matcher {
    fn hash_types(&self) -> Result<Option<BTreeSet<String>>, EngineError> {
        let mut types = BTreeSet::new();
        for l in self.store().lists()? {
            types.extend(l.hash_types.iter().map(|t| t.as_str().to_string()));
        }
        Ok(Some(types))
    }

    fn check_lists(&self, lists: &[String]) -> Result<(), EngineError> {
        for l in lists {
            self.store().list(l)?;
        }
        Ok(())
    }

    fn match_query(&self, query: &[QueryHash], only: Option<&[String]>) -> Matched {
        Ok(Matcher::match_query(self, query, only)?)
    }
}

/// One matched item: the match result and the item's hashes (for its report).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: MatchResult,
    pub hashes: HashOutput,
}

/// What an item came to, as counters and logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Match,
    /// Every match was suppressed by a negative list.
    Suppressed,
    NoMatch,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Match => "match",
            Verdict::Suppressed => "suppressed",
            Verdict::NoMatch => "no_match",
        }
    }
}

impl Outcome {
    pub fn verdict(&self) -> Verdict {
        if !self.result.matches.is_empty() {
            Verdict::Match
        } else if !self.result.suppressed.is_empty() {
            Verdict::Suppressed
        } else {
            Verdict::NoMatch
        }
    }

    pub fn is_match(&self) -> bool {
        !self.result.matches.is_empty()
    }

    /// The matched lists, each once, sorted.
    pub fn matched_lists(&self) -> Vec<String> {
        let mut lists: Vec<String> = self.result.matches.iter().map(|m| m.list.clone()).collect();
        lists.sort_unstable();
        lists.dedup();
        lists
    }
}

/// Hashers by (algorithms, PDQ mode, fast): each keeps its image_hasher tables, built once.
type HasherKey = (Vec<Algorithm>, PdqMode, bool);

/// The single owner of the data path. Cheap to share (`Arc`); every method takes `&self`.
pub struct Engine {
    matcher: Arc<dyn HashMatcher>,
    limits: DecodeLimits,
    video: VideoLimits,
    seconds_per_hash: f64,
    candidates: hashing::candidates::CandidateOptions,
    hashers: Mutex<HashMap<HasherKey, Arc<Hasher>>>,
}

impl Engine {
    pub fn new(matcher: Arc<dyn HashMatcher>, limits: DecodeLimits) -> Engine {
        Engine {
            matcher,
            limits,
            video: VideoLimits::default(),
            seconds_per_hash: crate::hashing::vpdq::DEFAULT_SECONDS_PER_HASH,
            candidates: Default::default(),
            hashers: Mutex::new(HashMap::new()),
        }
    }

    /// Video limits and vPDQ sampling for every hasher this engine builds.
    pub fn with_video(mut self, limits: VideoLimits, seconds_per_hash: f64) -> Engine {
        self.video = limits;
        self.seconds_per_hash = seconds_per_hash;
        self
    }

    /// Derived views of images (a removed border, …) to hash and match besides each image, for
    /// every hasher this engine builds. Their threshold and quality floor are the matcher's.
    pub fn with_candidates(mut self, candidates: hashing::candidates::CandidateOptions) -> Engine {
        self.candidates = candidates;
        self
    }

    /// What matching needs computed: PDQ and the exact hashes always (a report carries them,
    /// and decoding with PDQ is what tells a corrupt file from an image), the other perceptual
    /// hashes only when some list holds that type (pHash and its kin resize the whole image
    /// and cost several times PDQ on large photos). Every type when the lists are not known.
    pub fn match_algorithms(&self) -> Result<Vec<Algorithm>, EngineError> {
        let Some(types) = self.matcher.hash_types()? else {
            return Ok(Algorithm::ALL.to_vec());
        };
        Ok(Algorithm::ALL
            .into_iter()
            .filter(|a| {
                matches!(
                    a,
                    Algorithm::Pdq | Algorithm::Md5 | Algorithm::Sha1 | Algorithm::Sha256
                ) || types.contains(a.name())
                    // Frames of a video match image PDQ lists as well as vPDQ lists.
                    || (*a == Algorithm::Vpdq && types.contains("pdq"))
            })
            .collect())
    }

    /// The hasher for these settings, with the engine's decode limits (built once per setting).
    pub fn hasher(&self, mut algorithms: Vec<Algorithm>, mode: PdqMode, fast: bool) -> Arc<Hasher> {
        algorithms.sort();
        algorithms.dedup();
        let key = (algorithms, mode, fast);
        let mut map = self.hashers.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Hasher::new(HashOptions {
                    algorithms: key.0,
                    pdq_mode: mode,
                    fast_min_side: fast.then_some(hashing::FAST_MIN_SIDE),
                    limits: self.limits,
                    video: self.video,
                    seconds_per_hash: self.seconds_per_hash,
                    candidates: self.candidates,
                    ..HashOptions::default()
                }))
            })
            .clone()
    }

    /// The hasher matching needs ([`Engine::match_algorithms`]).
    pub fn match_hasher(&self, mode: PdqMode) -> Result<Arc<Hasher>, EngineError> {
        Ok(self.hasher(self.match_algorithms()?, mode, false))
    }

    /// See [`HashMatcher::check_lists`].
    pub fn check_lists(&self, lists: &[String]) -> Result<(), EngineError> {
        self.matcher.check_lists(lists)
    }

    /// Hash one image with `hasher` and match it. The bytes are dropped as soon as they are
    /// hashed.
    pub fn scan(
        &self,
        hasher: &Hasher,
        image: Vec<u8>,
        lists: &[String],
    ) -> Result<Outcome, EngineError> {
        self.check_lists(lists)?;
        let hashes = hasher.hash_bytes(&image);
        drop(image);
        self.match_output(hashes?, lists)
    }

    /// Match hashes Baken computed.
    pub fn match_output(
        &self,
        hashes: HashOutput,
        lists: &[String],
    ) -> Result<Outcome, EngineError> {
        let query = query_from(&hashes);
        self.match_hashes(&query, hashes, lists)
    }

    /// Match query hashes (`hashes` is the same item in the shape reports take).
    pub fn match_hashes(
        &self,
        query: &[QueryHash],
        hashes: HashOutput,
        lists: &[String],
    ) -> Result<Outcome, EngineError> {
        let only = (!lists.is_empty()).then_some(lists);
        let result = self.matcher.match_query(query, only)?;
        Ok(Outcome { result, hashes })
    }
}

/// Query hashes for a hashed item: PDQ with its 8 dihedrals and quality, the rest as they are.
/// The hex of [`HashOutput`] is decoded here and nowhere else.
pub fn query_from(out: &HashOutput) -> Vec<QueryHash> {
    let mut q = Vec::new();
    let ty = |s: &str| HashType::new(s).ok();
    if let (Some(p), Some(t)) = (&out.pdq, ty("pdq")) {
        q.push(QueryHash::new(t, dihedrals(p), Some(p.quality)));
    }
    if let Some(t) = ty("pdq") {
        for c in &out.candidates {
            q.push(QueryHash {
                candidate: Some(c.name),
                ..QueryHash::new(t.clone(), dihedrals(&c.pdq), Some(c.pdq.quality))
            });
        }
    }
    if let Some(v) = &out.vpdq {
        q.extend(video_query(v));
    }
    for (name, v) in out.others() {
        if let (Some(v), Some(t)) = (v, ty(name))
            && let Ok(bytes) = hex::decode(v)
        {
            q.push(QueryHash::new(t, vec![bytes], None));
        }
    }
    q
}

/// A PDQ output's 8 dihedral hashes as query variants.
fn dihedrals(p: &hashing::PdqOutput) -> Vec<Vec<u8>> {
    p.dihedral
        .iter()
        .filter_map(|h| hex::decode(h).ok())
        .collect()
}

/// A video's query: its usable frames (the vPDQ rule's selection) once as `vpdq`, for video
/// lists, and once as `pdq`, for image lists. With no usable frame, an empty `vpdq` query,
/// which the matcher reports as skipped.
pub fn video_query(v: &hashing::vpdq::VpdqOutput) -> Vec<QueryHash> {
    use hashing::vpdq;
    let (Ok(vt), Ok(pt)) = (HashType::new("vpdq"), HashType::new("pdq")) else {
        return Vec::new();
    };
    let features = v.features().unwrap_or_default();
    let frames = vpdq::usable_frames(&features, vpdq::QUALITY_THRESHOLD);
    let hashes: Vec<Vec<u8>> = frames.iter().map(|f| f.hash.to_bytes().to_vec()).collect();
    let stamps: Vec<f64> = frames.iter().map(|f| f.timestamp).collect();
    let frames_query = |t: HashType| QueryHash {
        hash_type: t,
        variants: hashes.clone(),
        quality: None,
        timestamps: Some(stamps.clone()),
        candidate: None,
    };
    if hashes.is_empty() {
        vec![frames_query(vt)]
    } else {
        vec![frames_query(vt), frames_query(pt)]
    }
}
