//! The HTTP side of a standby: every request goes to the leader, none is served or queued here.
//!
//! A request the leader's HTTP address is known for is redirected there with 307 (same path and
//! query; a 307 keeps the method and body, so a submission is sent again to the leader by
//! clients that follow redirects). Without one, the answer is 503 with the leader's protocol
//! address if that much is known, and `null` if no coordinator leads yet. Who may read and who
//! may change ([`super::access`]) is checked first, as on the leader: a standby tells no caller
//! more than the leader would.

use super::{access, ApiError, HttpFront, HttpState};
use crate::ha::waiting::serving_or_leader;
use crate::ha::Peer;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

/// How long a request waits for a coordinator that leads but is still starting (its ledger is
/// being replayed).
const STARTING_WAIT: Duration = Duration::from_secs(10);

/// The state of a coordinator that leads, for the handlers: taking it fails (503) on one that
/// does not, which the middleware below never lets through anyway.
pub(super) struct Serving(Arc<HttpState>);

impl Serving {
    /// The state itself, for what outlives the handler (an event stream).
    pub(super) fn shared(&self) -> Arc<HttpState> {
        self.0.clone()
    }
}

impl Deref for Serving {
    type Target = HttpState;

    fn deref(&self) -> &HttpState {
        &self.0
    }
}

impl FromRequest for Serving {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Serving, ApiError>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let serving = request
            .app_data::<web::Data<HttpFront>>()
            .and_then(|front| front.serving.borrow().clone());
        std::future::ready(serving.map(Serving).ok_or_else(|| {
            ApiError::unavailable("this coordinator does not lead the ledger now".into())
        }))
    }
}

/// Passes a leader's requests on; answers a standby's with where the leader is.
pub(super) async fn redirect(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(front) = request.app_data::<web::Data<HttpFront>>().cloned() else {
        return Err(ApiError::unavailable("the coordinator is not ready".into()).into());
    };
    if front.serving.borrow().is_some() {
        return Ok(next.call(request).await?.map_into_left_body());
    }
    if request.path().starts_with("/api") {
        access::check(request.request(), &front)?;
    }
    let serving = front.serving.clone();
    let leader = match serving_or_leader(serving, front.cluster.clone(), STARTING_WAIT).await {
        // This coordinator leads now: it was starting when the request came.
        Ok(_) => return Ok(next.call(request).await?.map_into_left_body()),
        Err(leader) => leader,
    };
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_string();
    let answer = elsewhere(leader.as_ref(), front.https, &target);
    Ok(request.into_response(answer).map_into_right_body())
}

/// The answer of a standby to a request for `target` (a path and query).
fn elsewhere(leader: Option<&Peer>, https: bool, target: &str) -> HttpResponse {
    match leader {
        Some(leader) => match &leader.http {
            Some(http) => {
                let scheme = if https { "https" } else { "http" };
                let location = format!("{scheme}://{http}{target}");
                HttpResponse::build(StatusCode::TEMPORARY_REDIRECT)
                    .insert_header((header::LOCATION, location.clone()))
                    .json(serde_json::json!({
                        "error": format!(
                            "this coordinator is a standby; the leader serves this at {location}"
                        ),
                        "leader": leader.address,
                    }))
            }
            None => unavailable(
                format!(
                    "this coordinator is a standby; the leader is {} and serves no HTTP",
                    leader.address
                ),
                Some(&leader.address),
            ),
        },
        None => unavailable(
            "this coordinator is a standby and no leader yet holds the ledger's lease; try again \
             in a few seconds"
                .into(),
            None,
        ),
    }
}

fn unavailable(error: String, leader: Option<&String>) -> HttpResponse {
    HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE)
        .insert_header((header::RETRY_AFTER, "1"))
        .json(serde_json::json!({ "error": error, "leader": leader }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(http: Option<&str>) -> Peer {
        Peer {
            address: "a:7700".into(),
            http: http.map(str::to_string),
        }
    }

    #[test]
    fn a_standby_sends_requests_to_the_leader_or_says_there_is_none() {
        let known = leader(Some("a:7701"));
        let answer = elsewhere(Some(&known), false, "/api/jobs/3?x=1");
        assert_eq!(answer.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            answer.headers().get(header::LOCATION).unwrap(),
            "http://a:7701/api/jobs/3?x=1"
        );
        let https = elsewhere(Some(&known), true, "/");
        assert_eq!(
            https.headers().get(header::LOCATION).unwrap(),
            "https://a:7701/"
        );
        let no_http = elsewhere(Some(&leader(None)), false, "/");
        assert_eq!(no_http.status(), StatusCode::SERVICE_UNAVAILABLE);
        let nobody = elsewhere(None, false, "/");
        assert_eq!(nobody.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
