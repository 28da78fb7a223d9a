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
#[cfg(test)]
pub(crate) fn breadth_first(succ: Csr<'_>, parent: &mut [u32], queue: &mut [u32], work: &mut Work) {
    breadth_first_preferring(succ, parent, queue, work, |_| true);
}

/// [`breadth_first`] in two rounds: first from the roots (node 0's
/// successors) that `preferred` accepts, then from the others, which reach
/// only what the first round left. A block that a static holds gets its
/// chain from the static, even where a word on a thread's stack (work in
/// flight, or a stale word) points at it more directly: the static is what
/// keeps it, and the chain stays the same from snapshot to snapshot. Still
/// linear: every edge is followed once.
pub(crate) fn breadth_first_preferring(
    succ: Csr<'_>,
    parent: &mut [u32],
    queue: &mut [u32],
    work: &mut Work,
    preferred: impl Fn(u32) -> bool,
) {
    parent.fill(NONE);
    parent[0] = 0;
    let (mut head, mut tail) = (0, 0);
    for first_round in [true, false] {
        for &root in succ.neighbours(0) {
            work.steps += 1;
            if parent[root as usize] == NONE && preferred(root) == first_round {
                parent[root as usize] = 0;
                queue[tail] = root;
                tail += 1;
            }
        }
        while head < tail {
            let n = queue[head];
            head += 1;
            for &m in succ.neighbours(n) {
                work.steps += 1;
                if parent[m as usize] == NONE {
                    parent[m as usize] = n;
                    queue[tail] = m;
                    tail += 1;
                }
            }
        }
    }
}

/// Work done by the graph algorithms: edges followed, path-compression and
/// bucket steps. Tests check that it grows linearly with the graph, whatever
/// its shape (a long doubly linked list made the old iterative dominator
/// algorithm quadratic).
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Work {
    pub(crate) steps: u64,
}

/// Depth-first preorder from node 0. Writes the reachable nodes in preorder
/// into `vertex`, each node's preorder number into `pre` (`NONE` for
/// unreachable nodes) and each reached node's depth-first tree parent, as a
/// preorder number, into `dfs_parent` (indexed by preorder number). Returns
/// how many nodes were reached. `stack` needs one `(node, next edge)` slot
/// per node. A node comes after all of its dominators in preorder (they are
/// its ancestors in the depth-first tree).
pub(crate) fn preorder(
    succ: Csr<'_>,
    vertex: &mut [u32],
    pre: &mut [u32],
    dfs_parent: &mut [u32],
    stack: &mut [(u32, u32)],
    work: &mut Work,
) -> usize {
    pre.fill(NONE);
    pre[0] = 0;
    vertex[0] = 0;
    dfs_parent[0] = NONE;
    let mut reached = 1;
    stack[0] = (0, succ.offsets[0]);
    let mut depth = 1;
    while depth > 0 {
        let (n, next) = stack[depth - 1];
        if next < succ.offsets[n as usize + 1] {
            work.steps += 1;
            stack[depth - 1].1 = next + 1;
            let m = succ.targets[next as usize];
            if pre[m as usize] == NONE {
                pre[m as usize] = reached as u32;
                vertex[reached] = m;
                dfs_parent[reached] = pre[n as usize];
                reached += 1;
                stack[depth] = (m, succ.offsets[m as usize]);
                depth += 1;
            }
        } else {
            depth -= 1;
        }
    }
    reached
}

/// One reached node's dominator state, indexed by preorder number. Kept
/// together because path compression reads a node's semidominator, label
/// and ancestor at once, at random: one cache miss instead of three.
#[derive(Clone, Copy)]
struct DomNode {
    semi: u32,
    label: u32,
    ancestor: u32,
    /// Immediate dominator by preorder number.
    idom: u32,
}

/// Scratch arrays for [`dominators`], each with one slot per reached node
/// (indexed by preorder number).
pub(crate) struct DominatorScratch<'a> {
    node: &'a mut [[u32; 4]],
    bucket_head: &'a mut [u32],
    bucket_next: &'a mut [u32],
    /// The path walked by one path compression.
    path: &'a mut [u32],
}

impl<'a> DominatorScratch<'a> {
    /// Cuts the scratch arrays out of `nodes` (one record per reached
    /// node) and one slice of `3 * reached` words.
    pub(crate) fn split(
        nodes: &'a mut [[u32; 4]],
        words: &'a mut [u32],
        reached: usize,
    ) -> DominatorScratch<'a> {
        let (bucket_head, rest) = words.split_at_mut(reached);
        let (bucket_next, rest) = rest.split_at_mut(reached);
        let (path, _) = rest.split_at_mut(reached);
        DominatorScratch {
            node: &mut nodes[..reached],
            bucket_head,
            bucket_next,
            path,
        }
    }

    /// Words [`DominatorScratch::split`] needs for `reached` nodes.
    pub(crate) const fn words(reached: usize) -> usize {
        3 * reached
    }

    #[inline(always)]
    fn get(&self, v: u32) -> DomNode {
        let [semi, label, ancestor, idom] = self.node[v as usize];
        DomNode {
            semi,
            label,
            ancestor,
            idom,
        }
    }

    #[inline(always)]
    fn set(&mut self, v: u32, n: DomNode) {
        self.node[v as usize] = [n.semi, n.label, n.ancestor, n.idom];
    }

    #[inline(always)]
    fn semi(&self, v: u32) -> u32 {
        self.node[v as usize][0]
    }

    /// The vertex of minimum semidominator on the forest path from `v` up
    /// to (not including) its tree root, compressing the path on the way
    /// (iteratively: a deep list must not overflow the stack).
    fn eval(&mut self, v: u32, work: &mut Work) -> u32 {
        let first = self.get(v);
        if first.ancestor == NONE {
            return v;
        }
        let mut top = 0;
        let mut x = v;
        let mut ancestor = first.ancestor;
        loop {
            let up = self.get(ancestor).ancestor;
            if up == NONE {
                break;
            }
            self.path[top] = x;
            top += 1;
            x = ancestor;
            ancestor = up;
        }
        work.steps += top as u64;
        while top > 0 {
            top -= 1;
            let y = self.path[top];
            let mut ny = self.get(y);
            let na = self.get(ny.ancestor);
            if self.semi(na.label) < self.semi(ny.label) {
                ny.label = na.label;
            }
            ny.ancestor = na.ancestor;
            self.set(y, ny);
        }
        self.get(v).label
    }
}

/// Immediate dominators (Lengauer and Tarjan's algorithm with path
/// compression, O(edges × log nodes) on any graph shape): `idom[n]` is the
/// last node every path from the super-root to `n` passes through;
/// `idom[0] == 0`; `NONE` for unreachable nodes. `vertex`, `pre` and
/// `dfs_parent` come from [`preorder`].
pub(crate) fn dominators(
    pred: Csr<'_>,
    vertex: &[u32],
    pre: &[u32],
    dfs_parent: &[u32],
    s: &mut DominatorScratch<'_>,
    idom: &mut [u32],
    work: &mut Work,
) {
    let reached = vertex.len();
    for w in 0..reached {
        s.node[w] = [w as u32, w as u32, NONE, 0];
        s.bucket_head[w] = NONE;
    }
    for w in (1..reached).rev() {
        work.steps += 1;
        let w = w as u32;
        let mut semi = s.semi(w);
        for &v in pred.neighbours(vertex[w as usize]) {
            work.steps += 1;
            let v = pre[v as usize];
            if v == NONE {
                continue;
            }
            let u = s.eval(v, work);
            semi = semi.min(s.semi(u));
        }
        let p = dfs_parent[w as usize];
        let mut node = s.get(w);
        node.semi = semi;
        node.ancestor = p;
        s.set(w, node);
        s.bucket_next[w as usize] = s.bucket_head[semi as usize];
        s.bucket_head[semi as usize] = w;
        let mut v = std::mem::replace(&mut s.bucket_head[p as usize], NONE);
        while v != NONE {
            work.steps += 1;
            let u = s.eval(v, work);
            let idom = if s.semi(u) < s.semi(v) { u } else { p };
            s.node[v as usize][3] = idom;
            v = s.bucket_next[v as usize];
        }
    }
    for w in 1..reached as u32 {
        let n = s.get(w);
        if n.idom != n.semi {
            s.node[w as usize][3] = s.get(n.idom).idom;
        }
    }
    idom.fill(NONE);
    for w in 0..reached {
        idom[vertex[w] as usize] = vertex[s.node[w][3] as usize];
    }
}

/// Retained size and block count: what would be freed with each node, i.e.
/// the sums over its dominator subtree. `size` holds each node's own bytes
/// (0 for roots); nodes from `first_block` on are heap blocks. `order` lists
/// the reached nodes with every node after its dominator (preorder does).
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
    // Children come after their dominator in `order`: walk it backwards and
    // add each node into its dominator.
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
            let succ = Csr {
                offsets: &so,
                targets: &st,
            };
            let mut work = Work::default();
            let mut parent = vec![0; self.n];
            let mut queue = vec![0; self.n];
            breadth_first(succ, &mut parent, &mut queue, &mut work);
            let idom = self.dominators(&mut work);
            let (order, reached) = self.preorder();
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

        fn preorder(&self) -> (Vec<u32>, usize) {
            let (so, st) = self.csr(false);
            let succ = Csr {
                offsets: &so,
                targets: &st,
            };
            let mut vertex = vec![0; self.n];
            let mut pre = vec![0; self.n];
            let mut dfs_parent = vec![0; self.n];
            let mut stack = vec![(0, 0); self.n];
            let reached = preorder(
                succ,
                &mut vertex,
                &mut pre,
                &mut dfs_parent,
                &mut stack,
                &mut Work::default(),
            );
            (vertex, reached)
        }

        /// Immediate dominators by node, counting the work of the depth-first
        /// search and of the dominator algorithm.
        fn dominators(&self, work: &mut Work) -> Vec<u32> {
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
            let mut vertex = vec![0; self.n];
            let mut pre = vec![0; self.n];
            let mut dfs_parent = vec![0; self.n];
            let mut stack = vec![(0, 0); self.n];
            let reached = preorder(
                succ,
                &mut vertex,
                &mut pre,
                &mut dfs_parent,
                &mut stack,
                work,
            );
            let mut nodes = vec![[0; 4]; reached];
            let mut words = vec![0; DominatorScratch::words(reached)];
            let mut scratch = DominatorScratch::split(&mut nodes, &mut words, reached);
            let mut idom = vec![0; self.n];
            dominators(
                pred,
                &vertex[..reached],
                &pre,
                &dfs_parent[..reached],
                &mut scratch,
                &mut idom,
                work,
            );
            idom
        }

        /// Dominators by definition, for small graphs: `d` dominates `n` if
        /// `n` cannot be reached from node 0 without passing through `d`.
        fn dominators_by_definition(&self) -> Vec<u32> {
            let reach = |without: Option<u32>| {
                let mut seen = vec![false; self.n];
                let mut todo = vec![0u32];
                seen[0] = true;
                while let Some(a) = todo.pop() {
                    for &(x, y) in &self.edges {
                        if x == a && Some(y) != without && !seen[y as usize] {
                            seen[y as usize] = true;
                            todo.push(y);
                        }
                    }
                }
                seen
            };
            let reachable = reach(None);
            // dom[n] = the strict dominators of n.
            let mut dom: Vec<Vec<u32>> = vec![Vec::new(); self.n];
            for d in 1..self.n as u32 {
                if !reachable[d as usize] {
                    continue;
                }
                let without = reach(Some(d));
                for n in 0..self.n {
                    if reachable[n] && !without[n] && n as u32 != d {
                        dom[n].push(d);
                    }
                }
            }
            (0..self.n)
                .map(|n| {
                    if !reachable[n] {
                        NONE
                    } else if n == 0 {
                        0
                    } else {
                        // The strict dominator that all the others dominate
                        // (the one with the most strict dominators itself),
                        // or the super-root.
                        dom[n]
                            .iter()
                            .copied()
                            .max_by_key(|&d| dom[d as usize].len())
                            .unwrap_or(0)
                    }
                })
                .collect()
        }
    }

    #[test]
    fn chains_start_at_preferred_roots_where_those_reach_a_block() {
        // 0 -> 1 (a stack) -> 4; 0 -> 2 (a static) -> 3 -> 4; 5 only from
        // the stack. Plain breadth-first gives 4 the stack's shorter chain.
        let g = Graph {
            n: 6,
            edges: vec![(0, 1), (0, 2), (1, 4), (2, 3), (3, 4), (1, 5)],
        };
        let (so, st) = g.csr(false);
        let succ = Csr {
            offsets: &so,
            targets: &st,
        };
        let mut work = Work::default();
        let mut parent = vec![0; g.n];
        let mut queue = vec![0; g.n];
        breadth_first(succ, &mut parent, &mut queue, &mut work);
        assert_eq!(parent[4], 1);
        breadth_first_preferring(succ, &mut parent, &mut queue, &mut work, |r| r == 2);
        assert_eq!(parent, [0, 0, 0, 2, 3, 1]);
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

    // The iterative algorithm of Cooper, Harvey and Kennedy, as an oracle on
    // graphs too large for the definition (quadratic on deep lists, fine on
    // random graphs of a few thousand nodes).
    fn reverse_postorder(
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
    fn iterative_dominators(pred: Csr<'_>, order: &[u32], rpo: &[u32], idom: &mut [u32]) {
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

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u32) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % u64::from(n)) as u32
        }
    }

    #[test]
    fn dominators_agree_with_their_definition_on_random_graphs() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..300 {
            let n = 2 + rng.below(24);
            let m = rng.below(3 * n);
            let mut edges: Vec<(u32, u32)> = (0..m).map(|_| (rng.below(n), rng.below(n))).collect();
            // Node 0 points somewhere, as the super-root always does.
            edges.push((0, 1 + rng.below(n - 1)));
            let g = Graph {
                n: n as usize,
                edges,
            };
            let fast = g.dominators(&mut Work::default());
            let slow = g.dominators_by_definition();
            assert_eq!(fast, slow, "round {round}: edges {:?}", g.edges);
        }
    }

    #[test]
    fn dominators_agree_with_the_iterative_algorithm_on_larger_graphs() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for round in 0..40 {
            let n = 100 + rng.below(3000);
            // Roots under the super-root, then blocks pointing at random
            // others, some with several pointers, some with back edges.
            let roots = 1 + rng.below(20);
            let mut edges: Vec<(u32, u32)> = (1..=roots).map(|r| (0, r)).collect();
            let m = n + rng.below(2 * n);
            for _ in 0..m {
                let from = 1 + rng.below(n - 1);
                let to = roots + 1 + rng.below(n - roots - 1);
                edges.push((from, to));
            }
            let g = Graph {
                n: n as usize,
                edges,
            };
            let fast = g.dominators(&mut Work::default());
            let (so, st) = g.csr(false);
            let (po, pt) = g.csr(true);
            let succ = Csr {
                offsets: &so,
                targets: &st,
            };
            let pred = Csr {
                offsets: &po,
                targets: &pt,
            };
            let mut order = vec![0; g.n];
            let mut rpo = vec![0; g.n];
            let mut stack = vec![(0, 0); g.n];
            let reached = reverse_postorder(succ, &mut order, &mut rpo, &mut stack);
            let mut slow = vec![0; g.n];
            iterative_dominators(pred, &order[..reached], &rpo, &mut slow);
            assert_eq!(fast, slow, "round {round}, {n} nodes");
        }
    }

    /// Heap shapes that real programs build, with `n` blocks after a root
    /// (node 1) under the super-root.
    fn shape(name: &str, n: u32) -> Graph {
        let first = 2u32;
        let last = first + n - 1;
        let mut edges = vec![(0, 1)];
        match name {
            // A singly linked list from a static.
            "list" => {
                edges.push((1, first));
                edges.extend((first..last).map(|i| (i, i + 1)));
            }
            // A doubly linked list whose head block keeps both ends: the
            // runtime's intrusive list of tasks (each task also pointing to
            // the shared scheduler state, the head).
            "task list" => {
                let head = first;
                edges.push((1, head));
                edges.push((head, head + 1));
                edges.push((head, last));
                for i in head + 1..last {
                    edges.push((i, i + 1));
                    edges.push((i + 1, i));
                }
                edges.push((head + 1, head));
                edges.extend((head + 1..=last).map(|i| (i, head)));
            }
            // A binary tree with parent pointers, one block per node.
            "tree" => {
                edges.push((1, first));
                for i in 1..n {
                    let (child, parent) = (first + i, first + (i - 1) / 2);
                    edges.push((parent, child));
                    edges.push((child, parent));
                }
            }
            // One random earlier block per block (the benchmark's heap).
            "random" => {
                let mut rng = Rng(42);
                edges.push((1, first));
                edges.extend((1..n).map(|i| (first + rng.below(i), first + i)));
            }
            _ => unreachable!(),
        }
        Graph {
            n: (last + 1) as usize,
            edges,
        }
    }

    #[test]
    fn work_grows_linearly_on_every_shape() {
        for name in ["list", "task list", "tree", "random"] {
            let work = |n| {
                let g = shape(name, n);
                let mut work = Work::default();
                let mut parent = vec![0; g.n];
                let mut queue = vec![0; g.n];
                let (so, st) = g.csr(false);
                let succ = Csr {
                    offsets: &so,
                    targets: &st,
                };
                breadth_first(succ, &mut parent, &mut queue, &mut work);
                let idom = g.dominators(&mut work);
                // Every block of these shapes hangs from the root's block.
                assert!(idom[2..].iter().all(|&d| d != NONE), "{name}: unreached");
                work.steps as f64 / (g.n + g.edges.len()) as f64
            };
            let (small, large) = (work(10_000), work(100_000));
            // Work per node and edge stays within a small constant: 10x the
            // blocks may cost at most 10x the work, plus a quarter for the
            // logarithmic factor of path compression.
            assert!(
                large <= small * 1.25 && large < 8.0,
                "{name}: {small:.2} steps per node+edge at 10k blocks, {large:.2} at 100k"
            );
        }
    }

    #[test]
    fn task_list_is_dominated_by_its_head() {
        let g = shape("task list", 1000);
        let idom = g.dominators(&mut Work::default());
        assert!(idom[3..].iter().all(|&d| d == 2));
        assert_eq!(idom[2], 1);
    }
}
