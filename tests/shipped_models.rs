//! The Stage-1 models shipped in `inputs/models/` fit the paper configs that point
//! at them (`zo.pretrained`): every parameter loads into the JT-VAE and MPNN those
//! configs build (their sizes, the stored vocabulary and feature columns), and a
//! provenance file says how they were made. (That the vocabulary and columns equal
//! a dataset's is checked when Stage 2 loads them; tests/pretrained.rs.)
use std::path::PathBuf;
use tch::nn::VarStore;
use zo_hpc::chem::featurize::Featurizer;
use zo_hpc::config::{Config, Stage};
use zo_hpc::io::model::{stored_features, stored_vocab};
use zo_hpc::jtvae::model::JtVae;
use zo_hpc::models::mpnn::{Mpnn, MpnnDims};
use zo_hpc::train::params::Params;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_models_load_into_the_models_of_their_configs() {
    let mut checked = 0;
    for name in ["hof", "zinc"] {
        let cfg = Config::load(&repo().join(format!("inputs/{name}.toml"))).unwrap();
        let dir = cfg
            .zo
            .pretrained
            .clone()
            .unwrap_or_else(|| panic!("inputs/{name}.toml: no zo.pretrained"));
        // The run folder of a fresh checkout has no Stage 1: the shipped files are used.
        assert_eq!(cfg.stage_checkpoint(Stage::Jtvae), dir.join("jtvae.h5"));
        let (jk, mk) = (dir.join("jtvae.h5"), dir.join("mpnn.h5"));
        assert!(
            jk.is_file() && mk.is_file(),
            "{}: model files missing",
            dir.display()
        );
        let prov = std::fs::read_to_string(dir.join("PROVENANCE.md")).unwrap();
        assert!(
            prov.contains("zo-hpc export") && prov.contains("## Config"),
            "{prov}"
        );

        let vocab = stored_vocab(&jk).expect("no vocabulary in the JT-VAE file");
        let features = stored_features(&mk).expect("no feature columns in the MPNN file");
        let vs = VarStore::new(tch::Device::Cpu);
        let full = Featurizer::full();
        let jc = cfg.jtvae.clone().unwrap();
        let _jtvae = JtVae::new(
            &(vs.root() / "jtvae"),
            vocab.len() as i64,
            full.atom_dim(),
            full.bond_dim(),
            &jc,
        );
        let dims = MpnnDims {
            atom_dim: features.atom_dim() as i64,
            edge_dim: features.bond_dim() as i64,
        };
        let _mpnn = Mpnn::new(&(vs.root() / "mpnn"), dims, &cfg.mpnn);
        for (prefix, file) in [("jtvae.", &jk), ("mpnn.", &mk)] {
            let p = Params::of_filtered(&vs, |n| n.starts_with(prefix));
            assert!(p.numel() > 0);
            p.load_from(file)
                .unwrap_or_else(|e| panic!("{}: {e:#}", file.display()));
        }
        checked += 1;
    }
    assert_eq!(checked, 2);
}
