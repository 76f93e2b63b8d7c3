//! Zeroth-order directions over named parameter tensors, whatever model they
//! belong to: direction k gives every tensor its own part, drawn by a generator
//! from (k, the tensor's name, its size). `NamedTensors` perturbs the tensors
//! along a direction and restores them afterwards, and adds the combination of
//! the directions weighted by their projections to a flat gradient buffer.
use std::ops::Range;
use tch::Tensor;

/// Parameter tensors perturbed together, each with its name and its slot in a
/// flat gradient buffer.
#[derive(Default)]
pub struct NamedTensors {
    items: Vec<(String, Tensor, Range<usize>)>,
}

impl NamedTensors {
    /// The tensors (name, tensor, slot in the flat buffer), in buffer order.
    pub fn new(items: Vec<(String, Tensor, Range<usize>)>) -> NamedTensors {
        NamedTensors { items }
    }

    /// Runs `f` with `scale`·D added to every tensor (D: each tensor's part
    /// `dir(name, numel)` of one direction), then restores the values before.
    pub fn with_perturbed<R>(
        &self,
        scale: f64,
        dir: impl Fn(&str, usize) -> Vec<f32>,
        f: impl FnOnce() -> R,
    ) -> R {
        let saved: Vec<Tensor> = self
            .items
            .iter()
            .map(|(_, t, _)| t.detach().copy())
            .collect();
        tch::no_grad(|| {
            for (name, t, slot) in &self.items {
                let d = dir(name, slot.len());
                let d = Tensor::from_slice(&d)
                    .view(t.size().as_slice())
                    .to_device(t.device());
                let _ = t.shallow_clone().g_add_(&(d * scale));
            }
        });
        let out = f();
        tch::no_grad(|| {
            for ((_, t, _), s) in self.items.iter().zip(&saved) {
                t.shallow_clone().copy_(s);
            }
        });
        out
    }

    /// Adds Σ_k c_k D_k / q to `grad` (q = the number of projections c_k; D_k:
    /// direction k, each tensor's part `dir(k, name, numel)` at its slot).
    pub fn add_projections(
        &self,
        projections: &[f64],
        grad: &mut [f32],
        dir: impl Fn(usize, &str, usize) -> Vec<f32>,
    ) {
        let q = projections.len() as f64;
        for (k, &ck) in projections.iter().enumerate() {
            let w = (ck / q) as f32;
            for (name, _, slot) in &self.items {
                let d = dir(k, name, slot.len());
                for (g, v) in grad[slot.clone()].iter_mut().zip(d) {
                    *g += w * v;
                }
            }
        }
    }
}
