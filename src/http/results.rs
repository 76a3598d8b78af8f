//! Results over HTTP: pages of finished jobs' records after a cursor (`/api/results`,
//! `/api/batches/{id}/results`), a job's raw result (`/api/jobs/{id}/result`), and one job
//! called and answered with its record (`POST /api/call`). The event stream of the same
//! records is [`super::events`].

use super::api::{idempotency_key_header, read_body};
use super::standby::Serving;
use super::ApiError;
use crate::actors::ledger::{CallJob, GetJob, LedgerError, ReadResults, MAX_PAGE};
use crate::job::{BatchId, JobId, JobState};
use crate::jobfile;
use crate::status::ResultsPage;
use actix_web::{web, HttpRequest, HttpResponse};

/// Where a page or a stream starts, and how long a page is, as the query gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Position {
    /// Only records after this cursor.
    pub(super) after: u64,
    /// At most this many.
    pub(super) limit: u32,
}

/// `?after=CURSOR&limit=N` (both optional: from the start, [`MAX_PAGE`] at a time), each
/// refused by name when it is not a number; a limit above [`MAX_PAGE`] gives [`MAX_PAGE`].
pub(super) fn position(query: &str) -> Result<Position, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|error| ApiError::bad_request(None, format!("bad query: {error}")))?;
    let mut position = Position {
        after: 0,
        limit: MAX_PAGE,
    };
    for (name, value) in pairs.into_inner() {
        match name.as_str() {
            "after" => position.after = cursor("after", &value)?,
            "limit" => {
                let limit: u64 = value.parse().map_err(|_| {
                    ApiError::bad_request(
                        Some("limit".into()),
                        format!("limit must be a number of records, not {value:?}"),
                    )
                })?;
                if limit == 0 {
                    return Err(ApiError::bad_request(
                        Some("limit".into()),
                        "limit must be at least 1".into(),
                    ));
                }
                position.limit = limit.min(u64::from(MAX_PAGE)) as u32;
            }
            _ => {}
        }
    }
    Ok(position)
}

/// A cursor given as text, refused naming where it was given (`after`, `Last-Event-ID`).
pub(super) fn cursor(field: &str, text: &str) -> Result<u64, ApiError> {
    text.trim().parse().map_err(|_| {
        ApiError::bad_request(
            Some(field.into()),
            format!(
                "{field} must be a cursor (a number from a page or an event), not {text:?}; 0 \
                 starts from the first record"
            ),
        )
    })
}

/// Reads a page; a cursor past the end is refused naming `field`, where it was given.
pub(super) async fn read_page(
    state: &super::HttpState,
    batch: Option<BatchId>,
    after: u64,
    limit: u32,
    field: &str,
) -> Result<ResultsPage, ApiError> {
    let read = ReadResults {
        batch,
        after,
        limit,
    };
    state.ledger.send(read).await?.map_err(|error| {
        let beyond = matches!(error, LedgerError::CursorBeyondEnd { .. });
        let mut refusal = ApiError::from(error);
        if beyond {
            refusal.field = Some(field.into());
        }
        refusal
    })
}

/// `GET /api/batches/{id}/results`: one page of a batch's records.
pub(super) async fn batch_results(
    state: Serving,
    id: web::Path<BatchId>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    page(&state, Some(id.into_inner()), &request).await
}

/// `GET /api/results`: one page of every batch's records.
pub(super) async fn all_results(
    state: Serving,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    page(&state, None, &request).await
}

async fn page(
    state: &super::HttpState,
    batch: Option<BatchId>,
    request: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let position = position(request.query_string())?;
    let page = read_page(state, batch, position.after, position.limit, "after").await?;
    Ok(HttpResponse::Ok().json(page))
}

/// `GET /api/jobs/{id}/result`: the bytes the job's recorded attempt returned, as they are.
pub(super) async fn raw_result(
    state: Serving,
    id: web::Path<JobId>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let job = state.ledger.send(GetJob(id)).await??;
    match job.result {
        Some(bytes) => Ok(HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(bytes)),
        None => Err(ApiError::not_found(match job.record.state {
            JobState::Pending | JobState::Running => format!(
                "job {id} is {}: it has no result until it finishes",
                job.record.state
            ),
            state => format!("job {id} {state} without a result"),
        })),
    }
}

/// `POST /api/call`: one job (a job file line's object) queued, answered with its final record
/// once it is recorded, whatever its state. An `Idempotency-Key` header makes a call sent again
/// wait for the job the first queued.
pub(super) async fn call(
    request: HttpRequest,
    payload: web::Payload,
    state: Serving,
) -> Result<HttpResponse, ApiError> {
    crate::keep_awake::poke();
    let key = idempotency_key_header(&request)?;
    let body = read_body(&request, payload).await?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(None, format!("the body is not valid JSON: {error}"))
    })?;
    let spec = jobfile::from_json(1, value).map_err(|error| {
        let message = match &error.field {
            Some(field) => format!("{field}: {}", error.message),
            None => error.message.clone(),
        };
        ApiError::bad_request(error.field, message)
    })?;
    let call = CallJob {
        spec,
        idempotency_key: key,
    };
    let completion = state.ledger.send(call).await?.recv().await?;
    Ok(HttpResponse::Ok().json(completion))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::StatusCode;

    #[test]
    fn a_position_is_read_by_name_and_a_bad_one_refused_naming_it() {
        assert_eq!(
            position("").unwrap(),
            Position {
                after: 0,
                limit: MAX_PAGE
            }
        );
        assert_eq!(
            position("after=17&limit=5&other=x").unwrap(),
            Position {
                after: 17,
                limit: 5
            }
        );
        assert_eq!(position("limit=99999999999").unwrap().limit, MAX_PAGE);
        for (query, field) in [
            ("after=abc", "after"),
            ("after=-1", "after"),
            ("limit=lots", "limit"),
            ("limit=0", "limit"),
        ] {
            let error = position(query).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(error.field.as_deref(), Some(field), "{query}");
        }
        assert!(position("after=abc")
            .unwrap_err()
            .message
            .contains("\"abc\""));
    }
}
