//! `/metrics`: a fresh stats snapshot of the state root's containers in
//! the Prometheus text format, taken at each scrape (so an idle agent does
//! nothing between scrapes). The metric names are the ones scrapers know.

use std::net::SocketAddr;

use axum::{
    Router,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::net::TcpListener;

use super::{AgentError, Ctx};
use crate::accounting::metrics;

pub(super) async fn bind(addr: SocketAddr) -> Result<TcpListener, AgentError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Listen {
            addr: addr.to_string(),
            source,
        })
}

pub(super) async fn serve(ctx: Ctx, listener: TcpListener) {
    let app = Router::new()
        .route(
            "/metrics",
            get({
                let ctx = ctx.clone();
                move || scrape(ctx.clone())
            }),
        )
        .route(
            "/",
            get(|| async { text(StatusCode::OK, "palisade agent: metrics at /metrics\n") }),
        )
        .fallback(|| async {
            text(
                StatusCode::NOT_FOUND,
                "not found; metrics are at /metrics\n",
            )
        });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics server stopped");
    }
}

async fn scrape(ctx: Ctx) -> axum::response::Response {
    // Reading cgroups and maps blocks: off the event loop.
    let root = ctx.root.clone();
    let snapshot =
        tokio::task::spawn_blocking(move || crate::accounting::stats(&root, &[], None)).await;
    match snapshot {
        Ok(Ok(all)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            metrics::render(&all),
        )
            .into_response(),
        Ok(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("palisade: {e}\n"),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("palisade: {e}\n"),
        ),
    }
}

fn text(status: StatusCode, body: &str) -> axum::response::Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}
