//! The learned control variate of estimator "cv": a small network s: z → h that
//! imitates what the decoder, the black box and the MPNN embedding make of a latent.
//! With c_k = a·(s(z + r·u_k) − s(z)) subtracted from each query's difference and
//! the smoothed gradient ∇s̄(z) = E_w[∇(a·s)(z + r·w)] added back, the estimate
//! stays unbiased for the Gaussian-smoothed gradient whatever s is; its variance
//! falls as s fits. s is fitted online on the query pairs a step makes anyway
//! (its parameters train with the others, so every rank holds the same s), and
//! its last layer starts at zero, so an untrained s changes nothing.
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// s: z → h, one hidden tanh layer.
pub struct ControlVariate {
    hidden: nn::Linear,
    out: nn::Linear,
}

impl ControlVariate {
    /// Parameters under `p` (e.g. `vs.root() / "zo_cv"`).
    pub fn new(p: nn::Path, latent: i64, out: i64, hidden: i64) -> ControlVariate {
        let zero = nn::LinearConfig {
            ws_init: nn::Init::Const(0.0),
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        ControlVariate {
            hidden: nn::linear(&p / "hidden", latent, hidden, Default::default()),
            out: nn::linear(&p / "out", hidden, out, zero),
        }
    }

    /// s(z) for rows of z.
    pub fn forward(&self, z: &Tensor) -> Tensor {
        self.out.forward(&self.hidden.forward(z).tanh())
    }

    /// The fit loss Σ_k ‖(s(z_k) − s(z_base,k)) − (h_k − h_base,k)‖² over pairs of
    /// rows (query latents `zq`, their base latents `zb`, the embeddings' change
    /// `dh`); z carries no gradient, s does.
    pub fn fit_loss(&self, zq: &Tensor, zb: &Tensor, dh: &Tensor) -> Tensor {
        let pred = self.forward(&zq.detach()) - self.forward(&zb.detach());
        (pred - dh).square().sum(Kind::Float)
    }

    /// c = a·(s(zq) − s(zb)) per row, without gradient.
    pub fn values(&self, zq: &Tensor, zb: &Tensor, a: &Tensor) -> Vec<f64> {
        tch::no_grad(|| {
            let d = (self.forward(zq) - self.forward(zb)) * a;
            let v = d
                .sum_dim_intlist(1, false, Kind::Double)
                .to_device(tch::Device::Cpu);
            Vec::<f64>::try_from(&v).expect("a CPU f64 vector converts")
        })
    }

    /// ∇s̄ for each of `n` rows: the mean over the `m` offsets w (rows of `w`, `n·m`
    /// rows, row i·m + j for base row i) of ∇_z (a_i·s)(z_i + r·w), by autograd
    /// (the smoothed gradient E_w[∇(a·s)(z + r·w)] of the Gaussian smoothing).
    pub fn smoothed_grad(&self, z: &Tensor, a: &Tensor, w: &Tensor, r: f64, m: i64) -> Tensor {
        let (n, l) = (z.size()[0], z.size()[1]);
        let zq = (z.detach().unsqueeze(1) + w.view([n, m, l]) * r)
            .view([n * m, l])
            .set_requires_grad(true);
        let a_rep = a
            .detach()
            .unsqueeze(1)
            .expand([n, m, a.size()[1]], true)
            .reshape([n * m, -1]);
        let y = (self.forward(&zq) * a_rep).sum(Kind::Float);
        let g = Tensor::run_backward(&[&y], &[&zq], false, false);
        g[0].view([n, m, l]).mean_dim(1, false, Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    #[test]
    fn untrained_s_is_zero_and_the_smoothed_gradient_matches_a_linear_s() {
        let vs = VarStore::new(Device::Cpu);
        let cv = ControlVariate::new(vs.root() / "cv", 3, 2, 4);
        let z = Tensor::from_slice(&[0.1f32, -0.2, 0.3, 0.5, 0.0, -1.0]).view([2, 3]);
        let a = Tensor::from_slice(&[1.0f32, -2.0, 0.5, 0.25]).view([2, 2]);
        assert_eq!(cv.values(&z, &(&z * 0.5), &a), vec![0.0, 0.0]);
        // With tanh ≈ identity near 0 and small weights the gradient is ≈ a·W2·W1
        // at every point; here: fill the out layer and compare with autograd at z.
        tch::no_grad(|| {
            for (n, t) in vs.variables() {
                if n.ends_with("out.weight") {
                    let _ = t.shallow_clone().fill_(0.3);
                }
            }
        });
        let w = Tensor::zeros([2 * 5, 3], (Kind::Float, Device::Cpu));
        let g0 = cv.smoothed_grad(&z, &a, &w, 0.1, 5);
        let zz = z.detach().set_requires_grad(true);
        let y = (cv.forward(&zz) * &a).sum(Kind::Float);
        let g1 = &Tensor::run_backward(&[&y], &[&zz], false, false)[0];
        let diff = (g0 - g1).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
    }
}
