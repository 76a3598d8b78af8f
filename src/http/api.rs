//! `/api/...` and `/metrics`.

use super::{ApiError, HttpState, MAX_BODY_BYTES};
use crate::actors::ledger::{Cancel, ListBatches, Retry, RetryJob};
use crate::actors::{cluster_status, list_workers, views};
use crate::job::{BatchId, CancelTarget, JobId};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;

type State = web::Data<HttpState>;

pub(super) fn routes(config: &mut web::ServiceConfig) {
    config.route("/metrics", web::get().to(metrics)).service(
        web::scope("/api")
            .route("/status", web::get().to(status))
            .route("/workers", web::get().to(workers))
            .route("/batches", web::get().to(batches))
            .route("/batches", web::post().to(submit))
            .route("/batches/{id}", web::get().to(batch))
            .route("/batches/{id}/cancel", web::post().to(cancel))
            .route("/batches/{id}/retry", web::post().to(retry))
            .route("/jobs/{id}", web::get().to(job))
            .route("/jobs/{id}/retry", web::post().to(retry_job)),
    );
}

async fn status(state: State) -> Result<HttpResponse, ApiError> {
    let status = cluster_status(&state.ledger, &state.registry, &state.scheduler).await?;
    Ok(HttpResponse::Ok().json(status))
}

async fn workers(state: State) -> Result<HttpResponse, ApiError> {
    let workers = list_workers(&state.registry, &state.scheduler).await?;
    Ok(HttpResponse::Ok().json(workers))
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

async fn job(state: State, id: web::Path<JobId>) -> Result<HttpResponse, ApiError> {
    let job = views::job(&state.ledger, &state.scheduler, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(job))
}

async fn metrics(state: State) -> Result<HttpResponse, ApiError> {
    let status = cluster_status(&state.ledger, &state.registry, &state.scheduler).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render(&status)))
}

/// Changes need the client secret as a bearer token; without a secret, a loopback peer.
///
/// Whatever the token, a change must say it sends JSON: a page on another site cannot send that
/// without the browser first asking (a CORS preflight), which this server never approves. So a
/// web page open on the coordinator's host cannot use its loopback privilege to submit jobs.
fn authorize(request: &HttpRequest, state: &HttpState) -> Result<(), ApiError> {
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .split(';')
                .next()
                .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(ApiError::unsupported_type());
    }
    let Some(secret) = &state.client_secret else {
        let loopback = request
            .peer_addr()
            .is_some_and(|peer| peer.ip().is_loopback());
        // A page whose name was rebound to 127.0.0.1 still sends its own name as the Host.
        let host = request.connection_info().host().to_string();
        return if loopback && names_loopback(&host) {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "no client token is configured: changes are accepted from loopback only",
            ))
        };
    };
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token (Authorization: Bearer ...)"))?
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header must be Bearer <token>"))?;
    let given = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Err(ApiError::unauthorized(
                "the Authorization header must be Bearer <token>",
            ))
        }
    };
    if secret.matches(given) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("wrong token"))
    }
}

/// True when a Host header names this machine's loopback: `localhost`, `127.x.y.z` or `[::1]`,
/// with or without a port.
fn names_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads the body, refusing it as soon as it is known to be too large.
async fn read_body(request: &HttpRequest, mut payload: web::Payload) -> Result<Vec<u8>, ApiError> {
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
    authorize(&request, &state)?;
    let body = read_body(&request, payload).await?;
    let (name, jobs) = super::batch::parse(&body)?;
    let submitted = views::submit(&state.ledger, &state.scheduler, name, jobs).await?;
    Ok(HttpResponse::build(StatusCode::CREATED)
        .insert_header((
            header::LOCATION,
            format!("/api/batches/{}", submitted.batch),
        ))
        .json(submitted))
}

async fn cancel(
    request: HttpRequest,
    state: State,
    id: web::Path<BatchId>,
) -> Result<HttpResponse, ApiError> {
    authorize(&request, &state)?;
    let target = CancelTarget::Batch(id.into_inner());
    let count = state.ledger.send(Cancel(target)).await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "cancelled": count })))
}

async fn retry(
    request: HttpRequest,
    state: State,
    id: web::Path<BatchId>,
) -> Result<HttpResponse, ApiError> {
    authorize(&request, &state)?;
    let count = state.ledger.send(Retry(id.into_inner())).await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "retried": count })))
}

async fn retry_job(
    request: HttpRequest,
    state: State,
    id: web::Path<JobId>,
) -> Result<HttpResponse, ApiError> {
    authorize(&request, &state)?;
    let count = state.ledger.send(RetryJob(id.into_inner())).await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "retried": count })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_host_names() {
        for host in [
            "localhost",
            "localhost:7701",
            "127.0.0.1:7701",
            "127.9.9.9",
            "[::1]:7701",
            "[::1]",
        ] {
            assert!(names_loopback(host), "{host}");
        }
        for host in [
            "evil.example:7701",
            "10.0.0.1:7701",
            "localhost.evil.example",
            "[::2]:1",
            "",
        ] {
            assert!(!names_loopback(host), "{host}");
        }
    }
}
