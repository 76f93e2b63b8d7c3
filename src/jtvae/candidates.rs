//! Training examples for the assembly scorer: along the gold path of a molecule,
//! every node's valid candidate attachments become small featurized graphs (the
//! parent's and the child's atoms in the molecule that the attachment would give),
//! with the index of the gold candidate. Computed once per training molecule.
use super::assemble::{attach, flat_smiles, walk_gold, AssemblyError};
use super::graph::MolGraph;
use super::tree::{decompose_smiles, LabelCache};
use crate::chem::{self, featurize::ELEMENTS};
use std::collections::HashMap;

/// Element one-hot (43 + other), formal charge, degree 0–5, in child, in parent, shared.
pub const CAND_ATOM_DIM: usize = 44 + 1 + 6 + 3;
/// Bond order one-hot (1, 2, 3), bond of the child.
pub const CAND_BOND_DIM: usize = 4;

/// The valid candidates of one node; `gold` indexes `graphs`.
#[derive(Debug, Clone)]
pub struct NodeCandidates {
    pub graphs: Vec<chem::MolGraph>,
    pub gold: usize,
}

/// Parses cluster labels once, and remembers which label pairs can be attached.
#[derive(Default)]
pub struct LabelGraphs {
    graphs: HashMap<String, MolGraph>,
    pairs: HashMap<(String, String), bool>,
}

impl LabelGraphs {
    pub fn get(&mut self, label: &str) -> Result<&MolGraph, chem::ChemError> {
        if !self.graphs.contains_key(label) {
            let g = MolGraph::from_kekule(&chem::parse_kekule(label)?);
            self.graphs.insert(label.to_string(), g);
        }
        Ok(&self.graphs[label])
    }

    /// A label parsed before (by `get`), without parsing; for read-only sharing.
    pub fn parsed(&self, label: &str) -> Option<&MolGraph> {
        self.graphs.get(label)
    }

    /// Whether a `child` cluster can be attached to a `parent` cluster on its own
    /// (some candidate attachment gives a valid molecule). A necessary condition for
    /// the pair to be neighbours in a decodable tree.
    pub fn can_attach(&mut self, parent: &str, child: &str) -> bool {
        let key = (parent.to_string(), child.to_string());
        if let Some(&ok) = self.pairs.get(&key) {
            return ok;
        }
        let ok = match (self.get(parent).cloned(), self.get(child).cloned()) {
            (Ok(p), Ok(c)) => {
                let p = MolGraph::new(
                    p.atoms
                        .iter()
                        .map(|a| crate::chem::mol::KAtom {
                            explicit_hs: 0,
                            ..a.clone()
                        })
                        .collect(),
                    p.bonds.clone(),
                );
                let all: Vec<usize> = (0..p.n_atoms()).collect();
                super::assemble::candidates(&p, &all, &c)
                    .iter()
                    .any(|cand| flat_smiles(&attach(&p, &c, cand).0).is_ok())
            }
            _ => false,
        };
        self.pairs.insert(key, ok);
        ok
    }
}

/// The local graph of a candidate: atoms of parent and child in `next`.
pub fn local_graph(
    next: &MolGraph,
    parent_atoms: &[usize],
    child_atoms: &[usize],
) -> chem::MolGraph {
    let mut atoms: Vec<usize> = parent_atoms.to_vec();
    atoms.extend(child_atoms.iter().filter(|a| !parent_atoms.contains(a)));
    let pos = |a: usize| atoms.iter().position(|&x| x == a);
    let mut atom_x = Vec::with_capacity(atoms.len() * CAND_ATOM_DIM);
    for &a in &atoms {
        let mut row = [0f32; CAND_ATOM_DIM];
        let k = &next.atoms[a];
        row[ELEMENTS
            .iter()
            .position(|&(_, z)| z == k.atomic_num)
            .unwrap_or(43)] = 1.0;
        row[44] = k.formal_charge as f32;
        row[45 + next.adj[a].len().min(5)] = 1.0;
        let (c, p) = (child_atoms.contains(&a), parent_atoms.contains(&a));
        row[51] = f32::from(u8::from(c));
        row[52] = f32::from(u8::from(p));
        row[53] = f32::from(u8::from(c && p));
        atom_x.extend_from_slice(&row);
    }
    let (mut src, mut dst, mut edge_x) = (Vec::new(), Vec::new(), Vec::new());
    for b in &next.bonds {
        let (Some(i), Some(j)) = (pos(b.begin as usize), pos(b.end as usize)) else {
            continue;
        };
        let mut row = [0f32; CAND_BOND_DIM];
        row[(b.order.clamp(1, 3) - 1) as usize] = 1.0;
        row[3] = f32::from(u8::from(
            child_atoms.contains(&(b.begin as usize)) && child_atoms.contains(&(b.end as usize)),
        ));
        for (s, d) in [(i, j), (j, i)] {
            src.push(s as i64);
            dst.push(d as i64);
            edge_x.extend_from_slice(&row);
        }
    }
    chem::MolGraph {
        n_atoms: atoms.len(),
        atom_dim: CAND_ATOM_DIM,
        atom_x,
        edge_dim: CAND_BOND_DIM,
        edge_x,
        src,
        dst,
    }
}

/// Candidate sets of every node of `smiles` that has at least two valid candidates,
/// at most `max_per_node` candidates each (the gold one always kept).
pub fn training_candidates(
    smiles: &str,
    max_per_node: usize,
    cache: &mut LabelCache,
    label_graphs: &mut LabelGraphs,
) -> Result<Vec<NodeCandidates>, AssemblyError> {
    let (mol, tree) = decompose_smiles(smiles, cache).map_err(|e| {
        AssemblyError::Chem(chem::ChemError {
            smiles: smiles.to_string(),
            message: e.to_string(),
        })
    })?;
    let mut labels = Vec::with_capacity(tree.labels.len());
    for l in &tree.labels {
        labels.push(label_graphs.get(l)?.clone());
    }
    let mut out = Vec::new();
    walk_gold(&mol, &tree, &labels, |step| {
        // Candidates giving the same molecule (symmetric attachments) are one choice.
        let built: Vec<(MolGraph, Vec<usize>)> = step
            .candidates
            .iter()
            .map(|cand| attach(step.partial, step.label, cand))
            .collect();
        let gold_smiles = flat_smiles(&built[step.gold].0).ok();
        let mut seen: Vec<String> = gold_smiles.iter().cloned().collect();
        let mut graphs = vec![local_graph(
            &built[step.gold].0,
            step.parent_atoms,
            &built[step.gold].1,
        )];
        for (k, (next, index)) in built.iter().enumerate() {
            if graphs.len() >= max_per_node {
                break;
            }
            if k == step.gold {
                continue;
            }
            let Ok(smi) = flat_smiles(next) else { continue };
            if seen.contains(&smi) {
                continue;
            }
            seen.push(smi);
            graphs.push(local_graph(next, step.parent_atoms, index));
        }
        if graphs.len() >= 2 {
            // The gold candidate is put first while collecting; rotate it to a place
            // that depends on the node, so the scorer cannot learn "pick the first".
            let gold = step.node % graphs.len();
            graphs.swap(0, gold);
            out.push(NodeCandidates { graphs, gold });
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_include_the_gold_attachment_and_differ() {
        let (mut c, mut l) = (LabelCache::default(), LabelGraphs::default());
        let nodes = training_candidates("CC(=O)Nc1ccc(O)cc1", 20, &mut c, &mut l).unwrap();
        assert!(!nodes.is_empty());
        for n in &nodes {
            assert!(n.gold < n.graphs.len() && n.graphs.len() >= 2);
            let g = &n.graphs[n.gold];
            assert_eq!(g.atom_x.len(), g.n_atoms * CAND_ATOM_DIM);
            assert!(n
                .graphs
                .iter()
                .enumerate()
                .any(|(k, o)| k != n.gold && o.atom_x != g.atom_x));
        }
        let capped = training_candidates("CC(=O)Nc1ccc(O)cc1", 2, &mut c, &mut l).unwrap();
        assert!(capped.iter().all(|n| n.graphs.len() == 2));
    }
}
