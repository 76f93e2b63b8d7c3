//! `zo-hpc eval` for the pipeline: the paper's Table 1 on the held-out split.
//! For Stage 1 (the JT-VAE and MPNN checkpoints, trained separately) and Stage 2
//! (the "zo" checkpoint, when it exists): reconstruction accuracy, RMSE through
//! the pipeline (x → encoder mean → decoder → RDKit → MPNN → ŷ), the MPNN's RMSE
//! on the true molecules and the predict-the-mean baseline, with decode and
//! featurization failures counted (and a second RMSE that predicts the training
//! mean for them, so a failure is never dropped silently). The columns are
//! written, and printed, by `io::eval_file`. Also the pipeline's steps that need
//! the training side: loading the Stage-1 models into it (`load_stage1`) and
//! summing its evaluation over ranks (`reduce`), which Stage 2 shares.
use super::device;
use super::params::Params;
use crate::config::{Config, Stage};
use crate::data::samples::Prepared;
use crate::dist::Dist;
use crate::io::eval_file::Column;
use crate::jtvae::vocab::Vocab;
use crate::pipeline::{labeled, Pipeline, PipelineEval};
use anyhow::Context;
use std::path::Path;
use std::time::Instant;
use tch::nn::VarStore;

/// Evaluates Stage 1 and (when trained) Stage 2 on the first `limit` test molecules.
pub fn table1(cfg: &Config, dist: &Dist, limit: usize) -> anyhow::Result<Vec<Column>> {
    let root = dist.is_root();
    let device = device::choose(cfg.train.device, dist.local_rank)?;
    let ds = crate::data::provenance::open(cfg)?;
    let jk = cfg.stage_checkpoint(Stage::Jtvae);
    let mk = cfg.stage_checkpoint(Stage::Mpnn);
    let zk = cfg.run.out_dir.join("zo").join("checkpoint.h5");
    for ck in [&jk, &mk] {
        if !ck.is_file() {
            anyhow::bail!(
                "no Stage-1 checkpoint at {} (train the pipeline first)",
                ck.display()
            );
        }
    }
    let mut columns = Vec::new();
    let mut test = None;
    for (label, stage2) in [("stage1", false), ("stage2", true)] {
        if stage2 && !zk.is_file() {
            if root {
                log::info!("no Stage-2 checkpoint at {}: Stage 1 only", zk.display());
            }
            continue;
        }
        tch::manual_seed(cfg.run.seed as i64);
        let vs = VarStore::new(device);
        let pipe = Pipeline::new(cfg, &ds, &vs, dist.rank, dist.cpus_per_rank())?;
        load_stage1(&vs, &jk, &mk, (&cfg.dataset_path(), &pipe))?;
        let mut cks = vec![jk.clone(), mk.clone()];
        if stage2 {
            // What Stage 2 froze (decoder, `zo.freeze` groups) stays as Stage 1 left it.
            Params::of_filtered(&vs, |n| pipe.trained_in_stage2(n, &cfg.zo))
                .load_from(&zk)
                .with_context(|| format!("reading the Stage-2 model {}", zk.display()))?;
            cks = vec![zk.clone()];
        }
        let (mols, skipped) = test.get_or_insert_with(|| {
            let vocab = Vocab::new(pipe.vocab.iter().cloned());
            let idx: Vec<u64> = ds.test.iter().take(limit).copied().collect();
            labeled(&ds, &idx, &vocab, &mut Prepared::none(None))
        });
        let t0 = Instant::now();
        let idx: Vec<usize> = dist.shard(mols.len()).collect();
        let mut e = reduce(pipe.evaluate(mols, &idx, cfg.train.eval_batch_size), dist);
        // Molecules the JT-VAE cannot encode are pipeline failures too.
        let mut outside = [*skipped as f64];
        if dist.size > 1 {
            // every rank built the same list; count it once
            outside[0] /= dist.size as f64;
            dist.allreduce_sum_f64(&mut outside);
        }
        e.molecules += outside[0];
        e.decode_failed += outside[0];
        let mut values = e.table(ds.target_std);
        values.push(("not_encodable".into(), outside[0]));
        values.push(("wall_s".into(), t0.elapsed().as_secs_f64()));
        if root {
            log::info!(
                "{label}: {} molecules evaluated in {:.1} s",
                e.molecules,
                t0.elapsed().as_secs_f64()
            );
        }
        columns.push(Column {
            label,
            checkpoints: cks,
            values,
        });
    }
    Ok(columns)
}

/// Loads the Stage-1 checkpoints (or exported models) into the pipeline's
/// parameters; model files made for another vocabulary or other feature columns
/// than `pipe`'s (of the dataset file `dataset`) are refused.
pub fn load_stage1(
    vs: &VarStore,
    jtvae_ck: &Path,
    mpnn_ck: &Path,
    (dataset, pipe): (&Path, &Pipeline),
) -> anyhow::Result<()> {
    crate::io::model::check_inputs(jtvae_ck, mpnn_ck, dataset, &pipe.vocab, &pipe.featurizer)?;
    let jtvae = |n: &str| pipe.is_jtvae_param(n);
    let mpnn = |n: &str| pipe.is_mpnn_param(n);
    let models: [(&str, &Path, &ParamFilter); 2] =
        [("jtvae", jtvae_ck, &jtvae), ("mpnn", mpnn_ck, &mpnn)];
    for (model, ck, keep) in models {
        Params::of_filtered(vs, keep)
            .load_from(ck)
            .with_context(|| {
                format!(
                    "reading the Stage-1 model {} (train its stage first, or set zo.init_{model})",
                    ck.display(),
                )
            })?;
    }
    Ok(())
}

/// Which parameters of the pipeline's VarStore belong to one model.
type ParamFilter<'a> = dyn Fn(&str) -> bool + 'a;

/// The pipeline's evaluation summed over ranks.
pub fn reduce(e: PipelineEval, dist: &Dist) -> PipelineEval {
    let mut a = e.to_array();
    dist.allreduce_sum_f64(&mut a);
    PipelineEval::from_array(a)
}
