//! Results for a client of the binary protocol: a page of finished jobs' records after a
//! cursor, waited for (a long poll) when there is none yet, and a job called and answered with
//! its record, each fitted to what one frame can carry.

use super::SessionContext;
use crate::actors::ledger::{CallJob, LedgerError, ReadResults};
use crate::job::{BatchId, JobSpec};
use crate::net::protocol::ClientResponse;
use crate::status::{Completion, ResultsPage};
use std::time::Duration;
use tokio::time::Instant;

/// The longest a request for results waits for the next record: a client asking for longer
/// asks again (and a huge `wait_ms` from the network overflows no clock).
pub const MAX_RESULTS_WAIT: Duration = Duration::from_secs(300);

/// Room kept in a frame beside the records (the frame's own envelope, the page's fields).
const FRAME_MARGIN: usize = 4 * 1024;

/// What a record costs on the wire beside its text fields and result, at most.
const RECORD_OVERHEAD: usize = 128;

/// A page of records after `after`: at once if there are some (or the batch is done, or
/// `wait_ms` is 0), else as soon as one is recorded, or empty once `wait_ms` has passed.
///
/// The watch of the last cursor on disk is subscribed to before the first read, so a record
/// committed between the read and the wait moves it and is read next: none is slept through.
pub(super) async fn results(
    shared: &SessionContext,
    batch: Option<BatchId>,
    after: u64,
    limit: u32,
    wait_ms: u64,
) -> Result<ClientResponse, LedgerError> {
    let mut recorded = shared.recorded.subscribe();
    let deadline = Instant::now() + Duration::from_millis(wait_ms).min(MAX_RESULTS_WAIT);
    loop {
        recorded.borrow_and_update();
        let read = ReadResults {
            batch,
            after,
            limit,
        };
        let page = shared.ledger.send(read).await??;
        if !page.results.is_empty() || page.done || Instant::now() >= deadline {
            return Ok(match fit(page, shared.max_frame) {
                Ok(page) => ClientResponse::Results(page),
                Err(refusal) => ClientResponse::Error(refusal),
            });
        }
        match tokio::time::timeout_at(deadline, recorded.changed()).await {
            // Something was recorded: this batch's, perhaps.
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return Err(LedgerError::ShuttingDown),
            Err(_) => return Ok(ClientResponse::Results(page)),
        }
    }
}

/// Queues one job and answers with its final record once it is recorded.
pub(super) async fn call(
    shared: &SessionContext,
    spec: JobSpec,
    idempotency_key: Option<String>,
) -> Result<ClientResponse, LedgerError> {
    let call = CallJob {
        spec,
        idempotency_key,
    };
    let completion = shared.ledger.send(call).await?.recv().await?;
    Ok(match too_large(&completion, shared.max_frame) {
        Some(refusal) => ClientResponse::Error(refusal),
        None => ClientResponse::Called(Box::new(completion)),
    })
}

/// The page cut to what one frame carries: the records that fit (the page resumes after the
/// last of them), or a refusal naming the record that no frame can carry on its own (a result
/// kept under a `--max-result-bytes` above `--max-frame-bytes`), which HTTP still serves.
fn fit(mut page: ResultsPage, max_frame: usize) -> Result<ResultsPage, String> {
    let budget = max_frame.saturating_sub(FRAME_MARGIN);
    let mut used = 0;
    let mut fits = 0;
    for record in &page.results {
        used += wire_size(record);
        if used > budget {
            break;
        }
        fits += 1;
    }
    if fits == page.results.len() {
        return Ok(page);
    }
    if fits == 0 {
        let first = &page.results[0];
        return Err(too_large(first, max_frame).unwrap_or_default());
    }
    page.results.truncate(fits);
    page.cursor = page.results[fits - 1].record.cursor;
    page.done = false;
    Ok(page)
}

/// Why a record cannot be sent in one frame, if it cannot.
fn too_large(record: &Completion, max_frame: usize) -> Option<String> {
    let size = wire_size(record);
    let job = record.record.id;
    (size > max_frame.saturating_sub(FRAME_MARGIN)).then(|| {
        format!(
            "job {job}'s record is {size} bytes with its result, more than a frame of \
             {max_frame} bytes carries (the coordinator's --max-frame-bytes is below its \
             --max-result-bytes); read it over HTTP at /api/jobs/{job}/result"
        )
    })
}

/// A record's size on the wire, at most.
fn wire_size(record: &Completion) -> usize {
    let finished = &record.record;
    RECORD_OVERHEAD
        + record.result.as_ref().map_or(0, Vec::len)
        + finished.name.as_ref().map_or(0, String::len)
        + finished.worker.as_ref().map_or(0, String::len)
        + finished.error.as_ref().map_or(0, String::len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobState;
    use crate::status::{Finished, Resulted};

    fn record(cursor: u64, result_bytes: usize) -> Completion {
        Resulted {
            record: Finished {
                cursor,
                id: cursor + 100,
                batch: 1,
                name: None,
                state: JobState::Succeeded,
                exit_code: Some(0),
                worker: Some("w".into()),
                duration_ms: Some(1),
                finished_at_ms: 0,
                error: None,
            },
            result: Some(vec![7; result_bytes]),
        }
    }

    #[test]
    fn a_page_is_cut_to_a_frame_and_resumes_after_the_last_record_it_keeps() {
        let page = ResultsPage {
            results: (1..=10).map(|cursor| record(cursor, 1000)).collect(),
            cursor: 10,
            done: true,
        };
        let whole = fit(page.clone(), 1 << 20).unwrap();
        assert_eq!(whole, page);
        let cut = fit(page, FRAME_MARGIN + 3 * 1200).unwrap();
        assert_eq!(cut.results.len(), 3);
        assert_eq!((cut.cursor, cut.done), (3, false));
        // What follows from the encoded page fits the frame it was cut for.
        let encoded = postcard::to_allocvec(&cut).unwrap();
        assert!(
            encoded.len() <= FRAME_MARGIN + 3 * 1200,
            "{}",
            encoded.len()
        );
    }

    #[test]
    fn a_record_no_frame_carries_is_refused_naming_the_job_and_the_way_round() {
        let page = ResultsPage {
            results: vec![record(5, 70_000)],
            cursor: 5,
            done: false,
        };
        let refusal = fit(page, 64 * 1024).unwrap_err().to_string();
        assert!(
            refusal.contains("job 105") && refusal.contains("/api/jobs/105/result"),
            "{refusal}"
        );
        assert!(
            !refusal.contains("  "),
            "one line, single spaces: {refusal}"
        );
    }
}
