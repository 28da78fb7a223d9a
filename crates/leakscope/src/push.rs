//! Pushing heap profiles to a fleet profiler (feature `push`): every
//! interval, the heap profile goes to a Pyroscope-compatible ingest endpoint
//! (`POST /ingest?name=APP{labels}&from=..&until=..&format=pprof`, the
//! profile as the `profile` part of a multipart form).
//!
//! The exporter must never hurt the service: it runs on its own thread,
//! keeps no queue (a profile that cannot be delivered after a few bounded
//! retries is dropped; the next interval sends a fresh one), and every
//! request has a timeout.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How to authenticate to the collector.
#[derive(Debug, Clone)]
pub enum Auth {
    Bearer(String),
    Basic { user: String, password: String },
}

/// Settings of the exporter.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// The collector's base URL, e.g. `http://pyroscope:4040`.
    pub endpoint: String,
    /// The application name (Pyroscope's `name`, without labels).
    pub app_name: String,
    /// Labels added to the name: `app{env=prod,region=eu}`.
    pub labels: Vec<(String, String)>,
    pub interval: Duration,
    /// Per request.
    pub timeout: Duration,
    /// Attempts after the first failure, with doubling pauses.
    pub retries: u32,
    pub auth: Option<Auth>,
    /// Pyroscope's `X-Scope-OrgID`, for multi-tenant collectors.
    pub tenant: Option<String>,
}

impl PushOptions {
    pub fn new(endpoint: impl Into<String>, app_name: impl Into<String>) -> Self {
        PushOptions {
            endpoint: endpoint.into(),
            app_name: app_name.into(),
            labels: Vec::new(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            retries: 2,
            auth: None,
            tenant: None,
        }
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// `app{k=v,...}`, as Pyroscope names a series.
    fn series_name(&self) -> String {
        if self.labels.is_empty() {
            return self.app_name.clone();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{}{{{}}}", self.app_name, labels.join(","))
    }
}

/// What the exporter has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Profiles the collector accepted.
    pub sent: u64,
    /// Requests that failed (each retry counts).
    pub failed_attempts: u64,
    /// Profiles given up on after every retry failed.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    failed_attempts: AtomicU64,
    dropped: AtomicU64,
}

/// A running exporter; dropping it stops it.
pub struct Pusher {
    stop: mpsc::Sender<()>,
    stopped: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl Pusher {
    pub fn stats(&self) -> PushStats {
        PushStats {
            sent: self.counters.sent.load(Ordering::Relaxed),
            failed_attempts: self.counters.failed_attempts.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }

    /// Stops the exporter (an upload in flight ends within its timeout).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Starts pushing the heap profile every `options.interval`.
pub fn start(options: PushOptions) -> io::Result<Pusher> {
    let (stop, stop_rx) = mpsc::channel::<()>();
    let stopped = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let thread = {
        let stopped = stopped.clone();
        let counters = counters.clone();
        std::thread::Builder::new()
            .name("leakscope-push".into())
            .spawn(move || {
                crate::own_threads::register_current();
                run(options, stop_rx, stopped, counters)
            })?
    };
    Ok(Pusher {
        stop,
        stopped,
        counters,
        thread: Some(thread),
    })
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn run(
    options: PushOptions,
    stop: mpsc::Receiver<()>,
    stopped: Arc<AtomicBool>,
    counters: Arc<Counters>,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(options.timeout))
        .http_status_as_error(true)
        .build()
        .into();
    let name = options.series_name();
    let mut from = SystemTime::now();
    loop {
        match stop.recv_timeout(options.interval) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let until = SystemTime::now();
        let profile = crate::heap_profile().encode_pprof();
        let mut delivered = false;
        for attempt in 0..=options.retries {
            if stopped.load(Ordering::Relaxed) {
                return;
            }
            if upload(&agent, &options, &name, from, until, &profile).is_ok() {
                delivered = true;
                break;
            }
            counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
            if attempt < options.retries {
                let pause = Duration::from_millis(250 << attempt.min(6)).min(options.interval / 2);
                if stop.recv_timeout(pause).is_ok() {
                    return;
                }
            }
        }
        if delivered {
            counters.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        from = until;
    }
}

/// A multipart/form-data body with the profile as its `profile` part. Written
/// by hand: one part, no streaming, and it keeps ureq's default features.
fn multipart(profile: &[u8]) -> (String, Vec<u8>) {
    let boundary = format!(
        "leakscope-{:016x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    );
    let mut body = Vec::with_capacity(profile.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(profile);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn upload(
    agent: &ureq::Agent,
    options: &PushOptions,
    name: &str,
    from: SystemTime,
    until: SystemTime,
    profile: &[u8],
) -> Result<(), ureq::Error> {
    let (content_type, body) = multipart(profile);
    let url = format!("{}/ingest", options.endpoint.trim_end_matches('/'));
    let mut request = agent
        .post(&url)
        .query("name", name)
        .query("from", unix_seconds(from).to_string())
        .query("until", unix_seconds(until).to_string())
        .query("format", "pprof")
        .query("spyName", "leakscope")
        .header("Content-Type", &content_type);
    match &options.auth {
        Some(Auth::Bearer(token)) => {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        Some(Auth::Basic { user, password }) => {
            request = request.header(
                "Authorization",
                &format!("Basic {}", base64(format!("{user}:{password}").as_bytes())),
            );
        }
        None => {}
    }
    if let Some(tenant) = &options.tenant {
        request = request.header("X-Scope-OrgID", tenant);
    }
    request.send(&body[..])?;
    Ok(())
}

/// Standard base64, for the Basic authorization header.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn series_names_carry_labels() {
        let o = PushOptions::new("http://x", "shop")
            .label("env", "prod")
            .label("az", "1");
        assert_eq!(o.series_name(), "shop{env=prod,az=1}");
    }
}
