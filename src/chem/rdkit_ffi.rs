//! The cxx bridge to RDKit's C++ library (Debian `librdkit-dev`). It exposes raw
//! per-atom and per-bond facts with stable integer codes; `chem::mol` wraps it
//! in a safe API and `chem::featurize` turns it into features.

#[cxx::bridge(namespace = "zo")]
pub mod ffi {
    /// Raw facts about one atom. Codes: hybridization 0 unspecified, 1 S, 2 SP,
    /// 3 SP2, 4 SP3, 5 SP3D, 6 SP3D2, 7 other; chirality 0 none, 1 CW, 2 CCW, 3 other.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct AtomRecord {
        pub atomic_num: i32,
        pub degree: i32,
        pub implicit_hs: i32,
        pub total_hs: i32,
        pub formal_charge: i32,
        pub radical_electrons: i32,
        pub hybridization: i32,
        pub aromatic: bool,
        pub in_ring: bool,
        pub chirality: i32,
    }

    /// Raw facts about one bond. Codes: bond_type 1 single, 2 double, 3 triple,
    /// 4 aromatic, 0 other; stereo 0 none, 1 any, 2 Z, 3 E, 4 cis, 5 trans.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct BondRecord {
        pub begin: i32,
        pub end: i32,
        pub bond_type: i32,
        pub conjugated: bool,
        pub in_ring: bool,
        pub stereo: i32,
    }

    /// A parsed, sanitized molecule: its canonical SMILES and its atoms and bonds.
    #[derive(Debug, Clone)]
    pub struct MolRecord {
        pub canonical: String,
        pub atoms: Vec<AtomRecord>,
        pub bonds: Vec<BondRecord>,
    }

    /// An atom of a kekulized molecule, or of a graph to write as SMILES.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub struct KAtom {
        pub atomic_num: i32,
        pub formal_charge: i32,
        /// Explicit H count (bracket H); 0 lets RDKit derive H from the valence model.
        pub explicit_hs: i32,
    }

    /// A bond of a kekulized molecule: order 1, 2 or 3.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub struct KBond {
        pub begin: i32,
        pub end: i32,
        pub order: i32,
        pub in_ring: bool,
    }

    /// The atoms of one ring of RDKit's smallest set of smallest rings.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Ring {
        pub atoms: Vec<i32>,
    }

    /// A molecule in Kekulé form (no aromatic flags) with its SSSR rings.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct KekuleMol {
        pub atoms: Vec<KAtom>,
        pub bonds: Vec<KBond>,
        pub rings: Vec<Ring>,
    }

    /// A 3-D geometry with explicit hydrogens (`embed_geometry`): the molecule's own
    /// atoms first, in its SMILES' parse order, then the hydrogens RDKit added.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Geometry {
        /// Atomic number per atom.
        pub atomic_nums: Vec<i32>,
        /// x, y, z per atom, in Å.
        pub xyz: Vec<f64>,
        /// Per atom: the molecule's own atom it belongs to (itself for an own atom,
        /// the atom a hydrogen is bonded to for an added hydrogen).
        pub owner: Vec<i32>,
        /// How many atoms the molecule itself has (the graph's atoms).
        pub n_own: i32,
        /// The sum of the formal charges.
        pub formal_charge: i32,
        /// How the geometry was made: "ETKDGv3+MMFF94", "ETKDGv3+UFF" or "ETKDGv3"
        /// (no force field had parameters), "+unconverged" where the optimizer ran out
        /// of iterations.
        pub method: String,
    }

    /// A SMILES's canonical form and how its atoms map to the SMILES's own.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct CanonicalOrder {
        /// Canonical isomeric SMILES (as `canonical_smiles`).
        pub canonical: String,
        /// For each atom of `canonical` in its parse order, the index of the same atom
        /// in the SMILES asked about.
        pub order: Vec<i32>,
    }

    unsafe extern "C++" {
        include!("zo-hpc/src/chem/rdkit_shim.h");

        /// A sanitized RDKit molecule owned by Rust.
        type Molecule;
        fn molecule_from_smiles(smiles: &str) -> Result<UniquePtr<Molecule>>;
        /// Canonical non-isomeric SMILES.
        fn molecule_smiles(mol: &Molecule) -> Result<String>;
        /// The atom and bond facts, flat: `[n_atoms, n_bonds]`, then `ATOM_FIELDS`
        /// integers per atom and `BOND_FIELDS` per bond, in the field order of
        /// `AtomRecord` and `BondRecord` (booleans as 0/1). A C++ vector read in
        /// place: one bridge call per molecule, none per atom.
        fn molecule_facts(mol: &Molecule) -> Result<UniquePtr<CxxVector<i32>>>;

        fn parse_molecule(smiles: &str) -> Result<MolRecord>;
        fn canonical_smiles(smiles: &str) -> Result<String>;
        fn rdkit_version() -> String;
        fn parse_kekule(smiles: &str) -> Result<KekuleMol>;
        fn graph_smiles(atoms: &[KAtom], bonds: &[KBond], kekule: bool) -> Result<String>;
        fn quiet_rdkit_logs();
        /// ETKDGv3 embedding with random seed `seed` (deterministic), then MMFF94
        /// optimization (UFF where MMFF lacks parameters, else the raw embedding).
        fn embed_geometry(
            smiles: &str,
            seed: i32,
            max_iters: i32,
            time_limit_s: f64,
        ) -> Result<Geometry>;
        fn canonical_order(smiles: &str) -> Result<CanonicalOrder>;
    }
}

/// Integers per atom in `MolFacts::atoms`.
pub const ATOM_FIELDS: usize = 10;
/// Integers per bond in `MolFacts::bonds`.
pub const BOND_FIELDS: usize = 6;

// SAFETY: a `Molecule` owns its RDKit molecule exclusively (no shared state, RDKit
// objects are not tied to a thread); it is only read through `&` after creation.
unsafe impl Send for ffi::Molecule {}
unsafe impl Sync for ffi::Molecule {}
