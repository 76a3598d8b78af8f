//! The dashboard: one page and its script and style, compiled into the binary, so it needs no
//! build step and no internet. The script polls the JSON API.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");

/// Only the coordinator's own assets and API may be used by the page.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub(super) fn routes(config: &mut web::ServiceConfig) {
    config
        .route(
            "/",
            web::get().to(|| asset(INDEX, "text/html; charset=utf-8")),
        )
        .route(
            "/assets/dashboard.js",
            web::get().to(|| asset(SCRIPT, "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/dashboard.css",
            web::get().to(|| asset(STYLE, "text/css; charset=utf-8")),
        );
}

async fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}
