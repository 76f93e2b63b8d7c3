//! JT-VAE chemistry on the shipped molecules: every molecule decomposes into a
//! junction tree whose clusters cover all atoms and bonds, and rebuilding each
//! molecule along its own tree with the correct attachments (the "gold path")
//! gives back the input molecule for at least 99% of them (stereo not modelled).
use zo_hpc::jtvae::gold::gold_stats;

fn smiles_of(path: &str) -> Vec<String> {
    let mut r = csv::Reader::from_path(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    r.records().map(|rec| rec.unwrap()[0].to_string()).collect()
}

fn check(path: &str) {
    let smiles = smiles_of(path);
    assert!(smiles.len() >= 400);
    let st = gold_stats(&smiles);
    eprintln!(
        "{path}: {} / {} rebuilt ({:.2}%)",
        st.rebuilt,
        st.molecules,
        100.0 * st.rate()
    );
    for (s, why) in st.failures.iter().take(10) {
        eprintln!("  {s}: {why}");
    }
    assert!(
        st.rate() >= 0.99,
        "{path}: gold path rebuilt only {:.2}%",
        100.0 * st.rate()
    );
}

#[test]
fn gold_path_rebuilds_the_zinc_subset() {
    check("inputs/data/zinc_demo.csv");
}

#[test]
fn gold_path_rebuilds_the_qm9_subset() {
    check("inputs/data/hof_demo.csv");
}
