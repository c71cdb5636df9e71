//! The web validator, like the old coreos.com/validate: `PUT /validate` (raw body) answers
//! `{"result":[{"kind":..,"line":..,"message":..}]}` with CORS, `GET /health`, and an HTML page at `/`.

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::validate::{self, Entry};

/// The page served at `/`.
const INDEX_HTML: &str = include_str!("index.html");

/// Largest accepted body; user-data is limited to 64 KiB on most clouds, so this is generous.
const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Serialize)]
struct ValidateResponse {
    result: Vec<Entry>,
}

/// The validator's routes.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
        .route(
            "/validate",
            axum::routing::put(validate_body).options(preflight),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(cors))
}

/// Serves the validator on an already-bound listener until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, PUT, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    response
}

#[tracing::instrument(skip_all)]
async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn health() -> &'static str {
    "OK"
}

async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[tracing::instrument(skip_all, fields(len = body.len()))]
async fn validate_body(body: Bytes) -> impl IntoResponse {
    let report = validate::validate(&body);
    axum::Json(ValidateResponse {
        result: report.entries,
    })
}
