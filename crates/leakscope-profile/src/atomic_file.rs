//! Writing an output so that readers see the whole file or none: the bytes
//! go to a temporary file in the same directory, are flushed to disk, and
//! the file is renamed over the final name (rename is atomic within one
//! file system). A process killed mid-write leaves at most a hidden
//! temporary (`.NAME.XXXXXX.tmp`), which readers skip, never a truncated
//! file under the real name.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// The suffix of temporaries: readers recognise unfinished writes by it
/// (together with the leading dot).
pub const TEMPORARY_SUFFIX: &str = ".tmp";

/// Whether a file name is one of our temporaries (an unfinished write).
pub fn is_temporary_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMPORARY_SUFFIX)
}

/// Writes `bytes` to `path` atomically (see the module documentation).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path.as_ref(), |w| w.write_all(bytes))
}

/// Writes what `fill` writes to `path` atomically. On any error the
/// temporary is removed and `path` is left as it was.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?
        .to_string_lossy();
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(TEMPORARY_SUFFIX)
        // As `File::create`: 0666 less the umask, not tempfile's 0600.
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)?;
    {
        let mut buffered = io::BufWriter::new(temp.as_file_mut());
        fill(&mut buffered)?;
        buffered.flush()?;
    }
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    // The rename itself must reach the disk too, or a power cut could
    // bring back the old name (or no name at all).
    File::open(dir).and_then(|d| d.sync_all()).or_else(|e| {
        // Some file systems cannot fsync a directory; the data is safe.
        if e.kind() == io::ErrorKind::InvalidInput {
            Ok(())
        } else {
            Err(e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heap-1-0000.pb.gz");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["heap-1-0000.pb.gz"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot-1-0000.json");
        write_atomic(&path, b"{\"old\":1}").unwrap();
        let err = write_atomic_with(&path, |w| {
            w.write_all(b"{\"new\":")?;
            Err(io::Error::other("the writer failed half-way"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "the writer failed half-way");
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"old\":1}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temporaries_are_named_so_readers_skip_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        let _ = write_atomic_with(&path, |_| {
            let names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names.len(), 1);
            assert!(is_temporary_name(&names[0]), "{}", names[0]);
            assert!(names[0].starts_with(".x.json."), "{}", names[0]);
            Ok(())
        });
        assert!(!is_temporary_name("heap-1-0000.pb.gz"));
    }

    #[test]
    fn files_get_the_usual_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        write_atomic(&path, b"<svg/>").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
            .unwrap();
        assert_eq!(mode, 0o666 & !umask);
    }
}
