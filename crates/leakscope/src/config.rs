//! Settings: what the code asks for, then what the environment says.
//!
//! The environment is read once, at the first allocation, with `getenv`
//! (std's `env::var` takes a lock and allocates, both unsafe inside the
//! allocator). Values are copied into fixed static storage.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::collect::unwind::UnwindPolicy;

/// What the profiler records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Pass every call straight to the inner allocator.
    Off,
    /// Track a Poisson sample of allocations (about one per `rate` bytes),
    /// with unbiased estimates: cheap enough for production.
    Sampled,
    /// Track every allocation: exact counts and sizes, and what heap snapshots
    /// need. For self-checks and tests.
    Full,
}

impl Mode {
    /// Parses `off`, `sampled` or `full` (any case).
    pub fn parse(s: &str) -> Option<Mode> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Some(Mode::Off),
            "sampled" => Some(Mode::Sampled),
            "full" => Some(Mode::Full),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Sampled => "sampled",
            Mode::Full => "full",
        }
    }
}

/// Default mean number of bytes between samples (512 KiB, as Go).
pub const DEFAULT_RATE: u64 = 512 * 1024;

/// Settings given in code, through [`crate::Profiler`]'s builder methods. A
/// `forced_*` value wins over the environment; a `default_*` value applies
/// when the environment says nothing.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub(crate) forced_mode: Option<Mode>,
    pub(crate) default_mode: Mode,
    pub(crate) forced_rate: Option<u64>,
    pub(crate) default_rate: u64,
    pub(crate) forced_seed: Option<u64>,
    /// Called once, right after the profiler is initialised (with the
    /// resolved settings in effect), outside any profiler lock. The library
    /// uses it to arrange the profile written at exit.
    pub(crate) on_init: Option<fn()>,
    /// What allocates the blocks: heap snapshots outside full mode walk
    /// glibc's heap, and need to know it is glibc's.
    pub(crate) heap: HeapKind,
}

/// Which allocator's heap the profiled blocks live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapKind {
    /// An allocator leakscope cannot walk (jemalloc, mimalloc, ...).
    Other,
    /// The C library's `malloc`: glibc's, unless another allocator replaced
    /// it (checked at snapshot time).
    System,
    /// glibc's own functions, called directly (the preload).
    Glibc,
}

impl Settings {
    pub const fn new() -> Self {
        Settings {
            forced_mode: None,
            default_mode: Mode::Sampled,
            forced_rate: None,
            default_rate: DEFAULT_RATE,
            forced_seed: None,
            on_init: None,
            heap: HeapKind::Other,
        }
    }

    /// Says which allocator's heap the blocks live in.
    pub const fn with_heap(mut self, heap: HeapKind) -> Self {
        self.heap = heap;
        self
    }
}

impl Settings {
    /// Also arranges the outputs the environment asks for (`LEAKSCOPE_OUT`,
    /// `LEAKSCOPE_REFS_OUT`, `LEAKSCOPE_DIR`), as [`crate::Profiler`] does:
    /// for other front ends (the `LD_PRELOAD` library).
    pub const fn with_standard_outputs(mut self) -> Self {
        self.on_init = Some(crate::export::at_exit::install);
        self
    }

    /// Runs `hook` once, right after initialisation, instead (a front end
    /// that wants the standard outputs calls
    /// [`crate::frontend::install_standard_outputs`] from it).
    pub const fn with_on_init(mut self, hook: fn()) -> Self {
        self.on_init = Some(hook);
        self
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::new()
    }
}

/// Settings after the environment was consulted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resolved {
    pub(crate) mode: Mode,
    pub(crate) rate: u64,
    pub(crate) seed: u64,
    pub(crate) unwind: UnwindPolicy,
}

/// Reads an environment variable without allocating. The slice borrows the
/// process environment; callers copy what they keep.
pub(crate) fn getenv(name: &std::ffi::CStr) -> Option<&'static str> {
    // SAFETY: `name` is NUL-terminated. getenv returns a pointer into the
    // environment block or null. It is read at once; like every C program
    // we assume nobody calls setenv concurrently during initialisation.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null getenv result is a NUL-terminated string.
    let bytes = unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes();
    std::str::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

/// Writes a warning to stderr without allocating.
pub(crate) fn warn(parts: &[&str]) {
    for part in std::iter::once(&"leakscope: ")
        .chain(parts)
        .chain(std::iter::once(&"\n"))
    {
        // SAFETY: writes `len` bytes from a live &str to fd 2.
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
}

impl Settings {
    pub(crate) fn resolve(&self) -> Resolved {
        let env_mode = getenv(c"LEAKSCOPE_MODE").and_then(|v| {
            let m = Mode::parse(v);
            if m.is_none() {
                warn(&[
                    "ignoring LEAKSCOPE_MODE=",
                    v,
                    " (expected off, sampled or full)",
                ]);
            }
            m
        });
        let env_rate = getenv(c"LEAKSCOPE_RATE").and_then(|v| match v.parse::<u64>() {
            Ok(r) if r >= 1 => Some(r),
            _ => {
                warn(&[
                    "ignoring LEAKSCOPE_RATE=",
                    v,
                    " (expected a number of bytes >= 1)",
                ]);
                None
            }
        });
        let unwind = match getenv(c"LEAKSCOPE_UNWIND") {
            None | Some("auto") => UnwindPolicy::Auto,
            Some("fp") => UnwindPolicy::FramePointers,
            Some("dwarf") => UnwindPolicy::Dwarf,
            Some(v) => {
                warn(&[
                    "ignoring LEAKSCOPE_UNWIND=",
                    v,
                    " (expected auto, fp or dwarf)",
                ]);
                UnwindPolicy::Auto
            }
        };
        if let Some(out) = getenv(c"LEAKSCOPE_OUT") {
            OUT_PATH.set(out);
        }
        if let Some(out) = getenv(c"LEAKSCOPE_REFS_OUT") {
            REFS_OUT_PATH.set(out);
        }
        if let Some(dir) = getenv(c"LEAKSCOPE_DIR") {
            PERIODIC_DIR.set(dir);
        }
        if let Some(v) = getenv(c"LEAKSCOPE_INTERVAL") {
            match v.parse::<f64>() {
                Ok(secs) if secs > 0.0 => {
                    PERIODIC_INTERVAL_MS.store((secs * 1000.0) as u64, Ordering::Relaxed)
                }
                _ => warn(&["ignoring LEAKSCOPE_INTERVAL=", v, " (expected seconds > 0)"]),
            }
        }
        Resolved {
            mode: self.forced_mode.or(env_mode).unwrap_or(self.default_mode),
            rate: self
                .forced_rate
                .or(env_rate)
                .unwrap_or(self.default_rate)
                .max(1),
            seed: self
                .forced_seed
                .or_else(|| getenv(c"LEAKSCOPE_SEED").and_then(|v| v.parse().ok()))
                .unwrap_or(0),
            unwind,
        }
    }
}

/// A path kept in static storage (no allocation at initialisation).
pub(crate) struct StaticPath {
    len: AtomicUsize,
    bytes: std::cell::UnsafeCell<[u8; 4096]>,
}

// SAFETY: `bytes` is written once, before `len` is published with release
// ordering, and only read after `len` is loaded with acquire ordering.
unsafe impl Sync for StaticPath {}

impl StaticPath {
    const fn new() -> Self {
        StaticPath {
            len: AtomicUsize::new(0),
            bytes: std::cell::UnsafeCell::new([0; 4096]),
        }
    }

    fn set(&self, path: &str) {
        if path.len() > 4096 || self.len.load(Ordering::Acquire) != 0 {
            warn(&["an output path is too long or set twice; ignored"]);
            return;
        }
        // SAFETY: only initialisation writes here, once (len is still 0 and
        // initialisation runs on one thread), and nobody reads before `len`
        // is published below.
        unsafe { (&mut *self.bytes.get())[..path.len()].copy_from_slice(path.as_bytes()) };
        self.len.store(path.len(), Ordering::Release);
    }

    pub(crate) fn get(&self) -> Option<&str> {
        let len = self.len.load(Ordering::Acquire);
        if len == 0 {
            return None;
        }
        // SAFETY: the first `len` bytes were written from a &str before `len`
        // was published, and are never written again.
        let bytes = unsafe { &(&*self.bytes.get())[..len] };
        std::str::from_utf8(bytes).ok()
    }
}

/// `LEAKSCOPE_OUT`: where to write the heap profile at exit.
pub(crate) static OUT_PATH: StaticPath = StaticPath::new();
/// `LEAKSCOPE_DIR`: where periodic profiles (and snapshots) go.
pub(crate) static PERIODIC_DIR: StaticPath = StaticPath::new();
/// `LEAKSCOPE_INTERVAL`, in milliseconds (0: no periodic output).
pub(crate) static PERIODIC_INTERVAL_MS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// `LEAKSCOPE_REFS_OUT`: where to write a heap snapshot at exit (a snapshot
/// file, or the refs profile if the name ends in `.pb.gz`).
pub(crate) static REFS_OUT_PATH: StaticPath = StaticPath::new();

/// Expands `%p` to the process id.
pub fn expand_path(template: &str) -> String {
    template.replace("%p", &std::process::id().to_string())
}
