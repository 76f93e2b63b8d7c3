//! Acceptance 2: the RDKit featurizer gives exactly the hand-checked values for
//! benzene, phenol, acetaminophen, a charged and two stereo molecules; an invalid
//! SMILES gives an error value for that molecule, never a panic. Expected rows are
//! built from column *names*, independently of the featurizer's column offsets.
use zo_hpc::blackbox::{KnowledgeSource, RdkitSource};
use zo_hpc::chem::featurize::{atom_columns, bond_columns, ATOM_DIM, BOND_DIM};
use zo_hpc::chem::{Featurizer, MolGraph};

/// One atom as a chemist would write it down.
struct A {
    el: &'static str,
    deg: u8,
    imp_h: u8,
    tot_h: u8,
    charge: i8,
    hyb: &'static str,
    arom: bool,
    ring: bool,
    chir: Option<&'static str>,
}

fn a(
    el: &'static str,
    deg: u8,
    imp_h: u8,
    tot_h: u8,
    hyb: &'static str,
    arom: bool,
    ring: bool,
) -> A {
    A {
        el,
        deg,
        imp_h,
        tot_h,
        charge: 0,
        hyb,
        arom,
        ring,
        chir: None,
    }
}

fn set(row: &mut [f32], names: &[String], name: &str, v: f32) {
    let i = names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    row[i] = v;
}

fn atom_expected(x: &A) -> Vec<f32> {
    let names = atom_columns();
    let mut r = vec![0f32; ATOM_DIM];
    set(&mut r, &names, &format!("element={}", x.el), 1.0);
    set(&mut r, &names, &format!("degree={}", x.deg), 1.0);
    set(&mut r, &names, &format!("implicit_h={}", x.imp_h), 1.0);
    set(&mut r, &names, &format!("total_h={}", x.tot_h), 1.0);
    set(&mut r, &names, "formal_charge", f32::from(x.charge));
    set(&mut r, &names, &format!("hybridization={}", x.hyb), 1.0);
    set(&mut r, &names, "aromatic", f32::from(u8::from(x.arom)));
    set(&mut r, &names, "in_ring", f32::from(u8::from(x.ring)));
    if let Some(c) = x.chir {
        set(&mut r, &names, &format!("chirality={c}"), 1.0);
    }
    r
}

/// (begin, end, type, conjugated, in ring, stereo)
type B = (i64, i64, &'static str, bool, bool, &'static str);

fn bond_expected(b: &B) -> Vec<f32> {
    let names = bond_columns();
    let mut r = vec![0f32; BOND_DIM];
    set(&mut r, &names, &format!("bond_type={}", b.2), 1.0);
    set(&mut r, &names, "conjugated", f32::from(u8::from(b.3)));
    set(&mut r, &names, "in_ring", f32::from(u8::from(b.4)));
    set(&mut r, &names, &format!("stereo={}", b.5), 1.0);
    r
}

fn check(smiles: &str, atoms: &[A], bonds: &[B]) -> MolGraph {
    let g = Featurizer::full()
        .featurize(smiles)
        .unwrap_or_else(|e| panic!("{smiles}: {e}"));
    assert_eq!(g.n_atoms, atoms.len(), "{smiles}: atom count");
    assert_eq!(g.atom_dim, ATOM_DIM);
    for (i, x) in atoms.iter().enumerate() {
        let got = &g.atom_x[i * ATOM_DIM..(i + 1) * ATOM_DIM];
        assert_eq!(
            got,
            atom_expected(x).as_slice(),
            "{smiles}: atom {i} ({})",
            x.el
        );
    }
    assert_eq!(
        g.n_edges(),
        2 * bonds.len(),
        "{smiles}: each bond gives two directed edges"
    );
    for (k, b) in bonds.iter().enumerate() {
        for (e, (s, d)) in [(2 * k, (b.0, b.1)), (2 * k + 1, (b.1, b.0))] {
            assert_eq!((g.src[e], g.dst[e]), (s, d), "{smiles}: edge {e}");
            let got = &g.edge_x[e * BOND_DIM..(e + 1) * BOND_DIM];
            assert_eq!(got, bond_expected(b).as_slice(), "{smiles}: bond {k}");
        }
    }
    g
}

#[test]
fn benzene() {
    let c = || a("C", 2, 1, 1, "SP2", true, true);
    let atoms: Vec<A> = (0..6).map(|_| c()).collect();
    let bonds: Vec<B> = (0..6)
        .map(|i| (i, (i + 1) % 6, "aromatic", true, true, "none"))
        .collect();
    check("c1ccccc1", &atoms, &bonds);
}

#[test]
fn phenol() {
    let mut atoms = vec![
        a("O", 1, 1, 1, "SP2", false, false),
        a("C", 3, 0, 0, "SP2", true, true),
    ];
    atoms.extend((0..5).map(|_| a("C", 2, 1, 1, "SP2", true, true)));
    let mut bonds: Vec<B> = vec![(0, 1, "single", true, false, "none")];
    bonds.extend((1..6).map(|i| (i, i + 1, "aromatic", true, true, "none")));
    bonds.push((6, 1, "aromatic", true, true, "none"));
    check("Oc1ccccc1", &atoms, &bonds);
}

#[test]
fn acetaminophen() {
    let ar = |deg, h| a("C", deg, h, h, "SP2", true, true);
    let atoms = vec![
        a("C", 1, 3, 3, "SP3", false, false),
        a("C", 3, 0, 0, "SP2", false, false),
        a("O", 1, 0, 0, "SP2", false, false),
        a("N", 2, 1, 1, "SP2", false, false),
        ar(3, 0),
        ar(2, 1),
        ar(2, 1),
        ar(3, 0),
        a("O", 1, 1, 1, "SP2", false, false),
        ar(2, 1),
        ar(2, 1),
    ];
    let bonds: Vec<B> = vec![
        (0, 1, "single", false, false, "none"),
        (1, 2, "double", true, false, "none"),
        (1, 3, "single", true, false, "none"),
        (3, 4, "single", true, false, "none"),
        (4, 5, "aromatic", true, true, "none"),
        (5, 6, "aromatic", true, true, "none"),
        (6, 7, "aromatic", true, true, "none"),
        (7, 8, "single", true, false, "none"),
        (7, 9, "aromatic", true, true, "none"),
        (9, 10, "aromatic", true, true, "none"),
        (10, 4, "aromatic", true, true, "none"),
    ];
    check("CC(=O)Nc1ccc(O)cc1", &atoms, &bonds);
}

#[test]
fn charged_molecules() {
    let me = || a("C", 1, 3, 3, "SP3", false, false);
    let mut n = a("N", 4, 0, 0, "SP3", false, false);
    n.charge = 1;
    let bonds: Vec<B> = (2..5).fold(vec![(0, 1, "single", false, false, "none")], |mut v, i| {
        v.push((1, i, "single", false, false, "none"));
        v
    });
    check("C[N+](C)(C)C", &[me(), n, me(), me(), me()], &bonds);

    let mut o = a("O", 1, 0, 0, "SP2", false, false);
    o.charge = -1;
    let atoms = [
        o,
        a("C", 3, 0, 0, "SP2", false, false),
        a("O", 1, 0, 0, "SP2", false, false),
        me(),
    ];
    let bonds: Vec<B> = vec![
        (0, 1, "single", true, false, "none"),
        (1, 2, "double", true, false, "none"),
        (1, 3, "single", false, false, "none"),
    ];
    check("[O-]C(=O)C", &atoms, &bonds);
    assert_eq!(
        zo_hpc::chem::canonicalize("[O-]C(=O)C").unwrap(),
        "CC(=O)[O-]"
    );
}

#[test]
fn stereo_molecules() {
    // A tetrahedral centre written with an explicit H: implicit 0, total 1.
    let mut c = a("C", 3, 0, 1, "SP3", false, false);
    c.chir = Some("CCW");
    let atoms = [
        a("C", 1, 3, 3, "SP3", false, false),
        c,
        a("N", 1, 2, 2, "SP3", false, false),
        a("O", 1, 1, 1, "SP3", false, false),
    ];
    let bonds: Vec<B> = vec![
        (0, 1, "single", false, false, "none"),
        (1, 2, "single", false, false, "none"),
        (1, 3, "single", false, false, "none"),
    ];
    check("C[C@H](N)O", &atoms, &bonds);
    // trans-2-butene: an E double bond.
    let atoms = [
        a("C", 1, 3, 3, "SP3", false, false),
        a("C", 2, 1, 1, "SP2", false, false),
        a("C", 2, 1, 1, "SP2", false, false),
        a("C", 1, 3, 3, "SP3", false, false),
    ];
    let bonds: Vec<B> = vec![
        (0, 1, "single", false, false, "none"),
        (1, 2, "double", false, false, "E"),
        (2, 3, "single", false, false, "none"),
    ];
    check("C/C=C/C", &atoms, &bonds);
}

#[test]
fn element_outside_the_list_goes_to_other() {
    let g = Featurizer::full().featurize("[Xe]").unwrap();
    let names = atom_columns();
    let other = names.iter().position(|n| n == "element=other").unwrap();
    assert_eq!(g.atom_x[other], 1.0);
    let elements: f32 = names
        .iter()
        .zip(&g.atom_x)
        .filter(|(n, _)| n.starts_with("element="))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(elements, 1.0, "exactly one element column set");
}

#[test]
fn invalid_smiles_is_an_error_value_for_that_molecule_only() {
    let source = RdkitSource::new(Featurizer::full());
    let batch: Vec<String> = [
        "c1ccccc1",
        "C1CC",
        "not a smiles",
        "C(C)(C)(C)(C)C",
        "",
        "O",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = source.query(&batch);
    assert_eq!(out.len(), batch.len());
    let ok: Vec<bool> = out.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [true, false, false, false, false, true]);
    let err = out[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("C1CC"), "the error names the molecule: {err}");
}

#[test]
fn dropping_constant_columns_keeps_what_varies() {
    let mols: Vec<_> = ["CCO", "CCN", "c1ccccc1"]
        .iter()
        .map(|s| zo_hpc::chem::parse(s).unwrap())
        .collect();
    let f = Featurizer::non_constant(&mols);
    let names = atom_columns();
    let kept: Vec<&str> = f.atom_keep.iter().map(|&i| names[i].as_str()).collect();
    for must in [
        "element=C",
        "element=N",
        "element=O",
        "aromatic",
        "in_ring",
        "degree=1",
        "degree=2",
    ] {
        assert!(
            kept.contains(&must),
            "{must} varies but was dropped: {kept:?}"
        );
    }
    for never in ["element=S", "formal_charge", "chirality=CW", "degree=4"] {
        assert!(!kept.contains(&never), "{never} is constant but kept");
    }
    let g = f.featurize("CCO").unwrap();
    assert_eq!(g.atom_dim, f.atom_keep.len());
    assert_eq!(g.atom_x.len(), 3 * f.atom_keep.len());
}

#[test]
fn one_call_featurization_equals_the_record_path() {
    // The black box featurizes through one bridge call per molecule (no canonical
    // SMILES, no per-atom records); it must give exactly the rows of the record
    // path (`parse` → `AtomRecord`s → rows), for charged, aromatic, stereo and
    // bracket-H molecules, with all columns and with a subset.
    use zo_hpc::chem::{parse, Molecule};
    let subset = Featurizer {
        atom_keep: vec![0, 1, 2, 44, 45, 46, 69, 75],
        bond_keep: vec![0, 3, 5],
    };
    for f in [Featurizer::full(), subset] {
        for s in [
            "CC(=O)Nc1ccc(O)cc1",
            "C[NH3+]",
            "c1cc[nH]c1",
            "F/C=C/F",
            "C[C@H](N)C(=O)[O-]",
            "[Xe]",
            "C1CC2CCC1C2",
        ] {
            let want = f.graph(&parse(s).unwrap());
            assert_eq!(f.featurize(s).unwrap(), want, "{s}");
            let held = Molecule::from_smiles(s).unwrap();
            assert_eq!(f.molecule(&held).unwrap(), want, "{s}");
        }
    }
    assert!(Molecule::from_smiles("C1CC").is_err());
}
