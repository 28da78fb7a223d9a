//! Reading `/proc/self/smaps` (every mapping with its resident bytes) and
//! `smaps_rollup` (RSS). Plain text parsing: one header line per mapping,
//! then `Key: value` lines, of which `Rss:` and `VmFlags:` are kept.

use leakscope_profile::memory::Mapping;

/// Parses smaps text. Lines that fit neither form are skipped, so a
/// kernel that adds fields does not break it.
pub(crate) fn parse(text: &str) -> Vec<Mapping> {
    let mut maps: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        if let Some(m) = parse_header(line) {
            maps.push(m);
            continue;
        }
        let Some(last) = maps.last_mut() else {
            continue;
        };
        if let Some(kb) = line.strip_prefix("Rss:") {
            last.rss = parse_kb(kb).unwrap_or(0);
        } else if let Some(flags) = line.strip_prefix("VmFlags:") {
            last.no_reserve = flags.split_ascii_whitespace().any(|f| f == "nr");
        }
    }
    maps
}

/// `Rss:` of `smaps_rollup`, in bytes.
pub(crate) fn rollup_rss(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Rss:"))
        .and_then(parse_kb)
}

/// `   123 kB` → bytes.
fn parse_kb(value: &str) -> Option<u64> {
    let mut parts = value.split_ascii_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => Some(n * 1024),
        _ => None,
    }
}

/// `start-end perms offset dev inode [path]`; the path may hold spaces.
fn parse_header(line: &str) -> Option<Mapping> {
    let mut rest = line;
    let mut field = || {
        let s = rest.trim_start_matches(' ');
        let end = s.find(' ').unwrap_or(s.len());
        rest = &s[end..];
        Some(&s[..end]).filter(|f| !f.is_empty())
    };
    let (range, perms, offset, dev, inode) = (field()?, field()?, field()?, field()?, field()?);
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    let p = perms.as_bytes();
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
    if p.len() != 4 || end < start || !hex(offset) || !hex(dev) || inode.parse::<u64>().is_err() {
        return None;
    }
    Some(Mapping {
        start,
        end,
        read: p[0] == b'r',
        write: p[1] == b'w',
        exec: p[2] == b'x',
        shared: p[3] == b's',
        path: rest.trim().to_string(),
        rss: 0,
        no_reserve: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d0c0a00000-55d0c0a21000 r-xp 00002000 08:01 1234                       /usr/bin/my prog
Size:                132 kB
Rss:                 120 kB
VmFlags: rd ex mr mw me dw
7f1a2c000000-7f1a2c021000 rw-p 00000000 00:00 0 
Size:                132 kB
Rss:                   8 kB
Pss:                   8 kB
VmFlags: rd wr mr mw me nr
7ffd1e5f0000-7ffd1e611000 rw-p 00000000 00:00 0                          [stack]
Rss:                  16 kB
THPeligible:    0
";

    #[test]
    fn reads_ranges_permissions_paths_resident_bytes_and_flags() {
        let maps = parse(SAMPLE);
        assert_eq!(maps.len(), 3);
        assert_eq!(maps[0].start, 0x55d0c0a00000);
        assert_eq!(maps[0].end, 0x55d0c0a21000);
        assert!(maps[0].exec && maps[0].read && !maps[0].write);
        assert_eq!(maps[0].path, "/usr/bin/my prog");
        assert_eq!(maps[0].rss, 120 * 1024);
        assert!(!maps[0].no_reserve);
        assert_eq!(maps[1].path, "");
        assert!(maps[1].no_reserve && maps[1].write);
        assert_eq!(maps[1].rss, 8 * 1024);
        assert_eq!(maps[2].path, "[stack]");
        assert_eq!(maps[2].rss, 16 * 1024);
    }

    #[test]
    fn reads_the_rollup_and_skips_what_it_does_not_know() {
        assert_eq!(
            rollup_rss("00400000-7fff rw-p 0 0:0 0 [rollup]\nRss:  2048 kB\nPss: 1 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(rollup_rss("Rss: lots\n"), None);
        assert!(parse("garbage line\nRss: 4 kB\nzz-yy rw-p 0 0 0\n").is_empty());
    }
}
