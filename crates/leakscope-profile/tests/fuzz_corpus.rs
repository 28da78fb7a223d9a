//! The fuzz corpus (`fuzz/corpus/`: seeds and every input fuzzing found
//! worth keeping) replayed through the same code the fuzz targets run, as
//! an ordinary test: a reader that once crashed on an input stays fixed.

#[path = "../../../fuzz/exercise.rs"]
mod exercise;

use std::path::Path;

/// Every file of one target's corpus.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

#[test]
fn the_pprof_corpus_replays_cleanly() {
    let files = corpus("pprof_decode");
    for (_, data) in &files {
        exercise::pprof(data);
        // Truncations of each input too: the commonest damage on disk.
        for cut in [
            1,
            data.len() / 3,
            data.len() / 2,
            data.len().saturating_sub(1),
        ] {
            exercise::pprof(&data[..cut.min(data.len())]);
        }
    }
    // The seeds are real profiles: they must still be read.
    let go = files.iter().find(|(n, _)| n == "go-heap.pb.gz").unwrap();
    assert!(leakscope_profile::decode(&go.1).is_ok());
}

#[test]
fn the_snapshot_corpus_replays_cleanly() {
    let files = corpus("snapshot_json");
    for (_, data) in &files {
        exercise::snapshot(data);
        for cut in [1, data.len() / 2, data.len().saturating_sub(1)] {
            exercise::snapshot(&data[..cut.min(data.len())]);
        }
    }
    let seed = files
        .iter()
        .find(|(n, _)| n == "snapshot-small.json")
        .unwrap();
    let text = std::str::from_utf8(&seed.1).unwrap();
    assert!(leakscope_profile::snapshot::SnapshotReport::from_json(text).is_ok());
}
