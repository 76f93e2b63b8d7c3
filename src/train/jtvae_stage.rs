//! Stage "jtvae": first-order (Stage 1) training of the JT-VAE through the shared
//! data-parallel loop. Samples are the training molecules with a junction tree in
//! the dataset file; each gets its feature graph and its assembly candidates once
//! at start-up. The VAE noise of sample `gid` at step `s` is drawn from the counter
//! generator keyed (seed, "vae", s, gid), so it is the same on 1 rank or 64.
//! Evaluation each epoch: the losses and accuracies at the latent mean on the test
//! split (teacher forced).
use super::trainer::{Objective, Trainer};
use super::{device, RunOptions};
use crate::chem::{self, Featurizer};
use crate::config::{Config, JtvaeConfig};
use crate::dist::Dist;
use crate::io::dataset::{Dataset, TreeRecord};
use crate::jtvae::candidates::{training_candidates, LabelGraphs, NodeCandidates};
use crate::jtvae::model::{JtVae, Sample};
use crate::jtvae::tree::{decompose_smiles, LabelCache};
use crate::jtvae::vocab::Vocab;
use crate::zo::rng::Stream;
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

struct Example {
    graph: chem::MolGraph,
    tree: TreeRecord,
    candidates: Vec<NodeCandidates>,
}

pub struct JtvaeObjective {
    train: Vec<Example>,
    test: Vec<Example>,
    model: JtVae,
    device: Device,
    seed: u64,
    cfg: JtvaeConfig,
    eval_batch: usize,
}

/// Builds the examples of `smiles` (with their trees, when already known).
fn examples(
    smiles: &[&str],
    trees: Vec<Option<TreeRecord>>,
    vocab: &Vocab,
    max_candidates: usize,
    what: &str,
    root: bool,
) -> Vec<Example> {
    let featurizer = Featurizer::full();
    let (mut cache, mut labels) = (LabelCache::default(), LabelGraphs::default());
    let mut out = Vec::new();
    let mut skipped = 0usize;
    for (smi, tree) in smiles.iter().zip(trees) {
        let tree = tree.or_else(|| {
            let (_, t) = decompose_smiles(smi, &mut cache).ok()?;
            let labels = t
                .labels
                .iter()
                .map(|l| vocab.get(l).map(|x| x as u32))
                .collect::<Option<Vec<_>>>()?;
            Some(TreeRecord {
                labels,
                clusters: t
                    .clusters
                    .iter()
                    .map(|c| c.iter().map(|&a| a as u32).collect())
                    .collect(),
                edges: t.edges.iter().map(|&(a, b)| (a as u32, b as u32)).collect(),
            })
        });
        let built = tree.and_then(|tree| {
            let graph = featurizer.featurize(smi).ok()?;
            let candidates =
                training_candidates(smi, max_candidates, &mut cache, &mut labels).ok()?;
            Some(Example {
                graph,
                tree,
                candidates,
            })
        });
        match built {
            Some(e) => out.push(e),
            None => skipped += 1,
        }
    }
    if root && skipped > 0 {
        log::warn!("{skipped} {what} molecules have no usable junction tree (outside the vocabulary or not assemblable) and are left out");
    }
    out
}

impl JtvaeObjective {
    pub fn new(cfg: &Config, dist: &Dist, vs: &VarStore) -> anyhow::Result<JtvaeObjective> {
        let root = dist.is_root();
        let jc = cfg.jtvae.clone().unwrap_or_default();
        let path = cfg.dataset_path();
        let ds = Dataset::read(&path)?;
        let Some(j) = &ds.jtvae else {
            anyhow::bail!(
                "{}: no JT-VAE vocabulary in this dataset file; it was prepared without a [jtvae] section (delete it and run `zo-hpc prepare` again)",
                path.display()
            );
        };
        let vocab = Vocab::new(j.vocab.iter().cloned());
        let t0 = Instant::now();
        let train_smiles: Vec<&str> = ds
            .train
            .iter()
            .map(|&i| ds.smiles[i as usize].as_str())
            .collect();
        let test_smiles: Vec<&str> = ds
            .test
            .iter()
            .map(|&i| ds.smiles[i as usize].as_str())
            .collect();
        let train = examples(
            &train_smiles,
            j.train_trees.clone(),
            &vocab,
            jc.max_candidates,
            "training",
            root,
        );
        let test = examples(
            &test_smiles,
            vec![None; test_smiles.len()],
            &vocab,
            jc.max_candidates,
            "test",
            root,
        );
        if train.is_empty() {
            anyhow::bail!(
                "{}: no training molecule has a usable junction tree",
                path.display()
            );
        }
        if root {
            let groups: usize = train.iter().map(|e| e.candidates.len()).sum();
            log::info!(
                "JT-VAE data: {} training / {} test molecules, vocabulary {}, {} candidate groups, built in {:.1} s",
                train.len(),
                test.len(),
                vocab.len(),
                groups,
                t0.elapsed().as_secs_f64()
            );
        }
        let f = Featurizer::full();
        let model = JtVae::new(
            &(vs.root() / "jtvae"),
            vocab.len() as i64,
            f.atom_dim(),
            f.bond_dim(),
            &jc,
        );
        Ok(JtvaeObjective {
            train,
            test,
            model,
            device: vs.device(),
            seed: cfg.run.seed,
            cfg: jc,
            eval_batch: cfg.train.eval_batch_size,
        })
    }

    fn samples<'e>(set: &'e [Example], idx: &[usize]) -> Vec<Sample<'e>> {
        idx.iter()
            .map(|&i| Sample {
                graph: &set[i].graph,
                tree: &set[i].tree,
                candidates: &set[i].candidates,
            })
            .collect()
    }

    /// KL weight at a global step (linear warm-up).
    fn beta(&self, step: usize) -> f64 {
        if self.cfg.beta_warmup == 0 {
            self.cfg.beta
        } else {
            self.cfg.beta * ((step + 1) as f64 / self.cfg.beta_warmup as f64).min(1.0)
        }
    }

    /// Reparameterization noise of each sample, keyed (seed, "vae", step, sample).
    fn noise(&self, samples: &[usize], step: usize) -> Tensor {
        let latent = self.model.latent() as usize;
        let mut eps = Vec::with_capacity(samples.len() * latent);
        for &gid in samples {
            let mut s = Stream::new(self.seed, "vae", &[step as u64, gid as u64]);
            eps.extend((0..latent).map(|_| s.normal() as f32));
        }
        Tensor::from_slice(&eps)
            .view([samples.len() as i64, latent as i64])
            .to_device(self.device)
    }
}

impl Objective for JtvaeObjective {
    fn stage(&self) -> &'static str {
        "jtvae"
    }

    fn n_train(&self) -> usize {
        self.train.len()
    }

    fn terms(&self) -> Vec<&'static str> {
        vec!["word", "topo", "assm", "kl"]
    }

    fn loss(&self, samples: &[usize], step: usize) -> (Tensor, Vec<f64>) {
        let eps = self.noise(samples, step);
        let l = self
            .model
            .losses(&Self::samples(&self.train, samples), &eps, self.device);
        let total = &l.word + &l.topo + &l.assm + &l.kl * self.beta(step);
        let terms = [&l.word, &l.topo, &l.assm, &l.kl]
            .iter()
            .map(|t| t.double_value(&[]))
            .collect();
        (total, terms)
    }

    fn evaluate(&self, dist: &Dist) -> Vec<(String, f64)> {
        let idx: Vec<usize> = dist.shard(self.test.len()).collect();
        // word, topo, assm sums; word/topo/assm correct and counts; molecules
        let mut acc = [0f64; 10];
        tch::no_grad(|| {
            for chunk in idx.chunks(self.eval_batch) {
                let eps = Tensor::zeros(
                    [chunk.len() as i64, self.model.latent()],
                    (Kind::Float, self.device),
                );
                let l = self
                    .model
                    .losses(&Self::samples(&self.test, chunk), &eps, self.device);
                acc[0] += l.word.double_value(&[]);
                acc[1] += l.topo.double_value(&[]);
                acc[2] += l.assm.double_value(&[]);
                acc[3] += l.word_acc * l.n_word as f64;
                acc[4] += l.n_word as f64;
                acc[5] += l.topo_acc * l.n_topo as f64;
                acc[6] += l.n_topo as f64;
                acc[7] += l.assm_correct.0 as f64;
                acc[8] += l.assm_correct.1 as f64;
                acc[9] += chunk.len() as f64;
            }
        });
        dist.allreduce_sum_f64(&mut acc);
        let per = |x: f64, n: f64| if n > 0.0 { x / n } else { f64::NAN };
        vec![
            ("test_word".into(), per(acc[0], acc[9])),
            ("test_topo".into(), per(acc[1], acc[9])),
            ("test_assm".into(), per(acc[2], acc[9])),
            ("test_word_acc".into(), per(acc[3], acc[4])),
            ("test_topo_acc".into(), per(acc[5], acc[6])),
            ("test_assm_acc".into(), per(acc[7], acc[8])),
        ]
    }

    fn describe(&self) -> String {
        "junction-tree VAE (no target)".into()
    }
}

/// `zo-hpc train` with `train.stage = "jtvae"`.
pub fn run(cfg: &Config, dist: &Dist, opts: &RunOptions) -> anyhow::Result<()> {
    let device = device::choose(cfg.train.device, dist.local_rank)?;
    device::log_choice(dist, device);
    tch::manual_seed(cfg.run.seed as i64);
    let vs = VarStore::new(device);
    let obj = JtvaeObjective::new(cfg, dist, &vs)?;
    let mut t = Trainer::new(cfg, dist, obj, &vs);
    if opts.resume {
        t.resume()?;
    }
    t.run(opts)
}
