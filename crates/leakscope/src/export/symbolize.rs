//! Turning return addresses into function names, files and lines (inlined
//! calls included), in one batch per profile, outside the allocator.

use blazesym::symbolize::{source, Input, Symbolized, Symbolizer};
use blazesym::Pid;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// One (possibly inlined) frame at an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SymFrame {
    pub(crate) name: String,
    pub(crate) file: String,
    pub(crate) line: i64,
}

thread_local! {
    /// A symbolizer kept by [`with_shared_symbolizer`] while it runs on this
    /// thread; outside that scope each batch gets its own, and the parsed
    /// debug information goes with it (a service should not keep tens of
    /// megabytes of DWARF between profiles). Export code only: the
    /// allocator's paths never touch it.
    static SHARED: RefCell<Option<Symbolizer>> = const { RefCell::new(None) };
}

fn new_symbolizer() -> Symbolizer {
    Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        // Demangled here (`demangle`): blazesym would take a plain C name
        // such as `f` or `i` for a mangled C++ type (`float`, `int`).
        .enable_demangling(false)
        .build()
}

/// A symbol's readable name: Rust's manglings (legacy and v0, without the
/// hash) and C++'s (Itanium, `_Z...`); any other name is a plain one and
/// stays as it is.
fn demangle(name: &str) -> String {
    if let Ok(rust) = rustc_demangle::try_demangle(name) {
        return format!("{rust:#}");
    }
    if name.starts_with("_Z") {
        if let Some(cpp) = cpp_demangle::Symbol::new(name)
            .ok()
            .and_then(|s| s.demangle().ok())
        {
            return cpp;
        }
    }
    name.to_string()
}

/// The executable file mappings of this process (`/proc/self/maps`): code
/// addresses outside them belong to nothing loaded now (a library closed
/// with `dlclose`) and are left unknown, never named after whatever file
/// occupies the range since. `None` if the maps cannot be read.
fn code_mappings() -> Option<Vec<(u64, u64)>> {
    let text = std::fs::read_to_string("/proc/self/maps").ok()?;
    let mut ranges = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or("");
        if !perms.contains('x') || !(path.starts_with('/') || path == "[vdso]") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            ranges.push((start, end));
        }
    }
    ranges.sort_unstable();
    Some(ranges)
}

/// Runs `f` with one symbolizer for every batch this thread symbolises in
/// it, so that outputs written together (the profile and the snapshot at
/// exit) read each binary's debug information once, not once each.
pub(crate) fn with_shared_symbolizer<R>(f: impl FnOnce() -> R) -> R {
    let (result, installed) = sharing_a_symbolizer(f);
    if installed {
        return_freed_memory();
    }
    result
}

/// [`with_shared_symbolizer`] in a process about to exit (the periodic
/// writer's child): nothing to give back, so no `malloc_trim` walk.
pub(crate) fn with_shared_symbolizer_then_exit<R>(f: impl FnOnce() -> R) -> R {
    sharing_a_symbolizer(f).0
}

/// Runs `f` with a shared symbolizer; whether this call installed it (and
/// has now dropped it).
fn sharing_a_symbolizer<R>(f: impl FnOnce() -> R) -> (R, bool) {
    // `try_with`: at exit this thread's thread-locals may be gone already;
    // then every batch simply gets its own symbolizer.
    let installed = SHARED
        .try_with(|s| {
            let mut shared = s.borrow_mut();
            let outermost = shared.is_none();
            if outermost {
                *shared = Some(new_symbolizer());
            }
            outermost
        })
        .unwrap_or(false);
    let result = f();
    if installed {
        let _ = SHARED.try_with(|s| s.borrow_mut().take());
    }
    (result, installed)
}

/// Gives the memory a dropped symbolizer freed back to the system, where
/// the heap is glibc's: its parsed debug information (tens of MB) is freed
/// in large blocks that raise glibc's trim threshold, so glibc would keep
/// it, and a small service would carry it as "freed, kept by the allocator"
/// between profiles. `malloc_trim` locks one arena at a time while it
/// walks its free chunks (a few ms on heaps of hundreds of MB); it runs on
/// the writing thread, after the outputs are written.
pub(crate) fn return_freed_memory() {
    if crate::snapshot::other_allocator().is_none() {
        // SAFETY: malloc_trim only returns free memory to the system; it
        // is called outside any allocator hook and any profiler lock.
        unsafe { libc::malloc_trim(0) };
    }
}

/// Symbolises code addresses of this process. For each input, the frames at
/// that address innermost first (inlined callees, then the function that
/// contains the code); empty when unknown.
pub(crate) fn symbolize_in_process(addrs: &[u64]) -> Vec<Vec<SymFrame>> {
    if addrs.is_empty() {
        return Vec::new();
    }
    super::names_memo::names(addrs, symbolize_now)
}

/// [`symbolize_in_process`] without the memo: every address through
/// blazesym.
pub(super) fn symbolize_now(addrs: &[u64]) -> Vec<Vec<SymFrame>> {
    let run = |symbolizer: &Symbolizer| symbolize_with(symbolizer, addrs);
    let shared = SHARED.try_with(|s| s.borrow().as_ref().map(&run));
    match shared {
        Ok(Some(frames)) => frames,
        Ok(None) if SERVICE_ENABLED.load(Ordering::Acquire) => {
            service::symbolize(addrs).unwrap_or_else(|| run(&new_symbolizer()))
        }
        _ => run(&new_symbolizer()),
    }
}

/// An object file of another process (a core file's, an attached one's):
/// where its file is, its load bias and the ranges it is mapped at.
pub(crate) struct ObjectCode<'a> {
    pub(crate) file: &'a std::path::Path,
    pub(crate) base: u64,
    pub(crate) mappings: &'a [(u64, u64)],
}

/// Symbolises code addresses of another process from its object files on
/// disk (each address as an offset in its object's virtual addresses).
pub(crate) fn symbolize_in_objects(
    addrs: &[u64],
    objects: &[ObjectCode<'_>],
) -> Vec<Vec<SymFrame>> {
    let mut out = vec![Vec::new(); addrs.len()];
    let symbolizer = new_symbolizer();
    for object in objects {
        let (at, offsets): (Vec<usize>, Vec<u64>) = addrs
            .iter()
            .enumerate()
            .filter(|&(_, &a)| object.mappings.iter().any(|&(s, e)| a >= s && a < e))
            .map(|(i, &a)| (i, a.wrapping_sub(object.base)))
            .unzip();
        if offsets.is_empty() {
            continue;
        }
        let src = source::Source::Elf(source::Elf::new(object.file));
        if let Ok(results) = symbolizer.symbolize(&src, Input::VirtOffset(&offsets)) {
            for (i, r) in at.into_iter().zip(results) {
                out[i] = frames_of(r);
            }
        }
    }
    out
}

/// A symbolizer for reading profiles written unnamed (a reader's, kept as
/// long as the caller keeps it: each binary's debug information is parsed
/// once for every profile it names).
pub(crate) fn reader_symbolizer() -> Symbolizer {
    new_symbolizer()
}

/// Symbolises offsets into one object file on disk (its debug information
/// from the file itself or a debug-file directory); `None` where the file
/// cannot be read.
pub(crate) fn symbolize_file_offsets(
    symbolizer: &Symbolizer,
    file: &std::path::Path,
    offsets: &[u64],
) -> Option<Vec<Vec<SymFrame>>> {
    let src = source::Source::Elf(source::Elf::new(file));
    let results = symbolizer
        .symbolize(&src, Input::FileOffset(offsets))
        .ok()?;
    Some(results.into_iter().map(frames_of).collect())
}

/// One batch through one symbolizer.
fn symbolize_with(symbolizer: &Symbolizer, addrs: &[u64]) -> Vec<Vec<SymFrame>> {
    let mut process = source::Process::new(Pid::Slf);
    process.perf_map = false;
    // /proc/self/map_files may need privileges; the symbolic paths in
    // /proc/self/maps work for our own process.
    process.map_files = false;
    let src = source::Source::Process(process);
    let mut out = vec![Vec::new(); addrs.len()];
    let (at, known): (Vec<usize>, Vec<u64>) = match code_mappings() {
        Some(code) => addrs
            .iter()
            .enumerate()
            .filter(|&(_, &a)| {
                let i = code.partition_point(|&(start, _)| start <= a);
                i > 0 && a < code[i - 1].1
            })
            .map(|(i, &a)| (i, a))
            .unzip(),
        None => addrs.iter().copied().enumerate().unzip(),
    };
    match symbolizer.symbolize(&src, Input::AbsAddr(&known)) {
        Ok(results) => {
            for (i, r) in at.into_iter().zip(results) {
                out[i] = frames_of(r);
            }
        }
        // One address the batch cannot take (its file changed or went
        // away) must not cost the others their names: one by one.
        Err(_) => {
            for (i, a) in at.into_iter().zip(known) {
                if let Ok(r) = symbolizer.symbolize_single(&src, Input::AbsAddr(a)) {
                    out[i] = frames_of(r);
                }
            }
        }
    }
    out
}

/// Whether batches outside a [`with_shared_symbolizer`] scope go to the one
/// symbolizer thread (the endpoint turns it on).
static SERVICE_ENABLED: AtomicBool = AtomicBool::new(false);

/// Routes every later batch not covered by [`with_shared_symbolizer`]
/// through one process-wide symbolizer (see [`service`]).
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn use_shared_service() {
    SERVICE_ENABLED.store(true, Ordering::Release);
}

/// One symbolizer for the whole process, on a thread of its own (blazesym's
/// `Symbolizer` cannot move between threads): concurrent requests of the
/// endpoint share its parsed debug information instead of each parsing
/// every binary again (about 50 MB each for a Rust service), so memory is
/// bounded by one parse whatever the number of requests. It is dropped
/// after [`KEEP`] without work, so a service does not keep the parsed
/// debug information between bursts.
mod service {
    use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    use super::{new_symbolizer, symbolize_with, SymFrame};
    use blazesym::symbolize::Symbolizer;

    /// How long the symbolizer outlives its last batch.
    pub(super) const KEEP: Duration = Duration::from_secs(10);

    struct Job {
        addrs: Vec<u64>,
        reply: SyncSender<Vec<Vec<SymFrame>>>,
    }

    static QUEUE: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();

    /// Symbolises on the shared thread; `None` if it cannot be reached.
    pub(super) fn symbolize(addrs: &[u64]) -> Option<Vec<Vec<SymFrame>>> {
        let queue = QUEUE.get_or_init(start).as_ref()?;
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job {
            addrs: addrs.to_vec(),
            reply,
        };
        queue.lock().ok()?.send(job).ok()?;
        answer.recv().ok()
    }

    fn start() -> Option<Mutex<mpsc::Sender<Job>>> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("leakscope-symbolizer".into())
            .spawn(move || serve(rx))
            .ok()?;
        Some(Mutex::new(tx))
    }

    fn serve(jobs: Receiver<Job>) {
        let _scope = crate::collect::thread::UntrackedScope::enter();
        let mut symbolizer: Option<Symbolizer> = None;
        loop {
            let job = if symbolizer.is_some() {
                match jobs.recv_timeout(KEEP) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        symbolizer = None;
                        super::return_freed_memory();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            };
            let s = symbolizer.get_or_insert_with(new_symbolizer);
            let _ = job.reply.send(symbolize_with(s, &job.addrs));
        }
    }
}

fn frames_of(result: Symbolized<'_>) -> Vec<SymFrame> {
    let Symbolized::Sym(sym) = result else {
        return Vec::new();
    };
    let location = |info: Option<&blazesym::symbolize::CodeInfo<'_>>| match info {
        Some(info) => (
            info.to_path().display().to_string(),
            info.line.map_or(0, i64::from),
        ),
        None => (String::new(), 0),
    };
    let mut frames: Vec<SymFrame> = sym
        .inlined
        .iter()
        .rev()
        .map(|inlined| {
            let (file, line) = location(inlined.code_info.as_ref());
            SymFrame {
                name: demangle(&inlined.name),
                file,
                line,
            }
        })
        .collect();
    let (file, line) = location(sym.code_info.as_deref());
    frames.push(SymFrame {
        name: demangle(&sym.name),
        file,
        line,
    });
    frames
}

/// Frames of the allocation machinery itself: the profiler and the global
/// allocator shims (the `allocator` class of [`leakscope_profile::frames`]).
/// Always dropped from the leaf end of a stack.
pub(crate) fn is_allocator_plumbing(name: &str) -> bool {
    leakscope_profile::frames::global().is_allocator(name)
}

/// Frames of Rust's standard library (`core`, `alloc`, `std`, and the crates
/// std vendors, such as `hashbrown` behind `HashMap`). At the leaf end of a
/// stack they are how memory gets allocated (`Vec::with_capacity`,
/// `RawVec::grow_one`, `HashMap::insert`), not who asked for it; they are
/// dropped there, as Go drops `runtime.mallocgc` and `growslice`, so that the
/// leaf is the caller's code.
///
/// The source file decides: the Rust distribution's sources are remapped to
/// `/rustc/<commit>/library/...` and `/rust/deps/...` in its debug info.
/// Without a file, the name decides (see [`is_standard_library_name`]). Both
/// lists live in [`leakscope_profile::frames`].
pub(crate) fn is_standard_library(frame: &SymFrame) -> bool {
    if frame.file.is_empty() {
        return is_standard_library_name(&frame.name);
    }
    leakscope_profile::frames::is_std_file(&frame.file)
}

/// Name-based fallback of [`is_standard_library`].
pub(crate) fn is_standard_library_name(name: &str) -> bool {
    leakscope_profile::frames::is_std_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_known_function() -> usize {
        std::hint::black_box(42)
    }

    #[test]
    fn plain_names_are_not_taken_for_mangled_types() {
        for plain in ["f", "d", "i", "x", "main", "malloc"] {
            assert_eq!(demangle(plain), plain);
        }
        assert_eq!(demangle("_Znwm"), "operator new(unsigned long)");
        assert_eq!(demangle("_ZN3foo3barEv"), "foo::bar()");
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
    }

    #[test]
    fn names_a_function_of_this_binary() {
        let addr = a_known_function as *const () as u64 + 1;
        let frames = symbolize_in_process(&[addr, 8]);
        assert_eq!(frames.len(), 2);
        let outer = frames[0].last().expect("symbolised");
        assert!(outer.name.ends_with("a_known_function"), "{}", outer.name);
        assert!(outer.file.ends_with("symbolize.rs"), "{}", outer.file);
        assert!(frames[1].is_empty(), "address 8 is not code");
    }

    #[test]
    fn recognises_allocator_plumbing() {
        assert!(is_allocator_plumbing(
            "<leakscope::profiler::Profiler<A> as core::alloc::global::GlobalAlloc>::alloc"
        ));
        // The CLI's binary crate is also called leakscope; its code is not plumbing.
        assert!(!is_allocator_plumbing(
            "leakscope::commands::demo::decode_body"
        ));
        assert!(is_allocator_plumbing("__rust_alloc"));
        assert!(is_allocator_plumbing(
            "leakscope::collect::backtrace::capture"
        ));
        assert!(!is_allocator_plumbing(
            "alloc::raw_vec::RawVec<T>::grow_one"
        ));
        assert!(!is_allocator_plumbing("leakscope_lab::server::handle"));
    }

    #[test]
    fn recognises_standard_library_frames() {
        for std_frame in [
            "alloc::raw_vec::RawVecInner<A>::try_allocate_in",
            "<alloc::alloc::Global>::alloc_impl",
            "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "<&str as alloc::string::ToString>::to_string",
            "<[T] as alloc::slice::hack::ConvertVec>::to_vec",
            "<alloc::vec::Vec<myapp::Foo> as core::clone::Clone>::clone",
            "core::iter::traits::iterator::Iterator::collect",
            "hashbrown::raw::RawTable<T,A>::reserve_rehash",
            "std::collections::hash::map::HashMap<K,V,S>::insert",
            "<T as core::convert::Into<U>>::into",
        ] {
            assert!(is_standard_library_name(std_frame), "{std_frame}");
        }
        for user_frame in [
            "main",
            "leaky::decode_request",
            "<myapp::Foo as core::clone::Clone>::clone",
            "bytes::bytes_mut::BytesMut::reserve_inner",
            "leaky::main::{{closure}}",
            "allocator_api2::alloc::Global",
            "corelib::thing",
        ] {
            assert!(!is_standard_library_name(user_frame), "{user_frame}");
        }
        let frame = |name: &str, file: &str| SymFrame {
            name: name.into(),
            file: file.into(),
            line: 1,
        };
        assert!(is_standard_library(&frame(
            "<[u8]>::to_vec_in::<alloc::alloc::Global>",
            "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/alloc/src/slice.rs"
        )));
        assert!(is_standard_library(&frame(
            "hashbrown::raw::RawTable::reserve_rehash",
            "/rust/deps/hashbrown-0.15.5/src/raw/mod.rs"
        )));
        assert!(!is_standard_library(&frame(
            "hashbrown::raw::RawTable::reserve_rehash",
            "/home/u/.cargo/registry/src/x/hashbrown-0.16.0/src/raw/mod.rs"
        )));
        assert!(!is_standard_library(&frame(
            "core::fake",
            "/work/app/src/main.rs"
        )));
    }
}
