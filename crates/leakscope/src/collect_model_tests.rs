//! Property tests of the hot path's hand-written tables against plain
//! models (`HashMap`s): random sequences of inserts, removals, updates and
//! bursts that force growth, shrunk to a minimal failing sequence when a
//! property breaks. Kept outside `collect/` so that they read the tables
//! only through the interface the profiler uses.

use std::collections::HashMap;

use proptest::prelude::*;

use crate::collect::live_table::{LiveEntry, LiveTable};
use crate::collect::stack_table::{SiteId, StackTable, MAX_SITES, OVERFLOW_SITE};

/// Addresses from a few 2 MiB regions (the table shards by region), close
/// together so that probe clusters form and removals hit.
fn address(region: u8, slot: u16) -> usize {
    ((usize::from(region) % 5 + 1) << 21) + 16 * (usize::from(slot) + 1)
}

#[derive(Debug, Clone)]
enum LiveOp {
    Insert {
        region: u8,
        slot: u16,
        size: u64,
        site: u32,
        sampled: bool,
        in_filter: bool,
    },
    Remove {
        region: u8,
        slot: u16,
    },
    TryRemove {
        region: u8,
        slot: u16,
    },
    Resize {
        region: u8,
        slot: u16,
        size: u64,
    },
    /// Many new blocks at once: the shard grows and every slot moves.
    Burst {
        region: u8,
        first: u16,
        count: u16,
    },
}

fn live_op() -> impl Strategy<Value = LiveOp> {
    let slot = 0u16..600;
    let region = any::<u8>();
    prop_oneof![
        4 => (region, slot.clone(), 0u64..(1 << 38), 0u32..MAX_SITES, any::<bool>(), any::<bool>())
            .prop_map(|(region, slot, size, site, sampled, in_filter)| LiveOp::Insert {
                region, slot, size, site, sampled, in_filter
            }),
        3 => (region, slot.clone()).prop_map(|(region, slot)| LiveOp::Remove { region, slot }),
        1 => (region, slot.clone()).prop_map(|(region, slot)| LiveOp::TryRemove { region, slot }),
        1 => (region, slot.clone(), 0u64..(1 << 38))
            .prop_map(|(region, slot, size)| LiveOp::Resize { region, slot, size }),
        1 => (region, slot, 1u16..800).prop_map(|(region, first, count)| LiveOp::Burst { region, first, count }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_live_table_behaves_as_a_map(ops in prop::collection::vec(live_op(), 1..300)) {
        let table = Box::new(LiveTable::new());
        let mut model: HashMap<usize, LiveEntry> = HashMap::new();
        for op in &ops {
            match *op {
                LiveOp::Insert { region, slot, size, site, sampled, in_filter } => {
                    let addr = address(region, slot);
                    let e = LiveEntry { size, site, sampled, in_filter };
                    let old = table.insert(addr, || e).expect("memory for the table");
                    prop_assert_eq!(old, model.insert(addr, e), "{:?}", op);
                }
                LiveOp::Remove { region, slot } => {
                    let addr = address(region, slot);
                    prop_assert_eq!(table.remove(addr), model.remove(&addr), "{:?}", op);
                }
                LiveOp::TryRemove { region, slot } => {
                    // Uncontended, it is a removal.
                    let addr = address(region, slot);
                    prop_assert_eq!(table.try_remove(addr), model.remove(&addr), "{:?}", op);
                }
                LiveOp::Resize { region, slot, size } => {
                    let addr = address(region, slot);
                    let found = table.update(addr, |e| e.size = size);
                    let expected = model.get_mut(&addr).map(|e| e.size = size).is_some();
                    prop_assert_eq!(found, expected, "{:?}", op);
                }
                LiveOp::Burst { region, first, count } => {
                    for s in first..first.saturating_add(count) {
                        let addr = address(region, s);
                        let e = LiveEntry { size: u64::from(s), site: 1, sampled: false, in_filter: false };
                        let old = table.insert(addr, || e).expect("memory for the table");
                        prop_assert_eq!(old, model.insert(addr, e));
                    }
                }
            }
            prop_assert_eq!(table.len(), model.len());
        }
        let mut seen = HashMap::new();
        table.for_each(|addr, e| {
            seen.insert(addr, e);
        });
        prop_assert_eq!(seen, model);
    }
}

#[derive(Debug, Clone)]
enum StackOp {
    /// Interns a stack drawn from a small alphabet (so stacks repeat).
    Intern { frames: Vec<usize>, labels: u32 },
    /// Interns many new stacks: the index grows and is republished.
    Burst { seed: usize, count: usize },
}

fn stack_op() -> impl Strategy<Value = StackOp> {
    prop_oneof![
        8 => (prop::collection::vec(0usize..6, 0..40), 0u32..3)
            .prop_map(|(frames, labels)| StackOp::Intern { frames, labels }),
        1 => (any::<usize>(), 1usize..3000).prop_map(|(seed, count)| StackOp::Burst { seed, count }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_stack_table_interns_as_a_map(ops in prop::collection::vec(stack_op(), 1..200)) {
        let table = Box::new(StackTable::new());
        let mut model: HashMap<(Vec<usize>, u32), SiteId> = HashMap::new();
        let mut check = |frames: Vec<usize>, labels: u32| -> Result<(), TestCaseError> {
            let id = table.intern(&frames, labels);
            prop_assert_ne!(id, OVERFLOW_SITE);
            let record = table.record(id);
            prop_assert_eq!(record.frames(), &frames[..]);
            prop_assert_eq!(record.labels(), labels);
            let known = *model.entry((frames, labels)).or_insert(id);
            prop_assert_eq!(id, known, "a stack changed id");
            Ok(())
        };
        for op in &ops {
            match op {
                StackOp::Intern { frames, labels } => check(frames.clone(), *labels)?,
                StackOp::Burst { seed, count } => {
                    for i in 0..*count {
                        check(vec![seed.wrapping_add(i), 0x7000, i % 7], 0)?;
                    }
                }
            }
        }
        // Distinct stacks got distinct ids; id 0 is the overflow site.
        let mut ids: Vec<SiteId> = model.values().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(ids.len(), model.len());
        prop_assert_eq!(table.len() as usize, model.len() + 1);
    }
}
