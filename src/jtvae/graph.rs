//! A small molecular graph in Kekulé form with adjacency, and the search for an
//! atom mapping of one graph onto (a part of) another that the decomposition and
//! assembly need. Atoms match on element and formal charge; bond orders are not
//! required to match, because a ring's Kekulé pattern can differ between the
//! molecule and the ring on its own.
use crate::chem::mol::{KAtom, KBond, KekuleMol};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MolGraph {
    pub atoms: Vec<KAtom>,
    pub bonds: Vec<KBond>,
    /// For every atom, its (neighbour, bond index) pairs.
    pub adj: Vec<Vec<(usize, usize)>>,
}

impl MolGraph {
    pub fn new(atoms: Vec<KAtom>, bonds: Vec<KBond>) -> MolGraph {
        let mut adj = vec![Vec::new(); atoms.len()];
        for (k, b) in bonds.iter().enumerate() {
            adj[b.begin as usize].push((b.end as usize, k));
            adj[b.end as usize].push((b.begin as usize, k));
        }
        MolGraph { atoms, bonds, adj }
    }

    pub fn from_kekule(m: &KekuleMol) -> MolGraph {
        MolGraph::new(m.atoms.clone(), m.bonds.clone())
    }

    pub fn n_atoms(&self) -> usize {
        self.atoms.len()
    }

    pub fn bond_between(&self, a: usize, b: usize) -> Option<usize> {
        self.adj[a].iter().find(|(n, _)| *n == b).map(|&(_, k)| k)
    }

    pub fn same_kind(a: &KAtom, b: &KAtom) -> bool {
        a.atomic_num == b.atomic_num && a.formal_charge == b.formal_charge
    }

    /// The subgraph induced by `atoms` (in that order), with H counts left to RDKit.
    pub fn induced(&self, atoms: &[usize]) -> MolGraph {
        let pos = |a: usize| atoms.iter().position(|&x| x == a);
        let new_atoms = atoms
            .iter()
            .map(|&a| KAtom {
                explicit_hs: 0,
                ..self.atoms[a].clone()
            })
            .collect();
        let bonds = self
            .bonds
            .iter()
            .filter_map(|b| {
                let (i, j) = (pos(b.begin as usize)?, pos(b.end as usize)?);
                Some(KBond {
                    begin: i as i32,
                    end: j as i32,
                    ..b.clone()
                })
            })
            .collect();
        MolGraph::new(new_atoms, bonds)
    }
}

/// Finds a bijection `map[i]` from the atoms of `small` onto `target_atoms` (atoms of
/// `big`) that preserves element, charge and adjacency (within the target set),
/// extending the pairs fixed in `fixed`. Deterministic: the first mapping found in
/// atom order.
pub fn map_onto(
    small: &MolGraph,
    big: &MolGraph,
    target_atoms: &[usize],
    fixed: &[(usize, usize)],
) -> Option<Vec<usize>> {
    map_with(small, big, target_atoms, fixed, true)
        .or_else(|| map_with(small, big, target_atoms, fixed, false))
}

/// Like `map_onto`; with `orders`, bond orders must match too (tried first, so a ring
/// keeps the molecule's Kekulé pattern in place whenever it can).
pub fn map_with(
    small: &MolGraph,
    big: &MolGraph,
    target_atoms: &[usize],
    fixed: &[(usize, usize)],
    orders: bool,
) -> Option<Vec<usize>> {
    if small.n_atoms() != target_atoms.len() {
        return None;
    }
    let mut map = vec![usize::MAX; small.n_atoms()];
    let mut used = vec![false; big.n_atoms()];
    for &(s, b) in fixed {
        if !target_atoms.contains(&b)
            || !MolGraph::same_kind(&small.atoms[s], &big.atoms[b])
            || used[b]
        {
            return None;
        }
        map[s] = b;
        used[b] = true;
    }
    // Visit atoms in BFS order from the fixed ones so neighbours constrain the search.
    let mut order: Vec<usize> = fixed.iter().map(|&(s, _)| s).collect();
    let mut seen = vec![false; small.n_atoms()];
    order.iter().for_each(|&s| seen[s] = true);
    let mut head = 0;
    loop {
        while head < order.len() {
            let a = order[head];
            head += 1;
            for &(n, _) in &small.adj[a] {
                if !seen[n] {
                    seen[n] = true;
                    order.push(n);
                }
            }
        }
        match (0..small.n_atoms()).find(|&a| !seen[a]) {
            Some(a) => {
                seen[a] = true;
                order.push(a);
            }
            None => break,
        }
    }
    let free: Vec<usize> = order
        .into_iter()
        .filter(|&s| map[s] == usize::MAX)
        .collect();
    let fixed_ok = fixed.iter().all(|&(s, b)| {
        small.adj[s]
            .iter()
            .all(|&(n, k)| map[n] == usize::MAX || bond_ok(small, big, k, b, map[n], orders))
    });
    if fixed_ok
        && extend(
            small,
            big,
            target_atoms,
            &free,
            0,
            &mut map,
            &mut used,
            orders,
        )
    {
        Some(map)
    } else {
        None
    }
}

/// Whether bond `k` of `small` has a counterpart between `a` and `b` in `big`.
fn bond_ok(small: &MolGraph, big: &MolGraph, k: usize, a: usize, b: usize, orders: bool) -> bool {
    match big.bond_between(a, b) {
        Some(kb) => !orders || big.bonds[kb].order == small.bonds[k].order,
        None => false,
    }
}

#[allow(clippy::too_many_arguments)]
fn extend(
    small: &MolGraph,
    big: &MolGraph,
    targets: &[usize],
    free: &[usize],
    k: usize,
    map: &mut [usize],
    used: &mut [bool],
    orders: bool,
) -> bool {
    if k == free.len() {
        return true;
    }
    let s = free[k];
    for &b in targets {
        if used[b] || !MolGraph::same_kind(&small.atoms[s], &big.atoms[b]) {
            continue;
        }
        // Every mapped neighbour relation must agree both ways.
        let consistent = small.adj[s]
            .iter()
            .all(|&(n, k)| map[n] == usize::MAX || bond_ok(small, big, k, b, map[n], orders))
            && big.adj[b].iter().all(|&(n, _)| {
                !targets.contains(&n)
                    || !used[n]
                    || small.adj[s].iter().any(|&(sn, _)| map[sn] == n)
            });
        if !consistent {
            continue;
        }
        map[s] = b;
        used[b] = true;
        if extend(small, big, targets, free, k + 1, map, used, orders) {
            return true;
        }
        map[s] = usize::MAX;
        used[b] = false;
    }
    false
}
