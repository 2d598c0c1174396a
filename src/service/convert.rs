//! Conversions between the API's messages (`proto/baken/v1`) and the library's types, in one
//! place: hex and enum numbers exist only here and at the other edges (JSON output, list files).

use tonic::{Code, Status};

use super::config::ReportsConfig;
use super::{pb, status_with_kind};
use crate::hashing::{Algorithm, HashOutput, PdqMode, PdqOutput};
use crate::index::{Match, MatchResult, QueryHash, Skipped, Suppressed, TRANSFORMS, VideoMatch};
use crate::reports::{
    self, AbuseType, CallerContext, Contact, IpEvent, IpEventKind, Location, Provider, Recipient,
    RemovalStatus, ReportedUser, Urgency,
};
use crate::store::HashType;
use time::OffsetDateTime;

fn invalid_context(msg: String) -> Status {
    status_with_kind(Code::InvalidArgument, "invalid_report_context", msg)
}

fn invalid(kind: &str, msg: impl Into<String>) -> Status {
    status_with_kind(Code::InvalidArgument, kind, msg)
}

pub fn pdq_mode(v: i32) -> Result<PdqMode, Status> {
    match pb::PdqMode::try_from(v) {
        Ok(pb::PdqMode::Full) => Ok(PdqMode::Full),
        Ok(pb::PdqMode::Ref512) => Ok(PdqMode::Ref512),
        Err(_) => Err(invalid("invalid", format!("unknown pdq_mode {v}"))),
    }
}

pub fn algorithm(v: i32) -> Result<Algorithm, Status> {
    use pb::Algorithm as A;
    Ok(match A::try_from(v) {
        Ok(A::Pdq) => Algorithm::Pdq,
        Ok(A::Phash) => Algorithm::Phash,
        Ok(A::Dhash) => Algorithm::Dhash,
        Ok(A::Ahash) => Algorithm::Ahash,
        Ok(A::Blockhash) => Algorithm::Blockhash,
        Ok(A::Md5) => Algorithm::Md5,
        Ok(A::Sha1) => Algorithm::Sha1,
        Ok(A::Sha256) => Algorithm::Sha256,
        Ok(A::Vpdq) => Algorithm::Vpdq,
        Ok(A::Unspecified) | Err(_) => {
            return Err(invalid("invalid", format!("unknown algorithm {v}")));
        }
    })
}

pub fn hash_response(out: &HashOutput) -> pb::HashResponse {
    pb::HashResponse {
        image: out.image.as_ref().map(image_info),
        pdq: out.pdq.as_ref().map(|p| pb::PdqHash {
            hash: p.hash.clone(),
            quality: u32::from(p.quality),
            dihedral: p.dihedral.clone(),
            mode: match p.mode {
                PdqMode::Full => pb::PdqMode::Full as i32,
                PdqMode::Ref512 => pb::PdqMode::Ref512 as i32,
            },
            fast: p.fast,
        }),
        phash: out.phash.clone().unwrap_or_default(),
        dhash: out.dhash.clone().unwrap_or_default(),
        ahash: out.ahash.clone().unwrap_or_default(),
        blockhash: out.blockhash.clone().unwrap_or_default(),
        md5: out.md5.clone().unwrap_or_default(),
        sha1: out.sha1.clone().unwrap_or_default(),
        sha256: out.sha256.clone().unwrap_or_default(),
        vpdq: out.vpdq.as_ref().map_or_else(Vec::new, |v| {
            v.frames
                .iter()
                .map(|f| pb::VpdqFrame {
                    frame: f.frame,
                    quality: u32::from(f.quality),
                    hash: f.hash.clone(),
                    timestamp: f.timestamp,
                })
                .collect()
        }),
        vpdq_seconds_per_hash: out.vpdq.as_ref().map_or(0.0, |v| v.seconds_per_hash),
    }
}

pub fn image_info(i: &crate::decode::ImageInfo) -> pb::ImageInfo {
    pb::ImageInfo {
        format: i.format.name().to_ascii_lowercase(),
        width: i.width,
        height: i.height,
        colour: i.colour.to_string(),
        alpha: i.alpha,
        bit_depth: u32::from(i.bit_depth),
        exif_orientation: i.exif_orientation.map_or(0, u32::from),
    }
}

pub fn pb_match(m: &Match) -> pb::Match {
    pb::Match {
        list: m.list.clone(),
        list_version: m.list_version,
        hash_type: m.hash_type.to_string(),
        hash: m.hash.clone(),
        entry: m.entry.clone(),
        distance: m.distance,
        threshold: m.threshold,
        transform: m.transform.unwrap_or_default().to_string(),
        classification: m.classification.clone().unwrap_or_default(),
        media_type: m.media_type.clone().unwrap_or_default(),
        candidate: m.candidate.unwrap_or_default().to_string(),
        video: m.video.as_ref().map(|v| pb::VideoMatch {
            query_match_percent: v.query_match_percent,
            compared_match_percent: v.compared_match_percent,
            timestamps: v.timestamps.clone(),
            query_frames: v.query_frames,
            query_frames_matched: v.query_frames_matched,
            listed_frames: v.listed_frames,
            listed_frames_matched: v.listed_frames_matched,
        }),
    }
}

pub fn match_result(r: &MatchResult) -> pb::MatchResult {
    pb::MatchResult {
        matches: r.matches.iter().map(pb_match).collect(),
        suppressed: r
            .suppressed
            .iter()
            .map(|s| pb::Suppressed {
                matched: Some(pb_match(&s.matched)),
                by: Some(pb_match(&s.by)),
            })
            .collect(),
        skipped: r
            .skipped
            .iter()
            .map(|s| pb::Skipped {
                hash_type: s.hash_type.to_string(),
                reason: s.reason.clone(),
            })
            .collect(),
    }
}

/// Parse the caller's hashes into query hashes (and the same hashes in the shape reports
/// take). Malformed values are INVALID_ARGUMENT naming the offending item by position, never
/// echoing the value.
pub fn parse_hashes(
    hashes: &[pb::HashValue],
    max: usize,
) -> Result<(Vec<QueryHash>, HashOutput), Status> {
    if hashes.is_empty() {
        return Err(invalid("invalid", "no hashes given"));
    }
    if hashes.len() > max {
        return Err(status_with_kind(
            Code::InvalidArgument,
            "too_many_hashes",
            format!(
                "{} hashes in one request, over the limit of {max}",
                hashes.len()
            ),
        ));
    }
    let mut q = Vec::with_capacity(hashes.len());
    let mut out = HashOutput::default();
    for (i, h) in hashes.iter().enumerate() {
        let ty = HashType::new(&h.r#type)
            .map_err(|e| invalid("invalid_hash", format!("hashes[{i}]: {e}")))?;
        if ty.as_str() == "vpdq" {
            if out.vpdq.is_some() {
                return Err(invalid(
                    "invalid_hash",
                    format!("hashes[{i}]: one vpdq hash (one video) per request"),
                ));
            }
            let features = crate::hashing::vpdq::parse_any(&h.value)
                .map_err(|e| invalid("invalid_hash", format!("hashes[{i}]: {e}")))?;
            // The caller's sampling is not in either form; 0 stands for "not stated".
            let v = crate::hashing::vpdq::VpdqOutput::new(0.0, &features);
            q.extend(crate::engine::video_query(&v));
            out.vpdq = Some(v);
            continue;
        }
        let value = ty
            .parse_value(&h.value)
            .map_err(|e| invalid("invalid_hash", format!("hashes[{i}]: {e}")))?;
        let quality = match h.quality {
            Some(v) if v > 100 => {
                return Err(invalid(
                    "invalid_hash",
                    format!("hashes[{i}]: quality {v} is over 100"),
                ));
            }
            Some(v) => Some(v as u8),
            None => None,
        };
        if !h.dihedral.is_empty() && ty.as_str() != "pdq" {
            return Err(invalid(
                "invalid_hash",
                format!("hashes[{i}]: dihedral variants are for pdq only"),
            ));
        }
        if h.dihedral.len() > 7 {
            return Err(invalid(
                "invalid_hash",
                format!("hashes[{i}]: at most 7 dihedral variants (rot90 … flipminus1)"),
            ));
        }
        let mut variants = vec![value];
        for (k, d) in h.dihedral.iter().enumerate() {
            variants.push(
                ty.parse_value(d).map_err(|e| {
                    invalid("invalid_hash", format!("hashes[{i}].dihedral[{k}]: {e}"))
                })?,
            );
        }
        // The same hashes as Baken would have computed them, for a report on a match.
        let text = ty.format_value(&variants[0]);
        if !h.candidate.is_empty() {
            let name = candidate_name(&h.candidate)
                .filter(|_| ty.as_str() == "pdq")
                .ok_or_else(|| {
                    invalid(
                        "invalid_hash",
                        format!(
                            "hashes[{i}]: candidate {:?} is not a PDQ view's name ({})",
                            h.candidate.chars().take(24).collect::<String>(),
                            crate::hashing::candidates::NAMES.join(", ")
                        ),
                    )
                })?;
            out.candidates
                .push(crate::hashing::candidates::CandidateOutput {
                    name,
                    // Where the view lies is the caller's; only its hash came.
                    region: [0; 4],
                    angle: None,
                    pdq: PdqOutput {
                        hash: text,
                        quality: quality.unwrap_or(100),
                        dihedral: variants.iter().map(hex::encode).collect(),
                        mode: PdqMode::Full,
                        fast: false,
                    },
                });
            q.push(QueryHash {
                candidate: Some(name),
                ..QueryHash::new(ty, variants, quality)
            });
            continue;
        }
        if ty.as_str() == "pdq" {
            out.pdq = Some(PdqOutput {
                hash: text,
                quality: quality.unwrap_or(100),
                dihedral: variants.iter().map(hex::encode).collect(),
                mode: PdqMode::Full,
                fast: false,
            });
        } else {
            out.set_other(ty.as_str(), text);
        }
        q.push(QueryHash::new(ty, variants, quality));
    }
    Ok((q, out))
}

pub fn hash_output(h: &pb::HashResponse) -> Result<HashOutput, Status> {
    let opt = |s: &String| (!s.is_empty()).then(|| s.clone());
    let pdq = h.pdq.as_ref().map(|p| PdqOutput {
        hash: p.hash.clone(),
        quality: u8::try_from(p.quality.min(100)).unwrap_or(100),
        dihedral: p.dihedral.clone(),
        mode: match pb::PdqMode::try_from(p.mode) {
            Ok(pb::PdqMode::Ref512) => PdqMode::Ref512,
            _ => PdqMode::Full,
        },
        fast: p.fast,
    });
    Ok(HashOutput {
        image: None,
        pdq,
        phash: opt(&h.phash),
        dhash: opt(&h.dhash),
        ahash: opt(&h.ahash),
        blockhash: opt(&h.blockhash),
        md5: opt(&h.md5),
        sha1: opt(&h.sha1),
        sha256: opt(&h.sha256),
        ..HashOutput::default()
    })
}

pub fn match_from_pb(m: &pb::Match) -> Result<Match, Status> {
    let hash_type =
        HashType::new(&m.hash_type).map_err(|e| invalid("invalid", format!("matches: {e}")))?;
    let transform = if m.transform.is_empty() {
        None
    } else {
        Some(
            TRANSFORMS
                .iter()
                .copied()
                .find(|t| *t == m.transform)
                .ok_or_else(|| {
                    invalid(
                        "invalid",
                        format!("matches: unknown transform {:?}", m.transform),
                    )
                })?,
        )
    };
    let candidate = if m.candidate.is_empty() {
        None
    } else {
        Some(candidate_name(&m.candidate).ok_or_else(|| {
            invalid(
                "invalid",
                format!("matches: unknown candidate {:?}", m.candidate),
            )
        })?)
    };
    let opt = |s: &String| (!s.is_empty()).then(|| s.clone());
    Ok(Match {
        candidate,
        list: m.list.clone(),
        list_version: m.list_version,
        hash_type,
        hash: m.hash.clone(),
        entry: m.entry.clone(),
        distance: m.distance,
        threshold: m.threshold,
        transform,
        classification: opt(&m.classification),
        media_type: opt(&m.media_type),
        video: m.video.as_ref().map(|v| VideoMatch {
            query_match_percent: v.query_match_percent,
            compared_match_percent: v.compared_match_percent,
            timestamps: v.timestamps.clone(),
            query_frames: v.query_frames,
            query_frames_matched: v.query_frames_matched,
            listed_frames: v.listed_frames,
            listed_frames_matched: v.listed_frames_matched,
        }),
    })
}

/// A match result as the API answers it.
pub fn match_result_from_pb(r: &pb::MatchResult) -> Result<MatchResult, Status> {
    Ok(MatchResult {
        matches: r
            .matches
            .iter()
            .map(match_from_pb)
            .collect::<Result<_, _>>()?,
        suppressed: r
            .suppressed
            .iter()
            .map(|s| {
                let m = |x: &Option<pb::Match>| {
                    match_from_pb(x.as_ref().ok_or_else(|| {
                        invalid("invalid", "a suppressed match without its matches")
                    })?)
                };
                Ok(Suppressed {
                    matched: m(&s.matched)?,
                    by: m(&s.by)?,
                })
            })
            .collect::<Result<_, Status>>()?,
        skipped: r
            .skipped
            .iter()
            .map(|s| {
                Ok(Skipped {
                    hash_type: HashType::new(&s.hash_type)
                        .map_err(|e| invalid("invalid", format!("skipped: {e}")))?,
                    reason: s.reason.clone(),
                })
            })
            .collect::<Result<_, Status>>()?,
    })
}

/// One query hash as MatchHashes takes it (the first variant is the hash itself, the rest
/// its dihedrals).
pub fn hash_value_pb(q: &QueryHash) -> pb::HashValue {
    let mut variants = q.variants.iter().map(|v| q.hash_type.format_value(v));
    pb::HashValue {
        r#type: q.hash_type.to_string(),
        value: variants.next().unwrap_or_default(),
        quality: q.quality.map(u32::from),
        dihedral: variants.collect(),
        candidate: q.candidate.unwrap_or_default().to_string(),
    }
}

/// The `&'static` name of a candidate kind a caller named.
fn candidate_name(name: &str) -> Option<&'static str> {
    crate::hashing::candidates::NAMES
        .iter()
        .copied()
        .find(|n| *n == name)
}

/// A report's context: the provider's settings (`[reports]`) plus what the caller sent.
pub fn caller_context(cfg: &ReportsConfig, c: &pb::ReportContext) -> Result<CallerContext, Status> {
    let none_if_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let ip = |e: &pb::IpEvent| -> Result<IpEvent, Status> {
        let event = match e.event.as_str() {
            "login" => IpEventKind::Login,
            "registration" => IpEventKind::Registration,
            "upload" => IpEventKind::Upload,
            "purchase" => IpEventKind::Purchase,
            "other" => IpEventKind::Other,
            "" | "unknown" => IpEventKind::Unknown,
            other => {
                return Err(invalid_context(format!(
                    "ip event {other:?}: use login, registration, upload, purchase or other"
                )));
            }
        };
        if e.ip.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid_context(format!(
                "ip event address {:?} is not an IP",
                e.ip
            )));
        }
        Ok(IpEvent {
            ip: e.ip.clone(),
            port: u16::try_from(e.port).ok().filter(|p| *p != 0),
            at: if e.at.is_empty() {
                reports::rfc3339(OffsetDateTime::now_utc())
            } else {
                e.at.clone()
            },
            event,
            possible_proxy: e.possible_proxy.then_some(true),
        })
    };
    let removal_status = match c.removal_status.as_str() {
        "" | "unknown" | "none" => RemovalStatus::Unknown,
        "removed" => RemovalStatus::Removed,
        "blocked" => RemovalStatus::Blocked,
        "pending" | "preserved" => RemovalStatus::Pending,
        "not_removed" => RemovalStatus::NotRemoved,
        other => {
            return Err(invalid_context(format!(
                "removal_status {other:?}: use removed, blocked, pending, not_removed or unknown"
            )));
        }
    };
    let abuse_type = match c.abuse_type.as_str() {
        "" | "known_csam" => AbuseType::KnownCsam,
        other => {
            return Err(invalid_context(format!(
                "abuse_type {other:?}: a hash match reports known_csam"
            )));
        }
    };
    Ok(CallerContext {
        provider: Provider {
            name: cfg.provider.clone(),
            legal_representative: none_if_empty(&cfg.legal_representative),
            contact_point: Contact {
                first_name: none_if_empty(&cfg.contact_first_name),
                last_name: none_if_empty(&cfg.contact_last_name),
                email: cfg.contact_email.clone(),
                phone: none_if_empty(&cfg.contact_phone),
            },
        },
        legal_basis: cfg.legal_basis.clone(),
        recipient: Recipient {
            organisation: cfg.recipient.clone(),
            country_code: none_if_empty(&cfg.recipient_country),
        },
        content_reference: Some(c.content_reference.clone()),
        abuse_type: Some(abuse_type),
        urgency: c
            .urgency
            .as_ref()
            .map(|u| Urgency {
                urgent: u.urgent,
                reason: none_if_empty(&u.reason),
            })
            .unwrap_or_default(),
        report_tags: c.report_tags.clone(),
        detected_at: none_if_empty(&c.detected_at),
        original_file_name: none_if_empty(&c.original_file_name),
        location_url: none_if_empty(&c.location_url),
        file_ip_event: c.file_ip_event.as_ref().map(ip).transpose()?,
        device_id: none_if_empty(&c.device_id),
        file_viewed_by_provider: None,
        exif_viewed_by_provider: None,
        publicly_available: Some(c.publicly_available),
        exif: Default::default(),
        file_annotations: Vec::new(),
        reported_user: c.account.as_ref().map(|a| ReportedUser {
            esp_id: none_if_empty(&a.id),
            screen_name: none_if_empty(&a.screen_name),
            display_names: a.display_names.clone(),
            profile_urls: a.profile_urls.clone(),
            email: none_if_empty(&a.email),
            esp_service: none_if_empty(&c.service),
            prior_ct_reports: Vec::new(),
        }),
        ip_events: c.ip_events.iter().map(ip).collect::<Result<_, _>>()?,
        estimated_location: c.location.as_ref().map(|l| Location {
            city: none_if_empty(&l.city),
            region: none_if_empty(&l.region),
            country_code: none_if_empty(&l.country_code),
        }),
        removal_status,
        also_reported_to: Vec::new(),
        user_notified: None,
        other_data: none_if_empty(&c.other_data),
    })
}
