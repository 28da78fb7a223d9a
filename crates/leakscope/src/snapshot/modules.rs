//! The roots in loaded objects: every writable segment (data and bss) of the
//! executable and its shared libraries, and the named variables in them.
//!
//! Gathered before threads are stopped (with `dl_iterate_phdr`, which takes
//! the loader lock, and by reading symbol tables), cached per object.

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::Mutex;

use blazesym::inspect::{source, Inspector};
use blazesym::SymType;

/// A writable segment of a loaded object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Index into [`Modules::paths`].
    pub(crate) module: u32,
}

/// A named variable (a Rust `static`, a C global) in a writable segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Variable {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) name: String,
    /// One of leakscope's own statics: never a root of the program's memory.
    pub(crate) own: bool,
}

/// Writable segments and variables of every loaded object, sorted by address.
#[derive(Debug, Default)]
pub(crate) struct Modules {
    pub(crate) paths: Vec<String>,
    pub(crate) segments: Vec<Segment>,
    pub(crate) variables: Vec<Variable>,
    /// Total size of the static TLS blocks of the loaded objects.
    pub(crate) static_tls_bytes: u64,
    /// Code of leakscope's own functions, sorted and disjoint: a stack
    /// frame executing it (and every frame it called) is leakscope's.
    pub(crate) own_code: Vec<(u64, u64)>,
}

struct Loaded {
    path: String,
    base: u64,
    segments: Vec<(u64, u64)>,
    tls_bytes: u64,
}

unsafe extern "C" fn collect_object(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info for the duration of the
    // call, and `data` is the &mut Vec<Loaded> we passed in.
    let (info, out) = unsafe { (&*info, &mut *data.cast::<Vec<Loaded>>()) };
    let path = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: dlpi_name is a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    let mut loaded = Loaded {
        path,
        base: info.dlpi_addr,
        segments: Vec::new(),
        tls_bytes: 0,
    };
    // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
    let headers = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    for ph in headers {
        if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_W != 0 && ph.p_memsz > 0 {
            let start = info.dlpi_addr + ph.p_vaddr;
            loaded.segments.push((start, start + ph.p_memsz));
        }
        if ph.p_type == libc::PT_TLS {
            loaded.tls_bytes += ph.p_memsz.next_multiple_of(ph.p_align.max(1));
        }
    }
    out.push(loaded);
    0
}

/// A variable of an object file: offset from its load base, size, name.
type FileVariable = (u64, u64, String);

/// What one object file's symbol table says: its variables, and the code of
/// leakscope's own functions in it (offsets from its load base).
#[derive(Default)]
struct FileSymbols {
    variables: Vec<FileVariable>,
    own_functions: Vec<(u64, u64)>,
}

/// Whether a demangled symbol is one of leakscope's own: the runtime
/// library's modules, the profile crate, the preload. By module, not by
/// crate name alone: the `leakscope` command's own crate is also named
/// `leakscope`, and what it runs (the demo, the lab) is a program's code.
pub(crate) fn is_own_symbol(name: &str) -> bool {
    const OWN: &[&str] = &[
        "leakscope::collect::",
        "leakscope::config::",
        "leakscope::export::",
        "leakscope::http::",
        "leakscope::labels::",
        "leakscope::own_threads::",
        "leakscope::profiler::",
        "leakscope::push::",
        "leakscope::settings::",
        "leakscope::snapshot::",
        "leakscope::span_labels::",
        "leakscope::testing::",
        "leakscope_profile::",
        "leakscope_preload::",
    ];
    let name = name.strip_prefix('<').unwrap_or(name);
    OWN.iter().any(|p| name.starts_with(p))
}

fn symbols_of(path: &str) -> FileSymbols {
    let inspector = Inspector::new();
    let mut src = source::Elf::new(path);
    src.debug_syms = false;
    let mut out = FileSymbols::default();
    let _ = inspector.for_each(&source::Source::Elf(src), |sym| {
        if let Some(size) = sym.size.filter(|&s| s > 0) {
            match sym.sym_type {
                SymType::Variable => {
                    out.variables
                        .push((sym.addr, size as u64, demangle(&sym.name)));
                }
                SymType::Function if is_own_symbol(&demangle(&sym.name)) => {
                    out.own_functions.push((sym.addr, sym.addr + size as u64));
                }
                _ => {}
            }
        }
        std::ops::ControlFlow::Continue(())
    });
    out
}

fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// Per object path: its symbols (offsets from base), read once.
static SYMBOL_CACHE: Mutex<Option<HashMap<String, FileSymbols>>> = Mutex::new(None);

/// Reads the loaded objects now.
pub(crate) fn loaded_modules() -> Modules {
    let mut loaded: Vec<Loaded> = Vec::new();
    // SAFETY: the callback matches dl_iterate_phdr's signature and only
    // writes to the Vec we pass as `data`.
    unsafe {
        libc::dl_iterate_phdr(
            Some(collect_object),
            (&mut loaded as *mut Vec<Loaded>).cast(),
        )
    };
    let exe = std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    for object in &mut loaded {
        if object.path.is_empty() {
            object.path = exe.clone();
        }
    }
    let mut modules = modules_of(loaded);
    // The preload's whole object is leakscope's code.
    if let Some(range) = crate::export::stacks::own_code_range() {
        modules.own_code.push(range);
        modules.own_code.sort_unstable();
        modules.own_code.dedup();
    }
    modules
}

/// An object of another process (a core file's, an attached one's).
pub(crate) struct ForeignObject {
    /// Its path in that process.
    pub(crate) name: String,
    /// Where its file is read here (symbols).
    pub(crate) file: String,
    pub(crate) base: u64,
    pub(crate) writable: Vec<(u64, u64)>,
}

/// The modules of another process, named by their paths in it.
pub(crate) fn foreign_modules(objects: &[ForeignObject]) -> Modules {
    let mut modules = modules_of(
        objects
            .iter()
            .map(|o| Loaded {
                path: o.file.clone(),
                base: o.base,
                segments: o.writable.clone(),
                tls_bytes: 0,
            })
            .collect(),
    );
    for path in &mut modules.paths {
        if let Some(o) = objects.iter().find(|o| &o.file == path) {
            path.clone_from(&o.name);
        }
    }
    modules
}

/// Where the variable `name` (as its symbol is spelled) lies in another
/// process, in whichever of its objects defines it, writable or not (a
/// static of pointers sits in the read-only-after-relocation part).
pub(crate) fn find_foreign_variable(objects: &[ForeignObject], name: &str) -> Option<u64> {
    let mut cache = SYMBOL_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    objects.iter().find_map(|o| {
        let symbols = cache
            .entry(o.file.clone())
            .or_insert_with(|| symbols_of(&o.file));
        symbols
            .variables
            .iter()
            .find(|(_, _, n)| n == name)
            .map(|(offset, _, _)| o.base + offset)
    })
}

/// Segments, variables and leakscope's own code of the loaded objects.
fn modules_of(loaded: Vec<Loaded>) -> Modules {
    let mut modules = Modules::default();
    let mut cache = SYMBOL_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    for object in loaded {
        let path = object.path;
        modules.static_tls_bytes += object.tls_bytes;
        if object.segments.is_empty() || path.starts_with("linux-vdso") || path.is_empty() {
            continue;
        }
        let index = modules.paths.len() as u32;
        let symbols = cache
            .entry(path.clone())
            .or_insert_with(|| symbols_of(&path));
        for &(start, end) in &symbols.own_functions {
            modules
                .own_code
                .push((object.base + start, object.base + end));
        }
        let vars = &symbols.variables;
        for &(start, end) in &object.segments {
            modules.segments.push(Segment {
                start,
                end,
                module: index,
            });
            for (offset, size, name) in vars.iter() {
                let addr = object.base + offset;
                if addr >= start && addr + size <= end {
                    modules.variables.push(Variable {
                        start: addr,
                        end: addr + size,
                        name: name.clone(),
                        own: is_own_symbol(name),
                    });
                }
            }
        }
        modules.paths.push(path);
    }
    modules.own_code.sort_unstable();
    modules.own_code.dedup();
    modules.segments.sort_by_key(|s| s.start);
    modules
        .variables
        .sort_by_key(|v| (v.start, std::cmp::Reverse(v.end)));
    // Keep variables disjoint: a variable nested in an earlier one (aliases)
    // is dropped.
    let mut last_end = 0;
    modules.variables.retain(|v| {
        let keep = v.start >= last_end;
        if keep {
            last_end = v.end;
        }
        keep
    });
    modules
}

#[cfg(test)]
mod tests {
    use super::*;

    static A_TEST_STATIC: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(7);

    #[test]
    fn own_symbols_are_the_runtime_s_not_the_command_s() {
        assert!(is_own_symbol("leakscope::export::periodic::write_set"));
        assert!(is_own_symbol(
            "<leakscope::profiler::Profiler<A> as core::alloc::global::GlobalAlloc>::alloc"
        ));
        assert!(is_own_symbol("leakscope_profile::codec::decode"));
        // The `leakscope` command's crate shares the name; its demo is not
        // leakscope's memory.
        assert!(!is_own_symbol("leakscope::commands::demo::CACHE"));
        assert!(!is_own_symbol("leakscope_lab::server::serve"));
        assert!(!is_own_symbol("myapp::leakscope::thing"));
    }

    #[test]
    fn finds_our_own_statics() {
        A_TEST_STATIC.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let m = loaded_modules();
        assert!(!m.segments.is_empty());
        let addr = &A_TEST_STATIC as *const _ as u64;
        let var = m
            .variables
            .iter()
            .find(|v| v.start <= addr && addr < v.end)
            .expect("the static is in a writable segment with a symbol");
        assert!(var.name.ends_with("A_TEST_STATIC"), "{}", var.name);
        assert!(m.segments.iter().any(|s| s.start <= addr && addr < s.end));
    }
}
