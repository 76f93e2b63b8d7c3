//! Junction trees in the dataset file (`jtvae::tree::TreeRecord`, one per molecule
//! of a list, or none), as a columnar store (`io::columns`). Layout of one set (a
//! group, e.g. /jtvae/trees):
//! ```text
//! ok           u8[k]     1 where the molecule's tree is stored
//! node_offset  u64[k+1]  nodes of molecule m: node_offset[m]..[m+1]
//! label        u32[N]    vocabulary index per node
//! atom_offset  u64[N+1]  cluster atoms of node n: atom_offset[n]..[n+1]
//! atoms        u32[·]
//! edge_offset  u64[k+1]
//! edges        u32[E,2]  tree edges (node pairs)
//! ```
use super::columns::{self, column_lists, Columnar, Spec};
use crate::jtvae::tree::TreeRecord;
use hdf5::Group;

/// The trees of a list of molecules, as stored (struct of arrays).
#[derive(Debug, Clone, PartialEq, Eq)]
struct TreeStore {
    ok: Vec<u8>,
    node_offset: Vec<u64>,
    label: Vec<u32>,
    atom_offset: Vec<u64>,
    atoms: Vec<u32>,
    edge_offset: Vec<u64>,
    /// Flattened pairs.
    edges: Vec<u32>,
}

impl Default for TreeStore {
    fn default() -> Self {
        TreeStore {
            ok: Vec::new(),
            node_offset: vec![0],
            label: Vec::new(),
            atom_offset: vec![0],
            atoms: Vec::new(),
            edge_offset: vec![0],
            edges: Vec::new(),
        }
    }
}

impl Columnar for TreeStore {
    const COLUMNS: &'static [Spec] = &[
        Spec::flat("ok"),
        Spec::offsets("node_offset"),
        Spec::flat("label"),
        Spec::offsets("atom_offset"),
        Spec::flat("atoms"),
        Spec::offsets("edge_offset"),
        Spec::rows("edges", 2),
    ];

    column_lists!(
        ok,
        node_offset,
        label,
        atom_offset,
        atoms,
        edge_offset,
        edges
    );
}

impl TreeStore {
    fn push(&mut self, tree: Option<&TreeRecord>) {
        self.ok.push(u8::from(tree.is_some()));
        if let Some(tr) = tree {
            self.label.extend_from_slice(&tr.labels);
            for c in &tr.clusters {
                self.atoms.extend_from_slice(c);
                self.atom_offset.push(self.atoms.len() as u64);
            }
            for &(i, j) in &tr.edges {
                self.edges.extend([i, j]);
            }
        }
        self.node_offset.push(self.label.len() as u64);
        self.edge_offset.push((self.edges.len() / 2) as u64);
    }

    /// The trees, checking every range (a damaged or foreign file); `name` is the
    /// set's group under /jtvae, for the error.
    fn trees(&self, name: &str) -> hdf5::Result<Vec<Option<TreeRecord>>> {
        let (ok, node_off, labels) = (&self.ok, &self.node_offset, &self.label);
        let (atom_off, atoms) = (&self.atom_offset, &self.atoms);
        let (edge_off, edges) = (&self.edge_offset, &self.edges);
        let bad = |what: &str| hdf5::Error::from(format!("/jtvae/{name}: inconsistent {what}"));
        if node_off.len() != ok.len() + 1
            || edge_off.len() != ok.len() + 1
            || atom_off.len() != labels.len() + 1
        {
            return Err(bad("offsets"));
        }
        let mut trees = Vec::with_capacity(ok.len());
        for m in 0..ok.len() {
            let (n0, n1) = (node_off[m] as usize, node_off[m + 1] as usize);
            let (e0, e1) = (edge_off[m] as usize, edge_off[m + 1] as usize);
            if n1 > labels.len() || n0 > n1 || 2 * e1 > edges.len() || e0 > e1 {
                return Err(bad("tree ranges"));
            }
            if ok[m] == 0 {
                trees.push(None);
                continue;
            }
            let clusters = (n0..n1)
                .map(|k| {
                    let (a0, a1) = (atom_off[k] as usize, atom_off[k + 1] as usize);
                    atoms
                        .get(a0..a1)
                        .map(<[u32]>::to_vec)
                        .ok_or_else(|| bad("atom ranges"))
                })
                .collect::<hdf5::Result<Vec<_>>>()?;
            trees.push(Some(TreeRecord {
                labels: labels[n0..n1].to_vec(),
                clusters,
                edges: (e0..e1).map(|e| (edges[2 * e], edges[2 * e + 1])).collect(),
            }));
        }
        Ok(trees)
    }
}

/// Writes junction trees as group `name` of `g`.
pub fn write(g: &Group, name: &str, trees: &[Option<TreeRecord>]) -> hdf5::Result<()> {
    let mut store = TreeStore::default();
    for tree in trees {
        store.push(tree.as_ref());
    }
    columns::write(&store, g, name)
}

/// Reads the junction trees of group `name` of `g` (see `write`).
pub fn read(g: &Group, name: &str) -> hdf5::Result<Vec<Option<TreeRecord>>> {
    columns::read::<TreeStore>(g, name)?.trees(name)
}
