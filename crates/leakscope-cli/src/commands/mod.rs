pub mod demo;
pub mod descriptors;
pub mod diff;
pub mod flame;
#[cfg(feature = "lab")]
pub mod lab;
pub mod outside;
pub mod refs;
pub mod report;
pub mod run;
pub mod symbolize;
pub mod top;
pub mod trend;

/// The sample types of heap profiles, for `--sample-index`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SampleIndex {
    InuseSpace,
    InuseObjects,
    AllocSpace,
    AllocObjects,
}

impl SampleIndex {
    pub fn name(self) -> &'static str {
        match self {
            SampleIndex::InuseSpace => "inuse_space",
            SampleIndex::InuseObjects => "inuse_objects",
            SampleIndex::AllocSpace => "alloc_space",
            SampleIndex::AllocObjects => "alloc_objects",
        }
    }
}

/// Installs the frame classes the analysis uses: the built-in table plus
/// `file` (`--frames`), else plus the file `LEAKSCOPE_FRAMES` names.
pub fn use_frames(file: Option<&std::path::Path>) -> anyhow::Result<()> {
    use leakscope_profile::frames::FrameTable;
    let table = match file {
        Some(path) => FrameTable::with_file(path)?,
        None => FrameTable::from_env()?,
    };
    leakscope_profile::frames::install_global(table);
    Ok(())
}
