//! JT-VAE decoding through the library: a small JT-VAE trained as an autoencoder on
//! a handful of molecules decodes the latent means of those molecules back to them
//! (decode(mean(encode(x))) == x as canonical non-isomeric SMILES), deterministically;
//! latents far from the data end as values (a molecule or a counted failure), fast.
use std::borrow::Cow;
use tch::nn::{OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};
use zo_hpc::chem::{self, Featurizer};
use zo_hpc::config::JtvaeConfig;
use zo_hpc::jtvae::batch::TreeBatch;
use zo_hpc::jtvae::candidates::{training_candidates, LabelGraphs, NodeCandidates};
use zo_hpc::jtvae::decode::DecodeTimes;
use zo_hpc::jtvae::model::{JtVae, Sample};
use zo_hpc::jtvae::tree::{decompose_smiles, LabelCache, TreeRecord};
use zo_hpc::jtvae::vocab::Vocab;
use zo_hpc::models::batch::GraphBatch;

const MOLS: [&str; 6] = [
    "CCO",
    "Oc1ccccc1",
    "CC(=O)Nc1ccc(O)cc1",
    "CC(C)C",
    "c1ccc2ccccc2c1",
    "CCN(CC)C(=O)c1ccncc1",
];

struct Ex {
    graph: chem::MolGraph,
    tree: TreeRecord,
    cands: Vec<NodeCandidates>,
}

#[test]
fn an_autoencoded_jtvae_reconstructs_its_molecules() {
    let (mut cache, mut lg) = (LabelCache::default(), LabelGraphs::default());
    let trees: Vec<_> = MOLS
        .iter()
        .map(|s| decompose_smiles(s, &mut cache).unwrap().1)
        .collect();
    let vocab = Vocab::new(trees.iter().flat_map(|t| t.labels.clone()));
    let f = Featurizer::full();
    let exs: Vec<Ex> = MOLS
        .iter()
        .zip(&trees)
        .map(|(s, t)| Ex {
            graph: f.featurize(s).unwrap(),
            tree: t.record(&vocab).unwrap(),
            cands: training_candidates(s, 30, &mut cache, &mut lg).unwrap(),
        })
        .collect();
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let c = JtvaeConfig {
        hidden: 64,
        latent: 16,
        depth_tree: 4,
        depth_graph: 3,
        ..Default::default()
    };
    let model = JtVae::new(
        &vs.root(),
        vocab.len() as i64,
        f.atom_dim(),
        f.bond_dim(),
        &c,
    );
    let mut opt = tch::nn::Adam::default().build(&vs, 3e-3).unwrap();
    let samples: Vec<Sample> = exs
        .iter()
        .map(|e| Sample {
            graph: Cow::Borrowed(&e.graph),
            tree: &e.tree,
            candidates: Cow::Borrowed(e.cands.as_slice()),
        })
        .collect();
    let eps = Tensor::zeros([MOLS.len() as i64, 16], (Kind::Float, Device::Cpu));
    for _ in 0..300 {
        let l = model.losses(&samples, &eps, Device::Cpu);
        opt.backward_step(&(&l.word + &l.topo + &l.assm));
    }
    // decode the latent means
    let graphs: Vec<&chem::MolGraph> = exs.iter().map(|e| &e.graph).collect();
    let tree_refs: Vec<&TreeRecord> = exs.iter().map(|e| &e.tree).collect();
    let (mean, _) = tch::no_grad(|| {
        model.encode(
            &GraphBatch::new(&graphs, f.atom_dim(), f.bond_dim(), Device::Cpu),
            &TreeBatch::new(&tree_refs, Device::Cpu),
        )
    });
    let mut times = DecodeTimes::default();
    let mut ok = 0;
    for (k, s) in MOLS.iter().enumerate() {
        let z = mean.get(k as i64);
        let got = model.decode(&z, vocab.labels(), &mut lg, &mut times);
        let again = model.decode(&z, vocab.labels(), &mut lg, &mut times);
        assert_eq!(got, again, "decoding is deterministic");
        let want = chem::graph_smiles(
            &chem::parse_kekule(s).unwrap().atoms,
            &chem::parse_kekule(s).unwrap().bonds,
            false,
        )
        .unwrap();
        eprintln!("{s}: {got:?}");
        if got.as_deref() == Ok(want.as_str()) {
            ok += 1;
        }
    }
    assert!(
        ok >= 5,
        "only {ok} of {} molecules reconstructed",
        MOLS.len()
    );
    // Batched decoding (one walk for many latents, candidates of all molecules
    // scored together, chemistry on a thread pool) gives exactly what decoding each
    // latent alone gives: the means, perturbations of them, and far latents.
    tch::manual_seed(11);
    let zs = Tensor::cat(
        &[
            mean.shallow_clone(),
            mean.repeat([10, 1]) + Tensor::randn([60, 16], (Kind::Float, Device::Cpu)) * 0.7,
            Tensor::randn([6, 16], (Kind::Float, Device::Cpu)) * 3.0,
        ],
        0,
    );
    let n = zs.size()[0];
    let alone: Vec<Result<String, _>> = (0..n)
        .map(|k| model.decode(&zs.get(k), vocab.labels(), &mut lg, &mut times))
        .collect();
    let distinct: std::collections::HashSet<_> = alone.iter().flatten().collect();
    assert!(
        distinct.len() >= 8,
        "too few distinct molecules to compare: {distinct:?}"
    );
    // One batch on one thread, and split over 2 and 3 decode workers.
    let threads_before = tch::get_num_threads();
    for threads in [1, 2, 3] {
        let batched: Vec<Result<String, _>> = model
            .decode_batch(&zs, vocab.labels(), &mut lg, &mut times, threads)
            .into_iter()
            .map(|r| r.map(|d| d.smiles))
            .collect();
        assert_eq!(batched, alone, "{threads} decode workers");
        assert_eq!(tch::get_num_threads(), threads_before);
    }

    // Latents far from the data: every decode ends with a valid molecule or the
    // counted node-limit failure, never anything else.
    for k in 0..10 {
        let z = Tensor::randn([16], (Kind::Float, Device::Cpu)) * (10.0 * (k + 1) as f64);
        match model.decode(&z, vocab.labels(), &mut lg, &mut times) {
            Ok(smiles) => assert!(chem::canonicalize(&smiles).is_ok(), "{smiles}"),
            Err(e) => assert_eq!(e, zo_hpc::jtvae::decode::DecodeError::TreeTooLarge),
        }
    }
}
