//! Why ptrace was refused, in one line that says how to fix it.

use std::fmt;

/// Why leakscope may not trace a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtraceRefusal {
    NoProcess {
        pid: i32,
    },
    /// Another debugger or tracer holds it (only one tracer per thread).
    AlreadyTraced {
        pid: i32,
        tracer: i32,
        tracer_name: String,
    },
    /// Yama's `kernel.yama.ptrace_scope` forbids it.
    Yama {
        pid: i32,
        scope: u32,
    },
    /// No `CAP_SYS_PTRACE` (a container without it, or another user's
    /// process).
    NoCapability {
        pid: i32,
        target_uid: Option<u32>,
        own_uid: u32,
    },
    Other {
        pid: i32,
        error: String,
    },
}

impl fmt::Display for PtraceRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PtraceRefusal::NoProcess { pid } => write!(f, "no process {pid}"),
            PtraceRefusal::AlreadyTraced { pid, tracer, tracer_name } => write!(
                f,
                "process {pid} is already traced by process {tracer} ({tracer_name}): a thread has one tracer at a time; detach that debugger or tracer first"
            ),
            PtraceRefusal::Yama { pid, scope: 3 } => write!(
                f,
                "cannot trace process {pid}: Yama's kernel.yama.ptrace_scope is 3 (no tracing at all until reboot); take a core with the kernel instead (kill -QUIT, coredumpctl) and run leakscope core"
            ),
            PtraceRefusal::Yama { pid, scope } => write!(
                f,
                "cannot trace process {pid}: Yama's kernel.yama.ptrace_scope is {scope} ({}); run leakscope as root or give it CAP_SYS_PTRACE (setcap cap_sys_ptrace+ep), or set sysctl kernel.yama.ptrace_scope=0",
                if *scope == 1 { "only a parent may trace its descendants" } else { "only CAP_SYS_PTRACE may trace" }
            ),
            PtraceRefusal::NoCapability { pid, target_uid, own_uid } => match target_uid {
                Some(uid) if uid != own_uid => write!(
                    f,
                    "cannot trace process {pid}: it belongs to uid {uid} and leakscope runs as uid {own_uid} without CAP_SYS_PTRACE; run it as that user or as root"
                ),
                _ => write!(
                    f,
                    "cannot trace process {pid}: leakscope lacks CAP_SYS_PTRACE (in a container, add it: docker run --cap-add=SYS_PTRACE, or securityContext.capabilities.add: [SYS_PTRACE]); a process that made itself non-dumpable needs it too"
                ),
            },
            PtraceRefusal::Other { pid, error } => {
                write!(f, "cannot trace process {pid}: {error}")
            }
        }
    }
}

impl std::error::Error for PtraceRefusal {}

/// A status line's first field, e.g. `TracerPid:\t0` → `0`.
pub(crate) fn status_field(pid: i32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// Explains a failed `PTRACE_SEIZE` of `pid` with `errno`.
pub(crate) fn diagnose(pid: i32, errno: i32) -> PtraceRefusal {
    if errno == libc::ESRCH || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return PtraceRefusal::NoProcess { pid };
    }
    if errno != libc::EPERM {
        return PtraceRefusal::Other {
            pid,
            error: std::io::Error::from_raw_os_error(errno).to_string(),
        };
    }
    let tracer: i32 = status_field(pid, "TracerPid")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if tracer != 0 {
        // TracerPid is the tracing thread; name its process.
        let tracer = status_field(tracer, "Tgid")
            .and_then(|v| v.parse().ok())
            .unwrap_or(tracer);
        let tracer_name = std::fs::read_to_string(format!("/proc/{tracer}/comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        return PtraceRefusal::AlreadyTraced {
            pid,
            tracer,
            tracer_name,
        };
    }
    // SAFETY: getuid has no preconditions.
    let own_uid = unsafe { libc::getuid() };
    let has_cap = own_capability(19); // CAP_SYS_PTRACE
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(scope) = scope.filter(|&s| s == 3 || (s >= 1 && !has_cap)) {
        return PtraceRefusal::Yama { pid, scope };
    }
    let target_uid = status_field(pid, "Uid")
        .and_then(|v| v.split_whitespace().next().map(str::to_string))
        .and_then(|v| v.parse().ok());
    if !has_cap {
        return PtraceRefusal::NoCapability {
            pid,
            target_uid,
            own_uid,
        };
    }
    PtraceRefusal::Other {
        pid,
        error: "the kernel refused (EPERM) although leakscope has CAP_SYS_PTRACE: a security module (SELinux, AppArmor) or a seccomp filter forbids ptrace here".into(),
    }
}

/// Whether this process holds capability `bit` in its effective set.
fn own_capability(bit: u32) -> bool {
    status_field(std::process::id() as i32, "CapEff")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_say_the_fix() {
        let cases = [
            PtraceRefusal::NoProcess { pid: 9 },
            PtraceRefusal::AlreadyTraced {
                pid: 9,
                tracer: 10,
                tracer_name: "gdb".into(),
            },
            PtraceRefusal::Yama { pid: 9, scope: 1 },
            PtraceRefusal::Yama { pid: 9, scope: 3 },
            PtraceRefusal::NoCapability {
                pid: 9,
                target_uid: Some(1000),
                own_uid: 1001,
            },
            PtraceRefusal::NoCapability {
                pid: 9,
                target_uid: Some(0),
                own_uid: 0,
            },
        ];
        for c in &cases {
            let text = c.to_string();
            assert!(!text.contains('\n'), "{text}");
            assert!(text.contains('9'), "{text}");
        }
        assert!(cases[1].to_string().contains("process 10 (gdb)"));
        assert!(cases[2].to_string().contains("ptrace_scope is 1"));
        assert!(cases[5].to_string().contains("--cap-add=SYS_PTRACE"));
    }

    #[test]
    fn a_missing_process_is_named() {
        assert_eq!(
            diagnose(i32::MAX - 1, libc::ESRCH),
            PtraceRefusal::NoProcess { pid: i32::MAX - 1 }
        );
    }
}
