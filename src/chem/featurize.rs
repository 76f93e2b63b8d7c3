//! The RDKit featurizer: a molecule becomes a graph with one feature row per atom
//! and one per directed bond, in the spirit of DGL-LifeSci's canonical atom and
//! bond featurizers, plus an explicit "other element" column, ring membership and
//! chirality. Columns that are constant over a training set can be dropped; the
//! kept columns are part of the data set (see `io::dataset`).
use super::mol::{AtomRecord, BondRecord, ChemError, MolRecord, Molecule};

/// Element symbols with their own one-hot column (DGL-LifeSci's 43), in column order.
pub const ELEMENTS: [(&str, i32); 43] = [
    ("C", 6),
    ("N", 7),
    ("O", 8),
    ("S", 16),
    ("F", 9),
    ("Si", 14),
    ("P", 15),
    ("Cl", 17),
    ("Br", 35),
    ("Mg", 12),
    ("Na", 11),
    ("Ca", 20),
    ("Fe", 26),
    ("As", 33),
    ("Al", 13),
    ("I", 53),
    ("B", 5),
    ("V", 23),
    ("K", 19),
    ("Tl", 81),
    ("Yb", 70),
    ("Sb", 51),
    ("Sn", 50),
    ("Ag", 47),
    ("Pd", 46),
    ("Co", 27),
    ("Se", 34),
    ("Ti", 22),
    ("Zn", 30),
    ("H", 1),
    ("Li", 3),
    ("Ge", 32),
    ("Cu", 29),
    ("Au", 79),
    ("Ni", 28),
    ("Cd", 48),
    ("In", 49),
    ("Mn", 25),
    ("Zr", 40),
    ("Cr", 24),
    ("Pt", 78),
    ("Hg", 80),
    ("Pb", 82),
];
const HYBRIDIZATIONS: [(&str, i32); 5] =
    [("SP", 2), ("SP2", 3), ("SP3", 4), ("SP3D", 5), ("SP3D2", 6)];
const BOND_TYPES: [(&str, i32); 4] = [("single", 1), ("double", 2), ("triple", 3), ("aromatic", 4)];
const STEREO: [&str; 6] = ["none", "any", "Z", "E", "cis", "trans"];

const MAX_DEGREE: i32 = 10;
const MAX_IMPLICIT_H: i32 = 6;
const MAX_TOTAL_H: i32 = 4;

/// Width of the full atom feature row (before dropping constant columns).
pub const ATOM_DIM: usize = 44 + 11 + 7 + 1 + 1 + 5 + 1 + 5 + 1 + 2;
/// Width of the full bond feature row.
pub const BOND_DIM: usize = 4 + 2 + 6;

/// Names of the full atom feature columns, in order.
pub fn atom_columns() -> Vec<String> {
    let mut c: Vec<String> = ELEMENTS
        .iter()
        .map(|(s, _)| format!("element={s}"))
        .collect();
    c.push("element=other".into());
    c.extend((0..=MAX_DEGREE).map(|d| format!("degree={d}")));
    c.extend((0..=MAX_IMPLICIT_H).map(|d| format!("implicit_h={d}")));
    c.push("formal_charge".into());
    c.push("radical_electrons".into());
    c.extend(
        HYBRIDIZATIONS
            .iter()
            .map(|(s, _)| format!("hybridization={s}")),
    );
    c.push("aromatic".into());
    c.extend((0..=MAX_TOTAL_H).map(|d| format!("total_h={d}")));
    c.push("in_ring".into());
    c.push("chirality=CW".into());
    c.push("chirality=CCW".into());
    c
}

/// Names of the full bond feature columns, in order.
pub fn bond_columns() -> Vec<String> {
    let mut c: Vec<String> = BOND_TYPES
        .iter()
        .map(|(s, _)| format!("bond_type={s}"))
        .collect();
    c.push("conjugated".into());
    c.push("in_ring".into());
    c.extend(STEREO.iter().map(|s| format!("stereo={s}")));
    c
}

fn one_hot(row: &mut [f32], offset: usize, index: Option<usize>) {
    if let Some(i) = index {
        row[offset + i] = 1.0;
    }
}

/// The full feature row of one atom. Values outside a one-hot range (degree > 10,
/// more than 6 implicit or 4 total H) leave that block all zero, as in DGL-LifeSci;
/// an element outside the list sets `element=other`.
pub fn atom_row(a: &AtomRecord) -> [f32; ATOM_DIM] {
    let mut r = [0f32; ATOM_DIM];
    write_atom_row(&mut r, a);
    r
}

/// `atom_row` written into `r` (`ATOM_DIM` zeros on entry).
fn write_atom_row(r: &mut [f32], a: &AtomRecord) {
    let elem = ELEMENTS
        .iter()
        .position(|&(_, z)| z == a.atomic_num)
        .unwrap_or(43);
    r[elem] = 1.0;
    let range = |v: i32, max: i32| (0..=max).contains(&v).then_some(v as usize);
    one_hot(r, 44, range(a.degree, MAX_DEGREE));
    one_hot(r, 55, range(a.implicit_hs, MAX_IMPLICIT_H));
    r[62] = a.formal_charge as f32;
    r[63] = a.radical_electrons as f32;
    one_hot(
        r,
        64,
        HYBRIDIZATIONS
            .iter()
            .position(|&(_, h)| h == a.hybridization),
    );
    r[69] = f32::from(u8::from(a.aromatic));
    one_hot(r, 70, range(a.total_hs, MAX_TOTAL_H));
    r[75] = f32::from(u8::from(a.in_ring));
    one_hot(
        r,
        76,
        match a.chirality {
            1 => Some(0),
            2 => Some(1),
            _ => None,
        },
    );
}

/// The full feature row of one bond (shared by both directions).
pub fn bond_row(b: &BondRecord) -> [f32; BOND_DIM] {
    let mut r = [0f32; BOND_DIM];
    one_hot(
        &mut r,
        0,
        BOND_TYPES.iter().position(|&(_, t)| t == b.bond_type),
    );
    r[4] = f32::from(u8::from(b.conjugated));
    r[5] = f32::from(u8::from(b.in_ring));
    one_hot(
        &mut r,
        6,
        usize::try_from(b.stereo).ok().filter(|&s| s < STEREO.len()),
    );
    r
}

/// A featurized molecule: atom rows, and directed edges (each bond both ways).
#[derive(Debug, Clone, PartialEq)]
pub struct MolGraph {
    pub n_atoms: usize,
    pub atom_dim: usize,
    /// `n_atoms × atom_dim`, row-major.
    pub atom_x: Vec<f32>,
    pub edge_dim: usize,
    /// `n_edges × edge_dim`, row-major; edges 2k and 2k+1 are bond k in both directions.
    pub edge_x: Vec<f32>,
    pub src: Vec<i64>,
    pub dst: Vec<i64>,
}

impl MolGraph {
    pub fn n_edges(&self) -> usize {
        self.src.len()
    }
}

/// Featurizer with a chosen subset of columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Featurizer {
    pub atom_keep: Vec<usize>,
    pub bond_keep: Vec<usize>,
}

impl Featurizer {
    /// All columns kept.
    pub fn full() -> Self {
        Featurizer {
            atom_keep: (0..ATOM_DIM).collect(),
            bond_keep: (0..BOND_DIM).collect(),
        }
    }

    /// Keeps only the columns that vary over `mols` (at least one column of each kind,
    /// so the model never sees a zero-width input).
    pub fn non_constant(mols: &[MolRecord]) -> Self {
        let atoms = mols.iter().flat_map(|m| m.atoms.iter().map(atom_row));
        let bonds = mols.iter().flat_map(|m| m.bonds.iter().map(bond_row));
        Featurizer {
            atom_keep: varying_columns(atoms, ATOM_DIM),
            bond_keep: varying_columns(bonds, BOND_DIM),
        }
    }

    pub fn atom_dim(&self) -> usize {
        self.atom_keep.len()
    }

    pub fn bond_dim(&self) -> usize {
        self.bond_keep.len()
    }

    /// Featurizes a parsed molecule.
    pub fn graph(&self, m: &MolRecord) -> MolGraph {
        self.rows(m.atoms.iter().copied(), m.bonds.iter().copied())
    }

    fn rows(
        &self,
        atoms: impl ExactSizeIterator<Item = AtomRecord>,
        bonds: impl ExactSizeIterator<Item = BondRecord>,
    ) -> MolGraph {
        let n_atoms = atoms.len();
        let mut atom_x = Vec::with_capacity(n_atoms * self.atom_dim());
        // All columns kept (`atom_keep` is sorted and distinct): rows written in place.
        let all = self.atom_keep.len() == ATOM_DIM;
        for a in atoms {
            if all {
                let at = atom_x.len();
                atom_x.resize(at + ATOM_DIM, 0.0);
                write_atom_row(&mut atom_x[at..], &a);
            } else {
                let row = atom_row(&a);
                atom_x.extend(self.atom_keep.iter().map(|&c| row[c]));
            }
        }
        let n_edges = 2 * bonds.len();
        let mut edge_x = Vec::with_capacity(n_edges * self.bond_dim());
        let mut src = Vec::with_capacity(n_edges);
        let mut dst = Vec::with_capacity(n_edges);
        for b in bonds {
            let row = bond_row(&b);
            for (s, d) in [(b.begin, b.end), (b.end, b.begin)] {
                edge_x.extend(self.bond_keep.iter().map(|&c| row[c]));
                src.push(i64::from(s));
                dst.push(i64::from(d));
            }
        }
        MolGraph {
            n_atoms,
            atom_dim: self.atom_dim(),
            atom_x,
            edge_dim: self.bond_dim(),
            edge_x,
            src,
            dst,
        }
    }

    /// Featurizes a molecule held by RDKit (e.g. one the decoder built): no parse.
    pub fn molecule(&self, mol: &Molecule) -> Result<MolGraph, ChemError> {
        let facts = mol.facts()?;
        Ok(self.rows(facts.atoms(), facts.bonds()))
    }

    /// Parses and featurizes a SMILES (no canonical SMILES is written).
    pub fn featurize(&self, smiles: &str) -> Result<MolGraph, ChemError> {
        self.molecule(&Molecule::from_smiles(smiles)?)
    }
}

fn varying_columns<const N: usize>(rows: impl Iterator<Item = [f32; N]>, dim: usize) -> Vec<usize> {
    let mut first: Option<[f32; N]> = None;
    let mut varies = vec![false; dim];
    for row in rows {
        match &first {
            None => first = Some(row),
            Some(f) => {
                for c in 0..dim {
                    varies[c] |= row[c] != f[c];
                }
            }
        }
    }
    let keep: Vec<usize> = (0..dim).filter(|&c| varies[c]).collect();
    if keep.is_empty() {
        vec![0]
    } else {
        keep
    }
}
