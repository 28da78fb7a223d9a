//! The process's executable mappings (loaded objects), for pprof's
//! `mapping` table: with the build ID, a profile can be symbolised offline
//! against the same binaries.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModuleMapping {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) file_offset: u64,
    pub(crate) path: String,
    /// Hex GNU build ID, empty when the object has none.
    pub(crate) build_id: String,
}

/// Parses one line of `/proc/<pid>/maps`; `None` unless it is an executable
/// mapping of a file.
fn parse_line(line: &str) -> Option<(u64, u64, u64, &str)> {
    let mut fields = line.split_ascii_whitespace();
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let _dev = fields.next()?;
    let _inode = fields.next()?;
    let path = fields.next()?;
    if !perms.contains('x') || !path.starts_with('/') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    Some((
        u64::from_str_radix(start, 16).ok()?,
        u64::from_str_radix(end, 16).ok()?,
        u64::from_str_radix(offset, 16).ok()?,
        path,
    ))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Executable mappings of this process, the main executable first (pprof
/// tools treat the first mapping as the main binary).
pub(crate) fn executable_mappings() -> Vec<ModuleMapping> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    let exe = std::fs::read_link("/proc/self/exe")
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let mut build_ids: HashMap<String, String> = HashMap::new();
    let mut out: Vec<ModuleMapping> = maps
        .lines()
        .filter_map(parse_line)
        .map(|(start, end, file_offset, path)| {
            let build_id = build_ids
                .entry(path.to_string())
                .or_insert_with(|| {
                    blazesym::helper::read_elf_build_id(&path)
                        .ok()
                        .flatten()
                        .map(|id| hex(&id))
                        .unwrap_or_default()
                })
                .clone();
            ModuleMapping {
                start,
                end,
                file_offset,
                path: path.to_string(),
                build_id,
            }
        })
        .collect();
    if let Some(exe) = exe {
        out.sort_by_key(|m| m.path != exe);
    }
    out
}

/// The span of every executable mapping of the object whose code contains
/// `addr`.
pub(crate) fn code_range_of_object_at(addr: u64) -> Option<(u64, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let code: Vec<(u64, u64, &str)> = maps
        .lines()
        .filter_map(parse_line)
        .map(|(start, end, _, path)| (start, end, path))
        .collect();
    let (_, _, path) = code.iter().find(|(s, e, _)| (*s..*e).contains(&addr))?;
    code.iter()
        .filter(|(_, _, p)| p == path)
        .map(|&(s, e, _)| (s, e))
        .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_executable_file_mappings_only() {
        let line = "55d0c8a00000-55d0c8a42000 r-xp 00002000 fd:01 1234   /usr/bin/app";
        assert_eq!(
            parse_line(line),
            Some((0x55d0c8a00000, 0x55d0c8a42000, 0x2000, "/usr/bin/app"))
        );
        assert_eq!(
            parse_line("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 [stack]"),
            None
        );
        assert_eq!(
            parse_line("7ffd1000-7ffd2000 r-xp 00000000 00:00 0 [vdso]"),
            None
        );
        assert_eq!(parse_line("garbage"), None);
    }

    #[test]
    fn finds_the_code_of_the_object_containing_an_address() {
        let here = finds_the_code_of_the_object_containing_an_address as *const () as u64;
        let (start, end) = code_range_of_object_at(here).expect("this test's code");
        assert!(start <= here && here < end);
        let in_libc = libc::malloc as *const () as u64;
        let libc_range = code_range_of_object_at(in_libc).expect("libc's code");
        assert_ne!(libc_range, (start, end));
        assert_eq!(code_range_of_object_at(8), None);
    }

    #[test]
    fn finds_this_test_binary_first_with_a_build_id() {
        let maps = executable_mappings();
        assert!(!maps.is_empty());
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(maps[0].path, exe.to_string_lossy());
        assert!(maps.iter().any(|m| m.path.contains("libc")));
        assert!(maps.iter().any(|m| !m.build_id.is_empty()));
    }
}
