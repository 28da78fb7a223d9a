//! The directory loader's fuzz corpus (`fuzz/corpus/dir_loader/`) replayed
//! through the same code as the fuzz target, as an ordinary test.

#[path = "../../../fuzz/exercise.rs"]
mod exercise;
#[allow(dead_code)]
#[path = "../src/input.rs"]
mod input;

use std::path::Path;

#[test]
fn the_directory_corpus_replays_cleanly() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/dir_loader");
    let scratch = std::env::temp_dir().join(format!("leakscope-dir-corpus-{}", std::process::id()));
    let mut replayed = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap();
        for (name, content) in exercise::dir_files(&data) {
            std::fs::write(scratch.join(name), content).unwrap();
        }
        let _ = input::load_run(&scratch, None);
        let _ = input::load_run(&scratch, Some(1));
        replayed += 1;
    }
    assert!(replayed > 0);
    // The seed with one process loads its profiles and snapshot.
    let seed = std::fs::read(corpus.join("one-process")).unwrap();
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    for (name, content) in exercise::dir_files(&seed) {
        std::fs::write(scratch.join(name), content).unwrap();
    }
    let run = input::load_run(&scratch, None).unwrap();
    assert_eq!((run.profiles.len(), run.snapshots.len()), (2, 1));
    let _ = std::fs::remove_dir_all(&scratch);
}
