//! The endpoint's routes. Every profile or snapshot is built on tokio's
//! blocking pool (`spawn_blocking`): symbolising a profile or stopping the
//! process for a snapshot must not stall the service's async workers. Builds
//! hold a permit of a small semaphore; a request that finds none gets 429
//! at once (queueing them would let a burst pile up memory and work).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use leakscope_profile::{delta::delta_profile, pb, StackView};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::query::{self, HeapQuery};
use super::{history, Options};

#[derive(Clone)]
struct AppState {
    options: Arc<Options>,
    builds: Arc<Semaphore>,
}

pub(super) fn routes(options: Options) -> Router {
    let state = AppState {
        builds: Arc::new(Semaphore::new(options.max_concurrent_builds.max(1))),
        options: Arc::new(options),
    };
    Router::new()
        .route("/debug/pprof/", get(index))
        .route("/debug/pprof/heap", get(heap))
        .route("/debug/pprof/allocs", get(allocs))
        .route("/debug/leakscope/refs", get(refs))
        .route("/debug/leakscope/report", get(report))
        .route("/debug/leakscope/memory", get(memory))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Compares without leaking, through timing, how much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.options.token.as_deref() == Some("") {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "leakscope: the endpoint was given an empty token; set a token or none",
        );
    }
    if let Some(token) = &state.options.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "leakscope: missing or wrong token\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut text = message.into();
    text.push('\n');
    (status, text).into_response()
}

/// A permit to build a profile, snapshot or report, if one is free.
fn build_permit(state: &AppState) -> Option<OwnedSemaphorePermit> {
    state.builds.clone().try_acquire_owned().ok()
}

/// The answer when every build permit is taken.
fn busy(state: &AppState) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "1")],
        format!(
            "leakscope: {} profiles are being built; retry in a second\n",
            state.options.max_concurrent_builds.max(1)
        ),
    )
        .into_response()
}

/// Runs profile-building work on the blocking pool, holding a build permit.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    let Some(permit) = build_permit(state) else {
        return Err(busy(state));
    };
    tokio::task::spawn_blocking(move || {
        let result = work();
        drop(permit);
        result
    })
    .await
    .map_err(|_| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "leakscope: profile task failed",
        )
    })
}

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "leakscope profiling endpoint\n\
         /debug/pprof/heap            heap profile (pprof; ?debug=1 text; ?seconds=N delta)\n\
         /debug/pprof/allocs          the same, alloc_space first\n\
         /debug/leakscope/refs        holder chains of a heap snapshot (pprof; ?format=json; full mode)\n\
         /debug/leakscope/report      the self-check (JSON; ?format=html)\n\
         /debug/leakscope/memory      where RSS goes: heap in use and freed, stacks, code, mappings (text; ?format=json)\n",
    )
        .into_response()
}

async fn heap(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    heap_like(&state, query.as_deref(), "inuse_space").await
}

async fn allocs(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    heap_like(&state, query.as_deref(), "alloc_space").await
}

fn set_default_type(p: &mut pb::Profile, name: &str) {
    let index = match p.string_table.iter().position(|s| s == name) {
        Some(i) => i,
        None => {
            p.string_table.push(name.to_string());
            p.string_table.len() - 1
        }
    };
    p.default_sample_type = index as i64;
}

async fn heap_like(state: &AppState, query: Option<&str>, default_type: &str) -> Response {
    let HeapQuery { debug, seconds } =
        match query::parse_heap(query.unwrap_or(""), state.options.max_delta_seconds) {
            Ok(q) => q,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("leakscope: {e}")),
        };
    let take = || blocking(state, || crate::heap_profile().to_pprof());
    let mut profile = match seconds {
        None => match take().await {
            Ok(p) => p,
            Err(e) => return e,
        },
        Some(s) => {
            let base = match take().await {
                Ok(p) => p,
                Err(e) => return e,
            };
            tokio::time::sleep(Duration::from_secs(s)).await;
            let new = match take().await {
                Ok(p) => p,
                Err(e) => return e,
            };
            delta_profile(&StackView::new(&base), &StackView::new(&new))
        }
    };
    set_default_type(&mut profile, default_type);
    if debug {
        let view = StackView::new(&profile);
        let index = view.default_index;
        let mut text = String::new();
        for c in &view.comments {
            text.push_str(c);
            text.push('\n');
        }
        text.push_str(&leakscope_profile::top(&view, index, 50).render());
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response();
    }
    let file = if default_type == "alloc_space" {
        "allocs"
    } else {
        "heap"
    };
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}.pb.gz\""),
            ),
        ],
        leakscope_profile::encode_gzip(&profile),
    )
        .into_response()
}

async fn refs(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let json = match query::parse_format(query.as_deref().unwrap_or(""), &["json", "pprof"]) {
        Ok(q) => q.format.as_deref() == Some("json"),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("leakscope: {e}")),
    };
    let snapshot = match blocking(&state, crate::snapshot).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return e,
    };
    if json {
        (
            [(header::CONTENT_TYPE, "application/json")],
            snapshot.report().to_json(),
        )
            .into_response()
    } else {
        (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"refs.pb.gz\"",
                ),
            ],
            snapshot.encode_refs_pprof(),
        )
            .into_response()
    }
}

async fn report(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let html = match query::parse_format(query.as_deref().unwrap_or(""), &["json", "html"]) {
        Ok(q) => q.format.as_deref() == Some("html"),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("leakscope: {e}")),
    };
    let check = match blocking(&state, history::self_check).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    if html {
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            check.html(),
        )
            .into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], check.json()).into_response()
    }
}

/// Where the process's RSS goes, without stopping it (smaps, the
/// allocator's statistics, the profiler's live figures): sizes per part,
/// never memory contents or mapping names.
async fn memory(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let json = match query::parse_format(query.as_deref().unwrap_or(""), &["text", "json"]) {
        Ok(q) => q.format.as_deref() == Some("json"),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("leakscope: {e}")),
    };
    let breakdown = match blocking(&state, crate::memory::breakdown).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("leakscope: cannot read this process's memory map: {e}"),
            )
        }
        Err(e) => return e,
    };
    if json {
        (
            [(header::CONTENT_TYPE, "application/json")],
            breakdown.to_json(),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            breakdown.render(),
        )
            .into_response()
    }
}
