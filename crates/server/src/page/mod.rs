//! The HTML pages besides the status page's monitor views (`monitor::page`): what they
//! share (`html`), the response-time chart (`svg`), the sweep pages (`sweeps`) and the
//! fleet agents' section of the status page (`fleet`). Everything is rendered on the
//! server; no page runs a script (the CSP forbids it), ranges and pages are links.

use axum::routing::get;
use axum::Router;

use crate::shared::AppState;

pub(crate) mod fleet;
pub(crate) mod html;
pub(crate) mod svg;
pub(crate) mod sweeps;

/// The sweep pages, to merge into the API's router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/sweeps", get(sweeps::list_page))
        .route("/sweeps/{id}", get(sweeps::sweep_page))
}
