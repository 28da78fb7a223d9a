pub mod demo;
pub mod descriptors;
pub mod diff;
pub mod flame;
pub mod lab;
pub mod refs;
pub mod report;
pub mod run;
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
