//! A lock that never allocates and never parks through the allocator.
//!
//! std's `Mutex` does not allocate either, but a lock that the profiler takes
//! *inside* `malloc` must also be releasable from a `fork` child handler and
//! must not depend on anything that could call back into the allocator. The
//! critical sections it guards are short and bounded (a hash-table insert or
//! removal), so spinning, then yielding the CPU, is the right trade.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one thread at a time, so the
// lock is shareable whenever the value can be sent between threads.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// Where the value lies in the lock (for a reader of another process's
    /// memory: `UnsafeCell` is transparent).
    pub(crate) const VALUE_OFFSET: usize = std::mem::offset_of!(Self, value);

    pub(crate) const fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        self.raw_lock();
        SpinGuard { lock: self }
    }

    pub(crate) fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then_some(SpinGuard { lock: self })
    }

    /// The value, without locking.
    ///
    /// # Safety
    /// The caller must hold the lock by other means (`raw_lock`, or being a
    /// fork child's only thread that inherited it), so that nobody writes
    /// the value meanwhile.
    pub(crate) unsafe fn get_unlocked(&self) -> &T {
        // SAFETY: forwarded from the caller.
        unsafe { &*self.value.get() }
    }

    /// Takes the lock without a guard; pair with [`SpinLock::raw_unlock`].
    /// Used by the fork handlers, which lock in one callback and unlock in
    /// another.
    pub(crate) fn raw_lock(&self) {
        let mut spins = 0u32;
        loop {
            if !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            spins += 1;
            if spins < 100 {
                std::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions and does not allocate.
                unsafe { libc::sched_yield() };
            }
        }
    }

    /// Releases a lock taken with [`SpinLock::raw_lock`].
    ///
    /// # Safety
    /// The caller must own the lock (taken by `raw_lock` on this thread, or
    /// inherited across `fork` by the only thread of the child).
    pub(crate) unsafe fn raw_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this thread holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while this thread holds the lock, and
        // `&mut self` makes this the only reference handed out by it.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard was created by taking the lock on this thread.
        unsafe { self.lock.raw_unlock() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn serialises_increments_across_threads() {
        let lock = Arc::new(SpinLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 400_000);
        let held = lock.lock();
        assert!(lock.try_lock().is_none());
        drop(held);
        assert!(lock.try_lock().is_some());
    }
}
