//! `/api/...` and `/metrics`. Who may call what is [`super::access`]'s business: it guards the
//! whole `/api` scope. `/metrics` is open: it holds counts and timings, no job data.

use super::{events, results, ApiError, MAX_BODY_BYTES};
use crate::actors::fleet::ListPools;
use crate::actors::ledger::{Cancel, ListBatches, Retry, RetryJob};
use crate::actors::{cluster_status, list_workers, views};
use crate::job::{check_idempotency_key, BatchId, CancelTarget, JobId};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;

/// The handlers' state: only a leader's requests reach them.
type State = super::standby::Serving;

pub(super) fn routes(config: &mut web::ServiceConfig) {
    config.route("/metrics", web::get().to(metrics)).service(
        web::scope("/api")
            .wrap(actix_web::middleware::from_fn(super::access::guard))
            .route("/status", web::get().to(status))
            .route("/workers", web::get().to(workers))
            .route("/pools", web::get().to(pools))
            .route("/batches", web::get().to(batches))
            .route("/batches", web::post().to(submit))
            .route("/batches/{id}", web::get().to(batch))
            .route("/batches/{id}/cancel", web::post().to(cancel))
            .route("/batches/{id}/retry", web::post().to(retry))
            .route(
                "/batches/{id}/results",
                web::get().to(results::batch_results),
            )
            .route("/batches/{id}/events", web::get().to(events::batch_events))
            .route("/results", web::get().to(results::all_results))
            .route("/events", web::get().to(events::all_events))
            .route("/call", web::post().to(results::call))
            .route("/jobs/{id}", web::get().to(job))
            .route("/jobs/{id}/result", web::get().to(results::raw_result))
            .route("/jobs/{id}/retry", web::post().to(retry_job)),
    );
}

async fn status(state: State) -> Result<HttpResponse, ApiError> {
    let status = cluster_status(
        &state.ledger,
        &state.registry,
        &state.scheduler,
        &state.fleet,
        &state.cluster,
    )
    .await?;
    Ok(HttpResponse::Ok().json(status))
}

async fn workers(state: State) -> Result<HttpResponse, ApiError> {
    let workers = list_workers(&state.registry, &state.scheduler).await?;
    Ok(HttpResponse::Ok().json(workers))
}

/// The elastic fleet's pools, as `drover pools --json` shows them.
async fn pools(state: State) -> Result<HttpResponse, ApiError> {
    let pools = state.fleet.send(ListPools).await?;
    Ok(HttpResponse::Ok().json(pools))
}

/// `?limit=N`: only the newest N batches.
#[derive(serde::Deserialize)]
struct BatchesQuery {
    limit: Option<usize>,
}

async fn batches(state: State, query: web::Query<BatchesQuery>) -> Result<HttpResponse, ApiError> {
    let batches = state
        .ledger
        .send(ListBatches {
            newest: query.limit,
        })
        .await?;
    Ok(HttpResponse::Ok().json(batches))
}

async fn batch(state: State, id: web::Path<BatchId>) -> Result<HttpResponse, ApiError> {
    let batch = views::batch(&state.ledger, &state.scheduler, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(batch))
}

/// A job with its record, history and result (`"result"` when UTF-8, else `"result_base64"`).
async fn job(state: State, id: web::Path<JobId>) -> Result<HttpResponse, ApiError> {
    let job = views::job(&state.ledger, &state.scheduler, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(job))
}

async fn metrics(state: State) -> Result<HttpResponse, ApiError> {
    let status = cluster_status(
        &state.ledger,
        &state.registry,
        &state.scheduler,
        &state.fleet,
        &state.cluster,
    )
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render(&status)))
}

/// Reads the body, refusing it as soon as it is known to be too large.
pub(super) async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
) -> Result<Vec<u8>, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    // Grown as bytes arrive: a declared length alone reserves at most a mebibyte.
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(1 << 20) as usize);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::bad_request(None, format!("cannot read the body: {error}"))
        })?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::too_large(MAX_BODY_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn submit(
    request: HttpRequest,
    payload: web::Payload,
    state: State,
) -> Result<HttpResponse, ApiError> {
    let header_key = idempotency_key_header(&request)?;
    let body = read_body(&request, payload).await?;
    let batch = super::batch::parse(&body)?;
    let key = match (header_key, batch.idempotency_key) {
        (Some(header), Some(field)) if header != field => {
            return Err(ApiError::bad_request(
                Some("idempotency_key".into()),
                "the Idempotency-Key header and the body's idempotency_key differ; give one".into(),
            ))
        }
        (header, field) => header.or(field),
    };
    let submitted =
        views::submit(&state.ledger, &state.scheduler, batch.name, batch.jobs, key).await?;
    // A repeat made nothing: 200 with the batch its key made, rather than 201.
    let status = if submitted.repeated {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(HttpResponse::build(status)
        .insert_header((
            header::LOCATION,
            format!("/api/batches/{}", submitted.batch),
        ))
        .json(submitted))
}

/// The `Idempotency-Key` request header, checked as the body's field is.
pub(super) fn idempotency_key_header(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| {
        ApiError::bad_request(
            Some("Idempotency-Key".into()),
            "the Idempotency-Key header is not printable ASCII".into(),
        )
    })?;
    check_idempotency_key(key)
        .map_err(|reason| ApiError::bad_request(Some("Idempotency-Key".into()), reason))?;
    Ok(Some(key.to_string()))
}

async fn cancel(state: State, id: web::Path<BatchId>) -> Result<HttpResponse, ApiError> {
    let target = CancelTarget::Batch(id.into_inner());
    let count = state.ledger.send(Cancel(target)).await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "cancelled": count })))
}

async fn retry(state: State, id: web::Path<BatchId>) -> Result<HttpResponse, ApiError> {
    let count = state.ledger.send(Retry(id.into_inner())).await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "retried": count })))
}

async fn retry_job(state: State, id: web::Path<JobId>) -> Result<HttpResponse, ApiError> {
    let count = state.ledger.send(RetryJob(id.into_inner())).await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "retried": count })))
}
