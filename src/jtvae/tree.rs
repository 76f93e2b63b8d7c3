//! Tree decomposition of a molecule into clusters (Jin et al. 2018, with the rules
//! of this project): the rings of RDKit's smallest set of smallest rings and the
//! bonds outside rings are clusters; rings sharing more than two atoms (bridged
//! systems) are merged; an atom shared by three or more clusters becomes a
//! singleton cluster joined to each of them; the junction tree is a maximum
//! spanning tree of the cluster graph weighted by shared atoms. Cluster labels are
//! canonical Kekulé SMILES of the clusters as fragments. A tree's storage form
//! (`TreeRecord`: vocabulary indices instead of labels) is what the dataset file holds.
use super::graph::MolGraph;
pub use super::junction::{JunctionTree, TreeRecord};
use crate::chem::{self, mol::KekuleMol};
use std::collections::HashMap;

/// Atom lists of clusters, and tree edges between them.
type Clusters = Vec<Vec<usize>>;
type Edges = Vec<(usize, usize)>;

/// Weight of an edge to a singleton cluster: kept before ordinary shared-atom edges.
const SINGLETON_WEIGHT: usize = 100;
/// Weight added to an edge between clusters sharing a bond (fused rings): kept even
/// before singleton edges, so that fused rings are tree neighbours and every atom's
/// clusters stay connected in the tree (running intersection).
const FUSED_WEIGHT: usize = 1000;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TreeError {
    #[error("the molecule has several disconnected fragments")]
    Disconnected,
    #[error("cluster {cluster} ({atoms:?}) is not a valid fragment: {message}")]
    Label {
        cluster: usize,
        atoms: Vec<usize>,
        message: String,
    },
    #[error(transparent)]
    Chem(#[from] chem::ChemError),
}

/// Caches labels of fragments that repeat a lot (bonds and single atoms), keyed by
/// their atoms and bond order, so most clusters need no RDKit call.
#[derive(Default)]
pub struct LabelCache(HashMap<(i32, i32, i32, i32, i32), String>);

fn small_key(g: &MolGraph) -> Option<(i32, i32, i32, i32, i32)> {
    match (g.atoms.as_slice(), g.bonds.as_slice()) {
        ([a], []) => Some((a.atomic_num, a.formal_charge, 0, 0, 0)),
        ([a, b], [bond]) => {
            let (x, y) = (
                (a.atomic_num, a.formal_charge),
                (b.atomic_num, b.formal_charge),
            );
            let (x, y) = if x <= y { (x, y) } else { (y, x) };
            Some((x.0, x.1, y.0, y.1, bond.order))
        }
        _ => None,
    }
}

impl LabelCache {
    pub fn label(&mut self, g: &MolGraph) -> Result<String, chem::ChemError> {
        let key = small_key(g);
        if let Some(s) = key.and_then(|k| self.0.get(&k)) {
            return Ok(s.clone());
        }
        let s = chem::graph_smiles(&g.atoms, &g.bonds, true)?;
        if let Some(k) = key {
            self.0.insert(k, s.clone());
        }
        Ok(s)
    }
}

/// Decomposes a SMILES (see the module doc).
pub fn decompose_smiles(
    smiles: &str,
    cache: &mut LabelCache,
) -> Result<(MolGraph, JunctionTree), TreeError> {
    let m = chem::parse_kekule(smiles)?;
    let tree = decompose(&m, cache)?;
    Ok((MolGraph::from_kekule(&m), tree))
}

pub fn decompose(m: &KekuleMol, cache: &mut LabelCache) -> Result<JunctionTree, TreeError> {
    let g = MolGraph::from_kekule(m);
    let n = g.n_atoms();
    let mut bonds: Vec<Vec<usize>> = Vec::new();
    if n == 1 {
        bonds.push(vec![0]);
    }
    for b in &m.bonds {
        if !b.in_ring {
            let (x, y) = (b.begin as usize, b.end as usize);
            bonds.push(vec![x.min(y), x.max(y)]);
        }
    }
    let mut rings: Vec<Vec<usize>> = m
        .rings
        .iter()
        .map(|r| {
            let mut v: Vec<usize> = r.atoms.iter().map(|&a| a as usize).collect();
            v.sort_unstable();
            v
        })
        .collect();
    merge_bridged(&mut rings);
    loop {
        let mut clusters = bonds.clone();
        clusters.extend(rings.iter().cloned());
        if (0..n).any(|a| !clusters.iter().any(|c| c.contains(&a))) {
            return Err(TreeError::Disconnected);
        }
        // The root is the first cluster holding atom 0.
        if let Some(r) = clusters.iter().position(|c| c.contains(&0)) {
            let root = clusters.remove(r);
            clusters.insert(0, root);
        }
        let (clusters, edges) = spanning_tree(clusters, n)?;
        // A junction tree needs every atom's clusters to be connected in the tree
        // (running intersection), except where assembly closes a peri-fused ring
        // itself; cage-like ring systems can break both, and then the rings around
        // the offending atom become one cluster.
        let (open, closed) = unjoined(&clusters, &edges, n);
        let a = match open {
            Some(a) if rings.iter().filter(|r| r.contains(&a)).count() >= 2 => a,
            Some(_) => return labelled(&g, clusters, edges, cache),
            None => {
                let tree = labelled(&g, clusters, edges, cache)?;
                // A closure is kept only when assembly really rebuilds the molecule
                // with it (checked for the few molecules that need one).
                if closed.is_empty() || rebuilds(&g, &tree) {
                    return Ok(tree);
                }
                closed[0]
            }
        };
        let (with, without): (Vec<_>, Vec<_>) = rings.into_iter().partition(|r| r.contains(&a));
        let mut merged: Vec<usize> = with.into_iter().flatten().collect();
        merged.sort_unstable();
        merged.dedup();
        rings = without;
        rings.push(merged);
        merge_bridged(&mut rings);
    }
}

/// The tree with the canonical label of every cluster.
fn labelled(
    g: &MolGraph,
    clusters: Clusters,
    edges: Edges,
    cache: &mut LabelCache,
) -> Result<JunctionTree, TreeError> {
    let labels = clusters
        .iter()
        .enumerate()
        .map(|(ci, c)| {
            cache.label(&g.induced(c)).map_err(|e| TreeError::Label {
                cluster: ci,
                atoms: c.clone(),
                message: e.message,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(JunctionTree {
        clusters,
        edges,
        labels,
    })
}

/// Whether assembly rebuilds `g` along `tree` (its gold path).
fn rebuilds(g: &MolGraph, tree: &JunctionTree) -> bool {
    let labels: Option<Vec<MolGraph>> = tree
        .labels
        .iter()
        .map(|l| {
            chem::parse_kekule(l)
                .ok()
                .map(|k| MolGraph::from_kekule(&k))
        })
        .collect();
    labels.is_some_and(|l| super::assemble::gold_path(g, tree, &l).is_ok())
}

/// Atoms whose clusters are not connected in the tree: the first that assembly
/// cannot close, and those it may close. Assembly closes one case itself: an atom
/// in exactly two fused rings (sharing the bond to an atom `c`) that are joined in
/// the tree through clusters holding `c` (peri-fused systems such as acenaphthene);
/// the later ring is attached along its bond with its parent and closed onto the
/// atom already placed.
fn unjoined(
    clusters: &[Vec<usize>],
    edges: &[(usize, usize)],
    n: usize,
) -> (Option<usize>, Vec<usize>) {
    let connected = |a: usize| {
        let holds = |c: usize| clusters[c].contains(&a);
        let nodes = (0..clusters.len()).filter(|&c| holds(c)).count();
        let inner = edges.iter().filter(|&&(i, j)| holds(i) && holds(j)).count();
        inner + 1 == nodes
    };
    let closable = |a: usize| {
        let holds: Vec<&Vec<usize>> = clusters.iter().filter(|c| c.contains(&a)).collect();
        let [r1, r2] = holds.as_slice() else {
            return false;
        };
        let shared: Vec<usize> = r1.iter().copied().filter(|v| r2.contains(v)).collect();
        r1.len() >= 3
            && r2.len() >= 3
            && shared.len() == 2
            && shared.iter().all(|&c| c == a || connected(c))
    };
    let (mut open, mut closed) = (None, Vec::new());
    for a in (0..n).filter(|&a| !connected(a)) {
        if closable(a) {
            closed.push(a);
        } else {
            open = Some(a);
            break;
        }
    }
    (open, closed)
}

/// Adds singleton clusters and returns the maximum spanning tree of the cluster graph.
fn spanning_tree(mut clusters: Vec<Vec<usize>>, n: usize) -> Result<(Clusters, Edges), TreeError> {
    let mut atom_clusters: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (ci, c) in clusters.iter().enumerate() {
        for &a in c {
            atom_clusters[a].push(ci);
        }
    }
    let mut weighted: Vec<(usize, usize, usize)> = Vec::new(); // (weight, i, j)
    let mut singleton_atom = vec![false; n];
    for a in 0..n {
        if atom_clusters[a].len() >= 3 {
            singleton_atom[a] = true;
            let s = clusters.len();
            clusters.push(vec![a]);
            for &c in &atom_clusters[a] {
                weighted.push((SINGLETON_WEIGHT, c, s));
            }
        }
    }
    let mut pair_weight: HashMap<(usize, usize), usize> = HashMap::new();
    for a in 0..n {
        let cs = &atom_clusters[a];
        for x in 0..cs.len() {
            for y in x + 1..cs.len() {
                let (i, j) = (cs[x].min(cs[y]), cs[x].max(cs[y]));
                let shared = clusters[i]
                    .iter()
                    .filter(|v| clusters[j].contains(v))
                    .count();
                // Fused rings (a shared bond) are always joined directly, even when
                // both fusion atoms are singletons (substituents on both); clusters
                // meeting only at a singleton atom are joined through the singleton.
                let w = if shared >= 2 {
                    FUSED_WEIGHT + shared
                } else if singleton_atom[a] {
                    continue;
                } else {
                    shared
                };
                pair_weight.insert((i, j), w);
            }
        }
    }
    weighted.extend(pair_weight.into_iter().map(|((i, j), w)| (w, i, j)));
    // Kruskal on descending weight; ties broken by cluster indices for determinism.
    weighted.sort_by(|a, b| b.0.cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let mut parent: Vec<usize> = (0..clusters.len()).collect();
    fn find(p: &mut [usize], x: usize) -> usize {
        let mut r = x;
        while p[r] != r {
            r = p[r];
        }
        let mut y = x;
        while p[y] != r {
            let next = p[y];
            p[y] = r;
            y = next;
        }
        r
    }
    let mut edges = Vec::new();
    for (_, i, j) in weighted {
        let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
        if ri != rj {
            parent[ri] = rj;
            edges.push((i.min(j), i.max(j)));
        }
    }
    if edges.len() + 1 != clusters.len() {
        return Err(TreeError::Disconnected);
    }
    edges.sort_unstable();
    Ok((clusters, edges))
}

/// Merges rings that share more than two atoms, until none do.
fn merge_bridged(rings: &mut Vec<Vec<usize>>) {
    'again: loop {
        for i in 0..rings.len() {
            for j in i + 1..rings.len() {
                let shared = rings[i].iter().filter(|a| rings[j].contains(a)).count();
                if shared > 2 {
                    let other = rings.remove(j);
                    rings[i].extend(other);
                    rings[i].sort_unstable();
                    rings[i].dedup();
                    continue 'again;
                }
            }
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(smiles: &str) -> JunctionTree {
        decompose_smiles(smiles, &mut LabelCache::default())
            .unwrap()
            .1
    }

    #[test]
    fn acyclic_chain_is_a_path_of_bonds() {
        let t = tree("CCCO");
        assert_eq!(t.clusters, vec![vec![0, 1], vec![1, 2], vec![2, 3]]);
        assert_eq!(t.edges, vec![(0, 1), (1, 2)]);
        assert_eq!(t.labels, vec!["CC", "CC", "CO"]);
    }

    #[test]
    fn fused_bicycle_gives_two_ring_clusters() {
        // naphthalene: rings {0,1,2,3,8,9} and {3,4,5,6,7,8} share the bond 3-8
        let t = tree("c1ccc2ccccc2c1");
        assert_eq!(
            t.clusters,
            vec![vec![0, 1, 2, 3, 8, 9], vec![3, 4, 5, 6, 7, 8]]
        );
        assert_eq!(t.edges, vec![(0, 1)]);
        // Labels keep the molecule's own Kekulé pattern: the shared bond is single, so
        // the first ring holds three double bonds and the second only two.
        assert_eq!(t.labels, vec!["C1=CC=CC=C1", "C1=CCCC=C1"]);
    }

    #[test]
    fn bridged_bicycle_is_one_merged_cluster() {
        // norbornane: the two 5-rings of the SSSR share three atoms
        let t = tree("C1CC2CCC1C2");
        assert_eq!(t.clusters, vec![vec![0, 1, 2, 3, 4, 5, 6]]);
        assert!(t.edges.is_empty());
        assert_eq!(t.labels, vec!["C1CC2CCC1C2"]);
    }

    #[test]
    fn atom_in_three_clusters_becomes_a_singleton() {
        // isobutane: the centre (atom 1) is in three bond clusters
        let t = tree("CC(C)C");
        assert_eq!(
            t.clusters,
            vec![vec![0, 1], vec![1, 2], vec![1, 3], vec![1]]
        );
        assert_eq!(t.edges, vec![(0, 3), (1, 3), (2, 3)]);
        assert_eq!(t.labels, vec!["CC", "CC", "CC", "C"]);
        // 1,1-dimethylcyclopropane: the ring atom carrying both methyls is in three clusters
        let t = tree("CC1(C)CC1");
        assert_eq!(
            t.clusters,
            vec![vec![0, 1], vec![1, 2], vec![1, 3, 4], vec![1]]
        );
        assert_eq!(t.edges, vec![(0, 3), (1, 3), (2, 3)]);
        assert_eq!(t.labels, vec!["CC", "CC", "C1CC1", "C"]);
    }

    #[test]
    fn fused_rings_meeting_at_a_singleton_atom_stay_tree_neighbours() {
        // The bridgehead (atom 1) is in the methyl bond and both rings: a singleton,
        // but the rings share the bond 1-5 and must be joined directly.
        let t = tree("CC12C=CCC1N2");
        assert_eq!(
            t.clusters,
            vec![vec![0, 1], vec![1, 2, 3, 4, 5], vec![1, 5, 6], vec![1]]
        );
        assert_eq!(t.edges, vec![(0, 3), (1, 2), (1, 3)]);
    }

    #[test]
    fn cage_rings_form_a_tree_assembly_can_rebuild() {
        // strained cages of QM9: every atom's clusters are joined in the tree, or
        // closable by assembly, or the rings around it are merged
        for s in ["OC1C2C=CC3C1C23", "C1C2CC3C1C23", "C12C3C4C1C5C2C3C45"] {
            let t = tree(s);
            let n = t.clusters.iter().flatten().max().unwrap() + 1;
            assert_eq!(unjoined(&t.clusters, &t.edges, n).0, None, "{s}: {t:?}");
            rebuilds(s);
        }
    }

    /// Ring clusters (3 atoms or more that are not singletons) of a tree, sorted by size.
    fn ring_sizes(t: &JunctionTree) -> Vec<usize> {
        let mut v: Vec<usize> = t
            .clusters
            .iter()
            .map(|c| c.len())
            .filter(|&n| n >= 3)
            .collect();
        v.sort_unstable();
        v
    }

    fn rebuilds(smiles: &str) {
        let st = super::super::gold::gold_stats(&[smiles.to_string()]);
        assert_eq!(st.rebuilt, 1, "{smiles}: {:?}", st.failures);
    }

    #[test]
    fn fused_bicycle_with_substituents_on_both_fusion_atoms_stays_two_rings() {
        // Both fusion atoms carry a methyl, so both are singletons; the rings still
        // share their bond directly in the tree and are not merged.
        for s in ["CC12CCCCC1(C)CCC2", "C1CCC2CCCC2C1", "CC12CCCCC1(C)CCCC2"] {
            let t = tree(s);
            let rings = ring_sizes(&t);
            assert_eq!(rings.len(), 2, "{s}: {:?}", t.clusters);
            assert!(rings.iter().all(|&n| n <= 6), "{s}: {:?}", t.clusters);
            rebuilds(s);
        }
    }

    #[test]
    fn epoxide_fused_to_a_six_ring_stays_two_rings() {
        for s in ["C1CCC2OC2C1", "CC12CCCCC1(C)O2", "OC1CC2OC2CC1N"] {
            let t = tree(s);
            assert_eq!(ring_sizes(&t), vec![3, 6], "{s}: {:?}", t.clusters);
            rebuilds(s);
        }
    }

    #[test]
    fn peri_fused_tricycle_is_three_rings_closed_by_assembly() {
        // acenaphthene-like and phenalene-like peri-fused systems: the central atom is
        // in three rings; the third ring closes onto the ring placed before it.
        for (s, n) in [
            ("C1=CC2=CC=CC3=C2C(=C1)CC3", 3),
            ("c1cc2cccc3c2c(c1)CC3", 3),
            ("C1CC2CCCC3CCCC(C1)C23", 3),
            ("Cc1ccc2c3c1CCc3ccc2", 3),
        ] {
            let t = tree(s);
            let rings = ring_sizes(&t);
            assert_eq!(rings.len(), n, "{s}: {:?}", t.clusters);
            assert!(rings.iter().all(|&k| k <= 6), "{s}: {:?}", t.clusters);
            rebuilds(s);
        }
    }

    #[test]
    fn ring_with_substituent_and_single_atom() {
        let t = tree("Cc1ccccc1");
        assert_eq!(t.clusters, vec![vec![0, 1], vec![1, 2, 3, 4, 5, 6]]);
        assert_eq!(t.edges, vec![(0, 1)]);
        let t = tree("C");
        assert_eq!(t.clusters, vec![vec![0]]);
        assert_eq!(t.labels, vec!["C"]);
        assert_eq!(
            decompose_smiles("C.C", &mut LabelCache::default()).unwrap_err(),
            TreeError::Disconnected
        );
    }
}
