//! Registers as the kernel lays them out (`user_regs_struct` on x86-64,
//! `user_pt_regs` on aarch64: in `NT_PRSTATUS` and from ptrace) turned into
//! the in-process snapshot's order ([`super::REGS`]).

use super::REGS;

/// Where `pr_reg` starts in `struct elf_prstatus` (both architectures).
pub(crate) const PRSTATUS_REGS_OFFSET: usize = 112;
/// Where `pr_pid` is in `struct elf_prstatus`.
pub(crate) const PRSTATUS_PID_OFFSET: usize = 32;

#[cfg(target_arch = "x86_64")]
mod arch {
    /// `EM_X86_64`.
    pub(crate) const MACHINE: u16 = 62;
    /// Words of `user_regs_struct`.
    pub(crate) const USER_REGS_WORDS: usize = 27;
    /// For each saved register (glibc's `gregs` order: r8..r15, rdi, rsi,
    /// rbp, rbx, rdx, rax, rcx, rsp, rip), its index in `user_regs_struct`
    /// (r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi,
    /// rdi, orig_rax, rip, cs, eflags, rsp, ss, fs_base, ...).
    pub(crate) const FROM_USER_REGS: [usize; super::REGS] =
        [9, 8, 7, 6, 3, 2, 1, 0, 14, 13, 4, 5, 12, 10, 11, 19, 16];
    /// `fs_base`: the thread pointer.
    pub(crate) const TP_IN_USER_REGS: Option<usize> = Some(21);
}

#[cfg(target_arch = "aarch64")]
mod arch {
    /// `EM_AARCH64`.
    pub(crate) const MACHINE: u16 = 183;
    /// x0..x30, sp, pc, pstate.
    pub(crate) const USER_REGS_WORDS: usize = 34;
    pub(crate) const FROM_USER_REGS: [usize; super::REGS] = {
        let mut m = [0; super::REGS];
        let mut i = 0;
        while i < super::REGS {
            m[i] = i;
            i += 1;
        }
        m
    };
    /// The thread pointer is not among them (`NT_ARM_TLS` has it).
    pub(crate) const TP_IN_USER_REGS: Option<usize> = None;
}

pub(crate) use arch::{MACHINE, USER_REGS_WORDS};

/// The saved registers and (x86-64) the thread pointer from the kernel's
/// register words.
pub(crate) fn from_user_regs(words: &[u64]) -> Option<([u64; REGS], Option<u64>)> {
    if words.len() < USER_REGS_WORDS {
        return None;
    }
    let mut regs = [0u64; REGS];
    for (r, &i) in regs.iter_mut().zip(arch::FROM_USER_REGS.iter()) {
        *r = words[i];
    }
    Some((regs, arch::TP_IN_USER_REGS.map(|i| words[i])))
}

/// Native-endian words of a byte slice (any alignment).
pub(crate) fn words_of(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
        .collect()
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn user_regs_map_to_gregs_order() {
        // Word i of user_regs_struct holds 100 + i.
        let words: Vec<u64> = (0..USER_REGS_WORDS as u64).map(|i| 100 + i).collect();
        let (regs, tp) = from_user_regs(&words).unwrap();
        // rsp is word 19, rip word 16, rbp word 4, r8 word 9, r15 word 0.
        assert_eq!(regs[crate::snapshot::threads::SP], 119);
        assert_eq!(regs[crate::snapshot::threads::PC], 116);
        assert_eq!(regs[crate::snapshot::threads::FP], 104);
        assert_eq!(regs[0], 109);
        assert_eq!(regs[7], 100);
        assert_eq!(tp, Some(121));
    }
}
