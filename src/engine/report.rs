//! Reports and counters at the end of the data path: one sink trait for every report backend
//! (the local report store, the service's backends, a replica forwarding to its writer) and
//! one tally of scan outcomes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

use super::{Outcome, Verdict};
use crate::hashing::HashOutput;
use crate::index::Match;
use crate::reports::{CallerContext, FileHashes, ReportError, ReportStore, ScanCounts};

/// What the engine hands a sink to create the report of one matched item.
pub struct NewReport<'a, C: ?Sized> {
    /// The caller's context: the CLI's context file, the API's `ReportContext`, as the sink
    /// takes it.
    pub context: &'a C,
    /// The item's hashes, computed by Baken or sent by the caller. Only matched items get here.
    pub hashes: &'a HashOutput,
    /// The matches (suppressed ones are never reported).
    pub matches: &'a [Match],
    /// Who asked, recorded as the report's creator.
    pub actor: &'a str,
}

/// A created report, as the adapters show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedReport {
    pub report_id: String,
    /// pending_review | ready_to_send.
    pub status: String,
    /// RFC 3339, when the sink knows it.
    pub retention_deadline: Option<String>,
}

/// Creates reports from matches and keeps the scan volumes. Synchronous: implementations write
/// with synced batches (or call a writer); async callers run them on a blocking pool.
pub trait ReportSink: Send + Sync {
    /// The caller's context as this sink takes it.
    type Context: ?Sized;
    type Error;

    fn create(&self, report: NewReport<'_, Self::Context>) -> Result<CreatedReport, Self::Error>;

    /// Add scan outcomes to the statistics.
    fn record_scans(&self, counts: ScanCounts) -> Result<(), Self::Error>;
}

/// The local report store as a sink, at a fixed `now` (the CLI's `--now`) or the wall clock.
pub struct StoreSink {
    pub store: Arc<ReportStore>,
    pub now: Option<OffsetDateTime>,
}

impl StoreSink {
    fn now(&self) -> OffsetDateTime {
        self.now.unwrap_or_else(OffsetDateTime::now_utc)
    }
}

impl ReportSink for StoreSink {
    type Context = CallerContext;
    type Error = ReportError;

    fn create(&self, r: NewReport<'_, CallerContext>) -> Result<CreatedReport, ReportError> {
        let created = self.store.create(
            r.context,
            &FileHashes::from(r.hashes),
            r.matches,
            self.now(),
            r.actor,
        )?;
        Ok(CreatedReport {
            report_id: created.state.report_id.clone(),
            status: created.state.status.as_str().to_string(),
            retention_deadline: Some(created.state.retention_deadline.clone()),
        })
    }

    fn record_scans(&self, counts: ScanCounts) -> Result<(), ReportError> {
        self.store.record_scans(&counts, self.now())
    }
}

/// What became of a matched item's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// No match: nothing to report.
    NotMatched,
    /// A match, but the caller gave no context: answered, not reported.
    NoContext,
    /// A match, but there is no report sink.
    NoSink,
    Created(CreatedReport),
}

/// Scan outcomes counted in memory (lock-free; shared by concurrent requests) and handed to a
/// sink in batches. Nothing about the content is counted but its verdict.
#[derive(Default)]
pub struct Tally {
    matched: AtomicU64,
    not_matched: AtomicU64,
    suppressed: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    pub fn add(&self, verdict: Verdict) {
        let c = match verdict {
            Verdict::Match => &self.matched,
            Verdict::Suppressed => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                &self.not_matched
            }
            Verdict::NoMatch => &self.not_matched,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// An item that could not be read or decoded.
    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self) -> ScanCounts {
        ScanCounts {
            matched: self.matched.swap(0, Ordering::Relaxed),
            not_matched: self.not_matched.swap(0, Ordering::Relaxed),
            suppressed: self.suppressed.swap(0, Ordering::Relaxed),
            failed: self.failed.swap(0, Ordering::Relaxed),
        }
    }

    fn put_back(&self, c: ScanCounts) {
        self.matched.fetch_add(c.matched, Ordering::Relaxed);
        self.not_matched.fetch_add(c.not_matched, Ordering::Relaxed);
        self.suppressed.fetch_add(c.suppressed, Ordering::Relaxed);
        self.failed.fetch_add(c.failed, Ordering::Relaxed);
    }

    /// Hand the counts so far to `sink` (dropped without one: nothing would keep them). On an
    /// error they stay for the next flush: a sink that is down for a while (a replica's
    /// writer) must not cost the statistics their volumes.
    pub fn flush<S>(&self, sink: Option<&S>) -> Result<(), S::Error>
    where
        S: ReportSink + ?Sized,
    {
        let counts = self.take();
        if counts == ScanCounts::default() {
            return Ok(());
        }
        let Some(s) = sink else { return Ok(()) };
        s.record_scans(counts)
            .inspect_err(|_| self.put_back(counts))
    }
}

impl super::Engine {
    /// Count an outcome and, on a match with a context and a sink, create its report.
    pub fn conclude<S>(
        &self,
        outcome: &Outcome,
        tally: &Tally,
        sink: Option<&S>,
        context: Option<&S::Context>,
        actor: &str,
    ) -> Result<ReportOutcome, S::Error>
    where
        S: ReportSink + ?Sized,
    {
        tally.add(outcome.verdict());
        if !outcome.is_match() {
            return Ok(ReportOutcome::NotMatched);
        }
        let Some(context) = context else {
            return Ok(ReportOutcome::NoContext);
        };
        let Some(sink) = sink else {
            return Ok(ReportOutcome::NoSink);
        };
        sink.create(NewReport {
            context,
            hashes: &outcome.hashes,
            matches: &outcome.result.matches,
            actor,
        })
        .map(ReportOutcome::Created)
    }
}
