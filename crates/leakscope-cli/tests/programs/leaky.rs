// A Rust program on the system allocator with planted leaks.
use std::cell::RefCell;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::Mutex;

static SETTINGS_CACHE: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Node {
    _payload: [u8; 64],
    next: RefCell<Option<Rc<Node>>>,
}

#[inline(never)]
fn keep_settings() {
    let mut cache = SETTINGS_CACHE.lock().unwrap();
    cache.reserve_exact(4);
    for i in 0..4 {
        cache.push("s".repeat(500 + i));
    }
}

#[inline(never)]
fn lose_things() {
    // Definitely lost: leaked on purpose.
    let leaked: &'static mut [u8] = Box::leak(vec![7u8; 3000].into_boxed_slice());
    black_box(&leaked[0]);
    let forgotten = vec![1u64; 100];
    std::mem::forget(forgotten);
    // An Rc cycle: one block definitely lost, the other indirectly.
    let a = Rc::new(Node { _payload: [1; 64], next: RefCell::new(None) });
    let b = Rc::new(Node { _payload: [2; 64], next: RefCell::new(Some(a.clone())) });
    *a.next.borrow_mut() = Some(b.clone());
}

#[inline(never)]
fn churn() {
    for i in 0..10_000 {
        let v: Vec<String> = (0..4).map(|j| format!("{i}-{j}")).collect();
        black_box(v);
    }
}

#[inline(never)]
fn scrub_stack() {
    let buf = [0u8; 16384];
    black_box(&buf);
}

fn main() {
    keep_settings();
    lose_things();
    churn();
    scrub_stack();
    // Output without std's buffered stdout (whose buffer would stay allocated).
    unsafe extern "C" {
        fn write(fd: i32, buf: *const u8, n: usize) -> isize;
    }
    unsafe { write(1, b"done\n".as_ptr(), 5) };
}
