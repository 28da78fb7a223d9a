//! Thin wrappers over the ptrace requests attach uses. Each returns the
//! `errno` on failure; none leaves a thread in a state that outlives
//! leakscope (a tracee whose tracer dies is detached and resumed by the
//! kernel, with any jobs-control trap cleared).

use std::io;

pub(crate) const PTRACE_EVENT_FORK: i32 = 1;

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn request(req: libc::c_uint, tid: i32, addr: u64, data: u64) -> io::Result<libc::c_long> {
    // SAFETY: every caller passes a request whose `addr`/`data` are plain
    // values or point to memory of the size the request writes or reads
    // (documented at each wrapper).
    check(unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    })
}

/// Attaches without stopping (`PTRACE_SEIZE`), with `options`.
pub(crate) fn seize(tid: i32, options: u64) -> io::Result<()> {
    request(libc::PTRACE_SEIZE, tid, 0, options).map(drop)
}

/// Stops a seized thread (it reports a `PTRACE_EVENT_STOP`).
pub(crate) fn interrupt(tid: i32) -> io::Result<()> {
    request(libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

/// Detaches, delivering `signal` (0: none) on resume.
pub(crate) fn detach(tid: i32, signal: i32) -> io::Result<()> {
    request(libc::PTRACE_DETACH, tid, 0, signal as u64).map(drop)
}

pub(crate) fn set_options(tid: i32, options: u64) -> io::Result<()> {
    request(libc::PTRACE_SETOPTIONS, tid, 0, options).map(drop)
}

/// Resumes to the next system call entry or exit.
pub(crate) fn resume_to_syscall(tid: i32, signal: i32) -> io::Result<()> {
    request(libc::PTRACE_SYSCALL, tid, 0, signal as u64).map(drop)
}

pub(crate) fn event_message(tid: i32) -> io::Result<u64> {
    let mut msg: libc::c_ulong = 0;
    // `data` points to one unsigned long the kernel writes.
    request(
        libc::PTRACE_GETEVENTMSG,
        tid,
        0,
        &mut msg as *mut libc::c_ulong as u64,
    )?;
    Ok(msg)
}

/// The blocked signals of a stopped thread.
pub(crate) fn sigmask(tid: i32) -> io::Result<u64> {
    let mut mask: u64 = 0;
    // PTRACE_GETSIGMASK: `addr` is the size of the set, `data` points to it.
    request(0x420a, tid, 8, &mut mask as *mut u64 as u64)?;
    Ok(mask)
}

pub(crate) fn set_sigmask(tid: i32, mask: u64) -> io::Result<()> {
    // PTRACE_SETSIGMASK: as above, read by the kernel.
    request(0x420b, tid, 8, &mask as *const u64 as u64).map(drop)
}

/// Reads a register set (`PTRACE_GETREGSET`) into `buf`; returns its
/// length.
pub(crate) fn regset(tid: i32, kind: u32, buf: &mut [u8]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // `data` points to an iovec over `buf`, which the kernel fills and
    // shortens to the set's length.
    request(
        libc::PTRACE_GETREGSET,
        tid,
        u64::from(kind),
        &mut iov as *mut libc::iovec as u64,
    )?;
    Ok(iov.iov_len)
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn user_regs(tid: i32) -> io::Result<Vec<u64>> {
    let mut words = vec![0u64; super::regs::USER_REGS_WORDS];
    // PTRACE_GETREGS writes one user_regs_struct (27 words) at `data`.
    request(libc::PTRACE_GETREGS, tid, 0, words.as_mut_ptr() as u64)?;
    Ok(words)
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn set_user_regs(tid: i32, words: &[u64]) -> io::Result<()> {
    assert!(words.len() >= super::regs::USER_REGS_WORDS);
    // PTRACE_SETREGS reads one user_regs_struct at `data`.
    request(libc::PTRACE_SETREGS, tid, 0, words.as_ptr() as u64).map(drop)
}

#[cfg(target_arch = "aarch64")]
pub(crate) fn set_user_regs(_tid: i32, _words: &[u64]) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(target_arch = "aarch64")]
pub(crate) fn user_regs(tid: i32) -> io::Result<Vec<u64>> {
    let mut buf = vec![0u8; super::regs::USER_REGS_WORDS * 8];
    let n = regset(tid, 1, &mut buf)?; // NT_PRSTATUS
    Ok(super::regs::words_of(&buf[..n]))
}

/// The thread pointer of a stopped thread.
pub(crate) fn thread_pointer(tid: i32, user_regs: &[u64]) -> io::Result<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        let _ = tid;
        Ok(user_regs[21])
    }
    #[cfg(target_arch = "aarch64")]
    {
        let _ = user_regs;
        let mut buf = [0u8; 8];
        regset(tid, 0x401, &mut buf)?; // NT_ARM_TLS
        Ok(u64::from_ne_bytes(buf))
    }
}

/// A wait status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// `PTRACE_EVENT_STOP`: the interrupt (signal SIGTRAP) or a group stop.
    Event { event: i32, signal: i32 },
    /// A system call entry or exit (with `PTRACE_O_TRACESYSGOOD`).
    Syscall,
    /// A signal is about to be delivered.
    Signal(i32),
    /// The thread is gone.
    Exited,
}

/// Waits for `tid` to stop or end.
pub(crate) fn wait(tid: i32) -> io::Result<Stop> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into our local.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        break;
    }
    Ok(if libc::WIFSTOPPED(status) {
        let signal = libc::WSTOPSIG(status);
        let event = status >> 16;
        if event != 0 {
            Stop::Event { event, signal }
        } else if signal == libc::SIGTRAP | 0x80 {
            Stop::Syscall
        } else {
            Stop::Signal(signal)
        }
    } else {
        Stop::Exited
    })
}
