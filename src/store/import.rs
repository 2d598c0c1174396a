//! Streaming importers for the list formats providers receive. Each reads its input once, in
//! constant memory, and hands records to a [`Change`]; a record it cannot use is counted and
//! reported with its line or position, never dropped silently. A file that is structurally
//! broken (malformed JSON or XML) is refused as a whole: half a corrupt download is not a list.

use std::io::{BufRead, Read};

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::{Change, ChangeCounts, HashType, Incoming, ListMeta, Store, StoreError};

/// Supported input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `hash_type,hash,classification,external_id[,media_type,deleted,tags]`, header optional.
    Csv,
    /// The same, tab-separated.
    Tsv,
    /// ThreatExchange hash exports / threat_updates: `{id, indicator, type, should_delete, tags}`.
    #[serde(alias = "threatexchange", alias = "te")]
    ThreatExchange,
    /// StopNCII: `{signalType, hashValue, hashStatus, …}` (array, `hashRecords`, or JSON lines).
    Stopncii,
    /// NCMEC hash sharing XML: `image`/`video` with `fingerprints`, `deletedImage`/`deletedVideo`.
    #[serde(alias = "ncmec-xml")]
    Ncmec,
    /// Project VIC VICS JSON/OData: `value[] {MediaID, Category, MD5, SHA1}`.
    #[serde(alias = "projectvic", alias = "project-vic")]
    Vics,
    /// One video's vPDQ: Meta's `frameNumber,quality,pdqHex,timestamp` lines or
    /// python-threatexchange's JSON list of `"pdqHex,quality,timestamp"`.
    Vpdq,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::names::parse("format", &s.to_ascii_lowercase())
    }
}

/// One record that could not be imported.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecordError {
    /// Line (CSV/TSV/XML) or record number (JSON), 1-based.
    pub at: String,
    pub message: String,
}

/// What an import did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub list: String,
    pub format: Format,
    pub records: u64,
    pub version_from: u64,
    pub version_to: u64,
    pub counts: ChangeCounts,
    /// The first errors (all are counted in `counts.errors`).
    pub errors: Vec<RecordError>,
}

const MAX_REPORTED_ERRORS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{format:?} input is malformed at {at}: {message}; nothing was imported")]
    Malformed {
        format: Format,
        at: String,
        message: String,
    },
    #[error("could not read input: {0}")]
    Io(String),
}

/// Sink for parsed records; errors are per record.
type Emit<'a> = dyn FnMut(Result<Incoming, RecordError>) -> Result<(), StoreError> + 'a;

/// Import `input` into list `list` as one change (one new version).
pub fn import(
    store: &Store,
    list: &str,
    format: Format,
    input: impl BufRead,
    source: &str,
    actor: &str,
) -> Result<(ImportReport, ListMeta), ImportError> {
    import_as(store, list, format, input, source, None, actor)
}

/// [`import`], naming the entry of a one-entry format (vPDQ: one video per file; its default
/// id is the file name of `source`).
pub fn import_as(
    store: &Store,
    list: &str,
    format: Format,
    input: impl BufRead,
    source: &str,
    entry_id: Option<&str>,
    actor: &str,
) -> Result<(ImportReport, ListMeta), ImportError> {
    let mut change = store.begin(list, actor, "list.import")?;
    let mut errors = Vec::new();
    let mut records = 0u64;
    {
        let mut emit = |r: Result<Incoming, RecordError>| -> Result<(), StoreError> {
            records += 1;
            match r {
                Ok(mut inc) => {
                    if inc.provenance.is_none() {
                        inc.provenance = Some(format!("{source} #{records}"));
                    }
                    apply(&mut change, &inc)
                }
                Err(e) => {
                    change.count_error();
                    if errors.len() < MAX_REPORTED_ERRORS {
                        errors.push(e);
                    }
                    Ok(())
                }
            }
        };
        match format {
            Format::Csv => parse_delimited(input, b',', &mut emit)?,
            Format::Tsv => parse_delimited(input, b'\t', &mut emit)?,
            Format::ThreatExchange => {
                parse_json(input, format, &["data"], threatexchange, &mut emit)?
            }
            Format::Stopncii => {
                parse_json(input, format, &["hashRecords", "data"], stopncii, &mut emit)?
            }
            Format::Vics => parse_json(input, format, &["value"], vics, &mut emit)?,
            Format::Ncmec => parse_ncmec(input, &mut emit)?,
            Format::Vpdq => {
                let id = entry_id.map_or_else(
                    || {
                        std::path::Path::new(source)
                            .file_name()
                            .map_or_else(|| source.to_string(), |n| n.to_string_lossy().into())
                    },
                    str::to_string,
                );
                parse_vpdq(input, &id, source, &mut emit)?
            }
        }
    }
    let version_from = change.list().version;
    let detail = format!(
        "format={format:?} source={source} records={records} errors={}",
        change.counts().errors
    );
    let (meta, audit) = change.commit(Some(detail))?;
    Ok((
        ImportReport {
            list: meta.name.clone(),
            format,
            records,
            version_from,
            version_to: meta.version,
            counts: audit.counts,
            errors,
        },
        meta,
    ))
}

fn apply(change: &mut Change<'_>, inc: &Incoming) -> Result<(), StoreError> {
    if inc.delete && inc.hash.is_empty() {
        match &inc.external_id {
            Some(id) => {
                change.tombstone_external(id, "withdrawn by source")?;
            }
            None => change.note_unknown_tombstone(),
        }
        return Ok(());
    }
    change.put(inc).map(|_| ())
}

fn rec_err(at: impl Into<String>, message: impl Into<String>) -> RecordError {
    RecordError {
        at: at.into(),
        message: message.into(),
    }
}

fn parse_bool(s: &str) -> bool {
    matches!(
        s.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "y" | "deleted" | "withdrawn"
    )
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

// ---------------------------------------------------------------- vPDQ

/// Largest vPDQ file read: 2 hours of 60 fps video hashed every frame is ~35 MB.
const MAX_VPDQ_BYTES: u64 = 256 << 20;

/// One video: its usable frames (python-threatexchange's selection: first of each hash,
/// quality ≥ 50) become one `vpdq` entry each, `frame PDQ ‖ video id`, under one external id.
/// A file that does not parse is refused whole: a video's frames are one hash.
fn parse_vpdq(
    input: impl Read,
    entry_id: &str,
    source: &str,
    emit: &mut Emit<'_>,
) -> Result<(), ImportError> {
    use crate::hashing::vpdq;
    let malformed = |at: String, message: String| ImportError::Malformed {
        format: Format::Vpdq,
        at,
        message,
    };
    let mut text = String::new();
    input
        .take(MAX_VPDQ_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| ImportError::Io(e.to_string()))?;
    if text.len() as u64 > MAX_VPDQ_BYTES {
        return Err(malformed(
            "end".into(),
            format!("a vPDQ file over {MAX_VPDQ_BYTES} bytes is not one video"),
        ));
    }
    let features = vpdq::parse_any(&text).map_err(|e| match e {
        vpdq::VpdqError::Line { line, message } => malformed(format!("line {line}"), message),
        other => malformed("input".into(), other.to_string()),
    })?;
    let frames = vpdq::usable_frames(&features, vpdq::QUALITY_THRESHOLD);
    if frames.is_empty() {
        return Err(malformed(
            "input".into(),
            format!(
                "no frame of quality {} or more ({} frames read): the video cannot be matched",
                vpdq::QUALITY_THRESHOLD,
                features.len()
            ),
        ));
    }
    let id = vpdq::video_id(&frames);
    let ty = HashType::new("vpdq").map_err(|e| StoreError::Invalid(e.to_string()))?;
    for f in frames {
        let mut hash = f.hash.to_bytes().to_vec();
        hash.extend_from_slice(&id);
        emit(Ok(Incoming {
            hash_type: Some(ty.clone()),
            hash,
            external_id: Some(entry_id.to_string()),
            media_type: Some("video".into()),
            provenance: Some(format!(
                "{source} frame {} t={:.3}",
                f.frame_number, f.timestamp
            )),
            ..Incoming::default()
        }))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- CSV / TSV

/// Columns the CSV/TSV importer understands (by header name; without a header the first four,
/// in this order). The CSV exporter writes these first, so its output imports back.
pub const CSV_COLUMNS: [&str; 7] = [
    "hash_type",
    "hash",
    "classification",
    "external_id",
    "media_type",
    "deleted",
    "tags",
];

fn parse_delimited(input: impl Read, delim: u8, emit: &mut Emit<'_>) -> Result<(), ImportError> {
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delim)
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(input);
    // Column positions; replaced by the header when the first row is one.
    let mut cols: [Option<usize>; 7] = [Some(0), Some(1), Some(2), Some(3), None, None, None];
    let mut first = true;
    let mut rec = csv::StringRecord::new();
    loop {
        let line = match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => rec.position().map_or(0, |p| p.line()),
            Err(e) => {
                let at = e.position().map_or(0, |p| p.line());
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(ImportError::Io(e.to_string()));
                }
                emit(Err(rec_err(format!("line {at}"), e.to_string())))?;
                continue;
            }
        };
        if first {
            first = false;
            if rec
                .get(0)
                .is_some_and(|f| f.trim().eq_ignore_ascii_case("hash_type"))
            {
                for (i, n) in CSV_COLUMNS.iter().enumerate() {
                    cols[i] = rec.iter().position(|f| f.trim().eq_ignore_ascii_case(n));
                }
                if cols[1].is_none() {
                    return Err(ImportError::Malformed {
                        format: Format::Csv,
                        at: "line 1".into(),
                        message: "header has no `hash` column".into(),
                    });
                }
                continue;
            }
        }
        let get = |i: usize| cols[i].and_then(|c| rec.get(c));
        let at = format!("line {line}");
        let parsed = (|| {
            let ty =
                HashType::new(get(0).unwrap_or("")).map_err(|e| rec_err(&at, e.to_string()))?;
            let hash = ty
                .parse_value(get(1).unwrap_or(""))
                .map_err(|e| rec_err(&at, e.to_string()))?;
            Ok(Incoming {
                hash_type: Some(ty),
                hash,
                classification: non_empty(get(2)),
                external_id: non_empty(get(3)),
                media_type: non_empty(get(4)),
                delete: get(5).is_some_and(parse_bool),
                tags: get(6)
                    .map(|t| {
                        t.split(['|', ';'])
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
                provenance: None,
            })
        })();
        emit(parsed)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- JSON family

/// Turns one JSON record into zero or more entries.
type JsonMapper = fn(&Value, &str) -> Vec<Result<Incoming, RecordError>>;

/// Stream the records of a JSON input: a top-level array, an object whose `fields` hold the
/// array (other fields skipped), or JSON lines (one record or one such object per line).
fn parse_json(
    input: impl Read,
    format: Format,
    fields: &'static [&'static str],
    map: JsonMapper,
    emit: &mut Emit<'_>,
) -> Result<(), ImportError> {
    let mut de = serde_json::Deserializer::from_reader(input);
    let mut n = 0u64;
    let mut store_err: Option<StoreError> = None;
    loop {
        let mut each = |v: Value| {
            n += 1;
            if store_err.is_some() {
                return;
            }
            for r in map(&v, &format!("record {n}")) {
                if let Err(e) = emit(r) {
                    store_err = Some(e);
                    return;
                }
            }
        };
        let seed = TopLevel {
            fields,
            each: &mut each,
        };
        match seed.deserialize(&mut de) {
            Ok(()) => {}
            Err(e) if e.is_eof() && n == 0 => {
                return Err(ImportError::Malformed {
                    format,
                    at: "end of input".into(),
                    message: "no JSON value".into(),
                });
            }
            Err(e) => {
                return Err(ImportError::Malformed {
                    format,
                    at: format!("line {} column {}", e.line(), e.column()),
                    message: e.to_string(),
                });
            }
        }
        if let Some(e) = store_err.take() {
            return Err(ImportError::Store(e));
        }
        if de.end().is_ok() {
            return Ok(());
        }
    }
}

struct TopLevel<'f, F> {
    fields: &'static [&'static str],
    each: &'f mut F,
}

impl<'de, F: FnMut(Value)> DeserializeSeed<'de> for TopLevel<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(Value)> Visitor<'de> for TopLevel<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array or object of records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element::<Value>()? {
            (self.each)(v);
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut own = serde_json::Map::new();
        let mut streamed = false;
        while let Some(k) = map.next_key::<String>()? {
            if self.fields.contains(&k.as_str()) {
                map.next_value_seed(Elements {
                    each: &mut *self.each,
                })?;
                streamed = true;
            } else if streamed {
                map.next_value::<IgnoredAny>()?;
            } else {
                own.insert(k, map.next_value::<Value>()?);
            }
        }
        if !streamed {
            (self.each)(Value::Object(own));
        }
        Ok(())
    }
}

struct Elements<'f, F> {
    each: &'f mut F,
}

impl<'de, F: FnMut(Value)> DeserializeSeed<'de> for Elements<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(Value)> Visitor<'de> for Elements<'_, F> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element::<Value>()? {
            (self.each)(v);
        }
        Ok(())
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => non_empty(Some(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn typed(ty: &str, value: &str, at: &str) -> Result<(HashType, Vec<u8>), RecordError> {
    let t = HashType::new(ty).map_err(|e| rec_err(at, e.to_string()))?;
    let h = t
        .parse_value(value)
        .map_err(|e| rec_err(at, e.to_string()))?;
    Ok((t, h))
}

fn threatexchange(v: &Value, at: &str) -> Vec<Result<Incoming, RecordError>> {
    let one = || -> Result<Incoming, RecordError> {
        let ty = text(v, "type").ok_or_else(|| rec_err(at, "missing `type`"))?;
        let ind = text(v, "indicator").ok_or_else(|| rec_err(at, "missing `indicator`"))?;
        let (t, h) = typed(&ty, &ind, at)?;
        let mut tags: Vec<String> = v
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(d) = v.get("descriptors").and_then(Value::as_array) {
            for desc in d {
                if let Some(ts) = desc.get("tags").and_then(Value::as_array) {
                    tags.extend(ts.iter().filter_map(|t| t.as_str().map(str::to_string)));
                }
            }
        }
        tags.sort();
        tags.dedup();
        Ok(Incoming {
            hash_type: Some(t),
            hash: h,
            external_id: text(v, "id"),
            classification: text(v, "classification"),
            media_type: None,
            tags,
            provenance: None,
            delete: v
                .get("should_delete")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    };
    vec![one()]
}

fn stopncii(v: &Value, at: &str) -> Vec<Result<Incoming, RecordError>> {
    let one = || -> Result<Incoming, RecordError> {
        let sig = text(v, "signalType").ok_or_else(|| rec_err(at, "missing `signalType`"))?;
        let (ty, media) = match sig.as_str() {
            "ImagePDQ" => ("pdq", "image"),
            "VideoMD5" => ("md5", "video"),
            "VideoTMK" => ("tmk", "video"),
            other => return Err(rec_err(at, format!("unsupported signalType {other:?}"))),
        };
        let value = text(v, "hashValue").ok_or_else(|| rec_err(at, "missing `hashValue`"))?;
        let (t, h) = typed(ty, &value, at)?;
        let status = text(v, "hashStatus")
            .unwrap_or_default()
            .to_ascii_lowercase();
        Ok(Incoming {
            hash_type: Some(t),
            hash: h,
            external_id: None,
            classification: Some("ncii".into()),
            media_type: Some(media.into()),
            tags: Vec::new(),
            provenance: None,
            delete: matches!(
                status.as_str(),
                "withdrawn" | "deleted" | "inactive" | "removed"
            ),
        })
    };
    vec![one()]
}

fn vics(v: &Value, at: &str) -> Vec<Result<Incoming, RecordError>> {
    let mut out = Vec::new();
    let category = text(v, "Category").map(|c| format!("vics:{c}"));
    let id = text(v, "MediaID");
    for (ty, key) in [("md5", "MD5"), ("sha1", "SHA1")] {
        if let Some(val) = text(v, key) {
            out.push(typed(ty, &val, at).map(|(t, h)| Incoming {
                hash_type: Some(t),
                hash: h,
                external_id: id.clone(),
                classification: category.clone(),
                media_type: Some("image".into()),
                tags: Vec::new(),
                provenance: None,
                delete: false,
            }));
        }
    }
    if out.is_empty() {
        out.push(Err(rec_err(at, "record has neither MD5 nor SHA1")));
    }
    out
}

// ---------------------------------------------------------------- NCMEC XML

fn parse_ncmec(input: impl BufRead, emit: &mut Emit<'_>) -> Result<(), ImportError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(input);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    // The record being read: kind (image/video/deletedImage/deletedVideo) and its fields.
    let mut kind: Option<String> = None;
    let mut path: Vec<String> = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut text_buf = String::new();
    let mut start_line = 0usize;
    let malformed = |reader: &quick_xml::Reader<_>, msg: String| ImportError::Malformed {
        format: Format::Ncmec,
        at: format!("byte {}", reader.buffer_position()),
        message: msg,
    };
    loop {
        let ev = reader.read_event_into(&mut buf);
        match ev {
            Err(e) => return Err(malformed(&reader, e.to_string())),
            Ok(Event::Eof) => {
                if kind.is_some() {
                    return Err(malformed(&reader, "input ends inside a record".into()));
                }
                break;
            }
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if kind.is_none()
                    && matches!(
                        name.as_str(),
                        "image" | "video" | "deletedImage" | "deletedVideo"
                    )
                {
                    kind = Some(name.clone());
                    fields.clear();
                    start_line = reader.buffer_position() as usize;
                    path.clear();
                } else if kind.is_some() {
                    path.push(name);
                }
                text_buf.clear();
            }
            Ok(Event::Empty(_)) => {}
            Ok(Event::Text(t)) => {
                if kind.is_some() {
                    text_buf.push_str(&t.decode().map_err(|e| malformed(&reader, e.to_string()))?);
                }
            }
            Ok(Event::GeneralRef(r)) => {
                if kind.is_some() {
                    let name = r.decode().map_err(|e| malformed(&reader, e.to_string()))?;
                    if let Some(s) = quick_xml::escape::resolve_predefined_entity(&name) {
                        text_buf.push_str(s);
                    } else if let Ok(Some(c)) = r.resolve_char_ref() {
                        text_buf.push(c);
                    }
                }
            }
            Ok(Event::End(e)) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if kind.as_deref() == Some(name.as_str()) && path.is_empty() {
                    let k = kind.take().unwrap_or_default();
                    let at = format!("byte {start_line}");
                    for r in ncmec_record(&k, &fields, &at) {
                        emit(r)?;
                    }
                } else if kind.is_some() {
                    let key = path.join("/");
                    if !text_buf.trim().is_empty() {
                        fields.push((key, text_buf.trim().to_string()));
                    }
                    text_buf.clear();
                    path.pop();
                }
            }
            Ok(_) => {}
        }
        buf.clear();
    }
    Ok(())
}

fn ncmec_record(
    kind: &str,
    fields: &[(String, String)],
    at: &str,
) -> Vec<Result<Incoming, RecordError>> {
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
    let id = get("id");
    let media = if kind.to_ascii_lowercase().contains("video") {
        "video"
    } else {
        "image"
    };
    if kind.starts_with("deleted") {
        return match id {
            Some(id) => vec![Ok(Incoming {
                external_id: Some(id),
                media_type: Some(media.into()),
                delete: true,
                ..Incoming::default()
            })],
            None => vec![Err(rec_err(at, format!("{kind} without an id")))],
        };
    }
    let classification = get("classification");
    let mut out = Vec::new();
    for (name, value) in fields {
        let Some(fp) = name.strip_prefix("fingerprints/") else {
            continue;
        };
        let ty = match fp {
            "md5" => "md5",
            "sha1" => "sha1",
            "pdna" => "photodna",
            other => other,
        };
        out.push(typed(ty, value, at).map(|(t, h)| Incoming {
            hash_type: Some(t),
            hash: h,
            external_id: id.clone(),
            classification: classification.clone(),
            media_type: Some(media.into()),
            tags: Vec::new(),
            provenance: None,
            delete: false,
        }));
    }
    if out.is_empty() {
        out.push(Err(rec_err(at, format!("{kind} has no fingerprints"))));
    }
    out
}
