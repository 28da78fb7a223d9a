//! Heap snapshots from outside the process: memory images of a core file
//! ([`CoreImage`]) or of a live process ([`ProcessImage`], usually a frozen
//! copy the target forked for us, see [`attach`]), with the threads'
//! registers and the loaded objects, so that the snapshot analysis and the
//! glibc heap walker can run over them as they run over the snapshot
//! child's own address space.
//!
//! Both images implement the crate's `Memory` trait (checked reads of
//! aligned words); what else the analysis needs comes with them:
//! [`ThreadState`]s (registers in the in-process snapshot's order, thread
//! pointer) and [`LoadedObject`]s (load bias, writable segments, TLS
//! templates, build IDs, the files to read symbols from).

mod attach;
mod core_image;
mod heap;
mod inject;
mod objects;
mod permissions;
mod process;
mod ptrace;
mod regs;
mod snapshot;
mod spans;

pub use attach::{attach, AttachMethod, AttachOptions, Attached, Made, Step};
pub use core_image::{CoreImage, CoreOptions};
pub use heap::HeapWalk;
pub use objects::{FileMapping, LoadedObject, TlsTemplate};
pub use permissions::PtraceRefusal;
pub use process::{CopyPolicy, ProcessImage};
pub use snapshot::{snapshot_of_attached, snapshot_of_core};

/// Registers kept per thread: the in-process snapshot's order
/// (`snapshot::threads::SAVED_REGS`): on x86-64 glibc's `gregs` order
/// (r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip); on aarch64
/// x0..x30, sp, pc.
pub const REGS: usize = crate::snapshot::threads::SAVED_REGS;

/// One thread of the image, as it was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadState {
    pub tid: i32,
    pub regs: [u64; REGS],
    /// The thread pointer (`fs_base` on x86-64, `tpidr_el0` on aarch64):
    /// glibc's TCB, with static TLS below it on x86-64.
    pub tp: u64,
}

impl ThreadState {
    pub fn sp(&self) -> u64 {
        self.regs[crate::snapshot::threads::SP]
    }
    pub fn pc(&self) -> u64 {
        self.regs[crate::snapshot::threads::PC]
    }
    pub fn fp(&self) -> u64 {
        self.regs[crate::snapshot::threads::FP]
    }

    /// What the glibc heap walker needs of the thread.
    pub(crate) fn walker_ref(&self) -> crate::snapshot::glibc::ThreadRef {
        crate::snapshot::glibc::ThreadRef {
            tp: self.tp,
            sp: self.sp(),
        }
    }
}

/// What a region of an image holds (public mirror of the analysis's
/// region kinds, for listings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingKind {
    Anonymous,
    /// The program break area (`[heap]`): glibc's main arena.
    Heap,
    /// The main thread's stack.
    MainStack,
    File,
    /// `[vdso]`, `[vsyscall]` and the like.
    Special,
}

/// One region of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappingInfo {
    pub start: u64,
    pub end: u64,
    /// The image holds its bytes.
    pub readable: bool,
    pub writable: bool,
    pub kind: MappingKind,
}

pub(crate) fn mapping_info(r: &crate::snapshot::image::Region) -> MappingInfo {
    use crate::snapshot::image::RegionKind as K;
    MappingInfo {
        start: r.start,
        end: r.end,
        readable: r.readable,
        writable: r.writable,
        kind: match r.kind {
            K::Anonymous => MappingKind::Anonymous,
            K::Brk => MappingKind::Heap,
            K::MainStack => MappingKind::MainStack,
            K::File => MappingKind::File,
            K::Special => MappingKind::Special,
        },
    }
}
