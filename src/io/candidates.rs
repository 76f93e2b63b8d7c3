//! Assembly candidates in the dataset file: for each molecule of a list, the
//! compact local graphs of its nodes' candidate attachments (`jtvae::candidates::
//! LocalGraph`) as ragged arrays of small integers, rebuilt into the exact f32
//! feature graphs on read. Layout of one set (a group, e.g. /jtvae/candidates/train):
//! ```text
//! ok            u8[k]     1 where the molecule's candidates were built (0: no tree
//!                         or the gold path failed; such a molecule is not trained on)
//! group_offset  u64[k+1]  node groups of molecule m: group_offset[m]..[m+1]
//! gold          u32[G]    index of the gold candidate within its group
//! graph_offset  u64[G+1]  candidate graphs of each group
//! atom_offset   u64[C+1], bond_offset u64[C+1]  atoms and bonds of each graph
//! atom_element  u8[A]     element one-hot column (43 = other)
//! atom_charge   i8[A]     formal charge
//! atom_degree   u8[A]     degree in the molecule, capped at 5
//! atom_flags    u8[A]     bit 0: child atom, bit 1: parent atom
//! bond_atoms    u16[B,2]  local atom indices of each bond
//! bond_order    u8[B]     1, 2 or 3
//! bond_in_child u8[B]     1 where both ends are the child's
//! ```
//! A columnar store (`io::columns`): written, read, appended and gathered like the others.
use super::columns::{self, column_lists, Columnar, Spec};
use crate::jtvae::candidates::{CandAtom, CandBond, CompactCandidates, LocalGraph, NodeCandidates};
use hdf5::Group;

/// Version of the candidate construction and of this layout: candidates stored
/// with another one are not used (bump it when `training_candidates` or the row
/// encoding changes).
pub const CANDIDATES_FORMAT: &str = "zo-hpc-candidates/1";

#[derive(Debug, thiserror::Error)]
pub enum CandidateError {
    #[error(
        "a local graph of {0} atoms does not fit the u16 atom indices of the candidate layout"
    )]
    TooLarge(usize),
    #[error("candidate set {set}: inconsistent {what}")]
    Inconsistent { set: String, what: String },
}

/// The candidates of a list of molecules, as stored (struct of arrays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateStore {
    pub ok: Vec<u8>,
    pub group_offset: Vec<u64>,
    pub gold: Vec<u32>,
    pub graph_offset: Vec<u64>,
    pub atom_offset: Vec<u64>,
    pub bond_offset: Vec<u64>,
    pub atom_element: Vec<u8>,
    pub atom_charge: Vec<i8>,
    pub atom_degree: Vec<u8>,
    pub atom_flags: Vec<u8>,
    /// Flattened pairs.
    pub bond_atoms: Vec<u16>,
    pub bond_order: Vec<u8>,
    pub bond_in_child: Vec<u8>,
}

impl Default for CandidateStore {
    fn default() -> Self {
        CandidateStore {
            ok: Vec::new(),
            group_offset: vec![0],
            gold: Vec::new(),
            graph_offset: vec![0],
            atom_offset: vec![0],
            bond_offset: vec![0],
            atom_element: Vec::new(),
            atom_charge: Vec::new(),
            atom_degree: Vec::new(),
            atom_flags: Vec::new(),
            bond_atoms: Vec::new(),
            bond_order: Vec::new(),
            bond_in_child: Vec::new(),
        }
    }
}

impl Columnar for CandidateStore {
    const COLUMNS: &'static [Spec] = &[
        Spec::flat("ok"),
        Spec::offsets("group_offset"),
        Spec::flat("gold"),
        Spec::offsets("graph_offset"),
        Spec::offsets("atom_offset"),
        Spec::offsets("bond_offset"),
        Spec::flat("atom_element"),
        Spec::flat("atom_charge"),
        Spec::flat("atom_degree"),
        Spec::flat("atom_flags"),
        Spec::rows("bond_atoms", 2),
        Spec::flat("bond_order"),
        Spec::flat("bond_in_child"),
    ];

    column_lists!(
        ok,
        group_offset,
        gold,
        graph_offset,
        atom_offset,
        bond_offset,
        atom_element,
        atom_charge,
        atom_degree,
        atom_flags,
        bond_atoms,
        bond_order,
        bond_in_child
    );
}

impl CandidateStore {
    /// Molecules in the set.
    pub fn len(&self) -> usize {
        self.ok.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ok.is_empty()
    }

    /// Appends one molecule: its candidates, or `None` where they could not be built.
    /// A local graph too large for the layout makes the molecule `None` (and is
    /// returned as an error for the caller to report).
    pub fn push(&mut self, nodes: Option<&[CompactCandidates]>) -> Result<(), CandidateError> {
        let too_large = nodes
            .into_iter()
            .flatten()
            .flat_map(|n| &n.graphs)
            .map(|g| g.atoms.len())
            .find(|&n| n > usize::from(u16::MAX) + 1);
        let nodes = if too_large.is_some() { None } else { nodes };
        self.ok.push(u8::from(nodes.is_some()));
        for node in nodes.into_iter().flatten() {
            self.gold.push(node.gold as u32);
            for g in &node.graphs {
                for a in &g.atoms {
                    self.atom_element.push(a.element);
                    self.atom_charge.push(a.charge);
                    self.atom_degree.push(a.degree);
                    self.atom_flags
                        .push(u8::from(a.in_child) | (u8::from(a.in_parent) << 1));
                }
                for b in &g.bonds {
                    // Fits: checked above.
                    self.bond_atoms.extend([b.begin as u16, b.end as u16]);
                    self.bond_order.push(b.order);
                    self.bond_in_child.push(u8::from(b.in_child));
                }
                self.atom_offset.push(self.atom_element.len() as u64);
                self.bond_offset.push(self.bond_order.len() as u64);
            }
            self.graph_offset.push((self.atom_offset.len() - 1) as u64);
        }
        self.group_offset.push(self.gold.len() as u64);
        match too_large {
            Some(n) => Err(CandidateError::TooLarge(n)),
            None => Ok(()),
        }
    }

    /// Appends the molecules of `other` (a later block of the same list).
    pub fn append(&mut self, other: &CandidateStore) {
        columns::append(self, other);
    }

    /// The compact candidates of molecule `m`; `None` where they were not built.
    /// Call `check` first (on a store read from a file): ranges are trusted here.
    pub fn compact(&self, m: usize) -> Option<Vec<CompactCandidates>> {
        if self.ok[m] == 0 {
            return None;
        }
        let groups = self.group_offset[m] as usize..self.group_offset[m + 1] as usize;
        let nodes = groups
            .map(|g| {
                let graphs = self.graph_offset[g] as usize..self.graph_offset[g + 1] as usize;
                CompactCandidates {
                    graphs: graphs.map(|c| self.local_graph(c)).collect(),
                    gold: self.gold[g] as usize,
                }
            })
            .collect();
        Some(nodes)
    }

    /// Candidate groups (tree nodes with a choice) of molecule `m`; 0 where none were built.
    pub fn groups(&self, m: usize) -> usize {
        if self.ok[m] == 0 {
            return 0;
        }
        (self.group_offset[m + 1] - self.group_offset[m]) as usize
    }

    /// The featurized candidates of molecule `m` (see `compact`).
    pub fn nodes(&self, m: usize) -> Option<Vec<NodeCandidates>> {
        self.compact(m)
            .map(|nodes| nodes.iter().map(CompactCandidates::to_node).collect())
    }

    fn local_graph(&self, c: usize) -> LocalGraph {
        let atoms = self.atom_offset[c] as usize..self.atom_offset[c + 1] as usize;
        let bonds = self.bond_offset[c] as usize..self.bond_offset[c + 1] as usize;
        LocalGraph {
            atoms: atoms
                .map(|a| CandAtom {
                    element: self.atom_element[a],
                    charge: self.atom_charge[a],
                    degree: self.atom_degree[a],
                    in_child: self.atom_flags[a] & 1 != 0,
                    in_parent: self.atom_flags[a] & 2 != 0,
                })
                .collect(),
            bonds: bonds
                .map(|b| CandBond {
                    begin: u32::from(self.bond_atoms[2 * b]),
                    end: u32::from(self.bond_atoms[2 * b + 1]),
                    order: self.bond_order[b],
                    in_child: self.bond_in_child[b] != 0,
                })
                .collect(),
        }
    }

    /// Checks that every offset, range and index is consistent, so that reading
    /// molecules cannot go out of bounds (a damaged or foreign file).
    pub fn check(&self, set: &str) -> Result<(), CandidateError> {
        let bad = |what: &str| CandidateError::Inconsistent {
            set: set.to_string(),
            what: what.to_string(),
        };
        // Offsets start at 0, never decrease and end at the length they index.
        let offsets = |o: &[u64], len: usize, what: &str| {
            if columns::offsets_consistent(o, len) {
                Ok(())
            } else {
                Err(bad(what))
            }
        };
        if self.group_offset.len() != self.ok.len() + 1 {
            return Err(bad("group_offset length"));
        }
        offsets(&self.group_offset, self.gold.len(), "group_offset")?;
        if self.graph_offset.len() != self.gold.len() + 1 {
            return Err(bad("graph_offset length"));
        }
        let n_graphs = self.atom_offset.len().saturating_sub(1);
        offsets(&self.graph_offset, n_graphs, "graph_offset")?;
        if self.bond_offset.len() != self.atom_offset.len() {
            return Err(bad("bond_offset length"));
        }
        let n_atoms = self.atom_element.len();
        offsets(&self.atom_offset, n_atoms, "atom_offset")?;
        if [
            &self.atom_charge.len(),
            &self.atom_degree.len(),
            &self.atom_flags.len(),
        ]
        .iter()
        .any(|&&l| l != n_atoms)
        {
            return Err(bad("atom array lengths"));
        }
        let n_bonds = self.bond_order.len();
        offsets(&self.bond_offset, n_bonds, "bond_offset")?;
        if self.bond_in_child.len() != n_bonds || self.bond_atoms.len() != 2 * n_bonds {
            return Err(bad("bond array lengths"));
        }
        for g in 0..self.gold.len() {
            let n = self.graph_offset[g + 1] - self.graph_offset[g];
            if u64::from(self.gold[g]) >= n {
                return Err(bad("gold index"));
            }
        }
        for c in 0..n_graphs {
            let n = self.atom_offset[c + 1] - self.atom_offset[c];
            let (b0, b1) = (
                self.bond_offset[c] as usize,
                self.bond_offset[c + 1] as usize,
            );
            if self.bond_atoms[2 * b0..2 * b1]
                .iter()
                .any(|&a| u64::from(a) >= n)
            {
                return Err(bad("bond atom index"));
            }
        }
        Ok(())
    }

    /// Writes the set as group `name` of `parent`.
    pub fn write(&self, parent: &Group, name: &str) -> hdf5::Result<()> {
        columns::write(self, parent, name)
    }

    /// Reads group `name` of `parent` (unchecked: call `check`).
    pub fn read(parent: &Group, name: &str) -> hdf5::Result<CandidateStore> {
        columns::read(parent, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jtvae::candidates::{compact_training_candidates, LabelGraphs};
    use crate::jtvae::tree::LabelCache;

    fn store(smiles: &[&str]) -> (CandidateStore, Vec<Option<Vec<CompactCandidates>>>) {
        let (mut c, mut l) = (LabelCache::default(), LabelGraphs::default());
        let mut s = CandidateStore::default();
        let mut want = Vec::new();
        for smi in smiles {
            let nodes = compact_training_candidates(smi, 6, &mut c, &mut l).ok();
            s.push(nodes.as_deref()).unwrap();
            want.push(nodes);
        }
        (s, want)
    }

    #[test]
    fn molecules_come_back_as_pushed_and_blocks_append() {
        let smiles = [
            "CC(=O)Nc1ccc(O)cc1",
            "C1CC",
            "C[N+](C)(C)CC#N",
            "c1ccc2ccccc2c1",
        ];
        let (all, want) = store(&smiles);
        all.check("all").unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all.ok, [1, 0, 1, 1]);
        for (m, w) in want.iter().enumerate() {
            assert_eq!(&all.compact(m), w);
        }
        // Contiguous blocks appended in order give the store of the whole list.
        let (mut a, _) = store(&smiles[..1]);
        let (b, _) = store(&smiles[1..3]);
        let (c, _) = store(&smiles[3..]);
        a.append(&b);
        a.append(&CandidateStore::default());
        a.append(&c);
        assert_eq!(a, all);
    }

    #[test]
    fn damaged_offsets_are_detected() {
        let (mut s, _) = store(&["CC(=O)Nc1ccc(O)cc1"]);
        s.gold[0] = 99;
        assert!(s.check("x").is_err());
        let (mut s, _) = store(&["CC(=O)Nc1ccc(O)cc1"]);
        s.bond_atoms[0] = 500;
        assert!(s.check("x").is_err());
        let (mut s, _) = store(&["CC(=O)Nc1ccc(O)cc1"]);
        s.atom_offset.pop();
        assert!(s.check("x").is_err());
    }
}
