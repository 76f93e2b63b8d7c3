//! Adam (Kingma & Ba) over a `Params` list, with its moments exposed so that a
//! checkpoint can hold them and a resumed run continues the same trajectory
//! (tch's own optimizer cannot save its state).
use super::params::Params;
use tch::Tensor;

pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub t: u64,
}

impl Adam {
    pub fn new(params: &Params, lr: f64) -> Adam {
        let zeros = || {
            params
                .tensors
                .iter()
                .map(|p| p.zeros_like().detach())
                .collect()
        };
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            m: zeros(),
            v: zeros(),
            t: 0,
        }
    }

    /// One update with the given gradients (one per parameter).
    pub fn step(&mut self, params: &Params, grads: &[Tensor]) {
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t as i32);
        let bc2 = 1.0 - self.beta2.powi(self.t as i32);
        tch::no_grad(|| {
            for (i, (p, g)) in params.tensors.iter().zip(grads).enumerate() {
                let m = &mut self.m[i];
                let v = &mut self.v[i];
                let _ = m
                    .g_mul_scalar_(self.beta1)
                    .g_add_(&(g * (1.0 - self.beta1)));
                let _ = v
                    .g_mul_scalar_(self.beta2)
                    .g_add_(&(g * g * (1.0 - self.beta2)));
                let denom = (&*v / bc2).sqrt() + self.eps;
                let update = (&*m / bc1) / denom * self.lr;
                let _ = p.shallow_clone().g_sub_(&update);
            }
        });
    }
}

/// Scales `g` in place so that its L2 norm is at most `max_norm` (0 disables);
/// returns the norm before clipping.
pub fn clip_global_norm(g: &mut [f32], max_norm: f64) -> f64 {
    let norm = g
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let s = (max_norm / norm) as f32;
        g.iter_mut().for_each(|x| *x *= s);
    }
    norm
}
