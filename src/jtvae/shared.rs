//! Candidate graphs compressed for the assembly scorer at decode time. An atom's
//! state after t message-passing steps is a function of its t-hop neighbourhood
//! (features and bond types) only, so atoms with the same neighbourhood history
//! (the same colour of Weisfeiler–Lehman refinement) have the same state, in the
//! same graph or in any other candidate of the batch. The scorer then runs its
//! large products once per colour instead of once per atom; the candidates of a
//! decode batch repeat a few common attachments (a ring on a chain carbon, a
//! carbonyl on a ring), so most atoms share their colour with another.
//!
//! Neighbours of a colour are listed in an order fixed by the structure they
//! describe (a hash of their history), not by where they occur in the batch, so
//! the rounding of a state does not depend on the batch either.
use super::candidates::{CandAtom, CandBond, LocalGraph};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Colours of one refinement step.
#[derive(Debug, Default, Clone)]
pub struct Level {
    /// Previous colour of each colour of this level (its own state before the step).
    pub prev: Vec<i64>,
    /// One entry per neighbour of each colour's representative atom: the
    /// neighbour's previous colour, the bond code, and the colour it feeds.
    pub nbr: Vec<i64>,
    pub bond: Vec<i64>,
    pub into: Vec<i64>,
}

/// Candidate graphs as colours (see the module doc).
#[derive(Debug, Default, Clone)]
pub struct SharedGraphs {
    /// The atom code of each colour of level 0.
    pub atoms: Vec<CandAtom>,
    /// The distinct bond codes (indexed by `Level::bond`).
    pub bonds: Vec<(u8, bool)>,
    /// One level per message-passing step.
    pub levels: Vec<Level>,
    /// Final colour of every atom, graph after graph, and the graph of each atom.
    pub atom_color: Vec<i64>,
    pub atom_graph: Vec<i64>,
    pub n_graphs: usize,
}

fn structure_hash<T: Hash>(t: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

/// A colour's neighbours: (structural hash, bond code, colour) of each, sorted.
type Neighbours = Vec<(u64, i64, i64)>;

fn bond_code(b: &CandBond) -> (u8, bool) {
    (b.order.clamp(1, 3), b.in_child)
}

impl SharedGraphs {
    /// Refines the atoms of `graphs` for `steps` message-passing steps.
    pub fn new(graphs: &[&LocalGraph], steps: usize) -> SharedGraphs {
        let mut out = SharedGraphs {
            n_graphs: graphs.len(),
            ..Default::default()
        };
        // Neighbour lists (batch-global atom index, bond code index) of every atom.
        let mut bond_ids: HashMap<(u8, bool), i64> = HashMap::new();
        let mut adj: Vec<Vec<(usize, i64)>> = Vec::new();
        let mut color: Vec<i64> = Vec::new();
        // Structural hash of each colour of the current level.
        let mut hashes: Vec<u64> = Vec::new();
        let mut atom_ids: HashMap<CandAtom, i64> = HashMap::new();
        for (gi, g) in graphs.iter().enumerate() {
            let base = adj.len();
            for a in &g.atoms {
                let next = atom_ids.len() as i64;
                let c = *atom_ids.entry(*a).or_insert_with(|| {
                    out.atoms.push(*a);
                    hashes.push(structure_hash(a));
                    next
                });
                color.push(c);
                adj.push(Vec::new());
                out.atom_graph.push(gi as i64);
            }
            for b in &g.bonds {
                let code = bond_code(b);
                let next = bond_ids.len() as i64;
                let k = *bond_ids.entry(code).or_insert_with(|| {
                    out.bonds.push(code);
                    next
                });
                let (i, j) = (base + b.begin as usize, base + b.end as usize);
                adj[i].push((j, k));
                adj[j].push((i, k));
            }
        }
        for _ in 0..steps {
            let mut level = Level::default();
            let mut ids: HashMap<(i64, Neighbours), i64> = HashMap::new();
            let mut next_hashes = Vec::new();
            let mut next_color = Vec::with_capacity(color.len());
            for (a, nbrs) in adj.iter().enumerate() {
                // Sorted by structure first, so the order does not depend on the batch.
                let mut key: Neighbours = nbrs
                    .iter()
                    .map(|&(n, k)| (hashes[color[n] as usize], k, color[n]))
                    .collect();
                key.sort_unstable();
                let own = color[a];
                let next = ids.len() as i64;
                let c = match ids.get(&(own, key.clone())) {
                    Some(&c) => c,
                    None => {
                        let h = structure_hash(&(
                            hashes[own as usize],
                            key.iter()
                                .map(|&(h, k, _)| (h, out.bonds[k as usize]))
                                .collect::<Vec<_>>(),
                        ));
                        next_hashes.push(h);
                        level.prev.push(own);
                        for &(_, k, n) in &key {
                            level.nbr.push(n);
                            level.bond.push(k);
                            level.into.push(next);
                        }
                        ids.insert((own, key), next);
                        next
                    }
                };
                next_color.push(c);
            }
            out.levels.push(level);
            color = next_color;
            hashes = next_hashes;
        }
        out.atom_color = color;
        out
    }

    /// Number of colours at the last level (rows of the last large product).
    pub fn n_colors(&self) -> usize {
        self.levels
            .last()
            .map_or(self.atoms.len(), |l| l.prev.len())
    }

    pub fn n_atoms(&self) -> usize {
        self.atom_color.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(element: u8, degree: u8, in_child: bool) -> CandAtom {
        CandAtom {
            element,
            charge: 0,
            degree,
            in_child,
            in_parent: !in_child,
        }
    }

    fn chain(n: usize) -> LocalGraph {
        LocalGraph {
            atoms: (0..n).map(|i| atom(5, 2, i == 0)).collect(),
            bonds: (1..n)
                .map(|i| CandBond {
                    begin: (i - 1) as u32,
                    end: i as u32,
                    order: 1,
                    in_child: false,
                })
                .collect(),
        }
    }

    #[test]
    fn atoms_with_the_same_history_share_a_colour() {
        let (a, b) = (chain(4), chain(4));
        let s = SharedGraphs::new(&[&a, &b], 2);
        assert_eq!(s.n_atoms(), 8);
        // Both graphs are the same: their atoms pair up colour for colour.
        assert_eq!(s.atom_color[..4], s.atom_color[4..]);
        // Within a chain of 4 with a flagged end, every atom differs after 2 steps.
        let mut c = s.atom_color[..4].to_vec();
        c.sort_unstable();
        c.dedup();
        assert_eq!(c.len(), 4);
        assert_eq!(s.n_colors(), 4);
        // Level 0 has two atom codes (flagged end, the rest).
        assert_eq!(s.atoms.len(), 2);
        // Every colour lists one entry per neighbour of its representative.
        let l = &s.levels[0];
        assert_eq!(l.nbr.len(), l.bond.len());
        assert_eq!(l.nbr.len(), 2 * 3);
    }

    #[test]
    fn colour_order_of_neighbours_does_not_depend_on_the_batch() {
        let a = chain(5);
        let one = SharedGraphs::new(&[&a], 3);
        let two = SharedGraphs::new(&[&chain(3), &a], 3);
        // The same colour of `a` lists its neighbours' hashes in the same order:
        // compare the bond-code sequences per colour of the last level.
        let entries = |s: &SharedGraphs, c: i64| {
            let l = s.levels.last().unwrap();
            (0..l.into.len())
                .filter(|&k| l.into[k] == c)
                .map(|k| s.bonds[l.bond[k] as usize])
                .collect::<Vec<_>>()
        };
        for k in 0..5 {
            assert_eq!(
                entries(&one, one.atom_color[k]),
                entries(&two, two.atom_color[3 + k])
            );
        }
    }
}
