//! A pool of scratch buffers reused across requests. Taking a buffer charges
//! it to the taker (`leakscope::reattribute`), so profiles show who uses a
//! pooled buffer now, not who allocated it long ago.

use std::sync::Mutex;

pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    /// Buffers larger than this are dropped instead of kept (None: keep all).
    max_kept_capacity: Option<usize>,
}

/// Smallest buffer the pool makes (the lab's ordinary payloads are 1-6 KiB).
const MIN_CAPACITY: usize = 8 * 1024;

pub static POOL: BufferPool = BufferPool::new(None);
pub static CAPPED_POOL: BufferPool = BufferPool::new(Some(256 * 1024));

impl BufferPool {
    pub const fn new(max_kept_capacity: Option<usize>) -> Self {
        BufferPool {
            free: Mutex::new(Vec::new()),
            max_kept_capacity,
        }
    }

    /// A buffer with room for at least `len` bytes.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let buf = match free.iter().position(|b| b.capacity() >= len) {
            Some(i) => {
                let mut b = free.swap_remove(i);
                b.clear();
                leakscope::reattribute(b.as_ptr());
                b
            }
            // The capped (correct) pool makes one size class for ordinary
            // requests, so that any free buffer fits the next one: its
            // size is the requests' concurrency, reached at warm-up (not
            // a high-water mark of sizes that creeps up all run).
            None if self.max_kept_capacity.is_some() => Vec::with_capacity(len.max(MIN_CAPACITY)),
            None => Vec::with_capacity(len),
        };
        buf
    }

    /// Returns a buffer for reuse.
    pub fn give(&self, buf: Vec<u8>) {
        if self
            .max_kept_capacity
            .is_some_and(|max| buf.capacity() > max)
        {
            return;
        }
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(buf);
    }
}
