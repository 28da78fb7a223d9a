//! Settings: what the code asks for, then what the environment says.
//!
//! Every `LEAKSCOPE_*` variable is listed once, in [`VARIABLES`], and read
//! and validated once per process, at the first allocation, with `getenv`
//! (std's `env::var` takes a lock and allocates, both unsafe inside the
//! allocator). Values are copied into fixed static storage. Each bad value
//! is named in one warning and ignored (the default applies); a program
//! that carries two copies of leakscope (its own `Profiler` under the
//! `LD_PRELOAD` library) warns from one of them only.

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
    /// Reads the wrapped allocator's own statistics for memory breakdowns
    /// (see [`crate::Profiler::with_allocator_stats`]).
    pub(crate) allocator_stats: Option<crate::memory::AllocatorStatsReader>,
    /// The wrapped allocator's type name (`std::any::type_name`), which
    /// says how it lays out threads' memory (see `collect::live_table`).
    pub(crate) inner_type: Option<fn() -> &'static str>,
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
            allocator_stats: None,
            inner_type: None,
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
    /// Leakscope's preload profiles this process: this profiler stays off
    /// and writes nothing.
    pub(crate) stood_down: bool,
}

/// One `LEAKSCOPE_*` variable: its name, what it accepts and what it does.
/// The README's settings table lists the same (a test keeps them equal).
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    pub name: &'static str,
    /// What a valid value looks like (also the text of its warning).
    pub expected: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Every variable leakscope reads, library, preload and CLI alike.
pub const VARIABLES: &[Variable] = &[
    Variable {
        name: "LEAKSCOPE_MODE",
        expected: "off, sampled or full",
        default: "sampled",
        meaning: "`sampled` (production), `full` (every allocation, exact), `off`",
    },
    Variable {
        name: "LEAKSCOPE_RATE",
        expected: "a number of bytes >= 1",
        default: "524288",
        meaning: "mean bytes between samples in sampled mode",
    },
    Variable {
        name: "LEAKSCOPE_SEED",
        expected: "a whole number from 0 to 18446744073709551615",
        default: "random",
        meaning: "fixed seed for reproducible sampling",
    },
    Variable {
        name: "LEAKSCOPE_UNWIND",
        expected: "auto, fp or dwarf",
        default: "auto",
        meaning: "`auto` (frame pointers, libunwind where they are missing), `fp`, `dwarf`",
    },
    Variable {
        name: "LEAKSCOPE_OUT",
        expected: "a file path of at most 4096 bytes",
        default: "unset",
        meaning: "write a heap profile here at normal exit (`%p` = pid)",
    },
    Variable {
        name: "LEAKSCOPE_REFS_OUT",
        expected: "a file path of at most 4096 bytes",
        default: "unset",
        meaning: "write a heap snapshot here at normal exit (JSON; refs pprof if it ends in `.pb.gz`)",
    },
    Variable {
        name: "LEAKSCOPE_DIR",
        expected: "a directory path of at most 4096 bytes",
        default: "unset",
        meaning: "where periodic profiles (and snapshots) go; alone, the last set is written at exit",
    },
    Variable {
        name: "LEAKSCOPE_INTERVAL",
        expected: "seconds from 0.01 to 31536000, with LEAKSCOPE_DIR set",
        default: "unset",
        meaning: "every INTERVAL seconds write `DIR/heap-<pid>-<n>.pb.gz`, `DIR/memory-<pid>-<n>.json` and `DIR/snapshot-<pid>-<n>.json`",
    },
    Variable {
        name: "LEAKSCOPE_SIGNAL",
        expected: "a real-time signal: SIGRTMIN+N, SIGRTMAX-N or its number",
        default: "SIGRTMIN+5",
        meaning: "the signal that stops threads for a snapshot (never one a program relies on, such as SIGTERM)",
    },
    Variable {
        name: "LEAKSCOPE_SNAPSHOT_TIMEOUT",
        expected: "whole seconds from 1 to 86400",
        default: "600",
        meaning: "how long a snapshot's analysis may run before it is abandoned",
    },
    Variable {
        name: "LEAKSCOPE_SNAPSHOT_BLOCKS",
        expected: "table, walk or check",
        default: "`table` in full mode, `walk` otherwise",
        meaning: "where snapshots take the blocks from: `table` (full mode's live table), `walk` (glibc's heap), `check` (both, compared)",
    },
    Variable {
        name: "LEAKSCOPE_LEAK_HEURISTICS",
        expected: "all, none, or a comma list of stdstring, length64, newarray, multipleinheritance",
        default: "all",
        meaning: "which interior pointers the leak check at exit takes as references, as Valgrind's `--leak-check-heuristics`",
    },
    Variable {
        name: "LEAKSCOPE_SYMBOLIZE",
        expected: "now or later",
        default: "now",
        meaning: "`now`: heap profiles written to files name their frames; `later`: they keep code addresses in their mappings (file, build ID, offset), named by `leakscope` when it reads them, from the binaries on disk",
    },
    Variable {
        name: "LEAKSCOPE_WRITER",
        expected: "child or process",
        default: "child",
        meaning: "where periodic sets are symbolised and written: `child` (a short-lived fork, so the service never holds the parsed debug information) or `process` (in the service, as before)",
    },
    Variable {
        name: "LEAKSCOPE_HTTP",
        expected: "a port (loopback) or an address to listen on",
        default: "unset",
        meaning: "serve the live endpoint from the process (`leakscope run --http`, the preload)",
    },
    Variable {
        name: "LEAKSCOPE_HTTP_TOKEN",
        expected: "a non-empty token",
        default: "unset",
        meaning: "every request to the endpoint must carry `Authorization: Bearer <token>`",
    },
    Variable {
        name: "LEAKSCOPE_HTTP_ALLOW_REMOTE_WITHOUT_TOKEN",
        expected: "1 or 0",
        default: "0",
        meaning: "serve beyond loopback without a token (otherwise refused)",
    },
    Variable {
        name: "LEAKSCOPE_PRELOAD_LIB",
        expected: "the path of libleakscope_preload.so",
        default: "next to `leakscope`",
        meaning: "the library `leakscope run` preloads",
    },
    Variable {
        name: "LEAKSCOPE_FRAMES",
        expected: "the path of a frame-class file",
        default: "unset",
        meaning: "frame classes for your own framework (`CLASS PATTERN` lines), read by `trend` and `report`",
    },
];

/// Index of a variable in [`VARIABLES`].
#[derive(Clone, Copy)]
enum Var {
    Mode,
    Rate,
    Seed,
    Unwind,
    Out,
    RefsOut,
    Dir,
    Interval,
    Signal,
    SnapshotTimeout,
    SnapshotBlocks,
    LeakHeuristics,
    Symbolize,
    Writer,
}

impl Var {
    fn info(self) -> &'static Variable {
        &VARIABLES[self as usize]
    }
}

/// Reads an environment variable without allocating; an empty value is
/// `None`. The slice borrows the process environment; callers copy what
/// they keep.
pub(crate) fn getenv(name: &std::ffi::CStr) -> Option<&'static str> {
    getenv_bytes(name)
        .and_then(|b| std::str::from_utf8(b).ok())
        .filter(|s| !s.is_empty())
}

/// Whether leakscope's `LD_PRELOAD` library is loaded in this process.
fn leakscope_preloaded() -> bool {
    getenv_bytes(c"LD_PRELOAD").is_some_and(|v| {
        v.split(|&b| b == b':' || b == b' ')
            .any(|lib| lib.ends_with(b"libleakscope_preload.so"))
    })
}

/// The raw bytes of a variable's value.
fn getenv_bytes(name: &std::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated. getenv returns a pointer into the
    // environment block or null. It is read at once; like every C program
    // we assume nobody calls setenv concurrently during initialisation.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null getenv result is a NUL-terminated string.
    Some(unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes())
}

/// A variable of the table as a C string (in `buf`).
fn c_name(var: Var, buf: &mut [u8; 64]) -> Option<&std::ffi::CStr> {
    let bytes = var.info().name.as_bytes();
    buf[..bytes.len()].copy_from_slice(bytes);
    std::ffi::CStr::from_bytes_until_nul(buf).ok()
}

/// Looks a variable of the table up by its name. An empty value counts as
/// unset (`LEAKSCOPE_MODE= ./service`), as it always has.
fn lookup(var: Var) -> Option<&'static str> {
    getenv(c_name(var, &mut [0u8; 64])?)
}

/// Whether a variable is set to bytes that are not UTF-8 text.
fn is_not_text(var: Var) -> bool {
    c_name(var, &mut [0u8; 64])
        .and_then(getenv_bytes)
        .is_some_and(|b| std::str::from_utf8(b).is_err())
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

/// What the environment said, validated.
#[derive(Clone, Copy)]
struct Environment {
    mode: Option<Mode>,
    rate: Option<u64>,
    seed: Option<u64>,
    unwind: UnwindPolicy,
    signal: Option<libc::c_int>,
    snapshot_timeout_secs: Option<u64>,
    snapshot_blocks: Option<SnapshotBlocks>,
    leak_heuristics: Option<Heuristics>,
    symbolize_later: Option<bool>,
    writer_in_child: Option<bool>,
    /// Bit `i` set: `VARIABLES[i]` had a bad value (ignored).
    rejected: u64,
}

const UNREAD: u8 = 0;
const READING: u8 = 1;
const READ: u8 = 2;

/// The environment, read once.
struct EnvironmentCell {
    state: std::sync::atomic::AtomicU8,
    value: std::cell::UnsafeCell<Environment>,
}

// SAFETY: `value` is written once, by the thread that moved `state` from
// UNREAD to READING, before it publishes READ with release ordering; it is
// only read after READ is seen with acquire ordering.
unsafe impl Sync for EnvironmentCell {}

static ENVIRONMENT: EnvironmentCell = EnvironmentCell {
    state: std::sync::atomic::AtomicU8::new(UNREAD),
    value: std::cell::UnsafeCell::new(Environment {
        mode: None,
        rate: None,
        seed: None,
        unwind: UnwindPolicy::Auto,
        signal: None,
        snapshot_timeout_secs: None,
        snapshot_blocks: None,
        leak_heuristics: None,
        symbolize_later: None,
        writer_in_child: None,
        rejected: 0,
    }),
};

/// The validated environment; the first caller reads it (and warns), later
/// ones wait the few microseconds that takes. Never allocates.
fn environment() -> Environment {
    let cell = &ENVIRONMENT;
    if cell
        .state
        .compare_exchange(UNREAD, READING, Ordering::Acquire, Ordering::Acquire)
        .is_ok()
    {
        let env = read_environment();
        // SAFETY: only the thread that won the exchange writes, once, and
        // nobody reads before READ is published below.
        unsafe { *cell.value.get() = env };
        cell.state.store(READ, Ordering::Release);
    }
    while cell.state.load(Ordering::Acquire) != READ {
        std::hint::spin_loop();
    }
    // SAFETY: READ was published after the value was written.
    unsafe { *cell.value.get() }
}

/// Whether another copy of leakscope in this process reads the same
/// variables and warns about them: the `LD_PRELOAD` library, when this
/// copy is not it (a program with its own `Profiler`, run under the
/// preload). Then this copy stays quiet.
fn another_copy_warns() -> bool {
    let preloaded = getenv(c"LD_PRELOAD").is_some_and(|p| p.contains("leakscope_preload"));
    preloaded && !this_copy_is_the_preload()
}

fn this_copy_is_the_preload() -> bool {
    // SAFETY: a zeroed Dl_info is valid for dladdr to fill in; dladdr does
    // not allocate. The address is of a function of this object.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(environment as *const () as *const libc::c_void, &mut info) == 0
            || info.dli_fname.is_null()
        {
            return false;
        }
        let name = std::ffi::CStr::from_ptr(info.dli_fname).to_bytes();
        name.windows(17).any(|w| w == b"leakscope_preload")
    }
}

/// Reads and validates every variable once.
fn read_environment() -> Environment {
    let quiet = another_copy_warns();
    let mut rejected = 0u64;
    let mut reject = |var: Var, value: &str, why: &[&str]| {
        rejected |= 1 << var as u32;
        if quiet {
            return;
        }
        let info = var.info();
        let mut parts: [&str; 8] = [""; 8];
        parts[0] = "ignoring ";
        parts[1] = info.name;
        parts[2] = "=";
        parts[3] = value;
        parts[4] = " (";
        let mut n = 5;
        for w in why.iter().take(2) {
            parts[n] = w;
            n += 1;
        }
        parts[n] = ")";
        warn(&parts[..=n]);
    };
    for var in [
        Var::Mode,
        Var::Rate,
        Var::Seed,
        Var::Unwind,
        Var::Out,
        Var::RefsOut,
        Var::Dir,
        Var::Interval,
        Var::Signal,
        Var::SnapshotTimeout,
        Var::SnapshotBlocks,
        Var::LeakHeuristics,
    ] {
        if is_not_text(var) {
            reject(var, "...", &["not UTF-8 text", ""]);
        }
    }
    let mode = lookup(Var::Mode).and_then(|v| {
        let m = Mode::parse(v);
        if m.is_none() {
            reject(Var::Mode, v, &["expected ", Var::Mode.info().expected]);
        }
        m
    });
    let rate = lookup(Var::Rate).and_then(|v| match v.parse::<u64>() {
        Ok(r) if r >= 1 => Some(r),
        _ => {
            reject(Var::Rate, v, &["expected ", Var::Rate.info().expected]);
            None
        }
    });
    let seed = lookup(Var::Seed).and_then(|v| match v.parse::<u64>() {
        Ok(s) => Some(s),
        Err(_) => {
            reject(Var::Seed, v, &["expected ", Var::Seed.info().expected]);
            None
        }
    });
    let unwind = match lookup(Var::Unwind) {
        None | Some("auto") => UnwindPolicy::Auto,
        Some("fp") => UnwindPolicy::FramePointers,
        Some("dwarf") => UnwindPolicy::Dwarf,
        Some(v) => {
            reject(Var::Unwind, v, &["expected ", Var::Unwind.info().expected]);
            UnwindPolicy::Auto
        }
    };
    for (var, path) in [
        (Var::Out, &OUT_PATH),
        (Var::RefsOut, &REFS_OUT_PATH),
        (Var::Dir, &PERIODIC_DIR),
    ] {
        match lookup(var) {
            None => {}
            Some(v) if !path.set(v) => reject(var, "...", &["expected ", var.info().expected]),
            Some(_) => {}
        }
    }
    if let Some(v) = lookup(Var::Interval) {
        match v.parse::<f64>() {
            _ if PERIODIC_DIR.get().is_none() => reject(
                Var::Interval,
                v,
                &[
                    "LEAKSCOPE_DIR is not set: periodic profiles need a directory",
                    "",
                ],
            ),
            Ok(secs) if (0.01..=31_536_000.0).contains(&secs) => {
                PERIODIC_INTERVAL_MS.store((secs * 1000.0).round() as u64, Ordering::Relaxed)
            }
            Ok(secs) if secs > 0.0 && secs < 0.01 => reject(
                Var::Interval,
                v,
                &[
                    "under 10 ms, too short to write profiles; expected ",
                    Var::Interval.info().expected,
                ],
            ),
            _ => reject(
                Var::Interval,
                v,
                &["expected ", Var::Interval.info().expected],
            ),
        }
    }
    let signal = lookup(Var::Signal).and_then(|v| match parse_realtime_signal(v) {
        Some(s) => Some(s),
        None => {
            let mut buf = [0u8; 16];
            reject(
                Var::Signal,
                v,
                &[
                    "expected a real-time signal, SIGRTMIN+N or SIGRTMAX-N, numbers ",
                    range_text(&mut buf),
                ],
            );
            None
        }
    });
    let snapshot_timeout_secs = lookup(Var::SnapshotTimeout).and_then(|v| match v.parse::<u64>() {
        Ok(s) if (1..=86_400).contains(&s) => Some(s),
        _ => {
            reject(
                Var::SnapshotTimeout,
                v,
                &["expected ", Var::SnapshotTimeout.info().expected],
            );
            None
        }
    });
    let snapshot_blocks = lookup(Var::SnapshotBlocks).and_then(|v| {
        let choice = SnapshotBlocks::parse(v);
        if choice.is_none() {
            reject(
                Var::SnapshotBlocks,
                v,
                &["expected ", Var::SnapshotBlocks.info().expected],
            );
        }
        choice
    });
    let leak_heuristics = lookup(Var::LeakHeuristics).and_then(|v| {
        let set = Heuristics::parse(v);
        if set.is_none() {
            reject(
                Var::LeakHeuristics,
                v,
                &["expected ", Var::LeakHeuristics.info().expected],
            );
        }
        set
    });
    // A setting of two values: `Some(true)` for `yes`, `Some(false)` for `no`.
    let mut either = |var: Var, yes: &str, no: &str| {
        lookup(var).and_then(|v| {
            if v == yes || v == no {
                Some(v == yes)
            } else {
                reject(var, v, &["expected ", var.info().expected]);
                None
            }
        })
    };
    let symbolize_later = either(Var::Symbolize, "later", "now");
    let writer_in_child = either(Var::Writer, "child", "process");
    if !quiet {
        warn_unknown_variables();
    }
    Environment {
        mode,
        rate,
        seed,
        unwind,
        signal,
        snapshot_timeout_secs,
        snapshot_blocks,
        leak_heuristics,
        symbolize_later,
        writer_in_child,
        rejected,
    }
}

/// "34 to 64": this system's real-time signal numbers, written into `buf`
/// (no allocation).
fn range_text(buf: &mut [u8; 16]) -> &str {
    let mut n = 0;
    let mut push = |bytes: &[u8]| {
        buf[n..n + bytes.len()].copy_from_slice(bytes);
        n += bytes.len();
    };
    let number = |v: libc::c_int, out: &mut [u8; 3]| -> usize {
        let v = v.clamp(0, 999) as u32;
        let digits = [(v / 100) as u8, (v / 10 % 10) as u8, (v % 10) as u8];
        let skip = if v >= 100 {
            0
        } else if v >= 10 {
            1
        } else {
            2
        };
        for (i, d) in digits[skip..].iter().enumerate() {
            out[i] = b'0' + d;
        }
        3 - skip
    };
    let mut digits = [0u8; 3];
    let len = number(libc::SIGRTMIN(), &mut digits);
    push(&digits[..len]);
    push(b" to ");
    let len = number(libc::SIGRTMAX(), &mut digits);
    push(&digits[..len]);
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

/// A real-time signal (`SIGRTMIN+N`, `RTMIN+N`, `SIGRTMAX-N`, or a number
/// from SIGRTMIN to SIGRTMAX). Anything else may be a signal the program
/// relies on (SIGTERM, SIGUSR1) or one that cannot be caught (SIGKILL).
fn parse_realtime_signal(v: &str) -> Option<libc::c_int> {
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let name = v.strip_prefix("SIG").unwrap_or(v);
    let signo = if let Some(rest) = name.strip_prefix("RTMIN") {
        min.checked_add(offset(rest, '+')?)?
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        max.checked_sub(offset(rest, '-')?)?
    } else {
        v.parse().ok()?
    };
    (min..=max).contains(&signo).then_some(signo)
}

/// "" → 0, "+3" → 3 (with `sign` '+').
fn offset(rest: &str, sign: char) -> Option<libc::c_int> {
    if rest.is_empty() {
        return Some(0);
    }
    rest.strip_prefix(sign)?.parse().ok()
}

/// Warns about `LEAKSCOPE_*` variables nobody reads (a misspelt name
/// would otherwise be ignored without a word).
fn warn_unknown_variables() {
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    // SAFETY: `environ` is libc's NULL-terminated array of NUL-terminated
    // strings; it is read once here, during initialisation.
    let mut p = unsafe { environ };
    if p.is_null() {
        return;
    }
    loop {
        // SAFETY: `p` walks the array up to its NULL terminator.
        let entry = unsafe { *p };
        if entry.is_null() {
            break;
        }
        // SAFETY: each entry is a NUL-terminated string.
        let bytes = unsafe { std::ffi::CStr::from_ptr(entry) }.to_bytes();
        if let Ok(text) = std::str::from_utf8(bytes) {
            let name = text.split('=').next().unwrap_or(text);
            if name.starts_with("LEAKSCOPE_") && !VARIABLES.iter().any(|v| v.name == name) {
                warn(&[
                    "ignoring unknown variable ",
                    name,
                    " (the LEAKSCOPE_* variables are listed in leakscope's README)",
                ]);
            }
        }
        // SAFETY: not past the terminator (checked above).
        p = unsafe { p.add(1) };
    }
}

/// Names of the variables whose values were rejected in this process (so
/// that `leakscope run` does not pass them on to be rejected again).
pub fn rejected_variables() -> impl Iterator<Item = &'static str> {
    let rejected = environment().rejected;
    VARIABLES
        .iter()
        .enumerate()
        .filter(move |(i, _)| rejected & (1 << i) != 0)
        .map(|(_, v)| v.name)
}

/// The signal that stops threads for a snapshot: `LEAKSCOPE_SIGNAL` if it
/// names a real-time signal, else `SIGRTMIN + 5` (glibc keeps the first
/// real-time signals for itself).
pub(crate) fn stop_signal() -> libc::c_int {
    environment().signal.unwrap_or_else(|| libc::SIGRTMIN() + 5)
}

/// Where snapshots take their blocks from (`LEAKSCOPE_SNAPSHOT_BLOCKS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SnapshotBlocks {
    Table,
    Walk,
    Check,
}

impl SnapshotBlocks {
    fn parse(v: &str) -> Option<SnapshotBlocks> {
        match v {
            "table" => Some(SnapshotBlocks::Table),
            "walk" => Some(SnapshotBlocks::Walk),
            "check" => Some(SnapshotBlocks::Check),
            _ => None,
        }
    }
}

/// The block source `LEAKSCOPE_SNAPSHOT_BLOCKS` asks for, if any.
pub(crate) fn snapshot_blocks() -> Option<SnapshotBlocks> {
    environment().snapshot_blocks
}

/// Valgrind's leak-check heuristics: interior pointers of known shapes that
/// the leak check at exit takes as references to their block (a bit each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heuristics(pub(crate) u8);

impl Heuristics {
    /// `std::string` of the old (copy-on-write) libstdc++ ABI: a pointer to
    /// the characters after length, capacity and reference count.
    pub(crate) const STD_STRING: u8 = 1;
    /// A block that starts with its remaining length, held past it.
    pub(crate) const LENGTH64: u8 = 2;
    /// `new[]` of objects with destructors: held past the element count.
    pub(crate) const NEW_ARRAY: u8 = 4;
    /// A C++ object held by a pointer to a base other than its first.
    pub(crate) const MULTIPLE_INHERITANCE: u8 = 8;
    pub(crate) const ALL: Heuristics = Heuristics(15);
    pub(crate) const NAMES: [(u8, &'static str); 4] = [
        (Self::STD_STRING, "stdstring"),
        (Self::LENGTH64, "length64"),
        (Self::NEW_ARRAY, "newarray"),
        (Self::MULTIPLE_INHERITANCE, "multipleinheritance"),
    ];

    /// Valgrind's syntax: `all`, `none`, or names separated by commas.
    pub(crate) fn parse(v: &str) -> Option<Heuristics> {
        match v {
            "all" => return Some(Self::ALL),
            "none" => return Some(Heuristics(0)),
            _ => {}
        }
        let mut set = 0;
        for name in v.split(',') {
            let (bit, _) = Self::NAMES.iter().find(|(_, n)| *n == name.trim())?;
            set |= bit;
        }
        Some(Heuristics(set))
    }
}

/// The heuristics of the leak check at exit (`LEAKSCOPE_LEAK_HEURISTICS`,
/// all by default, as in Valgrind).
pub(crate) fn leak_heuristics() -> Heuristics {
    environment().leak_heuristics.unwrap_or(Heuristics::ALL)
}

/// How long a snapshot's analysis may run (`LEAKSCOPE_SNAPSHOT_TIMEOUT`).
/// Whether heap profiles written to files leave their frames for the
/// reader to name (`LEAKSCOPE_SYMBOLIZE=later`).
pub(crate) fn symbolize_later() -> bool {
    environment().symbolize_later.unwrap_or(false)
}

/// Whether periodic sets are written by a forked child
/// (`LEAKSCOPE_WRITER`, `child` by default).
pub(crate) fn writer_in_child() -> bool {
    environment().writer_in_child.unwrap_or(true)
}

pub(crate) fn snapshot_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(environment().snapshot_timeout_secs.unwrap_or(600))
}

impl Settings {
    pub(crate) fn resolve(&self) -> Resolved {
        let env = environment();
        // Under `leakscope run`, the preload sees every allocation, this
        // binary's included: a profiler built into the binary stays off
        // rather than profile (and snapshot) the same blocks twice.
        let preloaded = self.heap != HeapKind::Glibc && leakscope_preloaded();
        Resolved {
            mode: if preloaded {
                Mode::Off
            } else {
                self.forced_mode.or(env.mode).unwrap_or(self.default_mode)
            },
            rate: self
                .forced_rate
                .or(env.rate)
                .unwrap_or(self.default_rate)
                .max(1),
            seed: self.forced_seed.or(env.seed).unwrap_or(0),
            unwind: env.unwind,
            stood_down: preloaded,
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

    /// Keeps `path`; false if it is too long (or a path was kept already).
    fn set(&self, path: &str) -> bool {
        if path.len() > 4096 || self.len.load(Ordering::Acquire) != 0 {
            return false;
        }
        // SAFETY: only initialisation writes here, once (len is still 0 and
        // initialisation runs on one thread), and nobody reads before `len`
        // is published below.
        unsafe { (&mut *self.bytes.get())[..path.len()].copy_from_slice(path.as_bytes()) };
        self.len.store(path.len(), Ordering::Release);
        true
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_of_each_variable_names_it() {
        for (var, name) in [
            (Var::Mode, "LEAKSCOPE_MODE"),
            (Var::Rate, "LEAKSCOPE_RATE"),
            (Var::Seed, "LEAKSCOPE_SEED"),
            (Var::Unwind, "LEAKSCOPE_UNWIND"),
            (Var::Out, "LEAKSCOPE_OUT"),
            (Var::RefsOut, "LEAKSCOPE_REFS_OUT"),
            (Var::Dir, "LEAKSCOPE_DIR"),
            (Var::Interval, "LEAKSCOPE_INTERVAL"),
            (Var::Signal, "LEAKSCOPE_SIGNAL"),
            (Var::SnapshotTimeout, "LEAKSCOPE_SNAPSHOT_TIMEOUT"),
            (Var::SnapshotBlocks, "LEAKSCOPE_SNAPSHOT_BLOCKS"),
            (Var::LeakHeuristics, "LEAKSCOPE_LEAK_HEURISTICS"),
            (Var::Symbolize, "LEAKSCOPE_SYMBOLIZE"),
            (Var::Writer, "LEAKSCOPE_WRITER"),
        ] {
            assert_eq!(var.info().name, name);
        }
        assert!(VARIABLES.len() < 64, "the rejected set is a u64");
    }

    #[test]
    fn heuristics_read_as_valgrind_writes_them() {
        assert_eq!(Heuristics::parse("all"), Some(Heuristics::ALL));
        assert_eq!(Heuristics::parse("none"), Some(Heuristics(0)));
        assert_eq!(
            Heuristics::parse("stdstring,newarray"),
            Some(Heuristics(Heuristics::STD_STRING | Heuristics::NEW_ARRAY))
        );
        assert_eq!(Heuristics::parse("stdstring,bogus"), None);
        assert_eq!(Heuristics::parse(""), None);
    }

    #[test]
    fn only_real_time_signals_stop_threads() {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        assert_eq!(parse_realtime_signal("SIGRTMIN+5"), Some(min + 5));
        assert_eq!(parse_realtime_signal("RTMIN+5"), Some(min + 5));
        assert_eq!(parse_realtime_signal("SIGRTMIN"), Some(min));
        assert_eq!(parse_realtime_signal("SIGRTMAX-2"), Some(max - 2));
        assert_eq!(parse_realtime_signal(&(min + 3).to_string()), Some(min + 3));
        for bad in [
            "15",
            "9",
            "SIGTERM",
            "SIGUSR1",
            "0",
            "-1",
            "SIGRTMAX+1",
            "SIGRTMIN-1",
            "x",
            "",
        ] {
            assert_eq!(parse_realtime_signal(bad), None, "{bad}");
        }
        assert_eq!(parse_realtime_signal(&(max + 1).to_string()), None);
        let mut buf = [0u8; 16];
        assert_eq!(range_text(&mut buf), format!("{min} to {max}"));
    }

    #[test]
    fn the_readme_lists_every_variable() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        for v in VARIABLES {
            assert!(
                readme.contains(&format!("| `{}` |", v.name)),
                "README.md's settings table lacks {}",
                v.name
            );
        }
    }
}
