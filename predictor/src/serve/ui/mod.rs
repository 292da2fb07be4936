//! A small web page for trying the model in a browser: `GET /` and `GET /ui`
//! serve it (public, nothing secret in it), `GET /ui/model` tells it what is
//! served (behind the API key, like the other model routes).
//!
//! The page, its script and its style are compiled into the binary, so the
//! server needs no files and the browser no CDN. Every URL in them is
//! relative, so the page works behind a proxy that mounts it on a sub-path.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hone_crds::contract::InputKind;
use serde::Serialize;

use super::state::AppState;
use crate::error::ErrorBody;

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");
const ICON_SVG: &str = include_str!("icon.svg");

/// Only this origin's script, style, images and fetches; no plugins, no
/// framing, no `<base>` rewriting. Inline script and style are refused too:
/// the page has none.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; object-src 'none'; base-uri 'none'; \
    frame-ancestors 'none'; form-action 'self'";

/// What the page shows about the served model.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UiModel {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// `image` or `tabular`: what `/predict` takes.
    #[schema(value_type = String)]
    pub kind: InputKind,
    /// Input shape of one sample, without the batch dimension.
    pub input_shape: Vec<i64>,
    /// Number of classes (regression: of named outputs).
    pub classes: usize,
    /// `classification`, `binary`, `multilabel` or `regression`.
    #[schema(value_type = String)]
    pub task: hone_crds::modelversion::Task,
}

/// The page.
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// The page's script.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// The page's style sheet.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// The page's icon (browsers ask for one; without it they log a 404).
pub async fn icon() -> Response {
    asset("image/svg+xml", ICON_SVG)
}

/// The served model's name, version and input, for the page.
#[utoipa::path(get, path = "/ui/model", tag = "ops",
    responses((status = 200, body = UiModel), (status = 401, body = ErrorBody)))]
pub async fn model(State(state): State<Arc<AppState>>) -> Json<UiModel> {
    let signature = &state.card.signature;
    Json(UiModel {
        name: state.name.clone(),
        version: state.version.clone(),
        kind: state.preprocessor.kind(),
        input_shape: signature.input_shape.clone(),
        classes: signature.classes.len(),
        task: signature.task,
    })
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // A new binary may serve a new page under the same URL.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin")),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_references_only_relative_urls_and_no_inline_code() {
        for (name, text) in [("index.html", INDEX_HTML), ("app.js", APP_JS), ("style.css", STYLE_CSS)] {
            for absolute in ["http://", "https://", "//", "src=\"/", "href=\"/", "fetch('/"] {
                let hit = text.lines().find(|l| l.contains(absolute) && !l.trim_start().starts_with("//"));
                assert!(hit.is_none(), "{name} has an absolute URL ({absolute}): {hit:?}");
            }
        }
        // The CSP refuses inline script and style: the page must not need them.
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="));
        assert!(!INDEX_HTML.contains("<style"));
        assert!(INDEX_HTML.contains("src=\"ui/app.js\"") && INDEX_HTML.contains("href=\"ui/style.css\""));
    }
}
