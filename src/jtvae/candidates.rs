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

    /// Parses every label of `vocab` that can be parsed (once per cache), so that
    /// decoding can share the cache read-only; unparsable labels stay absent.
    pub fn parse_all(&mut self, vocab: &[String]) {
        for l in vocab {
            let _ = self.get(l);
        }
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

/// One atom of a candidate's local graph in compact form: everything its feature
/// row holds (the row is a function of these, see `CandAtom::row`). Stored as is in
/// the dataset file, so prepared candidates read back bit for bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CandAtom {
    /// Column of the element one-hot (`ELEMENTS` order; 43 = other).
    pub element: u8,
    pub charge: i8,
    /// Degree in the molecule, capped at 5.
    pub degree: u8,
    pub in_child: bool,
    pub in_parent: bool,
}

impl CandAtom {
    /// The atom's feature row (`CAND_ATOM_DIM` columns).
    pub fn row(&self) -> [f32; CAND_ATOM_DIM] {
        let mut row = [0f32; CAND_ATOM_DIM];
        row[usize::from(self.element).min(43)] = 1.0;
        row[44] = f32::from(self.charge);
        row[45 + usize::from(self.degree).min(5)] = 1.0;
        let (c, p) = (self.in_child, self.in_parent);
        row[51] = f32::from(u8::from(c));
        row[52] = f32::from(u8::from(p));
        row[53] = f32::from(u8::from(c && p));
        row
    }
}

/// One bond of a local graph in compact form: local atom indices, order, whether
/// both ends are the child's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandBond {
    pub begin: u32,
    pub end: u32,
    /// 1, 2 or 3.
    pub order: u8,
    pub in_child: bool,
}

impl CandBond {
    /// The bond's feature row (`CAND_BOND_DIM` columns).
    pub fn row(&self) -> [f32; CAND_BOND_DIM] {
        let mut row = [0f32; CAND_BOND_DIM];
        row[usize::from(self.order.clamp(1, 3) - 1)] = 1.0;
        row[3] = f32::from(u8::from(self.in_child));
        row
    }
}

/// A candidate's local graph in compact form (see `CandAtom`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalGraph {
    pub atoms: Vec<CandAtom>,
    pub bonds: Vec<CandBond>,
}

impl LocalGraph {
    /// The featurized graph: one row per atom, each bond as two directed edges.
    pub fn to_graph(&self) -> chem::MolGraph {
        let mut atom_x = Vec::with_capacity(self.atoms.len() * CAND_ATOM_DIM);
        for a in &self.atoms {
            atom_x.extend_from_slice(&a.row());
        }
        let n_edges = 2 * self.bonds.len();
        let (mut src, mut dst) = (Vec::with_capacity(n_edges), Vec::with_capacity(n_edges));
        let mut edge_x = Vec::with_capacity(n_edges * CAND_BOND_DIM);
        for b in &self.bonds {
            let row = b.row();
            let (i, j) = (i64::from(b.begin), i64::from(b.end));
            for (s, d) in [(i, j), (j, i)] {
                src.push(s);
                dst.push(d);
                edge_x.extend_from_slice(&row);
            }
        }
        chem::MolGraph {
            n_atoms: self.atoms.len(),
            atom_dim: CAND_ATOM_DIM,
            atom_x,
            edge_dim: CAND_BOND_DIM,
            edge_x,
            src,
            dst,
        }
    }
}

/// The local graph of a candidate in compact form: atoms of parent and child in `next`.
pub fn local_code(next: &MolGraph, parent_atoms: &[usize], child_atoms: &[usize]) -> LocalGraph {
    let mut atoms: Vec<usize> = parent_atoms.to_vec();
    atoms.extend(child_atoms.iter().filter(|a| !parent_atoms.contains(a)));
    let pos = |a: usize| atoms.iter().position(|&x| x == a);
    let codes = atoms
        .iter()
        .map(|&a| {
            let k = &next.atoms[a];
            CandAtom {
                element: ELEMENTS
                    .iter()
                    .position(|&(_, z)| z == k.atomic_num)
                    .unwrap_or(43) as u8,
                // Charges are tiny; the clamp only makes the cast total.
                charge: k.formal_charge.clamp(-128, 127) as i8,
                degree: next.adj[a].len().min(5) as u8,
                in_child: child_atoms.contains(&a),
                in_parent: parent_atoms.contains(&a),
            }
        })
        .collect();
    let mut bonds = Vec::new();
    for b in &next.bonds {
        let (Some(i), Some(j)) = (pos(b.begin as usize), pos(b.end as usize)) else {
            continue;
        };
        bonds.push(CandBond {
            begin: i as u32,
            end: j as u32,
            order: b.order.clamp(1, 3) as u8,
            in_child: child_atoms.contains(&(b.begin as usize))
                && child_atoms.contains(&(b.end as usize)),
        });
    }
    LocalGraph {
        atoms: codes,
        bonds,
    }
}

/// The local graph of a candidate: atoms of parent and child in `next`, featurized.
pub fn local_graph(
    next: &MolGraph,
    parent_atoms: &[usize],
    child_atoms: &[usize],
) -> chem::MolGraph {
    local_code(next, parent_atoms, child_atoms).to_graph()
}

/// The valid candidates of one node in compact form (see `LocalGraph`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactCandidates {
    pub graphs: Vec<LocalGraph>,
    pub gold: usize,
}

impl CompactCandidates {
    /// The featurized candidates.
    pub fn to_node(&self) -> NodeCandidates {
        NodeCandidates {
            graphs: self.graphs.iter().map(LocalGraph::to_graph).collect(),
            gold: self.gold,
        }
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
    Ok(
        compact_training_candidates(smiles, max_per_node, cache, label_graphs)?
            .iter()
            .map(CompactCandidates::to_node)
            .collect(),
    )
}

/// `training_candidates` in compact form (what `prepare` stores).
pub fn compact_training_candidates(
    smiles: &str,
    max_per_node: usize,
    cache: &mut LabelCache,
    label_graphs: &mut LabelGraphs,
) -> Result<Vec<CompactCandidates>, AssemblyError> {
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
        let mut graphs = vec![local_code(
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
            graphs.push(local_code(next, step.parent_atoms, index));
        }
        if graphs.len() >= 2 {
            // The gold candidate is put first while collecting; rotate it to a place
            // that depends on the node, so the scorer cannot learn "pick the first".
            let gold = step.node % graphs.len();
            graphs.swap(0, gold);
            out.push(CompactCandidates { graphs, gold });
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

    /// The row encoding before it was factored into `CandAtom`/`CandBond` (kept
    /// verbatim): the compact codes must give the very same f32 rows.
    fn reference_local_graph(
        next: &MolGraph,
        parent_atoms: &[usize],
        child_atoms: &[usize],
    ) -> chem::MolGraph {
        let mut atoms: Vec<usize> = parent_atoms.to_vec();
        atoms.extend(child_atoms.iter().filter(|a| !parent_atoms.contains(a)));
        let pos = |a: usize| atoms.iter().position(|&x| x == a);
        let mut atom_x = Vec::new();
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
                child_atoms.contains(&(b.begin as usize))
                    && child_atoms.contains(&(b.end as usize)),
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

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn compact_codes_give_the_rows_of_the_reference_encoding() {
        let mut cache = LabelCache::default();
        let mut lg = LabelGraphs::default();
        let mut compared = 0;
        // Charged atoms, a triple bond, a halogen outside the short list, fused rings.
        for smi in [
            "CC(=O)Nc1ccc(O)cc1",
            "C[N+](C)(C)CC#N",
            "O=C([O-])c1ccc2ccccc2c1",
            "CC1=CC(=O)C(Br)=C(C)C1=O",
            "C[Si](C)(C)OCc1ccco1",
        ] {
            let (mol, tree) = decompose_smiles(smi, &mut cache).unwrap();
            let labels: Vec<MolGraph> = tree
                .labels
                .iter()
                .map(|l| lg.get(l).unwrap().clone())
                .collect();
            walk_gold(&mol, &tree, &labels, |step| {
                for cand in step.candidates {
                    let (next, index) = attach(step.partial, step.label, cand);
                    let want = reference_local_graph(&next, step.parent_atoms, &index);
                    let got = local_graph(&next, step.parent_atoms, &index);
                    assert_eq!(bits(&got.atom_x), bits(&want.atom_x), "{smi}");
                    assert_eq!(bits(&got.edge_x), bits(&want.edge_x), "{smi}");
                    assert_eq!((&got.src, &got.dst), (&want.src, &want.dst), "{smi}");
                    assert_eq!(got, want);
                    compared += 1;
                }
            })
            .unwrap();
        }
        assert!(compared > 10, "{compared} candidates compared");
    }
}
