use zo_hpc::chem;
use zo_hpc::jtvae::{assemble::*, graph::*, tree::*};
fn main() {
    for s in std::env::args().skip(1) {
        let mut c = LabelCache::default();
        let (mol, t) = decompose_smiles(&s, &mut c).unwrap();
        println!(
            "{s}: clusters {:?} edges {:?} labels {:?}",
            t.clusters, t.edges, t.labels
        );
        let graphs: Vec<MolGraph> = t
            .labels
            .iter()
            .map(|l| MolGraph::from_kekule(&chem::parse_kekule(l).unwrap()))
            .collect();
        for (i, g) in graphs.iter().enumerate() {
            println!(
                "  label {i}: atoms {:?} bonds {:?}",
                g.atoms.iter().map(|a| a.atomic_num).collect::<Vec<_>>(),
                g.bonds
                    .iter()
                    .map(|b| (b.begin, b.end, b.order))
                    .collect::<Vec<_>>()
            );
        }
        println!(
            "  mol bonds {:?}",
            mol.bonds
                .iter()
                .map(|b| (b.begin, b.end, b.order))
                .collect::<Vec<_>>()
        );
        println!("  -> {:?}", gold_path(&mol, &t, &graphs));
    }
}
