//! The stochastic JT-VAE decoder of the score-function estimator
//! (`jtvae::sample`) on a small JT-VAE fitted to a handful of molecules: at a
//! vanishing temperature it decodes exactly what the greedy decoder does; a
//! sampled decode depends only on its key (not on the batch or the threads) and
//! other keys give other molecules; the replayed log-probability with autograd
//! equals the one the sampler computed, and reaches the latent and the decoder.
use std::borrow::Cow;
use tch::nn::{OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};
use zo_hpc::chem::{self, Featurizer};
use zo_hpc::config::JtvaeConfig;
use zo_hpc::jtvae::candidates::{training_candidates, LabelGraphs, NodeCandidates};
use zo_hpc::jtvae::decode::DecodeTimes;
use zo_hpc::jtvae::model::{JtVae, Sample};
use zo_hpc::jtvae::sample::{SampleKeys, Trace};
use zo_hpc::jtvae::tree::{decompose_smiles, LabelCache, TreeRecord};
use zo_hpc::jtvae::vocab::Vocab;

const MOLS: [&str; 5] = [
    "CCO",
    "Oc1ccccc1",
    "CC(=O)Nc1ccc(O)cc1",
    "CC(C)C",
    "CCN(CC)C(=O)c1ccncc1",
];

struct Fitted {
    vs: VarStore,
    model: JtVae,
    vocab: Vocab,
    labels: LabelGraphs,
}

/// A JT-VAE fitted for a few steps as an autoencoder on `MOLS` (zero noise).
fn fitted() -> Fitted {
    let (mut cache, mut labels) = (LabelCache::default(), LabelGraphs::default());
    let trees: Vec<_> = MOLS
        .iter()
        .map(|s| decompose_smiles(s, &mut cache).unwrap().1)
        .collect();
    let vocab = Vocab::new(trees.iter().flat_map(|t| t.labels.clone()));
    let f = Featurizer::full();
    let exs: Vec<(chem::MolGraph, TreeRecord, Vec<NodeCandidates>)> = MOLS
        .iter()
        .zip(&trees)
        .map(|(s, t)| {
            let c = training_candidates(s, 30, &mut cache, &mut labels).unwrap();
            (f.featurize(s).unwrap(), t.record(&vocab).unwrap(), c)
        })
        .collect();
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let c = JtvaeConfig {
        hidden: 32,
        latent: 16,
        depth_tree: 3,
        depth_graph: 2,
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
        .map(|(g, t, c)| Sample {
            graph: Cow::Borrowed(g),
            tree: t,
            candidates: Cow::Borrowed(c.as_slice()),
        })
        .collect();
    let eps = Tensor::zeros([MOLS.len() as i64, 16], (Kind::Float, Device::Cpu));
    for _ in 0..60 {
        let l = model.losses(&samples, &eps, Device::Cpu);
        opt.backward_step(&(&l.word + &l.topo + &l.assm));
    }
    Fitted {
        vs,
        model,
        vocab,
        labels,
    }
}

fn latents() -> Tensor {
    tch::manual_seed(11);
    Tensor::randn([12, 16], (Kind::Float, Device::Cpu))
}

fn ids(n: usize, salt: u64) -> Vec<Vec<u64>> {
    (0..n as u64).map(|r| vec![salt, r]).collect()
}

fn sampled(
    m: &mut Fitted,
    z: &Tensor,
    ids: &[Vec<u64>],
    tau: f64,
    threads: usize,
) -> Vec<(Option<String>, Trace)> {
    let keys = SampleKeys {
        seed: 7,
        purpose: "score",
        ids,
    };
    let mut times = DecodeTimes::default();
    m.model
        .decode_sampled(
            z,
            keys,
            tau,
            (m.vocab.labels(), &mut m.labels),
            &mut times,
            threads,
        )
        .into_iter()
        .map(|(r, t)| (r.ok().map(|d| d.smiles), t))
        .collect()
}

#[test]
fn sampled_decoding_is_greedy_when_cold_keyed_and_replayed_exactly() {
    let mut m = fitted();
    let z = latents();
    let n = z.size()[0] as usize;
    let mut times = DecodeTimes::default();
    let greedy: Vec<Option<String>> = m
        .model
        .decode_batch(&z, m.vocab.labels(), &mut m.labels, &mut times, 1)
        .into_iter()
        .map(|r| r.ok().map(|d| d.smiles))
        .collect();
    assert!(greedy.iter().flatten().count() >= n / 2, "{greedy:?}");

    // A vanishing temperature: the greedy decode, whatever the key.
    let cold: Vec<_> = sampled(&mut m, &z, &ids(n, 1), 1e-9, 1);
    let cold: Vec<Option<String>> = cold.into_iter().map(|(s, _)| s).collect();
    assert_eq!(cold, greedy);

    // At τ = 1: the same key gives the same molecule and trace on any thread count;
    // another key gives other molecules.
    let a = sampled(&mut m, &z, &ids(n, 1), 1.0, 1);
    let b = sampled(&mut m, &z, &ids(n, 1), 1.0, 3);
    let other = sampled(&mut m, &z, &ids(n, 2), 1.0, 2);
    let smiles = |v: &[(Option<String>, Trace)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(smiles(&a), smiles(&b));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.1.topo, y.1.topo);
        assert_eq!(x.1.tries, y.1.tries);
        assert!((x.1.logp - y.1.logp).abs() <= 1e-6 * (1.0 + x.1.logp.abs()));
    }
    assert_ne!(smiles(&a), smiles(&other));
    let differ = smiles(&a)
        .iter()
        .zip(&greedy)
        .filter(|(s, g)| s != g)
        .count();
    assert!(
        differ > 0,
        "no sample at τ = 1 differs from the greedy decode"
    );

    // The replay's log-probability equals the sampler's; it has a gradient with
    // respect to the latent and to the decoder's parameters.
    let ok: Vec<usize> = (0..n).filter(|&r| a[r].0.is_some()).collect();
    assert!(
        ok.iter().any(|&r| !a[r].1.assm.is_empty()),
        "no assembly choice"
    );
    let traces: Vec<&Trace> = ok.iter().map(|&r| &a[r].1).collect();
    let rows = Tensor::from_slice(&ok.iter().map(|&r| r as i64).collect::<Vec<_>>());
    let zg = z.index_select(0, &rows).set_requires_grad(true);
    let logp = m.model.trace_log_probs(&zg, &traces, 1.0);
    let got = Vec::<f64>::try_from(logp.to_kind(Kind::Double)).unwrap();
    for (g, t) in got.iter().zip(&traces) {
        assert!(*g < 0.0 && t.logp < 0.0);
        assert!(
            (g - t.logp).abs() <= 1e-3 * (1.0 + t.logp.abs()),
            "replay {g} vs sampled {}",
            t.logp
        );
    }
    logp.sum(Kind::Float).backward();
    assert!(zg.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    let grads = |part: &str| -> f64 {
        m.vs.variables()
            .iter()
            .filter(|(name, _)| name.contains(part))
            .map(|(_, t)| {
                let g = t.grad();
                if g.defined() {
                    g.abs().sum(Kind::Float).double_value(&[])
                } else {
                    0.0
                }
            })
            .sum()
    };
    assert!(grads("decoder") > 0.0, "no gradient in the tree decoder");
    assert!(
        grads("assembly") > 0.0,
        "no gradient in the assembly scorer"
    );

    // At τ = 0.5 the replay still matches.
    let c = sampled(&mut m, &z, &ids(n, 3), 0.5, 1);
    let okc: Vec<usize> = (0..n).filter(|&r| c[r].0.is_some()).collect();
    let tc: Vec<&Trace> = okc.iter().map(|&r| &c[r].1).collect();
    let rc = Tensor::from_slice(&okc.iter().map(|&r| r as i64).collect::<Vec<_>>());
    let lc = tch::no_grad(|| m.model.trace_log_probs(&z.index_select(0, &rc), &tc, 0.5));
    for (g, t) in Vec::<f64>::try_from(lc.to_kind(Kind::Double))
        .unwrap()
        .iter()
        .zip(&tc)
    {
        assert!(
            (g - t.logp).abs() <= 1e-3 * (1.0 + t.logp.abs()),
            "τ 0.5: {g} vs {}",
            t.logp
        );
    }
}
