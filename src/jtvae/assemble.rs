//! Graph assembly: clusters of a junction tree are attached one at a time, in
//! depth-first order from the root, to a growing molecule. For each child the
//! possible attachments onto its parent's atoms are enumerated (one shared atom,
//! or a shared bond for two rings, in both orientations); a candidate is valid when
//! RDKit can sanitize the result. The decoder scores candidates with a network;
//! `gold_path` instead picks the one that reproduces the known molecule, which
//! checks that labels, enumeration and assembly can rebuild real molecules.
use super::graph::{map_onto, map_with, MolGraph};
use super::junction::JunctionTree;
use crate::chem::{
    self,
    mol::{KAtom, KBond},
};

/// A child attachment: (child label atom, partial-molecule atom) pairs that coincide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub pairs: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum AssemblyError {
    #[error("label {label:?} of node {node} does not map onto its cluster")]
    Unmapped { node: usize, label: String },
    #[error(
        "node {node} ({label}): none of {candidates} candidate attachments reproduces the molecule"
    )]
    NoGoldCandidate {
        node: usize,
        label: String,
        candidates: usize,
    },
    #[error("assembled {got}, expected {expected}")]
    Different { got: String, expected: String },
    #[error(transparent)]
    Chem(#[from] chem::ChemError),
}

/// Enumerates structurally possible attachments of `child` onto `parent_atoms` of
/// `partial` (validity is checked separately with `attach` + `is_valid`).
pub fn candidates(partial: &MolGraph, parent_atoms: &[usize], child: &MolGraph) -> Vec<Attachment> {
    let mut out = Vec::new();
    let is_ring = |g: &MolGraph, n: usize| n >= 3 && g.bonds.len() >= n;
    let child_ring = is_ring(child, child.n_atoms());
    let parent_ring = parent_atoms.len() >= 3;
    // One shared atom.
    for ci in 0..child.n_atoms() {
        for &pa in parent_atoms {
            if MolGraph::same_kind(&child.atoms[ci], &partial.atoms[pa]) {
                out.push(Attachment {
                    pairs: vec![(ci, pa)],
                });
            }
        }
    }
    // A shared bond (ring fusion), both orientations, same bond order.
    if child_ring && parent_ring {
        for cb in &child.bonds {
            for (x, &pa) in parent_atoms.iter().enumerate() {
                for &pb in &parent_atoms[x + 1..] {
                    let Some(k) = partial.bond_between(pa, pb) else {
                        continue;
                    };
                    if partial.bonds[k].order != cb.order {
                        continue;
                    }
                    let (ci, cj) = (cb.begin as usize, cb.end as usize);
                    for (a, b) in [(pa, pb), (pb, pa)] {
                        if MolGraph::same_kind(&child.atoms[ci], &partial.atoms[a])
                            && MolGraph::same_kind(&child.atoms[cj], &partial.atoms[b])
                        {
                            out.push(Attachment {
                                pairs: vec![(ci, a), (cj, b)],
                            });
                            closures(partial, parent_atoms, child, [(ci, a), (cj, b)], &mut out);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Peri-fused closures of a ring fused along `bond`: besides the shared bond, one
/// more child atom next to a shared atom coincides with an atom of the partial
/// molecule outside the parent that is bonded the same way to that shared atom
/// (the third ring around a peri atom, e.g. in acenaphthene, closes onto the ring
/// placed before it).
fn closures(
    partial: &MolGraph,
    parent_atoms: &[usize],
    child: &MolGraph,
    bond: [(usize, usize); 2],
    out: &mut Vec<Attachment>,
) {
    for (end, (ci, pa)) in bond.into_iter().enumerate() {
        let other = bond[1 - end].0;
        for &(ck, cb) in &child.adj[ci] {
            if ck == other {
                continue;
            }
            for &(pk, pb) in &partial.adj[pa] {
                // Only onto a ring bond of a ring placed before (the peri case).
                if parent_atoms.contains(&pk)
                    || !partial.bonds[pb].in_ring
                    || partial.bonds[pb].order != child.bonds[cb].order
                    || !MolGraph::same_kind(&child.atoms[ck], &partial.atoms[pk])
                {
                    continue;
                }
                let mut pairs = bond.to_vec();
                pairs.push((ck, pk));
                out.push(Attachment { pairs });
            }
        }
    }
}

/// Applies an attachment: the child's other atoms are appended, its bonds added
/// (a bond already present between two shared atoms is kept as it is). Returns the
/// new graph and the partial-molecule index of every child atom.
pub fn attach(partial: &MolGraph, child: &MolGraph, att: &Attachment) -> (MolGraph, Vec<usize>) {
    let mut atoms = partial.atoms.clone();
    let mut bonds = partial.bonds.clone();
    let mut index = vec![usize::MAX; child.n_atoms()];
    for &(ci, pa) in &att.pairs {
        index[ci] = pa;
    }
    for (ci, a) in child.atoms.iter().enumerate() {
        if index[ci] == usize::MAX {
            index[ci] = atoms.len();
            atoms.push(KAtom {
                explicit_hs: 0,
                ..a.clone()
            });
        }
    }
    for b in &child.bonds {
        let (x, y) = (index[b.begin as usize], index[b.end as usize]);
        let both_old = x < partial.n_atoms() && y < partial.n_atoms();
        if both_old && partial.bond_between(x, y).is_some() {
            continue;
        }
        bonds.push(KBond {
            begin: x as i32,
            end: y as i32,
            ..b.clone()
        });
    }
    (MolGraph::new(atoms, bonds), index)
}

/// Whether RDKit accepts the graph as a molecule (valences, kekulization).
pub fn is_valid(g: &MolGraph) -> bool {
    chem::graph_smiles(&g.atoms, &g.bonds, false).is_ok()
}

/// The molecule's canonical non-isomeric SMILES (stereo is not modelled).
pub fn flat_smiles(g: &MolGraph) -> Result<String, chem::ChemError> {
    chem::graph_smiles(&g.atoms, &g.bonds, false)
}

/// Rebuilds `mol` along its own junction tree, choosing at every step the valid
/// candidate attachment that matches the molecule; returns the rebuilt SMILES.
pub fn gold_path(
    mol: &MolGraph,
    tree: &JunctionTree,
    labels: &[MolGraph],
) -> Result<String, AssemblyError> {
    walk_gold(mol, tree, labels, |_| {})
}

/// What `walk_gold` shows its caller at every attached node.
pub struct GoldStep<'a> {
    pub node: usize,
    /// The molecule before the node is attached, and the atoms of its parent in it.
    pub partial: &'a MolGraph,
    pub parent_atoms: &'a [usize],
    pub label: &'a MolGraph,
    pub candidates: &'a [Attachment],
    /// Index into `candidates` of the attachment that reproduces the molecule.
    pub gold: usize,
}

/// The gold path, calling `visit` at every attached (non-root) node.
pub fn walk_gold<F: FnMut(&GoldStep)>(
    mol: &MolGraph,
    tree: &JunctionTree,
    labels: &[MolGraph],
    mut visit: F,
) -> Result<String, AssemblyError> {
    let unmapped = |node: usize| AssemblyError::Unmapped {
        node,
        label: tree.labels[node].clone(),
    };
    let root_map = map_onto(&labels[0], mol, &tree.clusters[0], &[]).ok_or_else(|| unmapped(0))?;
    let mut partial = MolGraph::new(
        labels[0]
            .atoms
            .iter()
            .map(|a| KAtom {
                explicit_hs: 0,
                ..a.clone()
            })
            .collect(),
        labels[0].bonds.clone(),
    );
    // Original atom of each partial-molecule atom, and partial atoms of each placed node.
    let mut orig: Vec<usize> = root_map;
    let mut node_atoms: Vec<Vec<usize>> = vec![Vec::new(); tree.clusters.len()];
    node_atoms[0] = (0..partial.n_atoms()).collect();
    let nb = tree.neighbours();
    let mut stack = vec![(0usize, usize::MAX)];
    while let Some((node, parent)) = stack.pop() {
        for &child in nb[node].iter().rev() {
            if child != parent {
                stack.push((child, node));
            }
        }
        if parent == usize::MAX {
            continue;
        }
        // The node's atoms already in the molecule: those shared with the parent,
        // and for a peri-fused closure one more atom of an earlier ring.
        let shared: Vec<usize> = tree.clusters[node]
            .iter()
            .copied()
            .filter(|a| orig.contains(a))
            .collect();
        let label = &labels[node];
        let cands = candidates(&partial, &node_atoms[parent], label);
        // First a candidate whose ring keeps the molecule's Kekulé pattern in place,
        // then any that reproduces the connectivity.
        let mut placed = None;
        'passes: for orders in [true, false] {
            for (k, cand) in cands.iter().enumerate() {
                let mut got: Vec<usize> = cand.pairs.iter().map(|&(_, pa)| orig[pa]).collect();
                got.sort_unstable();
                if got != shared {
                    continue;
                }
                let fixed: Vec<(usize, usize)> =
                    cand.pairs.iter().map(|&(ci, pa)| (ci, orig[pa])).collect();
                let Some(psi) = map_with(label, mol, &tree.clusters[node], &fixed, orders) else {
                    continue;
                };
                let (next, index) = attach(&partial, label, cand);
                if !is_valid(&next) {
                    continue;
                }
                placed = Some((k, psi, next, index));
                break 'passes;
            }
        }
        let Some((gold, psi, next, index)) = placed else {
            return Err(AssemblyError::NoGoldCandidate {
                node,
                label: tree.labels[node].clone(),
                candidates: cands.len(),
            });
        };
        visit(&GoldStep {
            node,
            partial: &partial,
            parent_atoms: &node_atoms[parent],
            label,
            candidates: &cands,
            gold,
        });
        for (ci, &pi) in index.iter().enumerate() {
            if pi >= orig.len() {
                orig.push(psi[ci]);
            }
        }
        node_atoms[node] = index;
        partial = next;
    }
    let got = flat_smiles(&partial)?;
    let expected = flat_smiles(mol)?;
    if got != expected {
        return Err(AssemblyError::Different { got, expected });
    }
    Ok(got)
}
