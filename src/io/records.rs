//! Parsed molecules in the dataset file: RDKit's atom and bond records (the small
//! integers that `Featurizer::graph` turns into feature rows) of a list of
//! molecules, so that `train` builds the JT-VAE's encoder graphs without parsing
//! SMILES again. Layout of one set (a group, e.g. /jtvae/graphs/train):
//! ```text
//! ok           u8[k]     1 where the record is stored (0: featurize the SMILES instead)
//! atom_offset  u64[k+1]  atoms of molecule m: atom_offset[m]..[m+1]
//! atoms        i8[A,10]  atomic_num, degree, implicit_hs, total_hs, formal_charge,
//!                        radical_electrons, hybridization, aromatic, in_ring, chirality
//! bond_offset  u64[k+1]
//! bond_atoms   u32[B,2]  begin, end (atom indices within the molecule)
//! bonds        i8[B,4]   bond_type, conjugated, in_ring, stereo
//! ```
//! Codes as in `chem::rdkit_ffi` (AtomRecord, BondRecord). A columnar store
//! (`io::columns`): written, read, appended and gathered like the others.
use super::columns::{self, column_lists, Columnar, Spec};
use crate::chem::mol::{AtomRecord, BondRecord, MolRecord};
use hdf5::Group;

/// Version of this layout and of the record fields: records stored with another
/// one are not used (bump it when `AtomRecord` or `BondRecord` change).
pub const RECORDS_FORMAT: &str = "zo-hpc-records/1";

const ATOM_FIELDS: usize = 10;
const BOND_FIELDS: usize = 4;

fn atom_fields(a: &AtomRecord) -> [i32; ATOM_FIELDS] {
    [
        a.atomic_num,
        a.degree,
        a.implicit_hs,
        a.total_hs,
        a.formal_charge,
        a.radical_electrons,
        a.hybridization,
        i32::from(a.aromatic),
        i32::from(a.in_ring),
        a.chirality,
    ]
}

fn bond_fields(b: &BondRecord) -> [i32; BOND_FIELDS] {
    [
        b.bond_type,
        i32::from(b.conjugated),
        i32::from(b.in_ring),
        b.stereo,
    ]
}

/// The records of a list of molecules, as stored (struct of arrays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordStore {
    pub ok: Vec<u8>,
    pub atom_offset: Vec<u64>,
    /// `ATOM_FIELDS` per atom.
    pub atoms: Vec<i8>,
    pub bond_offset: Vec<u64>,
    /// Flattened (begin, end) pairs.
    pub bond_atoms: Vec<u32>,
    /// `BOND_FIELDS` per bond.
    pub bonds: Vec<i8>,
}

impl Default for RecordStore {
    fn default() -> Self {
        RecordStore {
            ok: Vec::new(),
            atom_offset: vec![0],
            atoms: Vec::new(),
            bond_offset: vec![0],
            bond_atoms: Vec::new(),
            bonds: Vec::new(),
        }
    }
}

impl Columnar for RecordStore {
    const COLUMNS: &'static [Spec] = &[
        Spec::flat("ok"),
        Spec::offsets("atom_offset"),
        Spec::rows("atoms", ATOM_FIELDS),
        Spec::offsets("bond_offset"),
        Spec::rows("bond_atoms", 2),
        Spec::rows("bonds", BOND_FIELDS),
    ];

    column_lists!(ok, atom_offset, atoms, bond_offset, bond_atoms, bonds);
}

impl RecordStore {
    pub fn len(&self) -> usize {
        self.ok.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ok.is_empty()
    }

    /// Appends one molecule; `None` (not parsed), or a field outside i8 (never
    /// seen in practice), stores none, and `train` featurizes its SMILES instead.
    pub fn push(&mut self, rec: Option<&MolRecord>) {
        let narrow = |v: &[i32]| {
            v.iter()
                .map(|&x| i8::try_from(x).ok())
                .collect::<Option<Vec<i8>>>()
        };
        let fields = rec.and_then(|r| {
            let atoms: Vec<i32> = r.atoms.iter().flat_map(atom_fields).collect();
            let bonds: Vec<i32> = r.bonds.iter().flat_map(bond_fields).collect();
            let ends = r
                .bonds
                .iter()
                .flat_map(|b| [b.begin, b.end])
                .map(|a| u32::try_from(a).ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((narrow(&atoms)?, ends, narrow(&bonds)?))
        });
        self.ok.push(u8::from(fields.is_some()));
        if let Some((atoms, ends, bonds)) = fields {
            self.atoms.extend(atoms);
            self.bond_atoms.extend(ends);
            self.bonds.extend(bonds);
        }
        self.atom_offset
            .push((self.atoms.len() / ATOM_FIELDS) as u64);
        self.bond_offset
            .push((self.bonds.len() / BOND_FIELDS) as u64);
    }

    /// Appends the molecules of `other` (a later block of the same list).
    pub fn append(&mut self, other: &RecordStore) {
        columns::append(self, other);
    }

    /// The record of molecule `m` (its `canonical` set to `smiles`, the listed
    /// SMILES); `None` where none is stored. Call `check` first on a read store.
    pub fn record(&self, m: usize, smiles: &str) -> Option<MolRecord> {
        if self.ok[m] == 0 {
            return None;
        }
        let atoms = self.atom_offset[m] as usize..self.atom_offset[m + 1] as usize;
        let bonds = self.bond_offset[m] as usize..self.bond_offset[m + 1] as usize;
        let a = |k: usize, f: usize| i32::from(self.atoms[k * ATOM_FIELDS + f]);
        let b = |k: usize, f: usize| i32::from(self.bonds[k * BOND_FIELDS + f]);
        Some(MolRecord {
            canonical: smiles.to_string(),
            atoms: atoms
                .map(|k| AtomRecord {
                    atomic_num: a(k, 0),
                    degree: a(k, 1),
                    implicit_hs: a(k, 2),
                    total_hs: a(k, 3),
                    formal_charge: a(k, 4),
                    radical_electrons: a(k, 5),
                    hybridization: a(k, 6),
                    aromatic: a(k, 7) != 0,
                    in_ring: a(k, 8) != 0,
                    chirality: a(k, 9),
                })
                .collect(),
            bonds: bonds
                .map(|k| BondRecord {
                    // Stored as u32 from non-negative i32.
                    begin: self.bond_atoms[2 * k] as i32,
                    end: self.bond_atoms[2 * k + 1] as i32,
                    bond_type: b(k, 0),
                    conjugated: b(k, 1) != 0,
                    in_ring: b(k, 2) != 0,
                    stereo: b(k, 3),
                })
                .collect(),
        })
    }

    /// Checks offsets, lengths and atom indices (a damaged or foreign file).
    pub fn check(&self) -> Result<(), String> {
        let offsets = |o: &[u64], len: usize, what: &str| {
            if o.len() == self.ok.len() + 1 && columns::offsets_consistent(o, len) {
                Ok(())
            } else {
                Err(format!("inconsistent {what}"))
            }
        };
        if !self.atoms.len().is_multiple_of(ATOM_FIELDS)
            || !self.bonds.len().is_multiple_of(BOND_FIELDS)
        {
            return Err("record widths".into());
        }
        let n_bonds = self.bonds.len() / BOND_FIELDS;
        offsets(
            &self.atom_offset,
            self.atoms.len() / ATOM_FIELDS,
            "atom_offset",
        )?;
        offsets(&self.bond_offset, n_bonds, "bond_offset")?;
        if self.bond_atoms.len() != 2 * n_bonds {
            return Err("bond_atoms length".into());
        }
        for m in 0..self.ok.len() {
            let n = self.atom_offset[m + 1] - self.atom_offset[m];
            let (b0, b1) = (
                self.bond_offset[m] as usize,
                self.bond_offset[m + 1] as usize,
            );
            if self.bond_atoms[2 * b0..2 * b1]
                .iter()
                .any(|&a| u64::from(a) >= n || a > i32::MAX as u32)
            {
                return Err("bond atom index".into());
            }
        }
        Ok(())
    }

    /// Writes the set as group `name` of `parent`.
    pub fn write(&self, parent: &Group, name: &str) -> hdf5::Result<()> {
        columns::write(self, parent, name)
    }

    /// Reads group `name` of `parent` (unchecked: call `check`).
    pub fn read(parent: &Group, name: &str) -> hdf5::Result<RecordStore> {
        columns::read(parent, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chem::{self, Featurizer};

    #[test]
    fn records_rebuild_the_featurized_graph_and_blocks_append() {
        let smiles = [
            "CC(=O)Nc1ccc(O)cc1",
            "not a molecule",
            "C[N+](C)(C)CC#N",
            "C/C=C/[C@H](F)Cl",
        ];
        let f = Featurizer::full();
        let store = |list: &[&str]| {
            let mut s = RecordStore::default();
            for smi in list {
                s.push(chem::parse(smi).ok().as_ref());
            }
            s
        };
        let all = store(&smiles);
        all.check().unwrap();
        assert_eq!(all.ok, [1, 0, 1, 1]);
        for (m, smi) in smiles.iter().enumerate() {
            let Ok(want) = f.featurize(smi) else {
                assert!(all.record(m, smi).is_none());
                continue;
            };
            let got = f.graph(&all.record(m, smi).unwrap());
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.atom_x), bits(&want.atom_x), "{smi}");
            assert_eq!(bits(&got.edge_x), bits(&want.edge_x), "{smi}");
            assert_eq!(got, want, "{smi}");
        }
        let mut a = store(&smiles[..2]);
        a.append(&RecordStore::default());
        a.append(&store(&smiles[2..]));
        assert_eq!(a, all);
        let mut bad = all.clone();
        bad.bond_atoms[0] = 99;
        assert!(bad.check().is_err());
    }
}
