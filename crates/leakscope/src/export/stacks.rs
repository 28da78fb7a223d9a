//! Call stacks as readers see them: return addresses symbolised in one batch,
//! inlined frames expanded, and the allocator's own frames (and, below the
//! first frame of other code, the standard library's) trimmed from the leaf
//! end. Shared by the pprof export and the snapshot report.

use leakscope_profile::dependencies::CrateVersion;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::symbolize::{
    is_allocator_plumbing, is_standard_library, symbolize_in_process, SymFrame,
};

/// The address of the call instruction a return address follows: what
/// symbolises to the calling line.
pub(crate) fn call_site(return_address: usize) -> u64 {
    (return_address as u64).saturating_sub(1)
}

/// One frame of an expanded stack: the index of the return address it came
/// from, its code address, and its symbol (`None` where unknown).
#[derive(Clone, Copy)]
pub(crate) struct ExpandedFrame<'a> {
    pub(crate) index: usize,
    pub(crate) addr: u64,
    pub(crate) frame: Option<&'a SymFrame>,
}

/// The address of a function of the front end, when the front end is an
/// object of its own (the `LD_PRELOAD` library): every frame in that object
/// is the allocator's, so it is trimmed by address, before symbolising, and
/// that object's debug information is never read.
static OWN_CODE_ADDR: AtomicUsize = AtomicUsize::new(0);

/// Marks the object containing `code` (an address of one of its functions)
/// as the front end's own: its frames at the leaf end of allocation stacks
/// are dropped without being symbolised.
pub fn mark_own_code(code: usize) {
    OWN_CODE_ADDR.store(code, Ordering::Relaxed);
}

/// The executable range of the front end's own object, if it marked one.
pub(crate) fn own_code_range() -> Option<(u64, u64)> {
    let addr = OWN_CODE_ADDR.load(Ordering::Relaxed) as u64;
    if addr == 0 {
        return None;
    }
    super::maps::code_range_of_object_at(addr)
}

/// Symbols of a batch of code addresses.
pub(crate) struct Symbols {
    frames: HashMap<u64, Vec<SymFrame>>,
    own_code: Option<(u64, u64)>,
}

impl Symbols {
    /// Symbolises the return addresses of every given stack, in one batch.
    pub(crate) fn for_stacks<'a>(stacks: impl Iterator<Item = &'a [usize]>) -> Symbols {
        Self::for_stacks_and_code(stacks, std::iter::empty())
    }

    /// Symbolises allocation stacks (their return addresses, except the
    /// front end's own frames, which are trimmed unread) and other code
    /// addresses as given, in one batch.
    pub(crate) fn for_stacks_and_code<'a>(
        stacks: impl Iterator<Item = &'a [usize]>,
        code: impl Iterator<Item = u64>,
    ) -> Symbols {
        let own_code = own_code_range();
        let is_own = |a: u64| own_code.is_some_and(|(start, end)| (start..end).contains(&a));
        let mut addrs: Vec<u64> = stacks
            .flat_map(|s| s.iter().map(|&r| call_site(r)))
            .filter(|&a| !is_own(a))
            .chain(code)
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        Symbols {
            frames: addrs
                .iter()
                .copied()
                .zip(symbolize_in_process(&addrs))
                .collect(),
            own_code,
        }
    }

    /// Symbols already known, by code address (a profile named after it
    /// was written).
    pub(crate) fn from_frames(frames: HashMap<u64, Vec<SymFrame>>) -> Symbols {
        Symbols {
            frames,
            own_code: None,
        }
    }

    /// Symbolises code addresses of another process (stack frames of its
    /// threads) from its object files.
    pub(crate) fn for_code_in_objects(
        code: impl Iterator<Item = u64>,
        objects: &[super::symbolize::ObjectCode<'_>],
    ) -> Symbols {
        let mut addrs: Vec<u64> = code.collect();
        addrs.sort_unstable();
        addrs.dedup();
        let names = super::symbolize::symbolize_in_objects(&addrs, objects);
        Symbols {
            frames: addrs.into_iter().zip(names).collect(),
            own_code: None,
        }
    }

    /// Whether a return address lies in the front end's own object.
    fn is_own(&self, ret: usize) -> bool {
        let addr = call_site(ret);
        self.own_code
            .is_some_and(|(start, end)| (start..end).contains(&addr))
    }

    /// The frames at one code address, innermost first (empty if unknown).
    pub(crate) fn at(&self, addr: u64) -> &[SymFrame] {
        self.frames.get(&addr).map_or(&[], Vec::as_slice)
    }

    /// A stack of return addresses, expanded (inlined frames included) and
    /// trimmed at the leaf end.
    pub(crate) fn expand(&self, stack: &[usize]) -> Vec<ExpandedFrame<'_>> {
        let expanded: Vec<ExpandedFrame<'_>> = stack
            .iter()
            .enumerate()
            .skip_while(|&(_, &ret)| self.is_own(ret))
            .flat_map(|(index, &ret)| {
                let addr = call_site(ret);
                match self.frames.get(&addr) {
                    Some(frames) if !frames.is_empty() => frames
                        .iter()
                        .map(|f| ExpandedFrame {
                            index,
                            addr,
                            frame: Some(f),
                        })
                        .collect(),
                    _ => vec![ExpandedFrame {
                        index,
                        addr,
                        frame: None,
                    }],
                }
            })
            .collect();
        let skip = leaf_frames_to_trim(&expanded);
        expanded.into_iter().skip(skip).collect()
    }

    /// Function names of a stack, leaf first, trimmed.
    pub(crate) fn names(&self, stack: &[usize]) -> Vec<String> {
        self.expand(stack)
            .iter()
            .map(|f| {
                f.frame.map_or_else(
                    || {
                        let unloaded = crate::collect::unloaded::UNLOADED_BIT as u64;
                        if f.addr & unloaded != 0 {
                            format!("{:#x} (unloaded)", f.addr & !unloaded)
                        } else {
                            format!("{:#x}", f.addr)
                        }
                    },
                    |s| s.name.clone(),
                )
            })
            .collect()
    }
}

/// Whether a source file belongs to a dependency (a registry or git crate,
/// vendored code) or to the Rust distribution, rather than to the
/// application being profiled.
pub(crate) fn is_dependency_file(file: &str) -> bool {
    leakscope_profile::frames::is_dependency_file(file)
}

/// The crate a (demangled) function name belongs to: its first path
/// segment, looking through `<impl ...>` brackets.
pub(crate) fn crate_of(name: &str) -> &str {
    leakscope_profile::frames::crate_of(name)
}

/// The dependency crates of some stacks: names as code spells them, and
/// the versions their registry source paths say.
#[derive(Default)]
pub(crate) struct Dependencies {
    pub(crate) crates: std::collections::BTreeSet<String>,
    pub(crate) versions: std::collections::BTreeSet<CrateVersion>,
}

impl Symbols {
    /// Crates whose code, in the given stacks, comes from dependencies.
    pub(crate) fn dependency_crates<'a>(
        &self,
        stacks: impl Iterator<Item = &'a [usize]>,
    ) -> Dependencies {
        let mut out = Dependencies::default();
        for stack in stacks {
            for f in self.expand(stack) {
                if let Some(sym) = f.frame.filter(|s| is_dependency_file(&s.file)) {
                    let krate = crate_of(&sym.name);
                    if !krate.is_empty() {
                        out.crates.insert(krate.to_string());
                    }
                    if let Some(v) = CrateVersion::of_file(&sym.file) {
                        out.versions.insert(v);
                    }
                }
            }
        }
        out
    }
}

/// The `LD_PRELOAD` library's exported hooks (`malloc`, `free`, ...): C
/// names, so recognised by their source file.
fn is_preload_hook(file: &str) -> bool {
    file.contains("leakscope-preload") && file.ends_with(".rs")
}

/// How many frames at the leaf end belong to the allocator or, below the
/// first frame of other code, to the standard library.
fn leaf_frames_to_trim(frames: &[ExpandedFrame<'_>]) -> usize {
    let plumbing = frames
        .iter()
        .take_while(|f| {
            f.frame
                .is_some_and(|s| is_allocator_plumbing(&s.name) || is_preload_hook(&s.file))
        })
        .count();
    let std = frames[plumbing..]
        .iter()
        .take_while(|f| f.frame.is_some_and(is_standard_library))
        .count();
    if plumbing + std < frames.len() {
        plumbing + std
    } else {
        // Nothing but the standard library (its own start-up allocations):
        // keep those frames rather than an empty stack.
        plumbing
    }
}
