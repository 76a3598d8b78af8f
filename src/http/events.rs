//! Finished jobs' records as Server-Sent Events (`/api/batches/{id}/events`, `/api/events`):
//! each record as `id: <cursor>`, `event: result`, `data: <record JSON>`, as soon as it is
//! recorded; a batch's stream ends with `event: done` once the batch is done and every record
//! was sent. A client resumes after the last id it saw (`Last-Event-ID`, which browsers send
//! on their own, or `?after=`).
//!
//! The stream is pulled: the server asks it for more only as the socket takes what it gave
//! (actix-web stops polling a body while its write buffer is full), and it reads the next page
//! only once the last is sent, so a slow reader holds one page, never a backlog. A comment every
//! [`KEEP_ALIVE`] keeps proxies from closing a quiet stream.

use super::results::{cursor, position, read_page};
use super::standby::Serving;
use super::{ApiError, HttpState};
use crate::job::BatchId;
use crate::status::Completion;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a stream stays silent before it sends a comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Records read per page: what one slow reader can make the coordinator hold (with at most
/// the byte limit of a page of results).
const EVENTS_PAGE: u32 = 256;

/// `GET /api/batches/{id}/events`: a batch's records as they are recorded, ending once it is
/// done.
pub(super) async fn batch_events(
    state: Serving,
    id: web::Path<BatchId>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    events(state, Some(id.into_inner()), &request).await
}

/// `GET /api/events`: every batch's records as they are recorded; it never ends.
pub(super) async fn all_events(
    state: Serving,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    events(state, None, &request).await
}

async fn events(
    state: Serving,
    batch: Option<BatchId>,
    request: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // A reconnecting client's Last-Event-ID is newer than the URL it reconnects to.
    let (after, field) = match request.headers().get("last-event-id") {
        Some(value) => {
            let text = value.to_str().map_err(|_| {
                ApiError::bad_request(
                    Some("Last-Event-ID".into()),
                    "Last-Event-ID must be a cursor (a number)".into(),
                )
            })?;
            (cursor("Last-Event-ID", text)?, "Last-Event-ID")
        }
        None => (position(request.query_string())?.after, "after"),
    };
    let state = state.shared();
    let recorded = state.recorded.subscribe();
    // The first page is read before answering, so an unknown batch or a cursor beyond the end
    // is an error status, not a stream that ends at once.
    let page = read_page(&state, batch, after, EVENTS_PAGE, field).await?;
    let stream = Events {
        state,
        batch,
        cursor: after,
        recorded,
        page: page.results.into(),
        done: page.done,
        ended: false,
    };
    let body = futures::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next().await?;
        Some((Ok::<_, actix_web::Error>(chunk), stream))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Proxies that buffer answers (nginx) are told not to hold this one.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

/// One client's stream: the page being sent and where it is.
struct Events {
    state: Arc<HttpState>,
    batch: Option<BatchId>,
    /// The cursor of the last record sent (or the one the stream started after).
    cursor: u64,
    recorded: watch::Receiver<u64>,
    page: VecDeque<Completion>,
    /// The page holds the batch's last records: `done` follows them.
    done: bool,
    ended: bool,
}

impl Events {
    /// The next chunk to send: a record, the end, a keep-alive comment, or nothing more.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(record) = self.page.pop_front() {
                self.cursor = record.record.cursor;
                return Some(result_event(&record));
            }
            if self.ended {
                return None;
            }
            if self.done {
                self.ended = true;
                return Some(done_event(self.cursor));
            }
            // Marked seen before the read: a record committed after it moves the watch again.
            self.recorded.borrow_and_update();
            let read = read_page(&self.state, self.batch, self.cursor, EVENTS_PAGE, "after");
            match read.await {
                Ok(page) if !page.results.is_empty() || page.done => {
                    self.done = page.done;
                    self.page.extend(page.results);
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    self.ended = true;
                    return Some(error_event(&error.message));
                }
            }
            match tokio::time::timeout(KEEP_ALIVE, self.recorded.changed()).await {
                Ok(Ok(())) => continue,
                // The coordinator stopped leading: the client resumes elsewhere.
                Ok(Err(_)) => {
                    self.ended = true;
                    return Some(error_event("the coordinator is shutting down"));
                }
                Err(_) => return Some(Bytes::from_static(b": keep-alive\n\n")),
            }
        }
    }
}

fn result_event(record: &Completion) -> Bytes {
    // serde_json writes no newline inside a value: the record is one `data:` line.
    let json = serde_json::to_string(record).unwrap_or_else(|error| {
        serde_json::json!({ "error": format!("cannot encode the record: {error}") }).to_string()
    });
    Bytes::from(format!(
        "id: {}\nevent: result\ndata: {json}\n\n",
        record.record.cursor
    ))
}

fn done_event(cursor: u64) -> Bytes {
    Bytes::from(format!(
        "event: done\ndata: {}\n\n",
        serde_json::json!({ "cursor": cursor })
    ))
}

fn error_event(message: &str) -> Bytes {
    Bytes::from(format!(
        "event: error\ndata: {}\n\n",
        serde_json::json!({ "error": message })
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobState;
    use crate::status::{Finished, Resulted};

    #[test]
    fn a_record_is_one_event_with_its_cursor_as_id_and_its_json_on_one_line() {
        let record = Resulted {
            record: Finished {
                cursor: 42,
                id: 7,
                batch: 2,
                name: Some("two\nlines".into()),
                state: JobState::Succeeded,
                exit_code: Some(0),
                worker: Some("w1".into()),
                duration_ms: Some(3),
                finished_at_ms: 5,
                error: None,
            },
            result: Some(b"line one\nline two\n".to_vec()),
        };
        let event = result_event(&record);
        let text = std::str::from_utf8(&event).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..2], ["id: 42", "event: result"]);
        assert_eq!(lines.len(), 4, "{text}");
        assert!(text.ends_with("\n\n"));
        let data: Completion = serde_json::from_str(lines[2].strip_prefix("data: ").unwrap())
            .expect("the record's JSON");
        assert_eq!(data, record);
        assert_eq!(
            std::str::from_utf8(&done_event(42)).unwrap(),
            "event: done\ndata: {\"cursor\":42}\n\n"
        );
    }
}
