//! The live endpoint (feature `http`): the conventions Go users know, served
//! from inside the process.
//!
//! | path | serves |
//! | --- | --- |
//! | `/debug/pprof/heap` | gzipped pprof heap profile; `?debug=1` as text; `?seconds=N` what changed over N seconds |
//! | `/debug/pprof/allocs` | the same profile with `alloc_space` as the default view |
//! | `/debug/leakscope/refs` | the holder-chain profile of a heap snapshot (full mode); `?format=json` the snapshot summary |
//! | `/debug/leakscope/report` | the self-check as JSON; `?format=html` as a page |
//! | `/debug/leakscope/memory` | where RSS goes (heap in use and freed per arena, stacks, code, mappings, leakscope's own) as text; `?format=json` as JSON |
//!
//! Three ways to mount it: [`router`] (an axum `Router` to merge into a
//! service's own), [`hyper_service`] (for plain hyper servers) and [`serve`]
//! (a background thread with its own small runtime, for programs without
//! one). Building a profile or taking a snapshot runs on tokio's blocking
//! pool, never on the async workers, at most [`Options::max_concurrent_builds`]
//! at once (beyond that `429` with `Retry-After`), and every build shares
//! one symbolizer. [`serve`] closes connections that are slow to send
//! their headers or idle, and refuses to listen beyond loopback without a
//! token. Responses carry names, sizes and counts, never the contents of
//! memory.

mod handlers;
mod history;
pub mod query;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use axum::Router;

/// Settings of the endpoint.
#[derive(Debug, Clone)]
pub struct Options {
    /// If set, every request must carry `Authorization: Bearer <token>`.
    /// An empty token is refused.
    pub token: Option<String>,
    /// How often to record a point (a profile, and in full mode a snapshot)
    /// for the report's growth analysis; `None` records only when the report
    /// is requested.
    pub history_interval: Option<Duration>,
    /// The longest `?seconds=N` accepted.
    pub max_delta_seconds: u64,
    /// Profiles, snapshots and reports built at once; more requests get
    /// `429 Too Many Requests` with `Retry-After`, so the endpoint cannot
    /// make the service it diagnoses use much more memory than one build.
    pub max_concurrent_builds: usize,
    /// How long a connection may take to send a request's headers, and may
    /// stay idle between requests, before it is closed ([`serve`] only).
    pub header_timeout: Duration,
    /// Connections served at once; more are closed at once ([`serve`] only).
    pub max_connections: usize,
    /// Serve beyond loopback without a token. Off: [`serve_with`] refuses
    /// such an address, since heap profiles and reference chains describe
    /// the service's internals to whoever asks.
    pub allow_remote_without_token: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: None,
            history_interval: Some(Duration::from_secs(60)),
            max_delta_seconds: 300,
            max_concurrent_builds: 2,
            header_timeout: Duration::from_secs(10),
            max_connections: 64,
            allow_remote_without_token: false,
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

    pub fn with_max_concurrent_builds(mut self, builds: usize) -> Self {
        self.max_concurrent_builds = builds;
        self
    }

    pub fn with_header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// Serves beyond loopback without a token: anyone who can reach the
    /// port can read the service's heap profiles and reference chains.
    pub fn allow_remote_without_token(mut self) -> Self {
        self.allow_remote_without_token = true;
        self
    }

    /// Why these options cannot serve `addr`, if they cannot.
    fn refusal(&self, addr: &SocketAddr) -> Option<io::Error> {
        if self.token.as_deref() == Some("") {
            return Some(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the endpoint's token is empty (every request would be refused); set a token or none",
            ));
        }
        if !addr.ip().is_loopback() && self.token.is_none() && !self.allow_remote_without_token {
            return Some(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "refusing to serve heap profiles on {addr}, beyond loopback, without a token: \
                     set one (LEAKSCOPE_HTTP_TOKEN) or allow it explicitly \
                     (LEAKSCOPE_HTTP_ALLOW_REMOTE_WITHOUT_TOKEN=1)"
                ),
            ));
        }
        None
    }
}

/// The endpoint as an axum router with default [`Options`].
pub fn router() -> Router {
    router_with(Options::default())
}

/// The endpoint as an axum router.
pub fn router_with(options: Options) -> Router {
    // Every request's symbols come from one symbolizer, not one each.
    crate::export::symbolize::use_shared_service();
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

/// Serves the endpoint from a background thread. Refuses an address
/// beyond loopback without a token (unless
/// [`Options::allow_remote_without_token`]) and an empty token.
pub fn serve_with(addr: impl ToSocketAddrs, options: Options) -> io::Result<Handle> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if let Some(refused) = addrs.iter().find_map(|a| options.refusal(a)) {
        return Err(refused);
    }
    let listener = std::net::TcpListener::bind(&addrs[..])?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(crate::own_threads::register_current)
        .build()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let header_timeout = options.header_timeout;
    let max_connections = options.max_connections.max(1);
    let app = router_with(options);
    let thread = std::thread::Builder::new()
        .name("leakscope-http".into())
        .spawn(move || {
            crate::own_threads::register_current();
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                accept_loop(listener, app, header_timeout, max_connections, rx).await;
            });
        })?;
    Ok(Handle {
        local_addr,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

/// Accepts connections until `shutdown`: at most `max_connections` at
/// once, each closed when its headers take longer than `header_timeout`
/// (hyper's header timer also runs while a kept-alive connection waits for
/// its next request, so it is the idle timeout too).
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
    max_connections: usize,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let connections = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of descriptors, say: wait instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = builder.serve_connection(io, service).await;
            drop(permit);
        });
    }
}

/// Starts the endpoint if `LEAKSCOPE_HTTP` names where to listen (see
/// [`listen_addr`]; `LEAKSCOPE_HTTP_TOKEN` sets a token,
/// `LEAKSCOPE_HTTP_ALLOW_REMOTE_WITHOUT_TOKEN=1` allows serving beyond
/// loopback without one). The handle must be kept alive.
pub fn serve_from_env() -> io::Result<Option<Handle>> {
    let Some(spec) = std::env::var_os("LEAKSCOPE_HTTP") else {
        return Ok(None);
    };
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let spec = spec
        .into_string()
        .map_err(|_| invalid("LEAKSCOPE_HTTP is not UTF-8".into()))?;
    let mut options = Options::default();
    if let Some(token) = std::env::var_os("LEAKSCOPE_HTTP_TOKEN") {
        let token = token
            .into_string()
            .map_err(|_| invalid("LEAKSCOPE_HTTP_TOKEN is not UTF-8".into()))?;
        if token.is_empty() {
            return Err(invalid(
                "LEAKSCOPE_HTTP_TOKEN is set but empty; refusing to start the endpoint".into(),
            ));
        }
        options.token = Some(token);
    }
    match std::env::var("LEAKSCOPE_HTTP_ALLOW_REMOTE_WITHOUT_TOKEN").as_deref() {
        Err(_) | Ok("0") => {}
        Ok("1") => options.allow_remote_without_token = true,
        Ok(other) => {
            return Err(invalid(format!(
                "LEAKSCOPE_HTTP_ALLOW_REMOTE_WITHOUT_TOKEN={other}: expected 1 or 0"
            )))
        }
    }
    let addr = listen_addr(&spec).map_err(|e| invalid(format!("LEAKSCOPE_HTTP={spec}: {e}")))?;
    serve_with(addr, options).map(Some)
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
