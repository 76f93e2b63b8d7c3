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

impl NamedTensors {
    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The tensors' slots in the flat buffer, in buffer order.
    pub fn slots(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.items.iter().map(|(_, _, s)| s.clone())
    }

    /// Total number of values over the tensors (the length of `gradient_of`).
    pub fn numel(&self) -> usize {
        self.items.iter().map(|(_, _, s)| s.len()).sum()
    }

    /// ∂y/∂(each tensor), concatenated in buffer order (0 for a tensor `y` does
    /// not reach), without touching the tensors' `.grad` and keeping y's graph
    /// for a later backward.
    pub fn gradient_of(&self, y: &Tensor) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.numel());
        let inputs: Vec<&Tensor> = self.items.iter().map(|(_, t, _)| t).collect();
        let grads = if y.requires_grad() && !inputs.is_empty() {
            Tensor::run_backward(&[y], &inputs, true, false)
        } else {
            Vec::new()
        };
        for (i, (_, _, slot)) in self.items.iter().enumerate() {
            match grads.get(i).filter(|g| g.defined()) {
                Some(g) => {
                    let g = g.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float);
                    let flat = g.flatten(0, -1).contiguous();
                    out.extend(
                        Vec::<f32>::try_from(&flat).expect("a contiguous CPU f32 tensor converts"),
                    );
                }
                None => out.extend(std::iter::repeat_n(0f32, slot.len())),
            }
        }
        out
    }

    /// Σ_i (tensor_i · part_i).sum() with `part` (buffer order, as `gradient_of`
    /// gives it) a constant: a term whose backward adds `part` to the tensors'
    /// gradients. None when there are no tensors.
    pub fn linear_term(&self, part: &[f32]) -> Option<Tensor> {
        let mut at = 0;
        let mut out: Option<Tensor> = None;
        for (_, t, slot) in &self.items {
            let n = slot.len();
            let g = Tensor::from_slice(&part[at..at + n])
                .to_device(t.device())
                .to_kind(t.kind())
                .view_as(t);
            let term = (t * g).sum(tch::Kind::Float);
            out = Some(match out {
                Some(o) => o + term,
                None => term,
            });
            at += n;
        }
        out
    }

    /// Adds `part` (concatenated in buffer order, as `gradient_of` gives it) into
    /// the tensors' slots of the flat buffer `grad`.
    pub fn add_flat(&self, part: &[f32], grad: &mut [f32]) {
        let mut at = 0;
        for (_, _, slot) in &self.items {
            let n = slot.len();
            for (g, v) in grad[slot.clone()].iter_mut().zip(&part[at..at + n]) {
                *g += v;
            }
            at += n;
        }
    }
}
