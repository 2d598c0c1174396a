//! Transparency statistics: the figures of Regulation (EU) 2021/1232 Art. 3(1)(g)(vii) over a
//! period, from the counters alone (which survive every purge).
//!
//! Definitions (also in docs/reports.md):
//! * `volume.processed` — items scanned (`matched + not_matched + failed`);
//! * `matches` — list hits inside created reports, by hash type and list;
//! * `reports` — created, by abuse type, recipient and legal basis; `urgent`, `auto_ready`;
//! * `cases` — `unique`: reports whose case key was seen for the first time; `duplicate`: the rest;
//! * `reviews` — human decisions by outcome; `false_positives` — rejections, and the error rate
//!   `rejected / (confirmed + rejected)` overall and per hash type ("technology"), list and
//!   hash type@threshold;
//! * `retention` — the policy, reports created per retention setting, purges by reason;
//! * `recipients` — reports created per recipient and exports sent per recipient.
//!
//! Days are UTC days; a review or purge counts on the day it happened.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{MAX_RETENTION_MONTHS, ReportError, Result, store::ReportStore};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub period: Period,
    pub volume: Volume,
    pub matches: Matches,
    pub reports: Reports,
    pub cases: Cases,
    pub reviews: Reviews,
    pub false_positives: FalsePositives,
    pub retention: RetentionStats,
    pub recipients: Recipients,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    pub processed: u64,
    pub matched: u64,
    pub not_matched: u64,
    pub suppressed_by_negative_lists: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matches {
    pub total: u64,
    pub by_hash_type: BTreeMap<String, u64>,
    pub by_list: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reports {
    pub created: u64,
    pub by_abuse_type: BTreeMap<String, u64>,
    pub by_legal_basis: BTreeMap<String, u64>,
    pub urgent: u64,
    pub auto_ready_by_policy: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cases {
    pub unique: u64,
    pub duplicate: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reviews {
    pub total: u64,
    pub confirmed: u64,
    pub rejected: u64,
}

/// Confirmed and rejected counts with the error rate `rejected / (confirmed + rejected)`
/// (`null` without reviews).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorRate {
    pub confirmed: u64,
    pub rejected: u64,
    pub error_rate: Option<f64>,
}

impl ErrorRate {
    fn new(confirmed: u64, rejected: u64) -> Self {
        let n = confirmed + rejected;
        ErrorRate {
            confirmed,
            rejected,
            // Rounded to 6 places so the figure reads the same everywhere it is printed.
            error_rate: (n > 0).then(|| (rejected as f64 / n as f64 * 1e6).round() / 1e6),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FalsePositives {
    pub total: u64,
    pub error_rate: Option<f64>,
    /// Per technology (hash type).
    pub by_hash_type: BTreeMap<String, ErrorRate>,
    pub by_list: BTreeMap<String, ErrorRate>,
    /// Keyed `hash_type@threshold`.
    pub by_threshold: BTreeMap<String, ErrorRate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionStats {
    pub max_months: u32,
    /// Reports created per retention setting (`12m`, `90d`, …).
    pub applied: BTreeMap<String, u64>,
    pub purged_expired: u64,
    pub purged_false_positive: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipients {
    pub reports_created: BTreeMap<String, u64>,
    pub exported: BTreeMap<String, u64>,
}

fn valid_day(s: &str) -> bool {
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).is_ok()
}

/// Dimensions under `prefix`, with the prefix stripped.
fn under(c: &BTreeMap<String, u64>, prefix: &str) -> BTreeMap<String, u64> {
    c.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|rest| (rest.to_string(), *v)))
        .collect()
}

fn rates(c: &BTreeMap<String, u64>, dim: &str) -> BTreeMap<String, ErrorRate> {
    let ok = under(c, &format!("review.confirmed.{dim}."));
    let bad = under(c, &format!("review.rejected.{dim}."));
    ok.keys()
        .chain(bad.keys())
        .map(|k| {
            (
                k.clone(),
                ErrorRate::new(
                    ok.get(k).copied().unwrap_or(0),
                    bad.get(k).copied().unwrap_or(0),
                ),
            )
        })
        .collect()
}

/// The statistics for the days `from..=to` (`YYYY-MM-DD`, UTC).
pub fn compute(rs: &ReportStore, from: &str, to: &str) -> Result<Stats> {
    if !valid_day(from) || !valid_day(to) {
        return Err(ReportError::Invalid(
            "--from and --to are days: YYYY-MM-DD".into(),
        ));
    }
    if from > to {
        return Err(ReportError::Invalid("--from is after --to".into()));
    }
    let c = rs.counters(from, to)?;
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    let confirmed = get("review.confirmed");
    let rejected = get("review.rejected");
    Ok(Stats {
        period: Period {
            from: from.into(),
            to: to.into(),
        },
        volume: Volume {
            processed: get("scan.processed"),
            matched: get("scan.matched"),
            not_matched: get("scan.not_matched"),
            suppressed_by_negative_lists: get("scan.suppressed"),
            failed: get("scan.failed"),
        },
        matches: Matches {
            total: get("match.total"),
            by_hash_type: under(&c, "match.hash_type."),
            by_list: under(&c, "match.list."),
        },
        reports: Reports {
            created: get("report.created"),
            by_abuse_type: under(&c, "report.abuse_type."),
            by_legal_basis: under(&c, "report.legal_basis."),
            urgent: get("report.urgent"),
            auto_ready_by_policy: get("report.auto_ready"),
        },
        cases: Cases {
            unique: get("case.unique"),
            duplicate: get("case.duplicate"),
        },
        reviews: Reviews {
            total: confirmed + rejected,
            confirmed,
            rejected,
        },
        false_positives: FalsePositives {
            total: rejected,
            error_rate: ErrorRate::new(confirmed, rejected).error_rate,
            by_hash_type: rates(&c, "hash_type"),
            by_list: rates(&c, "list"),
            by_threshold: rates(&c, "threshold"),
        },
        retention: RetentionStats {
            max_months: MAX_RETENTION_MONTHS,
            applied: under(&c, "report.retention."),
            purged_expired: get("purge.retention_expired"),
            purged_false_positive: get("purge.false_positive"),
        },
        recipients: Recipients {
            reports_created: under(&c, "report.recipient."),
            exported: under(&c, "export.recipient."),
        },
    })
}
