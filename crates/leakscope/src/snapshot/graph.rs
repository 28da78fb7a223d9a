//! Graph algorithms over the heap's reference graph, allocation-free: every
//! output and scratch array is passed in, so the snapshot child can run them
//! on `MmapVec`s and tests on `Vec`s.
//!
//! Node 0 is the super-root; it points to every root (statics, stack frames,
//! registers, thread-locals), which point to heap blocks.

/// Marks "no node" in parent and dominator arrays.
pub(crate) const NONE: u32 = u32::MAX;

/// Adjacency in compressed sparse row form: the neighbours of `n` are
/// `targets[offsets[n]..offsets[n + 1]]`.
#[derive(Clone, Copy)]
pub(crate) struct Csr<'a> {
    pub(crate) offsets: &'a [u32],
    pub(crate) targets: &'a [u32],
}

impl Csr<'_> {
    pub(crate) fn neighbours(&self, n: u32) -> &[u32] {
        let n = n as usize;
        &self.targets[self.offsets[n] as usize..self.offsets[n + 1] as usize]
    }
}

/// Builds CSR offsets and targets from `(from, to)` pairs: `offsets` has
/// `nodes + 1` entries and `targets` one per edge.
pub(crate) fn build_csr(
    edges: &[(u32, u32)],
    reverse: bool,
    offsets: &mut [u32],
    targets: &mut [u32],
) {
    offsets.fill(0);
    for &(a, b) in edges {
        let from = if reverse { b } else { a };
        offsets[from as usize + 1] += 1;
    }
    for i in 1..offsets.len() {
        offsets[i] += offsets[i - 1];
    }
    // Fill using offsets[n] as a cursor, then shift back.
    for &(a, b) in edges {
        let (from, to) = if reverse { (b, a) } else { (a, b) };
        let slot = &mut offsets[from as usize];
        targets[*slot as usize] = to;
        *slot += 1;
    }
    for i in (1..offsets.len()).rev() {
        offsets[i] = offsets[i - 1];
    }
    offsets[0] = 0;
}

/// Breadth-first search from node 0: `parent[n]` is the node through which
/// `n` was first reached (so parents trace a shortest chain back to the
/// super-root), `NONE` if unreachable. `queue` needs one slot per node.
pub(crate) fn breadth_first(succ: Csr<'_>, parent: &mut [u32], queue: &mut [u32]) {
    parent.fill(NONE);
    parent[0] = 0;
    queue[0] = 0;
    let (mut head, mut tail) = (0, 1);
    while head < tail {
        let n = queue[head];
        head += 1;
        for &m in succ.neighbours(n) {
            if parent[m as usize] == NONE {
                parent[m as usize] = n;
                queue[tail] = m;
                tail += 1;
            }
        }
    }
}

/// Depth-first reverse postorder from node 0. Writes the reachable nodes in
/// reverse postorder into `order` and each node's position into `rpo`
/// (`NONE` for unreachable nodes); returns how many were reached. `stack`
/// needs one `(node, next edge)` slot per node.
pub(crate) fn reverse_postorder(
    succ: Csr<'_>,
    order: &mut [u32],
    rpo: &mut [u32],
    stack: &mut [(u32, u32)],
) -> usize {
    rpo.fill(NONE);
    // Mark visited with a temporary value; postorder positions come out
    // backwards, so fill `order` from the end and shift at the end.
    const SEEN: u32 = NONE - 1;
    let mut post = order.len();
    let mut depth = 0;
    stack[0] = (0, succ.offsets[0]);
    rpo[0] = SEEN;
    depth += 1;
    while depth > 0 {
        let (n, next) = stack[depth - 1];
        let end = succ.offsets[n as usize + 1];
        if next < end {
            stack[depth - 1].1 = next + 1;
            let m = succ.targets[next as usize];
            if rpo[m as usize] == NONE {
                rpo[m as usize] = SEEN;
                stack[depth] = (m, succ.offsets[m as usize]);
                depth += 1;
            }
        } else {
            depth -= 1;
            post -= 1;
            order[post] = n;
        }
    }
    let reached = order.len() - post;
    order.copy_within(post.., 0);
    for (i, &n) in order[..reached].iter().enumerate() {
        rpo[n as usize] = i as u32;
    }
    reached
}

/// Immediate dominators (Cooper, Harvey and Kennedy's iterative algorithm):
/// `idom[n]` is the last node every path from the super-root to `n` passes
/// through; `idom[0] == 0`; `NONE` for unreachable nodes. `order` and `rpo`
/// come from [`reverse_postorder`].
pub(crate) fn dominators(pred: Csr<'_>, order: &[u32], rpo: &[u32], idom: &mut [u32]) {
    idom.fill(NONE);
    idom[0] = 0;
    let intersect = |idom: &[u32], mut a: u32, mut b: u32| {
        while a != b {
            while rpo[a as usize] > rpo[b as usize] {
                a = idom[a as usize];
            }
            while rpo[b as usize] > rpo[a as usize] {
                b = idom[b as usize];
            }
        }
        a
    };
    let mut changed = true;
    while changed {
        changed = false;
        for &n in &order[1..] {
            let mut new_idom = NONE;
            for &p in pred.neighbours(n) {
                if rpo[p as usize] == NONE || idom[p as usize] == NONE {
                    continue;
                }
                new_idom = if new_idom == NONE {
                    p
                } else {
                    intersect(idom, p, new_idom)
                };
            }
            if new_idom != NONE && idom[n as usize] != new_idom {
                idom[n as usize] = new_idom;
                changed = true;
            }
        }
    }
}

/// Retained size and block count: what would be freed with each node, i.e.
/// the sums over its dominator subtree. `size` holds each node's own bytes
/// (0 for roots); nodes from `first_block` on are heap blocks.
pub(crate) fn retained(
    order: &[u32],
    idom: &[u32],
    size: &[u64],
    first_block: u32,
    bytes: &mut [u64],
    count: &mut [u32],
) {
    for &n in order {
        bytes[n as usize] = size[n as usize];
        count[n as usize] = u32::from(n >= first_block);
    }
    // Children come after their dominator in reverse postorder: walk it
    // backwards and add each node into its dominator.
    for &n in order.iter().skip(1).rev() {
        let d = idom[n as usize] as usize;
        bytes[d] += bytes[n as usize];
        count[d] += count[n as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Graph {
        n: usize,
        edges: Vec<(u32, u32)>,
    }

    impl Graph {
        fn csr(&self, reverse: bool) -> (Vec<u32>, Vec<u32>) {
            let mut offsets = vec![0; self.n + 1];
            let mut targets = vec![0; self.edges.len()];
            build_csr(&self.edges, reverse, &mut offsets, &mut targets);
            (offsets, targets)
        }

        fn analyse(
            &self,
            sizes: &[u64],
            first_block: u32,
        ) -> (Vec<u32>, Vec<u32>, Vec<u64>, Vec<u32>) {
            let (so, st) = self.csr(false);
            let (po, pt) = self.csr(true);
            let succ = Csr {
                offsets: &so,
                targets: &st,
            };
            let pred = Csr {
                offsets: &po,
                targets: &pt,
            };
            let mut parent = vec![0; self.n];
            let mut queue = vec![0; self.n];
            breadth_first(succ, &mut parent, &mut queue);
            let mut order = vec![0; self.n];
            let mut rpo = vec![0; self.n];
            let mut stack = vec![(0, 0); self.n];
            let reached = reverse_postorder(succ, &mut order, &mut rpo, &mut stack);
            let mut idom = vec![0; self.n];
            dominators(pred, &order[..reached], &rpo, &mut idom);
            let mut bytes = vec![0; self.n];
            let mut count = vec![0; self.n];
            retained(
                &order[..reached],
                &idom,
                sizes,
                first_block,
                &mut bytes,
                &mut count,
            );
            (parent, idom, bytes, count)
        }
    }

    #[test]
    fn diamond_is_dominated_by_its_top() {
        // 0 -> 1 -> 2 -> {3, 4} -> 5; 6 is unreachable, pointing at 5.
        // Node 1 is a root; blocks start at 2.
        let g = Graph {
            n: 7,
            edges: vec![(0, 1), (1, 2), (2, 3), (2, 4), (3, 5), (4, 5), (6, 5)],
        };
        let sizes = [0, 0, 10, 20, 30, 40, 50];
        let (parent, idom, bytes, count) = g.analyse(&sizes, 2);
        assert_eq!(idom[..6], [0, 0, 1, 2, 2, 2]);
        assert_eq!(idom[6], NONE);
        assert_eq!(parent[5], 3);
        assert_eq!(parent[6], NONE);
        // 2 retains itself, 3, 4 and 5 (both paths to 5 pass through 2).
        assert_eq!(bytes[2], 100);
        assert_eq!(count[2], 4);
        assert_eq!(bytes[3], 20);
        assert_eq!(bytes[1], 100);
    }

    #[test]
    fn shared_block_is_retained_by_neither_holder() {
        // Two roots (1, 2) both hold block 3; each also holds a private block.
        let g = Graph {
            n: 6,
            edges: vec![(0, 1), (0, 2), (1, 3), (2, 3), (1, 4), (2, 5)],
        };
        let sizes = [0, 0, 0, 100, 7, 9];
        let (_, idom, bytes, count) = g.analyse(&sizes, 3);
        assert_eq!(count[0], 3);
        assert_eq!(idom[3], 0);
        assert_eq!(bytes[1], 7);
        assert_eq!(bytes[2], 9);
        assert_eq!(bytes[0], 116);
    }

    #[test]
    fn cycles_and_deep_chains() {
        // A cycle 1 -> 2 -> 3 -> 1 under the root, then a long chain.
        let mut edges = vec![(0, 1), (1, 2), (2, 3), (3, 1), (3, 4)];
        let n = 10_000u32;
        for i in 4..n - 1 {
            edges.push((i, i + 1));
        }
        let g = Graph {
            n: n as usize,
            edges,
        };
        let sizes: Vec<u64> = (0..n as u64).map(|i| if i == 0 { 0 } else { 1 }).collect();
        let (parent, idom, bytes, _) = g.analyse(&sizes, 1);
        assert_eq!(idom[2], 1);
        assert_eq!(idom[1], 0);
        assert_eq!(idom[(n - 1) as usize], n - 2);
        assert_eq!(bytes[1], (n - 1) as u64);
        assert_eq!(parent[4], 3);
    }
}
