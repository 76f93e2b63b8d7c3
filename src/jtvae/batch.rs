//! Batches for the JT-VAE networks: junction trees stacked into one node list with
//! directed edge index tensors (for the tree encoder), and the depth-first
//! traversal of every tree grouped by step (for the teacher-forced tree decoder).
use super::tree::TreeRecord;
use tch::{Device, Tensor};

/// One step of a tree's depth-first traversal: the walk moves from node `from` to
/// node `to`; `expand` is true when `to` is a new child (false: back to the parent).
/// Node indices are batch-global.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DfsStep {
    pub tree: usize,
    pub from: usize,
    pub to: usize,
    pub expand: bool,
}

pub struct TreeBatch {
    /// `[N]` vocabulary index of every node (i64).
    pub labels: Tensor,
    /// `[E]` directed tree edges (each tree edge both ways): source node, target node,
    /// and the index of the reverse edge.
    pub edge_src: Tensor,
    pub edge_dst: Tensor,
    pub edge_rev: Tensor,
    /// `[N]` tree of every node.
    pub node_tree: Tensor,
    /// `[B]` batch-global index of every tree's root (its node 0).
    pub roots: Tensor,
    pub n_trees: i64,
    pub n_nodes: i64,
    /// Plain copies for the host-side logic of the decoder.
    pub label_list: Vec<usize>,
    pub root_list: Vec<usize>,
    /// `dfs[t]`: the step `t` of every tree whose traversal is that long.
    pub dfs: Vec<Vec<DfsStep>>,
}

/// Depth-first traversal from node 0, children in increasing node order.
pub fn dfs_steps(n_nodes: usize, edges: &[(u32, u32)]) -> Vec<(usize, usize, bool)> {
    let mut nb = vec![Vec::new(); n_nodes];
    for &(a, b) in edges {
        nb[a as usize].push(b as usize);
        nb[b as usize].push(a as usize);
    }
    nb.iter_mut().for_each(|v| v.sort_unstable());
    let mut steps = Vec::new();
    fn walk(x: usize, parent: usize, nb: &[Vec<usize>], steps: &mut Vec<(usize, usize, bool)>) {
        for &y in &nb[x] {
            if y != parent {
                steps.push((x, y, true));
                walk(y, x, nb, steps);
                steps.push((y, x, false));
            }
        }
    }
    if n_nodes > 0 {
        walk(0, usize::MAX, &nb, &mut steps);
    }
    steps
}

impl TreeBatch {
    pub fn new(trees: &[&TreeRecord], device: Device) -> TreeBatch {
        let mut labels = Vec::new();
        let (mut src, mut dst, mut rev) = (Vec::new(), Vec::new(), Vec::new());
        let mut node_tree = Vec::new();
        let mut roots = Vec::new();
        let mut dfs: Vec<Vec<DfsStep>> = Vec::new();
        for (b, t) in trees.iter().enumerate() {
            let off = labels.len();
            roots.push(off);
            labels.extend(t.labels.iter().map(|&l| l as usize));
            node_tree.extend(std::iter::repeat_n(b as i64, t.labels.len()));
            for &(i, j) in &t.edges {
                let e = src.len() as i64;
                src.extend([off as i64 + i64::from(i), off as i64 + i64::from(j)]);
                dst.extend([off as i64 + i64::from(j), off as i64 + i64::from(i)]);
                rev.extend([e + 1, e]);
            }
            for (k, (from, to, expand)) in
                dfs_steps(t.labels.len(), &t.edges).into_iter().enumerate()
            {
                if dfs.len() <= k {
                    dfs.push(Vec::new());
                }
                dfs[k].push(DfsStep {
                    tree: b,
                    from: off + from,
                    to: off + to,
                    expand,
                });
            }
        }
        let long = |v: &[i64]| Tensor::from_slice(v).to_device(device);
        let as_i64 = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
        TreeBatch {
            labels: long(&as_i64(&labels)),
            edge_src: long(&src),
            edge_dst: long(&dst),
            edge_rev: long(&rev),
            node_tree: long(&node_tree),
            roots: long(&as_i64(&roots)),
            n_trees: trees.len() as i64,
            n_nodes: labels.len() as i64,
            label_list: labels,
            root_list: roots,
            dfs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dfs_expands_and_backtracks_every_edge_once() {
        // 0 - 1 - 2, 1 - 3
        let s = dfs_steps(4, &[(0, 1), (1, 2), (1, 3)]);
        assert_eq!(
            s,
            vec![
                (0, 1, true),
                (1, 2, true),
                (2, 1, false),
                (1, 3, true),
                (3, 1, false),
                (1, 0, false)
            ]
        );
        assert!(dfs_steps(1, &[]).is_empty());
    }

    #[test]
    fn batch_offsets_nodes_and_pairs_reverse_edges() {
        let a = TreeRecord {
            labels: vec![3, 4],
            clusters: vec![vec![0, 1], vec![1, 2]],
            edges: vec![(0, 1)],
        };
        let b = TreeRecord {
            labels: vec![5],
            clusters: vec![vec![0]],
            edges: vec![],
        };
        let c = TreeRecord {
            labels: vec![1, 2, 0],
            clusters: vec![],
            edges: vec![(0, 1), (0, 2)],
        };
        let tb = TreeBatch::new(&[&a, &b, &c], Device::Cpu);
        assert_eq!(tb.label_list, vec![3, 4, 5, 1, 2, 0]);
        assert_eq!(tb.root_list, vec![0, 2, 3]);
        assert_eq!(
            Vec::<i64>::try_from(&tb.edge_src).unwrap(),
            vec![0, 1, 3, 4, 3, 5]
        );
        assert_eq!(
            Vec::<i64>::try_from(&tb.edge_dst).unwrap(),
            vec![1, 0, 4, 3, 5, 3]
        );
        assert_eq!(
            Vec::<i64>::try_from(&tb.edge_rev).unwrap(),
            vec![1, 0, 3, 2, 5, 4]
        );
        assert_eq!(tb.dfs.len(), 4);
        assert_eq!(
            tb.dfs[0],
            vec![
                DfsStep {
                    tree: 0,
                    from: 0,
                    to: 1,
                    expand: true
                },
                DfsStep {
                    tree: 2,
                    from: 3,
                    to: 4,
                    expand: true
                }
            ]
        );
        assert_eq!(
            tb.dfs[3],
            vec![DfsStep {
                tree: 2,
                from: 5,
                to: 3,
                expand: false
            }]
        );
    }
}
