//! Snapshots from outside the process (`leakscope::outside`), against a C
//! program with known values at known addresses (tests/programs/
//! outside_target.c): its `gcore` core file, `attach` with fork injection
//! and with copying, SIGKILL of the attaching process after every step,
//! and a second tracer. Needs gcc and gdb's `gcore` (scripts/test.sh
//! installs them). Tests run one at a time (they trace and fork).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use leakscope::outside::{
    attach, AttachMethod, AttachOptions, CoreImage, CoreOptions, HeapWalk, Made, MappingKind, Step,
    ThreadState,
};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn build(name: &str, defines: &[&str]) -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/programs/outside_target.c");
    let status = Command::new("gcc")
        .args(["-O1", "-g", "-pthread", "-Wall", "-Werror"])
        .args(defines)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc failed");
    out
}

fn program() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build("outside_target", &[]))
}

/// A running target and what it said about itself.
struct Target {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    facts: BTreeMap<String, String>,
    pings: u32,
}

impl Target {
    fn start(spin: bool) -> Target {
        Self::spawn(Command::new(program()), spin)
    }

    fn spawn(mut command: Command, spin: bool) -> Target {
        let mut child = command
            .env("SPIN", if spin { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("target starts");
        let input = child.stdin.take().unwrap();
        let mut output = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        let facts = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Target {
            child,
            input,
            output,
            facts,
            pings: 0,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn hex(&self, key: &str) -> u64 {
        u64::from_str_radix(&self.facts[key], 16).unwrap_or_else(|_| panic!("{key}"))
    }

    fn tid(&self, key: &str) -> i32 {
        self.facts[key].parse().unwrap()
    }

    fn list(&self, key: &str) -> Vec<(u64, u64)> {
        self.facts[key]
            .split(',')
            .map(|e| match e.split_once(':') {
                Some((a, s)) => (u64::from_str_radix(a, 16).unwrap(), s.parse().unwrap()),
                None => (u64::from_str_radix(e, 16).unwrap(), 0),
            })
            .collect()
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.input, "{command}").unwrap();
        self.input.flush().unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    /// The target answers correctly, its spinning thread runs, its sleeping
    /// thread wakes (its restarted read works), and it is neither stopped
    /// nor traced.
    fn check_serves(&mut self, spin: bool) {
        self.pings += 1;
        let n = self.pings;
        let first = self.ask(&format!("ping {n}"));
        // 512 words 0x1000 + i: 512 * 0x1000 + 511 * 512 / 2.
        let sum = 512 * 0x1000 + 511 * 256;
        assert!(
            first.starts_with(&format!("pong {n} sum={sum} vec=0 spin=")),
            "{first}"
        );
        let spun = |l: &str| l.rsplit('=').next().unwrap().parse::<u64>().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = self.ask(&format!("ping {n}"));
        if spin {
            assert!(spun(&second) > spun(&first), "{first} / {second}");
            assert!(
                second.contains(" vec=0 "),
                "the spinner's vector registers changed: {second}"
            );
        }
        assert_eq!(self.ask("wake"), "woke 57ac4ed0000000de b10cb10cb10cb10c");
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap() {
            let s = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
            let field = |name: &str| {
                s.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap()
                    .trim()
                    .to_string()
            };
            assert_eq!(field("TracerPid:"), "0", "{status}");
            assert!(
                !field("State:").starts_with('t') && !field("State:").starts_with('T'),
                "{s}"
            );
        }
    }

    fn tids(&self) -> BTreeSet<i32> {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .collect()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What every image of the target must show: its threads with their thread
/// pointers, the static and what it points to, the sleeper's stack marker.
fn check_image(t: &Target, threads: &[ThreadState], read: impl Fn(u64) -> Option<u64>, spin: bool) {
    let tids: BTreeSet<i32> = threads.iter().map(|t| t.tid).collect();
    assert_eq!(tids, t.tids());
    let tp_of = |tid: i32| threads.iter().find(|x| x.tid == tid).unwrap().tp;
    assert_eq!(tp_of(t.pid()), t.hex("main_tp"));
    assert_eq!(tp_of(t.tid("sleeper_tid")), t.hex("sleeper_tp"));
    if spin {
        assert_eq!(tp_of(t.tid("spinner_tid")), t.hex("spinner_tp"));
    }
    assert_eq!(read(t.hex("magic_var")), Some(0x6c65616b73636f70));
    assert_eq!(read(t.hex("planted_var")), Some(t.hex("planted")));
    assert_eq!(read(t.hex("planted") + 8 * 7), Some(0x1007));
    let marker = t.hex("marker");
    assert_eq!(read(marker), Some(0x57ac4ed0000000de));
    let sleeper = threads
        .iter()
        .find(|x| x.tid == t.tid("sleeper_tid"))
        .unwrap();
    // The marker lies in the sleeper's live frames: above its stack
    // pointer, within its stack.
    assert!(sleeper.sp() <= marker && marker - sleeper.sp() < 64 << 10);
    // Somewhere above the stack pointer the stack holds the sleeper's block.
    let block = t.hex("sleeper_block");
    assert!((0..8192u64)
        .step_by(8)
        .any(|o| read((sleeper.sp() & !7) + o) == Some(block)));
    assert_eq!(read(block), Some(0xb10cb10cb10cb10c));
}

/// The planted blocks are in use in the walk, the freed ones are not.
fn check_walk(t: &Target, walk: &HeapWalk) {
    let in_use: BTreeMap<u64, u64> = walk.blocks.iter().copied().collect();
    for (addr, size) in t.list("kept") {
        let usable = in_use.get(&addr).copied();
        assert!(
            usable.is_some_and(|u| u >= size && u < size + 4096 + 32),
            "kept block {addr:x} of {size} bytes: {usable:?}"
        );
    }
    assert!(in_use.contains_key(&t.hex("planted")));
    assert!(in_use.contains_key(&t.hex("sleeper_block")));
    for (addr, _) in t.list("freed") {
        assert!(!in_use.contains_key(&addr), "freed block {addr:x} in use");
    }
    // Two arenas: the main one and the sleeper's.
    assert!(walk.arenas >= 2, "{walk:?}");
    assert_eq!(walk.mmapped_chunks, 1);
    assert!(walk.threads_with_tcache >= 2);
}

#[test]
fn core_image_of_gcore_reads_memory_threads_and_heap() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Target::start(true);
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("core");
    let out = Command::new("gcore")
        .arg("-o")
        .arg(&prefix)
        .arg(t.pid().to_string())
        .output()
        .expect("gcore (gdb) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.check_serves(true);
    let path = dir.path().join(format!("core.{}", t.pid()));
    let core = CoreImage::open(&path, &CoreOptions::default()).unwrap();
    assert_eq!(core.pid(), t.pid());
    check_image(&t, core.threads(), |a| core.read_u64(a), true);
    // The regions a core does not name: the program break area (holding
    // the small planted block) and the main thread's stack.
    let regions = core.regions();
    let kind_at = |a: u64| {
        regions
            .iter()
            .find(|r| r.start <= a && a < r.end)
            .map(|r| r.kind)
    };
    assert_eq!(kind_at(t.hex("planted")), Some(MappingKind::Heap));
    let main = core.threads().iter().find(|x| x.tid == t.pid()).unwrap();
    assert_eq!(kind_at(main.sp()), Some(MappingKind::MainStack));
    assert_eq!(kind_at(t.hex("magic_var")), Some(MappingKind::File));
    let exe = core.objects().iter().find(|o| o.is_exe).unwrap();
    assert_eq!(PathBuf::from(&exe.name), *program());
    assert!(exe
        .writable
        .iter()
        .any(|&(s, e)| s <= t.hex("magic_var") && t.hex("magic_var") < e));
    assert!(core.objects().iter().any(|o| o.is_libc()));
    let walk = core.heap_walk().unwrap();
    check_walk(&t, &walk);
    // A wrong file is refused in one line.
    let err = CoreImage::open(program(), &CoreOptions::default())
        .err()
        .unwrap();
    assert!(
        err.contains("not a core file") && !err.contains('\n'),
        "{err}"
    );
}

fn attached(spin: bool, method: AttachMethod) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Target::start(spin);
    t.check_serves(spin);
    let options = AttachOptions {
        method,
        ..AttachOptions::default()
    };
    let a = attach(t.pid(), &options).unwrap();
    match (&a.made, method) {
        (Made::Forked { child, .. }, AttachMethod::Fork) => {
            // The child is gone (killed and reaped).
            assert!(!PathBuf::from(format!("/proc/{child}")).exists());
        }
        (Made::Copied { .. }, AttachMethod::Copy) => {}
        (made, _) => panic!("{made:?}"),
    }
    t.check_serves(spin);
    check_image(&t, a.threads(), |x| a.image.read_u64(x), spin);
    let walk = a.image.heap_walk().unwrap();
    check_walk(&t, &walk);
    // The same block set as a core of the same, unchanged, heap.
    t.check_serves(spin);
}

#[test]
fn attach_forks_the_target_which_keeps_serving() {
    attached(true, AttachMethod::Fork);
}

#[test]
fn attach_forks_through_a_thread_stopped_in_a_system_call() {
    attached(false, AttachMethod::Fork);
}

#[test]
fn attach_by_copying_while_stopped() {
    attached(true, AttachMethod::Copy);
}

/// The helper process of the SIGKILL tests: attaches as told, then dies.
#[test]
fn helper_attach_then_die() {
    let Ok(pid) = std::env::var("OUTSIDE_HELPER_PID") else {
        return;
    };
    let step = match std::env::var("OUTSIDE_HELPER_STEP").unwrap().as_str() {
        "1" => Step::Stopped,
        "2" => Step::Captured,
        "3" => Step::FramesWritten,
        "4" => Step::RegistersSet,
        "5" => Step::SyscallEntered,
        "6" => Step::Forked,
        "7" => Step::Resumed,
        "8" => Step::Copied,
        _ => Step::ChildKilled,
    };
    let method = if std::env::var("OUTSIDE_HELPER_COPY").is_ok() {
        AttachMethod::Copy
    } else {
        AttachMethod::Fork
    };
    let options = AttachOptions {
        method,
        die_after: Some(step),
        ..AttachOptions::default()
    };
    let r = attach(pid.parse().unwrap(), &options);
    panic!("attach returned instead of dying: {:?}", r.map(|a| a.made));
}

fn kill_during_attach(spin: bool, copy: bool, steps: &[u32]) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Target::start(spin);
    for &step in steps {
        let mut helper = Command::new(std::env::current_exe().unwrap());
        helper
            .args([
                "--exact",
                "helper_attach_then_die",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("OUTSIDE_HELPER_PID", t.pid().to_string())
            .env("OUTSIDE_HELPER_STEP", step.to_string());
        if copy {
            helper.env("OUTSIDE_HELPER_COPY", "1");
        }
        let out = helper.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "step {step}: {stderr}"
        );
        assert!(stderr.contains(&format!("after step {step} ")), "{stderr}");
        t.check_serves(spin);
        // A child made before the kill ends by itself (its exit frame) or
        // with its tracer (PTRACE_O_EXITKILL); it is this test's child
        // (CLONE_PARENT: the target's parent's).
        if let Some(child) = stderr
            .split(" child ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse::<i32>().ok())
        {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(child, &mut status, 0) };
            assert_eq!(r, child, "step {step}: the injected child is not ours");
            assert!(
                libc::WIFEXITED(status) || libc::WIFSIGNALED(status),
                "step {step}: {status:x}"
            );
        }
        // And the next attach works.
        let a = attach(t.pid(), &AttachOptions::default()).unwrap();
        check_image(&t, a.threads(), |x| a.image.read_u64(x), spin);
        t.check_serves(spin);
    }
}

#[test]
fn sigkill_at_every_step_of_a_forking_attach_leaves_the_target_running() {
    kill_during_attach(true, false, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

#[test]
fn sigkill_at_every_step_with_every_thread_in_a_system_call() {
    kill_during_attach(false, false, &[3, 4, 5, 6]);
}

#[test]
fn sigkill_while_copying_leaves_the_target_running() {
    kill_during_attach(true, true, &[1, 2, 8]);
}

/// Holds a target traced, for the second-tracer test.
#[test]
fn helper_hold_traced() {
    let Ok(pid) = std::env::var("OUTSIDE_HOLD_PID") else {
        return;
    };
    let pid: i32 = pid.parse().unwrap();
    // SAFETY: seizing another process; no memory is passed.
    let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) };
    assert_eq!(r, 0);
    println!("held");
    std::thread::sleep(std::time::Duration::from_secs(60));
}

#[test]
fn a_second_tracer_is_named_in_one_line() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Target::start(true);
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_hold_traced",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OUTSIDE_HOLD_PID", t.pid().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("held") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "holder ended");
    }
    let err = attach(t.pid(), &AttachOptions::default()).err().unwrap();
    assert!(!err.contains('\n'), "{err}");
    assert!(
        err.contains(&format!("already traced by process {}", holder.id())),
        "{err}"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    t.check_serves(true);
    let err = attach(i32::MAX - 7, &AttachOptions::default())
        .err()
        .unwrap();
    assert_eq!(err, format!("no process {}", i32::MAX - 7));
}

/// Valgrind's leak figures for the target, mid-run (its `leakcheck`
/// command): (bytes, blocks) definitely, indirectly and possibly lost.
fn valgrind_figures() -> [(u64, u64); 3] {
    let program = build("outside_target_valgrind", &["-DWITH_VALGRIND"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("valgrind.log");
    let mut command = Command::new("valgrind");
    command
        .arg("--leak-check=full")
        .arg(format!("--log-file={}", log.display()))
        .arg(&program);
    let mut t = Target::spawn(command, false);
    assert_eq!(t.ask("leakcheck"), "checked");
    let _ = t.ask("quit");
    let _ = t.child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    // The first leak summary: the one at the `leakcheck` command.
    let summary = &text[text.find("LEAK SUMMARY").expect("a leak summary")..];
    let figure = |what: &str| {
        let line = summary
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what} in {summary}"));
        let numbers: Vec<u64> = line
            .split(':')
            .nth(1)
            .unwrap()
            .replace(',', "")
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (numbers[0], numbers[1])
    };
    [
        figure("definitely lost:"),
        figure("indirectly lost:"),
        figure("possibly lost:"),
    ]
}

/// A snapshot of the target agrees with Valgrind on what is lost (block
/// counts; bytes as glibc rounds them: at most 24 more per block), and
/// names who holds the planted blocks: the static `planted`, the sleeper
/// thread's frame.
fn check_snapshot(t: &Target, snapshot: &leakscope::Snapshot, valgrind: &[(u64, u64); 3]) {
    let report = snapshot.report();
    print!("{}", report.render(5));
    let totals = &report.totals;
    let ours = [
        totals.definitely_lost,
        totals.indirectly_lost,
        totals.possibly_lost,
    ];
    for (what, (ours, &(bytes, blocks))) in ["definitely", "indirectly", "possibly"]
        .iter()
        .zip(ours.iter().zip(valgrind))
    {
        assert_eq!(
            ours.blocks, blocks,
            "{what} lost: {ours:?}, Valgrind {bytes} in {blocks}"
        );
        assert!(
            ours.bytes >= bytes && ours.bytes <= bytes + 24 * blocks,
            "{what} lost: {ours:?}, Valgrind {bytes} in {blocks}"
        );
    }
    assert_eq!(report.pid, t.pid() as u32);
    let planted = snapshot
        .block_at(t.hex("planted") as *const u8)
        .expect("the planted block");
    assert!(planted.size >= 4096);
    let root = &planted.chain.first().expect("reachable").node;
    assert_eq!(root.name, "planted", "{root:?}");
    let held = snapshot
        .block_at(t.hex("sleeper_block") as *const u8)
        .expect("the sleeper's block");
    // Its thread's registers (the pointer is live in one) or its frame.
    let root = &held.chain.first().expect("reachable").node;
    assert!(
        root.name.ends_with(&format!("{}", t.tid("sleeper_tid"))) || root.name.contains("sleeper"),
        "{root:?}"
    );
}

#[test]
fn snapshots_of_a_core_and_of_an_attach_agree_with_valgrind_and_name_holders() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let valgrind = valgrind_figures();
    // The planted ones at least (the program loses a few more).
    assert!(
        valgrind[0].1 >= 2 && valgrind[1].1 >= 1 && valgrind[2].1 >= 1,
        "{valgrind:?}"
    );
    let mut t = Target::start(false);
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("core");
    let out = Command::new("gcore")
        .arg("-o")
        .arg(&prefix)
        .arg(t.pid().to_string())
        .output()
        .expect("gcore (gdb) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.path().join(format!("core.{}", t.pid()));
    let core = CoreImage::open(
        &path,
        &CoreOptions {
            fill_from_files: true,
            ..CoreOptions::default()
        },
    )
    .unwrap();
    let from_core = leakscope::outside::snapshot_of_core(&core, 0).unwrap();
    check_snapshot(&t, &from_core, &valgrind);

    let attached = attach(t.pid(), &AttachOptions::default()).unwrap();
    assert!(matches!(attached.made, Made::Forked { .. }));
    let live = leakscope::outside::snapshot_of_attached(&attached).unwrap();
    check_snapshot(&t, &live, &valgrind);
    t.check_serves(false);
}
