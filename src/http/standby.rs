//! The HTTP side of a standby: every request goes to the leader, none is served or queued here.
//!
//! A request the leader's HTTP address is known for is redirected there with 307 (same path and
//! query; a 307 keeps the method and body, so a submission is sent again to the leader by
//! clients that follow redirects). Without one, the answer is 503 with the leader's protocol
//! address if that much is known, and `null` if no coordinator leads yet. Who may read and who
//! may change ([`super::access`]) is checked first, as on the leader: a standby tells no caller
//! more than the leader would.

use super::{access, ApiError, HttpFront, HttpState};
use crate::ha::Cluster;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use std::ops::Deref;
use std::sync::Arc;

/// The state of a coordinator that leads, for the handlers: taking it fails (503) on one that
/// does not, which the middleware below never lets through anyway.
pub(super) struct Serving(Arc<HttpState>);

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
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_string();
    let answer = elsewhere(&front.cluster.borrow(), front.https, &target);
    Ok(request.into_response(answer).map_into_right_body())
}

/// The answer of a standby to a request for `target` (a path and query).
fn elsewhere(cluster: &Cluster, https: bool, target: &str) -> HttpResponse {
    let leader = cluster
        .leader
        .as_ref()
        .filter(|leader| **leader != cluster.me);
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
    use crate::ha::{MemberRole, Peer};

    fn peer(address: &str, http: Option<&str>) -> Peer {
        Peer {
            address: address.into(),
            http: http.map(str::to_string),
        }
    }

    fn standby(leader: Option<Peer>) -> Cluster {
        Cluster {
            me: peer("b:7700", Some("b:7701")),
            role: MemberRole::Standby,
            leader,
            members: Vec::new(),
        }
    }

    #[test]
    fn a_standby_sends_requests_to_the_leader_or_says_there_is_none() {
        let cluster = standby(Some(peer("a:7700", Some("a:7701"))));
        let answer = elsewhere(&cluster, false, "/api/jobs/3?x=1");
        assert_eq!(answer.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            answer.headers().get(header::LOCATION).unwrap(),
            "http://a:7701/api/jobs/3?x=1"
        );
        let https = elsewhere(&cluster, true, "/");
        assert_eq!(
            https.headers().get(header::LOCATION).unwrap(),
            "https://a:7701/"
        );

        let no_http = elsewhere(&standby(Some(peer("a:7700", None))), false, "/");
        assert_eq!(no_http.status(), StatusCode::SERVICE_UNAVAILABLE);

        let nobody = elsewhere(&standby(None), false, "/");
        assert_eq!(nobody.status(), StatusCode::SERVICE_UNAVAILABLE);
        // This coordinator itself, stepping down, is no leader to send anyone to.
        let me = standby(None);
        let itself = Cluster {
            leader: Some(me.me.clone()),
            ..me
        };
        assert_eq!(
            elsewhere(&itself, false, "/").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
