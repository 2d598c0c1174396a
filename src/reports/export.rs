//! Exports of one report: the regulation-shaped JSON document (`csar-json`) and NCMEC
//! CyberTipline XML (`ncmec-xml`: the `<report>` and one `<fileDetails>` per file). Files or
//! RPC payloads only: nothing here talks to a network.

use std::io;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};
use serde::{Deserialize, Serialize};

use super::sign::{PublicKey, digest};
use super::store::SignedEntry;
use super::{
    AbuseType, HumanReview, IpEvent, Report, ReportBody, ReportError, ReportStatus, ReportedFile,
    Result,
};

/// The `document` value of a `csar-json` export.
pub const DOCUMENT_ID: &str = "baken.csar-report/v1";

/// NCMEC's incident type for (known or new) CSAM.
pub const NCMEC_CSAM: &str = "Child Pornography (possession, manufacture, and distribution)";
pub const NCMEC_ENTICEMENT: &str = "Online Enticement of Children for Sexual Act";
/// NCMEC's report annotations; other tags go to `additionalInfo`.
const NCMEC_REPORT_ANNOTATIONS: [&str; 4] = [
    "sextortion",
    "csamSolicitation",
    "minorToMinorInteraction",
    "spam",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportFormat {
    CsarJson,
    NcmecXml,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        crate::names::name(&self)
    }
}

crate::from_str_by_name!(ExportFormat, "format");

/// The `csar-json` export: the report body as signed, its review state, and what a recipient
/// needs to check the signature (`schemas/report-v1.schema.json` describes it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportDocument {
    /// Always [`DOCUMENT_ID`].
    pub document: String,
    /// A preview of a report not (yet) ready to send.
    pub draft: bool,
    pub report: ReportBody,
    pub status: ReportStatus,
    pub human_review: Option<HumanReview>,
    pub auto_ready: Option<String>,
    pub integrity: Integrity,
}

/// The creation entry of the report in the signed ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Integrity {
    /// `Ed25519`.
    pub algorithm: String,
    pub key_id: String,
    /// Hex; absent when exported without the key at hand.
    pub public_key: Option<String>,
    pub ledger_seq: u64,
    /// SHA-256 (hex) of `report` serialised compactly with its members in the order given.
    pub body_digest: String,
    /// The exact signed ledger entry (JSON text); it carries `body_digest` and `prev_digest`.
    pub signed_entry: String,
    /// Ed25519 signature (hex) over `baken-report-ledger-v1\0` followed by `signed_entry`.
    pub signature: String,
    pub prev_digest: String,
    /// SHA-256 (hex) of the stored entry (signature bytes then entry bytes): the next entry's
    /// `prev_digest`.
    pub entry_digest: String,
}

/// Build the `csar-json` document.
pub fn csar_document(
    report: &Report,
    entry: &SignedEntry,
    key: Option<&PublicKey>,
    draft: bool,
) -> Result<ReportDocument> {
    let body = report
        .body
        .clone()
        .ok_or_else(|| ReportError::Purged(report.state.report_id.clone(), "no body".into()))?;
    let canonical = serde_json::to_vec(&body).map_err(|e| ReportError::Corrupt(e.to_string()))?;
    let mut stored = entry.signature.to_vec();
    stored.extend_from_slice(&entry.bytes);
    Ok(ReportDocument {
        document: DOCUMENT_ID.into(),
        draft,
        report: body,
        status: report.state.status,
        human_review: report.state.human_review.clone(),
        auto_ready: report.state.auto_ready.clone(),
        integrity: Integrity {
            algorithm: "Ed25519".into(),
            key_id: entry.entry.key_id.clone(),
            // Only the key that signed this entry: after a rotation the caller's key may be
            // another one, and a mismatching key would make the export look forged.
            public_key: key
                .filter(|k| k.key_id() == entry.entry.key_id)
                .map(PublicKey::to_hex),
            ledger_seq: entry.entry.seq,
            body_digest: hex::encode(digest(&canonical)),
            signed_entry: String::from_utf8_lossy(&entry.bytes).into_owned(),
            signature: hex::encode(entry.signature),
            prev_digest: entry.entry.prev_digest.clone(),
            entry_digest: hex::encode(digest(&stored)),
        },
    })
}

pub fn csar_json(
    report: &Report,
    entry: &SignedEntry,
    key: Option<&PublicKey>,
    draft: bool,
) -> Result<String> {
    let doc = csar_document(report, entry, key, draft)?;
    serde_json::to_string_pretty(&doc).map_err(|e| ReportError::Corrupt(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// NCMEC CyberTipline XML
// ---------------------------------------------------------------------------------------------

type W = Writer<Vec<u8>>;

/// XML 1.0 cannot carry most control characters, even escaped: drop them.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|&c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
        .collect()
}

fn text(w: &mut W, name: &str, value: &str) -> io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(&clean(value)))?;
    Ok(())
}

fn opt(w: &mut W, name: &str, value: Option<&str>) -> io::Result<()> {
    match value {
        Some(v) if !v.is_empty() => text(w, name, v),
        _ => Ok(()),
    }
}

fn flag(w: &mut W, name: &str, value: Option<bool>) -> io::Result<()> {
    match value {
        Some(v) => text(w, name, if v { "true" } else { "false" }),
        None => Ok(()),
    }
}

fn ip_capture(w: &mut W, e: &IpEvent) -> io::Result<()> {
    w.create_element("ipCaptureEvent")
        .write_inner_content(|w| {
            text(w, "ipAddress", &e.ip)?;
            text(w, "eventName", e.event.ncmec())?;
            text(w, "dateTime", &e.at)?;
            flag(w, "possibleProxy", e.possible_proxy)?;
            if let Some(p) = e.port {
                text(w, "port", &p.to_string())?;
            }
            Ok(())
        })?;
    Ok(())
}

fn device(w: &mut W, id: &str) -> io::Result<()> {
    w.create_element("deviceId").write_inner_content(|w| {
        text(w, "idType", "ESP device identifier")?;
        text(w, "idValue", id)
    })?;
    Ok(())
}

fn incident_summary(w: &mut W, b: &ReportBody) -> io::Result<()> {
    w.create_element("incidentSummary")
        .write_inner_content(|w| {
            let kind = match b.abuse_type {
                AbuseType::KnownCsam | AbuseType::NewCsam => NCMEC_CSAM,
                AbuseType::Solicitation => NCMEC_ENTICEMENT,
            };
            text(w, "incidentType", kind)?;
            if b.urgency.urgent {
                text(
                    w,
                    "escalateToHighPriority",
                    b.urgency
                        .reason
                        .as_deref()
                        .unwrap_or("Marked urgent by the reporting provider"),
                )?;
            }
            let tags: Vec<&str> = b
                .report_tags
                .iter()
                .map(String::as_str)
                .filter(|t| NCMEC_REPORT_ANNOTATIONS.contains(t))
                .collect();
            if !tags.is_empty() {
                w.create_element("reportAnnotations")
                    .write_inner_content(|w| {
                        for t in tags {
                            w.create_element(t).write_empty()?;
                        }
                        Ok(())
                    })?;
            }
            text(w, "incidentDateTime", &b.detected_at)?;
            text(
                w,
                "incidentDateTimeDescription",
                "Time the provider detected the content by hash matching",
            )
        })?;
    Ok(())
}

fn reporter(w: &mut W, b: &ReportBody) -> io::Result<()> {
    let c = &b.provider.contact_point;
    w.create_element("reporter").write_inner_content(|w| {
        w.create_element("reportingPerson")
            .write_inner_content(|w| {
                opt(w, "firstName", c.first_name.as_deref())?;
                opt(w, "lastName", c.last_name.as_deref())?;
                opt(w, "phone", c.phone.as_deref())?;
                text(w, "email", &c.email)
            })?;
        let mut template = format!("Reporting provider: {}.", b.provider.name);
        if let Some(r) = &b.provider.legal_representative {
            template.push_str(&format!(" Legal representative: {r}."));
        }
        template.push_str(&format!(
            " Report data is retained until {}.",
            b.retention_deadline
        ));
        text(w, "companyTemplate", &template)
    })?;
    Ok(())
}

fn person_reported(w: &mut W, b: &ReportBody) -> io::Result<()> {
    let u = b.reported_user.as_ref();
    if u.is_none() && b.ip_events.is_empty() && b.estimated_location.is_none() {
        return Ok(());
    }
    w.create_element("personOrUserReported")
        .write_inner_content(|w| {
            if let Some(email) = u.and_then(|u| u.email.as_deref()) {
                w.create_element("personOrUserReportedPerson")
                    .write_inner_content(|w| text(w, "email", email))?;
            }
            if let Some(u) = u {
                opt(w, "espIdentifier", u.esp_id.as_deref())?;
                opt(w, "espService", u.esp_service.as_deref())?;
                opt(w, "screenName", u.screen_name.as_deref())?;
                for d in &u.display_names {
                    text(w, "displayName", d)?;
                }
                for p in &u.profile_urls {
                    text(w, "profileUrl", p)?;
                }
            }
            for e in &b.ip_events {
                ip_capture(w, e)?;
            }
            if let Some(u) = u {
                for r in &u.prior_ct_reports {
                    text(w, "priorCTReports", r)?;
                }
            }
            if let Some(l) = &b.estimated_location {
                w.create_element("estimatedLocation")
                    .write_inner_content(|w| {
                        opt(w, "city", l.city.as_deref())?;
                        opt(w, "region", l.region.as_deref())?;
                        opt(w, "countryCode", l.country_code.as_deref())
                    })?;
            }
            Ok(())
        })?;
    Ok(())
}

fn report_additional_info(b: &ReportBody) -> String {
    let mut lines = vec![
        format!("Baken report {} ({}).", b.report_id, b.schema),
        format!("Legal basis: {}.", b.legal_basis),
        format!("Recipient: {}.", b.recipient.organisation),
        format!("Content removal status: {}.", b.removal_status.as_str()),
    ];
    if !b.also_reported_to.is_empty() {
        lines.push(format!(
            "Also reported to: {}.",
            b.also_reported_to.join(", ")
        ));
    }
    if let Some(n) = &b.user_notified {
        let mut s = format!("User notified: {}", if n.notified { "yes" } else { "no" });
        if let Some(at) = &n.at {
            s.push_str(&format!(" at {at}"));
        }
        if let Some(r) = &n.redress_information {
            s.push_str(&format!("; redress: {r}"));
        }
        lines.push(s + ".");
    }
    let other_tags: Vec<&str> = b
        .report_tags
        .iter()
        .map(String::as_str)
        .filter(|t| !NCMEC_REPORT_ANNOTATIONS.contains(t))
        .collect();
    if !other_tags.is_empty() {
        lines.push(format!("Tags: {}.", other_tags.join(", ")));
    }
    if let Some(o) = &b.other_data {
        lines.push(format!("Other data: {o}"));
    }
    lines.join("\n")
}

/// The CyberTipline `<report>` element (what is posted to `/submit`).
pub fn ncmec_report(w: &mut W, b: &ReportBody) -> io::Result<()> {
    w.create_element("report").write_inner_content(|w| {
        incident_summary(w, b)?;
        reporter(w, b)?;
        person_reported(w, b)?;
        text(w, "additionalInfo", &report_additional_info(b))
    })?;
    Ok(())
}

/// One `<fileDetails>` element (what is posted to `/fileinfo` after the upload; the submitting
/// client adds the `reportId` and `fileId` NCMEC returned).
pub fn ncmec_file_details(w: &mut W, b: &ReportBody, f: &ReportedFile) -> io::Result<()> {
    w.create_element("fileDetails").write_inner_content(|w| {
        opt(w, "originalFileName", f.original_file_name.as_deref())?;
        opt(w, "locationOfFile", f.location_url.as_deref())?;
        flag(w, "fileViewedByEsp", f.file_viewed_by_provider)?;
        flag(w, "exifViewedByEsp", f.exif_viewed_by_provider)?;
        flag(w, "publiclyAvailable", f.publicly_available)?;
        text(
            w,
            "fileRelevance",
            match f.file_relevance {
                super::FileRelevance::Reported => "Reported",
                super::FileRelevance::SupplementalReported => "Supplemental Reported",
            },
        )?;
        if !f.annotations.is_empty() {
            w.create_element("fileAnnotations")
                .write_inner_content(|w| {
                    for a in &f.annotations {
                        if !a.is_empty() && a.bytes().all(|c| c.is_ascii_alphanumeric()) {
                            w.create_element(a.as_str()).write_empty()?;
                        }
                    }
                    Ok(())
                })?;
        }
        opt(
            w,
            "industryClassification",
            f.industry_classification.as_deref(),
        )?;
        for h in &f.original_file_hashes {
            w.create_element("originalFileHash")
                .with_attribute(("hashType", h.hash_type.as_str()))
                .write_text_content(BytesText::new(&clean(&h.value)))?;
        }
        if let Some(e) = &f.ip_event {
            ip_capture(w, e)?;
        }
        if let Some(d) = &f.device_id {
            device(w, d)?;
        }
        if !f.perceptual_hashes.is_empty() {
            w.create_element("details")
                .with_attribute(("type", "HASH"))
                .write_inner_content(|w| {
                    for p in &f.perceptual_hashes {
                        w.create_element("nameValuePair").write_inner_content(|w| {
                            text(w, "name", &p.algo.to_uppercase())?;
                            text(w, "value", &p.value)
                        })?;
                    }
                    Ok(())
                })?;
        }
        if !f.exif.is_empty() {
            w.create_element("details")
                .with_attribute(("type", "EXIF"))
                .write_inner_content(|w| {
                    for (k, v) in &f.exif {
                        w.create_element("nameValuePair").write_inner_content(|w| {
                            text(w, "name", k)?;
                            text(w, "value", v)
                        })?;
                    }
                    Ok(())
                })?;
        }
        let mut info = vec![format!(
            "Baken report {}; provider evidence reference: {}.",
            b.report_id, f.content_reference
        )];
        for m in &f.matches {
            info.push(format!(
                "Matched list {} (version {}) entry {} by {} at distance {} (threshold {}){}{}.",
                m.list,
                m.list_version,
                m.entry,
                m.hash_type,
                m.distance,
                m.threshold,
                m.transform
                    .as_deref()
                    .map(|t| format!(", transform {t}"))
                    .unwrap_or_default(),
                m.classification
                    .as_deref()
                    .map(|c| format!(", classification {c}"))
                    .unwrap_or_default(),
            ));
        }
        text(w, "additionalInfo", &info.join("\n"))
    })?;
    Ok(())
}

/// The `ncmec-xml` export: one document holding the `<report>` and every `<fileDetails>`,
/// under a `<cybertiplineExport>` root that names the Baken report.
pub fn ncmec_xml(report: &Report) -> Result<String> {
    let b = report
        .body
        .as_ref()
        .ok_or_else(|| ReportError::Purged(report.state.report_id.clone(), "no body".into()))?;
    let xml = || -> io::Result<Vec<u8>> {
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        w.create_element("cybertiplineExport")
            .with_attribute(("bakenReportId", b.report_id.as_str()))
            .with_attribute(("schema", "baken.ncmec-export/v1"))
            .write_inner_content(|w| {
                ncmec_report(w, b)?;
                for f in &b.files {
                    ncmec_file_details(w, b, f)?;
                }
                Ok(())
            })?;
        Ok(w.into_inner())
    };
    let bytes = xml().map_err(ReportError::Io)?;
    String::from_utf8(bytes).map_err(|e| ReportError::Corrupt(e.to_string()))
}
