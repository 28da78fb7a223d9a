//! The live endpoint (feature `http`): the conventions Go users know, served
//! from inside the process.
//!
//! | path | serves |
//! | --- | --- |
//! | `/debug/pprof/heap` | gzipped pprof heap profile; `?debug=1` as text; `?seconds=N` what changed over N seconds |
//! | `/debug/pprof/allocs` | the same profile with `alloc_space` as the default view |
//! | `/debug/leakscope/refs` | the holder-chain profile of a heap snapshot (full mode); `?format=json` the snapshot summary |
//! | `/debug/leakscope/report` | the self-check as JSON; `?format=html` as a page |
//!
//! Three ways to mount it: [`router`] (an axum `Router` to merge into a
//! service's own), [`hyper_service`] (for plain hyper servers) and [`serve`]
//! (a background thread with its own small runtime, for programs without
//! one). Building a profile or taking a snapshot runs on tokio's blocking
//! pool, never on the async workers. Responses carry names, sizes and counts,
//! never the contents of memory.

mod handlers;
mod history;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use axum::Router;

/// Settings of the endpoint.
#[derive(Debug, Clone)]
pub struct Options {
    /// If set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// How often to record a point (a profile, and in full mode a snapshot)
    /// for the report's growth analysis; `None` records only when the report
    /// is requested.
    pub history_interval: Option<Duration>,
    /// The longest `?seconds=N` accepted.
    pub max_delta_seconds: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: None,
            history_interval: Some(Duration::from_secs(60)),
            max_delta_seconds: 300,
        }
    }
}

impl Options {
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn with_history_interval(mut self, interval: Option<Duration>) -> Self {
        self.history_interval = interval;
        self
    }
}

/// The endpoint as an axum router with default [`Options`].
pub fn router() -> Router {
    router_with(Options::default())
}

/// The endpoint as an axum router.
pub fn router_with(options: Options) -> Router {
    if let Some(interval) = options.history_interval {
        history::start_recorder(interval);
    }
    handlers::routes(options)
}

/// The endpoint as a hyper service, for servers built on hyper directly
/// (`hyper::server::conn::http1::Builder::new().serve_connection(io, svc)`).
pub fn hyper_service(options: Options) -> hyper_util::service::TowerToHyperService<Router> {
    hyper_util::service::TowerToHyperService::new(router_with(options))
}

/// Turns a listen specification into an address: a bare port (`6060`) or a
/// port with an empty host (`:6060`) means loopback; anything else is taken
/// as given (`0.0.0.0:6060` listens everywhere, on purpose).
pub fn listen_addr(spec: &str) -> io::Result<SocketAddr> {
    let spec = spec.trim();
    let port_only = spec.strip_prefix(':').unwrap_or(spec);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    spec.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{spec}: not an address to listen on"),
        )
    })
}

/// A running standalone endpoint; dropping it stops the server.
pub struct Handle {
    local_addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handle {
    /// Where it listens (with the actual port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the server and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves the endpoint from a background thread with default [`Options`].
/// Pass a loopback address (`"127.0.0.1:6060"`, or see [`listen_addr`])
/// unless the endpoint must be reachable from elsewhere.
pub fn serve(addr: impl ToSocketAddrs) -> io::Result<Handle> {
    serve_with(addr, Options::default())
}

/// Serves the endpoint from a background thread.
pub fn serve_with(addr: impl ToSocketAddrs, options: Options) -> io::Result<Handle> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    if !local_addr.ip().is_loopback() && options.token.is_none() {
        eprintln!(
            "leakscope: the profiling endpoint listens on {local_addr}, beyond loopback, without a token"
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(crate::own_threads::register_current)
        .build()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router_with(options);
    let thread = std::thread::Builder::new()
        .name("leakscope-http".into())
        .spawn(move || {
            crate::own_threads::register_current();
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
        })?;
    Ok(Handle {
        local_addr,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

/// Starts the endpoint if `LEAKSCOPE_HTTP` names where to listen (see
/// [`listen_addr`]; `LEAKSCOPE_HTTP_TOKEN` sets a token). The handle must be
/// kept alive.
pub fn serve_from_env() -> io::Result<Option<Handle>> {
    let Ok(spec) = std::env::var("LEAKSCOPE_HTTP") else {
        return Ok(None);
    };
    let mut options = Options::default();
    if let Ok(token) = std::env::var("LEAKSCOPE_HTTP_TOKEN") {
        options.token = Some(token);
    }
    serve_with(listen_addr(&spec)?, options).map(Some)
}

#[cfg(test)]
mod tests {
    use super::listen_addr;

    #[test]
    fn bare_ports_mean_loopback() {
        assert_eq!(listen_addr("6060").unwrap().to_string(), "127.0.0.1:6060");
        assert_eq!(listen_addr(":7070").unwrap().to_string(), "127.0.0.1:7070");
        assert_eq!(
            listen_addr("0.0.0.0:6060").unwrap().to_string(),
            "0.0.0.0:6060"
        );
        assert!(listen_addr("not an address").is_err());
    }
}
