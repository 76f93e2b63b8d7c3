//! Table 1's numbers of the pipeline (`PipelineEval`): reconstruction, RMSE
//! through the chain and of the MPNN on the true molecules, failures, summed over
//! the molecules one rank evaluates (the sum over ranks is the caller's).
use super::chain::{to_vec_f32, Pipeline};
use super::labeled::Labeled;
use crate::chem::MolGraph;
use crate::data::samples::{flat, Example};
use crate::jtvae::decode::Decoded;

impl Pipeline {
    /// Table 1's numbers over `mols` (this rank's share `idx`), summed locally:
    /// see `PipelineEval`.
    pub(crate) fn evaluate(&self, mols: &[Labeled], idx: &[usize], chunk: usize) -> PipelineEval {
        let mut e = PipelineEval::default();
        for part in idx.chunks(chunk.max(1)) {
            let exs: Vec<&Example> = part.iter().map(|&i| &mols[i].ex).collect();
            let mean = to_vec_f32(&self.encode_means(&exs));
            let l = self.jtvae.latent() as usize;
            let mut pipe_graphs = Vec::new();
            let mut pipe_y = Vec::new();
            let decoded = self.decode_many(&mean[..part.len() * l]);
            let items: Vec<&Decoded> = decoded.iter().flatten().collect();
            let (answers, _) = self.featurize_decoded(&items);
            let mut answers = answers.into_iter();
            for (k, &i) in part.iter().enumerate() {
                let m = &mols[i];
                e.molecules += 1.0;
                e.sse_mean += f64::from(m.y).powi(2);
                match &decoded[k] {
                    None => {
                        e.decode_failed += 1.0;
                        e.sse_fill += f64::from(m.y).powi(2);
                    }
                    Some(d) => {
                        if flat(&m.ex.smiles).as_deref() == Some(d.smiles.as_str()) {
                            e.exact += 1.0;
                        }
                        let a = answers.next().expect("one answer per decoded molecule");
                        if a.is_ok() {
                            pipe_graphs.push(a);
                            pipe_y.push(m.y);
                        } else {
                            e.featurize_failed += 1.0;
                            e.sse_fill += f64::from(m.y).powi(2);
                        }
                    }
                }
            }
            let graphs: Vec<&MolGraph> = pipe_graphs
                .iter()
                .filter_map(|a| a.as_ref().as_ref().ok())
                .collect();
            if !graphs.is_empty() {
                let pred = tch::no_grad(|| self.mpnn.forward(&self.batch(&graphs)));
                for (p, y) in to_vec_f32(&pred).iter().zip(&pipe_y) {
                    let se = f64::from(p - y).powi(2);
                    e.sse_pipe += se;
                    e.sse_fill += se;
                    e.n_pipe += 1.0;
                }
            }
            // The MPNN on the true molecules.
            let true_smiles: Vec<String> = exs.iter().map(|x| x.smiles.clone()).collect();
            let (answers, _) = self.featurize(&true_smiles);
            let mut ys = Vec::new();
            let graphs: Vec<&MolGraph> = answers
                .iter()
                .zip(part)
                .filter_map(|(a, &i)| {
                    let g = a.as_ref().as_ref().ok()?;
                    ys.push(mols[i].y);
                    Some(g)
                })
                .collect();
            if !graphs.is_empty() {
                let pred = tch::no_grad(|| self.mpnn.forward(&self.batch(&graphs)));
                for (p, y) in to_vec_f32(&pred).iter().zip(&ys) {
                    e.sse_true += f64::from(p - y).powi(2);
                    e.n_true += 1.0;
                }
            }
        }
        e
    }
}

/// Sums over evaluated molecules (normalized target units) for Table 1.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PipelineEval {
    pub molecules: f64,
    /// decode(encoder mean) equals the molecule (canonical SMILES, no stereo).
    pub exact: f64,
    pub decode_failed: f64,
    pub featurize_failed: f64,
    /// Squared errors through the pipeline over molecules that decoded and featurized.
    pub sse_pipe: f64,
    pub n_pipe: f64,
    /// Same, with a failed molecule predicted as the training mean.
    pub sse_fill: f64,
    /// The MPNN on the true molecules.
    pub sse_true: f64,
    pub n_true: f64,
    /// Predict-the-training-mean.
    pub sse_mean: f64,
}

impl PipelineEval {
    pub const N: usize = 10;

    pub fn to_array(self) -> [f64; Self::N] {
        [
            self.molecules,
            self.exact,
            self.decode_failed,
            self.featurize_failed,
            self.sse_pipe,
            self.n_pipe,
            self.sse_fill,
            self.sse_true,
            self.n_true,
            self.sse_mean,
        ]
    }

    pub fn from_array(a: [f64; Self::N]) -> Self {
        PipelineEval {
            molecules: a[0],
            exact: a[1],
            decode_failed: a[2],
            featurize_failed: a[3],
            sse_pipe: a[4],
            n_pipe: a[5],
            sse_fill: a[6],
            sse_true: a[7],
            n_true: a[8],
            sse_mean: a[9],
        }
    }

    /// (name, value) in target units (`std` = the target's standard deviation).
    pub fn table(&self, std: f64) -> Vec<(String, f64)> {
        let rmse = |sse: f64, n: f64| {
            if n > 0.0 {
                (sse / n).sqrt() * std
            } else {
                f64::NAN
            }
        };
        let share = |x: f64| {
            if self.molecules > 0.0 {
                x / self.molecules
            } else {
                f64::NAN
            }
        };
        vec![
            ("recon_acc".into(), share(self.exact)),
            ("pipeline_rmse".into(), rmse(self.sse_pipe, self.n_pipe)),
            (
                "pipeline_rmse_mean_fill".into(),
                rmse(self.sse_fill, self.molecules),
            ),
            ("true_rmse".into(), rmse(self.sse_true, self.n_true)),
            ("baseline_rmse".into(), rmse(self.sse_mean, self.molecules)),
            ("decode_failed".into(), self.decode_failed),
            ("featurize_failed".into(), self.featurize_failed),
            ("evaluated".into(), self.molecules),
        ]
    }
}
