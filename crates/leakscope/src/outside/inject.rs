//! Making a stopped target fork, in a way that survives leakscope being
//! killed at any instant (x86-64).
//!
//! The usual injection (point a thread at a `syscall` instruction, run it,
//! put the registers back) leaves a window in which a dead tracer means a
//! thread running on with the wrong registers. Here the registers are
//! never put back by leakscope: the kernel does it. Before anything is
//! changed, two signal frames (`struct rt_sigframe`) are written below the
//! chosen thread's red zone:
//!
//! - the thread's own frame: its registers exactly as stopped (a system call
//!   it was interrupted in is rewound to restart, as the kernel does for a
//!   signal handled with `SA_RESTART`), its signal mask, its FPU/SSE/AVX
//!   state (from `PTRACE_GETREGSET NT_X86_XSTATE`, with the signal frame's
//!   magic words), and an alternate-stack field the kernel refuses, so
//!   `sigaltstack` is left as it is;
//! - an exit frame for the child: registers that call `exit_group`, every
//!   signal blocked.
//!
//! Then the thread's registers are set to run `clone(CLONE_PARENT |
//! SIGCHLD, child stack = exit frame)` at a `syscall; ret` sequence found in
//! the target's code, with its stack pointer on its own frame, whose return
//! address is a `mov $15, %rax; syscall` sequence (`rt_sigreturn`, glibc's
//! `__restore_rt`). Whatever happens next, with or without leakscope:
//! the parent returns from `clone` into `ret`, then `rt_sigreturn`, which
//! restores every register, the mask and the FPU state atomically; the
//! child (stopped at birth for leakscope while it is alive, its tracer set
//! to kill it on exit) would do the same with the exit frame and end.
//! `CLONE_PARENT` makes the child the target's sibling, so the target
//! never has a child to reap (its parent reaps it like any other).
//!
//! What can still differ for the target: the bytes below its stack pointer
//! (as after any signal), a `SIGCHLD` to its parent, and, for the chosen
//! thread only, a restartable system call restarted. Threads sleeping in a
//! system call that restarts through `restart_syscall` (`nanosleep`, `poll`
//! or a futex wait with a timeout) are never chosen: `rt_sigreturn` would
//! turn the restart into `EINTR`. When no thread fits, or the target has a
//! seccomp filter (a forbidden `clone` could kill it), a shadow stack
//! (`ret` would fault), is its namespace's init (`CLONE_PARENT` is
//! refused there), or is stopped by job control, attach copies memory
//! while the target is stopped instead.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// `user_regs_struct` word indexes.
const RAX: usize = 10;
const RDX: usize = 12;
const RSI: usize = 13;
const RDI: usize = 14;
const ORIG_RAX: usize = 15;
const RIP: usize = 16;
const CS: usize = 17;
const EFLAGS: usize = 18;
const RSP: usize = 19;
const SS: usize = 20;
const R10: usize = 7;
const R8: usize = 9;
/// sigcontext's first 18 words from `user_regs_struct`: r8..r15, rdi,
/// rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags.
const SIGCONTEXT_FROM_USER: [usize; 18] =
    [9, 8, 7, 6, 3, 2, 1, 0, 14, 13, 4, 5, 12, 10, 11, 19, 16, 18];

const SYS_CLONE: u64 = 56;
const SYS_EXIT_GROUP: u64 = 231;
const CLONE_PARENT: u64 = 0x8000;
const SIGCHLD: u64 = 17;
/// Kernel-internal "restart me" errors a stopped system call returns.
const ERESTARTSYS: i64 = -512;
const ERESTARTNOINTR: i64 = -513;
const ERESTARTNOHAND: i64 = -514;
const ERESTART_RESTARTBLOCK: i64 = -516;

/// `struct rt_sigframe` up to and including `uc`: pretcode and
/// `struct ucontext` (flags, link, stack_t, sigcontext, sigset).
const FRAME: u64 = 8 + 304;
const RED_ZONE: u64 = 128;
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
const UC_FP_XSTATE: u64 = 1;
const UC_SIGCONTEXT_SS: u64 = 2;
const UC_STRICT_RESTORE_SS: u64 = 4;

/// Code the injection runs, found in the target's executable mappings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gadgets {
    /// `syscall; ret`.
    pub(crate) syscall_ret: u64,
    /// `mov $15, %rax; syscall` (or with `%eax`): `rt_sigreturn`.
    pub(crate) sigreturn: u64,
}

/// Why the target cannot be made to fork safely, if it cannot.
pub(crate) fn why_not(pid: i32) -> Option<String> {
    if !cfg!(target_arch = "x86_64") {
        return Some("fork injection is implemented on x86-64 only".into());
    }
    let field = |name| super::permissions::status_field(pid, name);
    if field("Seccomp").is_some_and(|v| v != "0") {
        return Some(
            "the target has a seccomp filter, which could kill it for calling clone".into(),
        );
    }
    if field("x86_Thread_features").is_some_and(|v| v.contains("shstk")) {
        return Some(
            "the target uses a shadow stack, which the injected return would violate".into(),
        );
    }
    if field("NSpid").is_some_and(|v| v.split_whitespace().last() == Some("1")) {
        return Some(
            "the target is its PID namespace's init, whose fork could not be handed to its parent"
                .into(),
        );
    }
    if field("State").is_some_and(|v| v.starts_with('T')) {
        return Some("the target is stopped by job control".into());
    }
    None
}

/// Finds the two sequences in the target's executable file mappings (libc
/// first, where `__restore_rt` is).
pub(crate) fn find_gadgets(pid: i32, mem: &File) -> Option<Gadgets> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mut code: Vec<(u64, u64, bool)> = maps
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (s, e) = f.first()?.split_once('-')?;
            let name = f.get(5).copied().unwrap_or("");
            (f.get(1)?.starts_with("r-x") && name.starts_with('/')).then(|| {
                (
                    u64::from_str_radix(s, 16).unwrap_or(0),
                    u64::from_str_radix(e, 16).unwrap_or(0),
                    name.contains("/libc"),
                )
            })
        })
        .collect();
    code.sort_by_key(|&(_, _, libc)| !libc);
    let (mut syscall_ret, mut sigreturn) = (None, None);
    for (start, end, _) in code {
        if end <= start || end - start > 256 << 20 {
            continue;
        }
        let mut bytes = vec![0u8; (end - start) as usize];
        if mem.read_exact_at(&mut bytes, start).is_err() {
            continue;
        }
        let find = |pattern: &[u8]| {
            bytes
                .windows(pattern.len())
                .position(|w| w == pattern)
                .map(|i| start + i as u64)
        };
        syscall_ret = syscall_ret.or_else(|| find(&[0x0f, 0x05, 0xc3]));
        sigreturn = sigreturn
            .or_else(|| find(&[0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0, 0x0f, 0x05]))
            .or_else(|| find(&[0xb8, 0x0f, 0, 0, 0, 0x0f, 0x05]));
        if let (Some(syscall_ret), Some(sigreturn)) = (syscall_ret, sigreturn) {
            return Some(Gadgets {
                syscall_ret,
                sigreturn,
            });
        }
    }
    None
}

/// Whether a thread stopped with these registers may run the injection:
/// not asleep in a system call that restarts through `restart_syscall`.
pub(crate) fn eligible(user_regs: &[u64]) -> bool {
    !(user_regs[ORIG_RAX] as i64 >= 0 && user_regs[RAX] as i64 == ERESTART_RESTARTBLOCK)
}

/// Everything the injection writes, prepared while nothing is changed yet.
pub(crate) struct Plan {
    /// Frames and FPU state, written at `at`.
    pub(crate) bytes: Vec<u8>,
    pub(crate) at: u64,
    /// The registers that make the thread clone.
    pub(crate) regs: Vec<u64>,
}

/// Builds the frames for a thread with registers `user`, signal mask
/// `mask` and extended state `xstate` (from `NT_X86_XSTATE`; empty if the
/// kernel has none to give, then only the legacy FPU/SSE state comes back,
/// from `fxsave`). `stack` is the writable mapping holding its stack
/// pointer.
pub(crate) fn plan(
    user: &[u64],
    mask: u64,
    xstate: &[u8],
    fxsave: &[u8],
    stack: (u64, u64),
    gadgets: Gadgets,
) -> Option<Plan> {
    let sp = user[RSP];
    let top = sp.checked_sub(RED_ZONE)?;
    let child = (top.checked_sub(FRAME)?) & !63;
    // The extended state the frame carries (see `signal_xstate_len`).
    let (xstate, xcr0) = if xstate.is_empty() {
        (xstate, 0)
    } else {
        let xcr0 = u64::from_ne_bytes(xstate.get(464..472)?.try_into().ok()?);
        let in_use = u64::from_ne_bytes(xstate.get(512..520)?.try_into().ok()?);
        (
            &xstate[..signal_xstate_len(xcr0, in_use, xstate.len())],
            xcr0,
        )
    };
    let fp_len = if xstate.is_empty() {
        512
    } else {
        xstate.len() as u64 + 4
    };
    let fp_at = (child.checked_sub(fp_len)?) & !63;
    let parent = (fp_at.checked_sub(FRAME)?) & !63;
    // A page of room below for whatever the kernel may push meanwhile.
    if parent.checked_sub(4096)? < stack.0 || sp > stack.1 {
        return None;
    }
    let mut bytes = vec![0u8; (top - parent) as usize];
    let put = |bytes: &mut Vec<u8>, addr: u64, data: &[u8]| {
        let at = (addr - parent) as usize;
        bytes[at..at + data.len()].copy_from_slice(data);
    };
    let put_word = |bytes: &mut Vec<u8>, addr: u64, w: u64| put(bytes, addr, &w.to_ne_bytes());

    // The thread's own frame: its registers as they were, a system call
    // it was stopped in rewound to restart.
    let mut regs_now = user.to_vec();
    let nr = user[ORIG_RAX] as i64;
    if nr >= 0
        && matches!(
            user[RAX] as i64,
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND
        )
    {
        regs_now[RAX] = user[ORIG_RAX];
        regs_now[RIP] = user[RIP] - 2;
    }
    let flags = if xstate.is_empty() { 0 } else { UC_FP_XSTATE };
    write_frame(
        &mut bytes,
        parent,
        parent,
        gadgets.sigreturn,
        flags,
        &regs_now,
        fp_at,
        mask,
    );
    // Its FPU state.
    if xstate.is_empty() {
        put(&mut bytes, fp_at, fxsave);
    } else {
        let mut x = xstate.to_vec();
        // struct _fpx_sw_bytes in the fxsave area's software bytes.
        let mut sw = [0u8; 48];
        sw[0..4].copy_from_slice(&FP_XSTATE_MAGIC1.to_ne_bytes());
        sw[4..8].copy_from_slice(&(x.len() as u32 + 4).to_ne_bytes());
        sw[8..16].copy_from_slice(&xcr0.to_ne_bytes());
        sw[16..20].copy_from_slice(&(x.len() as u32).to_ne_bytes());
        x[464..512].copy_from_slice(&sw);
        x.extend_from_slice(&FP_XSTATE_MAGIC2.to_ne_bytes());
        put(&mut bytes, fp_at, &x);
    }
    // The child's exit frame.
    let mut exit = user.to_vec();
    exit[RIP] = gadgets.syscall_ret;
    exit[RAX] = SYS_EXIT_GROUP;
    exit[RDI] = 0;
    exit[RSP] = child;
    exit[EFLAGS] = 0x202;
    write_frame(
        &mut bytes,
        parent,
        child,
        gadgets.sigreturn,
        0,
        &exit,
        0,
        u64::MAX,
    );
    let _ = put_word;

    let mut regs = user.to_vec();
    regs[RIP] = gadgets.syscall_ret;
    regs[RSP] = parent;
    regs[RAX] = SYS_CLONE;
    regs[ORIG_RAX] = u64::MAX;
    regs[RDI] = CLONE_PARENT | SIGCHLD;
    regs[RSI] = child;
    regs[RDX] = 0;
    regs[R10] = 0;
    regs[R8] = 0;
    Some(Plan {
        bytes,
        at: parent,
        regs,
    })
}

/// The legacy FXSAVE area and the XSAVE header: the least extended state
/// a signal frame may hold.
const XSAVE_MIN: usize = 512 + 64;

/// How much of a thread's extended state (standard XSAVE layout, `len`
/// bytes from `NT_X86_XSTATE`) its signal frame carries: up to the end of
/// the last component it has in use (`in_use`, the header's XSTATE_BV)
/// among those enabled (`xcr0`). Components not in use come back in their
/// initial state, which is what they hold.
///
/// Not the whole `len`: ptrace gives the size of every feature the machine
/// has, AMX's 8 KiB of tile data among them, while `rt_sigreturn` refuses
/// an extended state larger than the thread's own (tile data counts only
/// for a process that asked for AMX) and then restores the legacy
/// FPU/SSE part alone, zeroing the upper halves of the YMM registers and
/// every ZMM register, which glibc's string functions keep data in.
fn signal_xstate_len(xcr0: u64, in_use: u64, len: usize) -> usize {
    let mut end = XSAVE_MIN;
    for component in 2..64 {
        if (xcr0 & in_use) >> component & 1 == 1 {
            let (size, offset) = xsave_component(component);
            end = end.max(offset as usize + size as usize);
        }
    }
    end.min(len)
}

/// The size and offset of XSAVE state component `i` in the standard
/// layout (CPUID leaf 0xD, sub-leaf `i`). The tracer reads its own CPUID:
/// the layout is the machine's, the same in every process on it.
#[cfg(target_arch = "x86_64")]
fn xsave_component(i: u32) -> (u32, u32) {
    // CPUID is on every x86-64 processor; leaf 0xD is valid where XSAVE
    // is, which a non-empty NT_X86_XSTATE implies.
    let r = std::arch::x86_64::__cpuid_count(0xd, i);
    (r.eax, r.ebx)
}

#[cfg(not(target_arch = "x86_64"))]
fn xsave_component(_: u32) -> (u32, u32) {
    (0, 0)
}

/// Writes `struct rt_sigframe`'s pretcode and `uc` at `frame`.
#[allow(clippy::too_many_arguments)]
fn write_frame(
    bytes: &mut [u8],
    base: u64,
    frame: u64,
    pretcode: u64,
    fp_flag: u64,
    user: &[u64],
    fpstate: u64,
    mask: u64,
) {
    let mut words = [0u64; (FRAME / 8) as usize];
    words[0] = pretcode;
    // ucontext: flags, link, stack_t { sp, flags (3: neither SS_ONSTACK nor
    // SS_DISABLE, so the kernel leaves the alternate stack as it is), size }.
    words[1] = fp_flag | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS;
    words[2] = 0;
    words[3] = 0;
    words[4] = 3;
    words[5] = 0;
    // sigcontext at word 6.
    for (k, &i) in SIGCONTEXT_FROM_USER.iter().enumerate() {
        words[6 + k] = user[i];
    }
    // cs, gs, fs, ss (16 bits each).
    words[6 + 18] = (user[CS] & 0xffff) | ((user[SS] & 0xffff) << 48);
    // err, trapno, oldmask, cr2 stay 0; fpstate.
    words[6 + 23] = fpstate;
    // uc_sigmask after the 32-word sigcontext.
    words[6 + 32] = mask;
    let at = (frame - base) as usize;
    for (k, w) in words.iter().enumerate() {
        bytes[at + 8 * k..at + 8 * k + 8].copy_from_slice(&w.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_restore_a_syscall_and_lay_out_below_the_red_zone() {
        let mut user = vec![0u64; 27];
        user[RSP] = 0x7000_0000_3000;
        user[RIP] = 0x5555_0000_0102;
        user[ORIG_RAX] = 7; // poll, interrupted
        user[RAX] = ERESTARTNOHAND as u64;
        user[CS] = 0x33;
        user[SS] = 0x2b;
        // Every component of a machine with AMX enabled (ptrace gives the
        // size of them all), with x87, SSE and AVX in use: the frame holds
        // the state up to AVX's end (offset 576, 256 bytes), which a thread
        // without AMX tile data can restore.
        let mut xstate = vec![0u8; 11008];
        xstate[464..472].copy_from_slice(&0x602e7u64.to_ne_bytes());
        xstate[512..520].copy_from_slice(&7u64.to_ne_bytes());
        let g = Gadgets {
            syscall_ret: 0x1000,
            sigreturn: 0x2000,
        };
        let plan = plan(
            &user,
            0x4,
            &xstate,
            &[],
            (0x7000_0000_0000, 0x7000_0000_4000),
            g,
        )
        .unwrap();
        assert_eq!(plan.at % 64, 0);
        assert!(plan.at + plan.bytes.len() as u64 <= user[RSP] - RED_ZONE);
        let word = |addr: u64| {
            let i = (addr - plan.at) as usize;
            u64::from_ne_bytes(plan.bytes[i..i + 8].try_into().unwrap())
        };
        // The thread's frame sits where its stack pointer will be.
        assert_eq!(plan.regs[RSP], plan.at);
        assert_eq!(word(plan.at), 0x2000);
        let sc = plan.at + 8 + 40;
        // rip rewound onto the syscall, rax back to its number.
        assert_eq!(word(sc + 16 * 8), 0x5555_0000_0100);
        assert_eq!(word(sc + 13 * 8), 7);
        assert_eq!(word(sc + 15 * 8), 0x7000_0000_3000);
        assert_eq!(word(plan.at + 8 + 296), 0x4);
        // Its FPU state carries both magic words.
        let fp = word(sc + 23 * 8);
        assert_eq!(fp % 64, 0);
        let at = (fp - plan.at) as usize;
        assert_eq!(
            &plan.bytes[at + 464..at + 468],
            &FP_XSTATE_MAGIC1.to_ne_bytes()
        );
        assert_eq!(
            &plan.bytes[at + 832..at + 836],
            &FP_XSTATE_MAGIC2.to_ne_bytes()
        );
        // The child's stack is its exit frame: sigreturn into exit_group.
        let child = plan.regs[RSI];
        assert_eq!(word(child), 0x2000);
        assert_eq!(word(child + 8 + 40 + 13 * 8), SYS_EXIT_GROUP);
        assert_eq!(word(child + 8 + 40 + 16 * 8), 0x1000);
        assert_eq!(word(child + 8 + 296), u64::MAX);
        assert_eq!(plan.regs[RAX], SYS_CLONE);
        assert_eq!(plan.regs[ORIG_RAX], u64::MAX);
        // A stack with no room below refuses.
        assert!(super::plan(
            &user,
            0,
            &xstate,
            &[],
            (0x7000_0000_0c00, 0x7000_0000_2000),
            g
        )
        .is_none());
        // A sleep that restarts through restart_syscall is not eligible.
        user[RAX] = ERESTART_RESTARTBLOCK as u64;
        assert!(!eligible(&user));
    }
}
