//! Who may read and who may change over HTTP: one check, [`guard`], wrapped around every `/api`
//! route, so routes added later (results, event streams) follow the same rule without asking.
//!
//! - Reading (GET, HEAD) needs the client token or the read token as a bearer token, except
//!   from loopback, addressed to a loopback name. With no token configured at all, reads are
//!   answered on loopback only, as the binary protocol takes clients from loopback only then.
//! - Changing (any other method) needs the client token; with no client token configured, a
//!   request from loopback, addressed to a loopback name. A change must also say it sends JSON.
//!
//! "Addressed to a loopback name": a page on another site whose name was rebound to 127.0.0.1
//! still sends its own name as the Host, so a browser on the coordinator's machine cannot be
//! used to read or change through it.

use super::{ApiError, HttpFront};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest};

/// Tells a caller what it may do (`read` or `change`), so the dashboard offers only what will
/// work.
pub const ACCESS_HEADER: &str = "x-drover-access";

/// What a caller may do, as far as its request shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Access {
    Nothing,
    Read,
    Change,
}

/// How the caller showed it may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    /// The client token.
    ClientToken,
    /// The read token.
    ReadToken,
    /// Loopback, by a loopback name.
    Loopback,
    /// None.
    Nothing,
}

/// The check, as middleware: a refused request never reaches its handler.
pub(super) async fn guard(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(front) = request.app_data::<web::Data<HttpFront>>().cloned() else {
        return Err(ApiError::unavailable("the coordinator is not ready".into()).into());
    };
    let access = check(request.request(), &front)?;
    let mut response = next.call(request).await?;
    let said = if access == Access::Change {
        "change"
    } else {
        "read"
    };
    response.headers_mut().insert(
        HeaderName::from_static(ACCESS_HEADER),
        HeaderValue::from_static(said),
    );
    Ok(response)
}

/// What the caller may do, or why it may do nothing it asks.
pub(super) fn check(request: &HttpRequest, front: &HttpFront) -> Result<Access, ApiError> {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        may_read(request, front)
    } else {
        may_change(request, front)
    }
}

/// A read is answered for the client or read token, or on loopback; the answer tells whether
/// the caller could change too.
fn may_read(request: &HttpRequest, state: &HttpFront) -> Result<Access, ApiError> {
    let proof = proof(request, state)?;
    let access = access(proof, state);
    if access >= Access::Read {
        return Ok(access);
    }
    Err(if no_token(state) {
        ApiError::unauthorized(
            "no client or read token is configured, so HTTP reads are answered on loopback \
             only; start the coordinator with DROVER_TOKEN or DROVER_READ_TOKEN (or \
             --read-token-file) to read from other machines",
        )
    } else {
        ApiError::unauthorized(
            "reading from beyond loopback needs a token: send Authorization: Bearer <client or \
             read token>",
        )
    })
}

/// A change needs JSON, and the client token (or, with none configured, loopback).
///
/// Whatever the token, a change must say it sends JSON: a page on another site cannot send that
/// without the browser first asking (a CORS preflight), which this server never approves. So a
/// web page open on the coordinator's host cannot use its loopback privilege to submit jobs.
fn may_change(request: &HttpRequest, state: &HttpFront) -> Result<Access, ApiError> {
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
    let proof = proof(request, state)?;
    match access(proof, state) {
        Access::Change => Ok(Access::Change),
        _ if proof == Proof::ReadToken => Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: "the read token may only read; changes need the client token".into(),
            field: None,
        }),
        _ if state.client_secret.is_none() => Err(ApiError::unauthorized(
            "no client token is configured: changes are accepted from loopback only",
        )),
        _ => Err(ApiError::unauthorized(
            "missing bearer token (Authorization: Bearer <client token>)",
        )),
    }
}

fn no_token(state: &HttpFront) -> bool {
    state.client_secret.is_none() && state.read_secret.is_none()
}

/// What a proof lets a caller do.
fn access(proof: Proof, state: &HttpFront) -> Access {
    match proof {
        Proof::ClientToken => Access::Change,
        Proof::ReadToken => Access::Read,
        // Loopback may change only where no client token guards changes.
        Proof::Loopback if state.client_secret.is_none() => Access::Change,
        Proof::Loopback => Access::Read,
        Proof::Nothing => Access::Nothing,
    }
}

/// The caller's proof. A token that matches no configured one is refused outright (where any is
/// configured): a caller that sends a token means to use it, and should hear that it is wrong.
fn proof(request: &HttpRequest, state: &HttpFront) -> Result<Proof, ApiError> {
    if let Some(token) = bearer(request)? {
        if state
            .client_secret
            .as_ref()
            .is_some_and(|secret| secret.matches(token))
        {
            return Ok(Proof::ClientToken);
        }
        if state
            .read_secret
            .as_ref()
            .is_some_and(|secret| secret.matches(token))
        {
            return Ok(Proof::ReadToken);
        }
        if !no_token(state) {
            return Err(ApiError::unauthorized("wrong token"));
        }
    }
    let loopback = request
        .peer_addr()
        .is_some_and(|peer| peer.ip().is_loopback());
    if loopback && names_loopback(&host(request)) {
        Ok(Proof::Loopback)
    } else {
        Ok(Proof::Nothing)
    }
}

/// The name the request was sent to: its Host header (or, in HTTP/2, its URI's authority).
/// Never `X-Forwarded-Host` or `Forwarded`, which a page may set on its own requests.
fn host(request: &HttpRequest) -> String {
    request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            request
                .uri()
                .authority()
                .map(|authority| authority.to_string())
        })
        .unwrap_or_default()
}

/// The bearer token of the Authorization header, if there is one.
fn bearer(request: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || ApiError::unauthorized("the Authorization header must be Bearer <token>");
    let value = value.to_str().map_err(|_| malformed())?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(malformed()),
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
