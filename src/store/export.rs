//! Exporters: CSV (re-importable by the CSV importer) and JSON lines (full records).

use std::io::Write;

use super::{ListMeta, Result, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

crate::from_str_by_name!(ExportFormat, "export format");

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("write failed: {e}"))
}

/// Export-only columns after the importer's (`import::CSV_COLUMNS`).
const CSV_EXTRA: [&str; 3] = ["added", "updated", "deleted_at"];

/// Write the list's current entries (tombstones too when `include_deleted`). Returns the count.
pub fn export(
    store: &Store,
    meta: &ListMeta,
    format: ExportFormat,
    include_deleted: bool,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut n = 0u64;
    match format {
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(super::import::CSV_COLUMNS.iter().chain(CSV_EXTRA.iter()))
                .map_err(io)?;
            store.scan_list(meta, |_, rec| {
                if rec.is_deleted() && !include_deleted {
                    return Ok(());
                }
                n += 1;
                w.write_record([
                    rec.hash_type.as_str(),
                    &rec.hash,
                    rec.classification.as_deref().unwrap_or(""),
                    rec.external_id.as_deref().unwrap_or(""),
                    rec.media_type.as_deref().unwrap_or(""),
                    if rec.is_deleted() { "true" } else { "" },
                    &rec.tags.join("|"),
                    &rec.added,
                    &rec.updated,
                    rec.deleted_at.as_deref().unwrap_or(""),
                ])
                .map_err(io)
            })?;
            w.flush().map_err(io)?;
        }
        ExportFormat::Jsonl => {
            store.scan_list(meta, |_, rec| {
                if rec.is_deleted() && !include_deleted {
                    return Ok(());
                }
                n += 1;
                serde_json::to_writer(&mut *out, rec).map_err(io)?;
                out.write_all(b"\n").map_err(io)
            })?;
        }
    }
    Ok(n)
}
