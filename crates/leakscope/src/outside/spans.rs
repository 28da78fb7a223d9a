//! Where an image keeps the bytes of each region, and slices of them.

/// Where a region's bytes are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Address of the region's first byte in this process, or 0 when the
    /// image does not have them.
    pub(crate) at: usize,
}

/// The words of `[start, end)` (8-aligned) from `spans` (sorted by start):
/// several adjacent regions only if their bytes are adjacent here too.
pub(crate) fn span_words(spans: &[Span], start: u64, end: u64) -> Option<&[u64]> {
    let i = spans.partition_point(|s| s.start <= start).checked_sub(1)?;
    let s = spans[i];
    if s.at == 0 || start % 8 != 0 || end < start || start >= s.end {
        return None;
    }
    let mut covered = s.end;
    let mut next_at = s.at + (s.end - s.start) as usize;
    let mut j = i + 1;
    while covered < end {
        let n = spans.get(j)?;
        if n.start != covered || n.at == 0 || n.at != next_at {
            return None;
        }
        covered = n.end;
        next_at = n.at + (n.end - n.start) as usize;
        j += 1;
    }
    let first = s.at + (start - s.start) as usize;
    if first % 8 != 0 {
        return None;
    }
    // SAFETY: `[first, first + (end - start))` lies in memory the image
    // owning `spans` keeps mapped (a core's or a file's mapping, a copy)
    // for as long as it lives, and the borrow of `spans` ties the slice to
    // it; it is 8-aligned; the bytes of a core never
    // change while mapped (a file truncated underneath would fault, as any
    // mapped reader).
    Some(unsafe { std::slice::from_raw_parts(first as *const u64, ((end - start) / 8) as usize) })
}
