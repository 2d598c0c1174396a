//! Load shedding, CPU offload and deadlines.
//!
//! * Admission: a global in-flight limit. A request over it is refused at once with
//!   RESOURCE_EXHAUSTED ("server busy") instead of waiting in an unbounded queue: under
//!   overload the server's memory and latency stay bounded and callers back off.
//! * CPU work (decode, hash, match) runs on a rayon pool, never on the async runtime's threads;
//!   the admission permit travels with the work and is released only when the work ends, so an
//!   abandoned request (deadline, disconnect) cannot let more CPU work in than the limit.
//! * Deadlines: the caller's `grpc-timeout` is read from the request and checked before and
//!   after the CPU work; the answer is DEADLINE_EXCEEDED.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use super::metrics::Metrics;

/// The global in-flight limit.
#[derive(Clone)]
pub struct Admission {
    sem: Arc<Semaphore>,
    max: usize,
    metrics: Arc<Metrics>,
}

/// Held while a request is in flight.
pub struct Permit {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

impl Admission {
    pub fn new(max: usize, metrics: Arc<Metrics>) -> Admission {
        let max = max.max(1);
        Admission {
            sem: Arc::new(Semaphore::new(max)),
            max,
            metrics,
        }
    }

    /// A permit, or RESOURCE_EXHAUSTED when `max` requests are in flight.
    pub fn try_admit(&self, rpc: &'static str) -> Result<Permit, Status> {
        match self.sem.clone().try_acquire_owned() {
            Ok(p) => {
                self.metrics.in_flight.inc();
                Ok(Permit {
                    _permit: p,
                    metrics: self.metrics.clone(),
                })
            }
            Err(_) => {
                self.metrics.shed(rpc);
                Err(super::status_with_kind(
                    tonic::Code::ResourceExhausted,
                    "busy",
                    format!(
                        "server busy: {} requests in flight, retry with backoff",
                        self.max
                    ),
                ))
            }
        }
    }

    /// Close admission (shutdown): later requests get UNAVAILABLE.
    pub fn close(&self) {
        self.sem.close();
    }

    pub fn is_closed(&self) -> bool {
        self.sem.is_closed()
    }

    pub fn in_flight(&self) -> usize {
        self.max - self.sem.available_permits()
    }
}

/// The caller's deadline, from the `grpc-timeout` header (`<digits><unit>`, unit one of
/// H M S m u n), measured from when the request arrived.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    pub fn none() -> Deadline {
        Deadline(None)
    }

    pub fn from_metadata(md: &tonic::metadata::MetadataMap) -> Deadline {
        let Some(v) = md.get("grpc-timeout").and_then(|v| v.to_str().ok()) else {
            return Deadline(None);
        };
        Deadline(parse_grpc_timeout(v).and_then(|d| {
            // tonic's own timeout layer cancels the request exactly at the deadline (the caller
            // then sees CANCELLED); answering a little earlier gives the caller the precise
            // DEADLINE_EXCEEDED instead. A deadline too far away to represent is none.
            let margin = (d / 20).min(Duration::from_millis(20));
            Instant::now().checked_add(d.saturating_sub(margin))
        }))
    }

    pub fn instant(&self) -> Option<Instant> {
        self.0
    }

    pub fn check(&self, stage: &str) -> Result<(), Status> {
        match self.0 {
            Some(t) if Instant::now() >= t => Err(super::status_with_kind(
                tonic::Code::DeadlineExceeded,
                "deadline",
                format!("deadline exceeded {stage}"),
            )),
            _ => Ok(()),
        }
    }
}

fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Run `f` on the CPU pool, keeping `permit` until it is done, and wait for it no longer than
/// the deadline.
pub async fn on_cpu<R, F>(
    pool: &rayon::ThreadPool,
    permit: Option<Permit>,
    deadline: Deadline,
    f: F,
) -> Result<R, Status>
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    deadline.check("before the work started (the request waited too long)")?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    pool.spawn(move || {
        // A panic must not take the pool (rayon aborts on a panicking spawn) or the process
        // down: the caller gets INTERNAL, everyone else carries on.
        let out = std::panic::catch_unwind(AssertUnwindSafe(f));
        drop(permit);
        let _ = tx.send(out);
    });
    let got = match deadline.instant() {
        Some(t) => tokio::time::timeout_at(t.into(), rx).await.map_err(|_| {
            Status::deadline_exceeded("deadline exceeded while the image was processed")
        })?,
        None => rx.await,
    };
    match got {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) => {
            tracing::error!("a worker panicked while processing a request");
            Err(Status::internal(
                "internal error while processing the request",
            ))
        }
        Err(_) => Err(Status::internal("the worker pool is gone")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
    }
}
