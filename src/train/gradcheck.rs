//! `zo-hpc gradcheck CONFIG`: how good the zeroth-order estimates are, before a
//! long Stage-2 run is spent on them.
//!
//! 1. On a differentiable stand-in for "decode + featurize + embed" (a smooth map
//!    of the latent with the config's latent width): each estimator's cosine
//!    similarity and relative error against autograd, over q and µ, next to the
//!    small-µ theory (forward: cos ≈ √(q / (q + d + 1))); and the chained encoder
//!    gradient (the config's JT-VAE encoder, back-propagating ĝ as Stage 2 does)
//!    against autograd through the stand-in, with the error its variance predicts.
//! 2. On the real pipeline (the Stage-1 JT-VAE): the flip rate (share of perturbed
//!    latents that decode to another molecule) and the share of failed decodes
//!    against the radius µ·σ, so a user can choose µ. The decoder is piecewise
//!    constant: below some radius every difference is exactly zero.
//!
//! 3. The signal test on the real pipeline (`super::signal`, with the Stage-1
//!    MPNN): split-half agreement of the estimates and a descent test.
//!
//! Results are printed as tables and written to `<out_dir>/gradcheck.h5`.
use super::device;
use super::params::Params;
use crate::config::{Config, Stage};
use crate::data::samples::Prepared;
use crate::dist::Dist;
use crate::io::dataset::Dataset;
use crate::io::h5;
use crate::jtvae::vocab::Vocab;
use crate::pipeline::{labeled, to_vec_f32, Pipeline};
use crate::zo::directions::latent_direction;
use crate::zo::estimator::Estimator;
use crate::zo::gradcheck::{
    chained_check, estimator_stats, ChainedCheck, EstimatorStats, SmoothStandIn,
};
use tch::nn::VarStore;

/// What `gradcheck` measures (command-line options).
#[derive(Debug, Clone)]
pub struct Options {
    /// Random points per (estimator, q, µ) on the stand-in.
    pub trials: usize,
    /// Molecules and directions per radius on the real pipeline.
    pub molecules: usize,
    pub directions: usize,
    /// The signal test on the real pipeline (None: skipped).
    pub signal: Option<super::signal::Options>,
}

/// Flip rate and failures at one radius.
#[derive(Debug, Clone, Copy)]
pub struct FlipRow {
    pub radius: f64,
    pub queries: f64,
    pub flipped: f64,
    pub failed: f64,
}

pub struct Report {
    pub standin: Vec<EstimatorStats>,
    pub chained: Vec<ChainedCheck>,
    pub flips: Vec<FlipRow>,
    /// Radii tried on the real pipeline.
    pub latent: usize,
    /// The signal test (None: skipped, or no trained Stage 1).
    pub signal: Option<crate::io::signal_file::Signal>,
}

const QS: [usize; 4] = [1, 4, 16, 64];
const MUS: [f64; 4] = [1e-4, 1e-2, 1e-1, 1.0];
const RADII: [f64; 9] = [1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0];

/// Runs both parts (rank 0 only: this is a quick diagnostic).
pub fn run(cfg: &Config, dist: &Dist, o: &Options) -> anyhow::Result<Report> {
    let device = device::choose(cfg.train.device, dist.local_rank)?;
    let ds = crate::data::provenance::open(cfg)?;
    tch::manual_seed(cfg.run.seed as i64);
    let vs = VarStore::new(device);
    let pipe = Pipeline::new(cfg, &ds, &vs, dist.rank, dist.cpus_per_rank())?;
    let jk = cfg.stage_checkpoint(Stage::Jtvae);
    let trained = jk.is_file();
    if trained {
        Params::of_filtered(&vs, |n| pipe.is_jtvae_param(n)).load_from(&jk)?;
        log::info!("JT-VAE from {}", jk.display());
    } else {
        log::warn!(
            "no Stage-1 JT-VAE at {}: the encoder check uses its initial weights and the flip-rate table is skipped (train the jtvae stage first)",
            jk.display()
        );
    }
    let d = pipe.jtvae.latent() as usize;
    let m = pipe.mpnn.embed.out_dim() as usize;
    let seed = cfg.run.seed;
    let sigma = cfg.zo.sigma;

    // 1a. Estimators on the stand-in (moderate curvature: tanh's bend within µ ~ 1).
    let g = SmoothStandIn::new(seed, d, m, 1.0);
    let standin = standin_table(&g, sigma, o.trials, seed);

    // 1b. The chain rule through the real encoder (a few molecules, large q).
    let vocab = Vocab::new(pipe.vocab.iter().cloned());
    let idx: Vec<u64> = ds.train.iter().take(4).copied().collect();
    let (mols, _) = labeled(&ds, &idx, &vocab, &mut Prepared::none(None));
    let mut chained = Vec::new();
    if !mols.is_empty() {
        let enc = Params::of_filtered(&vs, |n| pipe.is_jtvae_param(n) && !pipe.is_decoder_param(n));
        let samples: Vec<_> = mols.iter().map(|l| l.ex.sample()).collect();
        let encode = || {
            let (gb, tb) = pipe.jtvae.batches(&samples, device);
            pipe.jtvae.encode(&gb, &tb).0
        };
        for q in [64, 1024] {
            chained.push(chained_check(&g, &enc.tensors, &encode, q, 1e-4, 1.0, seed));
        }
    }

    // 2. Flip rate on the real decoder.
    let flips = if trained {
        flip_rows(&pipe, (&ds, &vocab), o, (seed, device))
    } else {
        Vec::new()
    };
    let signal = signal_part(cfg, (&pipe, &vs), (&ds, &vocab), o)?;
    Ok(Report {
        standin,
        chained,
        flips,
        latent: d,
        signal,
    })
}

/// The signal test (`train::signal`) when asked for and Stage 1 (JT-VAE and
/// MPNN) is trained.
fn signal_part(
    cfg: &Config,
    (pipe, vs): (&Pipeline, &VarStore),
    (ds, vocab): (&Dataset, &Vocab),
    o: &Options,
) -> anyhow::Result<Option<crate::io::signal_file::Signal>> {
    let Some(so) = &o.signal else { return Ok(None) };
    let (jk, mk) = (
        cfg.stage_checkpoint(Stage::Jtvae),
        cfg.stage_checkpoint(Stage::Mpnn),
    );
    if !(jk.is_file() && mk.is_file()) {
        log::warn!(
            "no Stage-1 JT-VAE and MPNN at {} and {}: the signal test is skipped",
            jk.display(),
            mk.display()
        );
        return Ok(None);
    }
    super::evaluate::load_stage1(vs, &jk, &mk, (&cfg.dataset_path(), pipe))?;
    let mols = super::signal::test_molecules(ds, vocab, so.molecules);
    Ok(Some(super::signal::run(pipe, &mols, so, cfg.run.seed)))
}

/// Estimators on the smooth stand-in: every estimator, q and radius, `trials` each.
fn standin_table(g: &SmoothStandIn, sigma: f64, trials: usize, seed: u64) -> Vec<EstimatorStats> {
    let mut standin = Vec::new();
    // The stand-in's tensors are tiny: libtorch's thread pool only adds overhead.
    let threads = tch::get_num_threads();
    tch::set_num_threads(1);
    for est in Estimator::ALL {
        // "cv" is forward's combine plus a control variate learned in Stage 2:
        // on the stand-in (no s) it is forward's row again.
        if est == Estimator::Cv {
            continue;
        }
        let qs: &[usize] = if est == Estimator::Coordinate {
            &[1]
        } else {
            &QS
        };
        for &q in qs.iter().filter(|&&q| est.check_q(q).is_ok()) {
            for &mu in &MUS {
                standin.push(estimator_stats(g, est, q, mu / sigma, sigma, trials, seed));
            }
        }
    }
    tch::set_num_threads(threads);
    standin
}

/// The flip rate of the trained decoder at each radius of `RADII`, over the first
/// `o.molecules` test molecules and `o.directions` directions each.
fn flip_rows(
    pipe: &Pipeline,
    (ds, vocab): (&Dataset, &Vocab),
    o: &Options,
    (seed, device): (u64, tch::Device),
) -> Vec<FlipRow> {
    let d = pipe.jtvae.latent() as usize;
    let mut flips = Vec::new();
    let idx: Vec<u64> = ds.test.iter().take(o.molecules).copied().collect();
    let (mols, _) = labeled(ds, &idx, vocab, &mut Prepared::none(None));
    let samples: Vec<_> = mols.iter().map(|l| l.ex.sample()).collect();
    let z = tch::no_grad(|| {
        let (gb, tb) = pipe.jtvae.batches(&samples, device);
        to_vec_f32(&pipe.jtvae.encode(&gb, &tb).0)
    });
    let base: Vec<Option<String>> = pipe
        .decode_many(&z[..mols.len() * d])
        .into_iter()
        .map(|x| x.map(|x| x.smiles))
        .collect();
    for &radius in &RADII {
        let mut row = FlipRow {
            radius,
            queries: 0.0,
            flipped: 0.0,
            failed: 0.0,
        };
        // All perturbed latents of this radius as one decode batch.
        let mut zq: Vec<f32> = Vec::new();
        let mut whose: Vec<&String> = Vec::new();
        for (i, b) in base.iter().enumerate() {
            let Some(b) = b else { continue };
            for k in 0..o.directions {
                let u = latent_direction(seed, 0, i as u64, k as u64, d);
                zq.extend(
                    z[i * d..(i + 1) * d]
                        .iter()
                        .zip(&u)
                        .map(|(&a, &b)| a + (radius as f32) * b),
                );
                whose.push(b);
            }
        }
        for (got, b) in pipe.decode_many(&zq).iter().zip(whose) {
            row.queries += 1.0;
            match got {
                None => row.failed += 1.0,
                Some(x) if &x.smiles != b => row.flipped += 1.0,
                Some(_) => {}
            }
        }
        flips.push(row);
    }
    flips
}

/// The flip rate at the smallest radius: molecules whose decode sits on a tie
/// (a zero-margin choice) flip under any perturbation, however small.
pub fn tie_floor(flips: &[FlipRow]) -> f64 {
    flips
        .first()
        .filter(|r| r.queries > 0.0)
        .map_or(0.0, |r| r.flipped / r.queries)
}

/// The smallest radius at which the decoder responds to the radius itself: a
/// flip rate at least 10 points above the tie floor, with at most 10% failed
/// decodes (None when no radius qualifies).
pub fn suggested_radius(flips: &[FlipRow]) -> Option<f64> {
    let floor = tie_floor(flips);
    flips
        .iter()
        .find(|r| {
            r.queries > 0.0 && r.flipped / r.queries >= floor + 0.1 && r.failed / r.queries <= 0.1
        })
        .map(|r| r.radius)
}

/// The report as Markdown tables.
pub fn markdown(r: &Report, cfg: &Config) -> String {
    let mut s = format!(
        "## Estimators on the smooth stand-in (d = {}, cosine with the autograd gradient, mean ± sd over trials)\n\n| estimator | q | queries | µ·σ | cosine | theory (small µ) | rel. error |\n|---|---|---|---|---|---|---|\n",
        r.latent
    );
    for e in &r.standin {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0e} | {:.3} ± {:.3} | {} | {:.3} |\n",
            e.estimator,
            e.q,
            e.queries,
            e.mu * e.sigma,
            e.cosine_mean,
            e.cosine_std,
            e.theory_cosine.map_or("-".into(), |t| format!("{t:.3}")),
            e.rel_err_mean
        ));
    }
    s.push_str("\n## Chained encoder gradient (the JT-VAE encoder, ĝ back-propagated) against autograd through the stand-in\n\n| molecules | q | encoder parameters | cosine | rel. error | predicted rel. error |\n|---|---|---|---|---|---|\n");
    for c in &r.chained {
        s.push_str(&format!(
            "| {} | {} | {} | {:.4} | {:.3} | {:.3} |\n",
            c.batch, c.q, c.n_params, c.cosine, c.rel_err, c.predicted_rel_err
        ));
    }
    if r.flips.is_empty() {
        s.push_str("\n(no Stage-1 JT-VAE yet: flip rates not measured)\n");
        return s;
    }
    s.push_str("\n## The real decoder: perturbed latents z + µσ·u (u ~ N(0, I))\n\n| µ·σ | queries | flip rate | failed decodes |\n|---|---|---|---|\n");
    for f in &r.flips {
        s.push_str(&format!(
            "| {:.0e} | {} | {:.3} | {:.3} |\n",
            f.radius,
            f.queries,
            f.flipped / f.queries.max(1.0),
            f.failed / f.queries.max(1.0)
        ));
    }
    let now = cfg.zo.mu * cfg.zo.sigma;
    let at_now = r
        .flips
        .iter()
        .min_by(|a, b| {
            (a.radius.ln() - now.ln())
                .abs()
                .total_cmp(&(b.radius.ln() - now.ln()).abs())
        })
        .map(|f| f.flipped / f.queries.max(1.0))
        .unwrap_or(0.0);
    s.push_str(&format!(
        "\nThe config's µ·σ = {now:e}: flip rate ≈ {at_now:.3} at the nearest radius measured."
    ));
    let floor = tie_floor(&r.flips);
    if floor > 0.0 {
        s.push_str(&format!(
            " At the smallest radius {:.1}% of queries already flip: those molecules sit on a tie in the decoder, so their difference is a jump of O(1) however small µ is (the estimate is then jump/µ, not a derivative).",
            100.0 * floor
        ));
    }
    match suggested_radius(&r.flips) {
        Some(x) => s.push_str(&format!(
            " The data support µ·σ ≥ {x:e}: the smallest radius whose flip rate is at least 10 points above that floor with ≤ 10% failed decodes; below it the decoder does not respond to the radius and the latent estimate carries little signal.\n"
        )),
        None => s.push_str(
            " No radius raised the flip rate 10 points above that floor with ≤ 10% failed decodes.\n",
        ),
    }
    if let Some(sig) = &r.signal {
        s.push_str(&crate::io::signal_file::markdown(sig));
    }
    s
}

/// Writes `gradcheck.h5`: `/standin/*`, `/chained/*`, `/pipeline/*` as columns.
pub fn write(path: &std::path::Path, r: &Report, cfg: &Config) -> anyhow::Result<()> {
    Ok(h5::write_atomically(path, |f| {
        h5::write_str_attr(f, "config", &cfg.text)?;
        h5::write_str_attr(f, "commit", crate::COMMIT)?;
        let g = f.create_group("standin")?;
        let names: Vec<String> = r.standin.iter().map(|e| e.estimator.to_string()).collect();
        h5::write_strings(&g, "estimator", &names)?;
        let col = |v: fn(&EstimatorStats) -> f64| r.standin.iter().map(v).collect::<Vec<f64>>();
        h5::write_vec(&g, "q", &col(|e| e.q as f64))?;
        h5::write_vec(&g, "queries", &col(|e| e.queries as f64))?;
        h5::write_vec(&g, "radius", &col(|e| e.mu * e.sigma))?;
        h5::write_vec(&g, "cosine_mean", &col(|e| e.cosine_mean))?;
        h5::write_vec(&g, "cosine_std", &col(|e| e.cosine_std))?;
        h5::write_vec(&g, "rel_err_mean", &col(|e| e.rel_err_mean))?;
        h5::write_vec(
            &g,
            "theory_cosine",
            &col(|e| e.theory_cosine.unwrap_or(f64::NAN)),
        )?;
        let g = f.create_group("chained")?;
        let col = |v: fn(&ChainedCheck) -> f64| r.chained.iter().map(v).collect::<Vec<f64>>();
        h5::write_vec(&g, "q", &col(|c| c.q as f64))?;
        h5::write_vec(&g, "cosine", &col(|c| c.cosine))?;
        h5::write_vec(&g, "rel_err", &col(|c| c.rel_err))?;
        h5::write_vec(&g, "predicted_rel_err", &col(|c| c.predicted_rel_err))?;
        let g = f.create_group("pipeline")?;
        let col = |v: fn(&FlipRow) -> f64| r.flips.iter().map(v).collect::<Vec<f64>>();
        h5::write_vec(&g, "radius", &col(|x| x.radius))?;
        h5::write_vec(&g, "queries", &col(|x| x.queries))?;
        h5::write_vec(&g, "flip_rate", &col(|x| x.flipped / x.queries.max(1.0)))?;
        h5::write_vec(&g, "failed_share", &col(|x| x.failed / x.queries.max(1.0)))?;
        h5::write_attr(&g, "tie_floor", &tie_floor(&r.flips))?;
        if let Some(x) = suggested_radius(&r.flips) {
            h5::write_attr(&g, "suggested_min_radius", &x)?;
        }
        if let Some(sig) = &r.signal {
            crate::io::signal_file::write(f, sig)?;
        }
        Ok(())
    })?)
}
