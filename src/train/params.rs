//! The trainable parameters of a VarStore in a fixed (name-sorted) order, and the
//! flat gradient buffer that one allreduce per step sums over ranks
//! (`to_vec_f32`, which reads tensors back, is the pipeline's, re-exported).
use crate::io::checkpoint::NamedArray;
use crate::io::h5::H5Error;
pub use crate::pipeline::to_vec_f32;
use tch::{nn::VarStore, Tensor};

/// Why parameters could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error(transparent)]
    Read(#[from] H5Error),
    #[error("checkpoint parameter {file} has shape {file_shape:?}, the model's {model} has {model_shape:?}")]
    Shape {
        file: String,
        file_shape: Vec<usize>,
        model: String,
        model_shape: Vec<usize>,
    },
}

pub struct Params {
    pub names: Vec<String>,
    pub tensors: Vec<Tensor>,
    numels: Vec<usize>,
}

impl Params {
    pub fn of(vs: &VarStore) -> Params {
        Self::of_filtered(vs, |_| true)
    }

    /// The parameters whose names `keep` accepts.
    pub fn of_filtered(vs: &VarStore, keep: impl Fn(&str) -> bool) -> Params {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(n, _)| keep(n))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let numels = vars.iter().map(|(_, t)| t.numel()).collect();
        let (names, tensors) = vars.into_iter().unzip();
        Params {
            names,
            tensors,
            numels,
        }
    }

    /// Where parameter `name` sits in the flat gradient buffer.
    pub fn slot(&self, name: &str) -> Option<std::ops::Range<usize>> {
        let i = self.names.iter().position(|n| n == name)?;
        let start: usize = self.numels[..i].iter().sum();
        Some(start..start + self.numels[i])
    }

    /// Elements of each parameter, in flat-buffer order.
    pub fn numels(&self) -> &[usize] {
        &self.numels
    }

    pub fn numel(&self) -> usize {
        self.numels.iter().sum()
    }

    pub fn zero_grad(&self) {
        for t in &self.tensors {
            let mut g = t.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// All gradients as one flat f32 vector on the CPU (zeros for unused parameters).
    pub fn flat_grad(&self) -> Vec<f32> {
        let parts: Vec<Tensor> = self
            .tensors
            .iter()
            .map(|t| {
                let g = t.grad();
                if g.defined() {
                    g.flatten(0, -1)
                } else {
                    t.zeros_like().flatten(0, -1)
                }
            })
            .collect();
        to_vec_f32(&Tensor::cat(&parts, 0))
    }

    /// Splits a flat vector into per-parameter tensors shaped like the parameters.
    pub fn unflatten(&self, flat: &[f32]) -> Vec<Tensor> {
        let mut out = Vec::with_capacity(self.tensors.len());
        let mut off = 0;
        for (t, &n) in self.tensors.iter().zip(&self.numels) {
            let part = Tensor::from_slice(&flat[off..off + n])
                .view(t.size().as_slice())
                .to_device(t.device());
            out.push(part);
            off += n;
        }
        out
    }

    pub fn to_arrays(&self, tensors: &[Tensor]) -> Vec<NamedArray> {
        self.names
            .iter()
            .zip(tensors)
            .map(|(name, t)| NamedArray {
                name: name.clone(),
                shape: t.size().iter().map(|&s| s as usize).collect(),
                data: to_vec_f32(t),
            })
            .collect()
    }

    /// Loads these parameters (by name) from a checkpoint that may hold more.
    pub fn load_from(&self, checkpoint: &std::path::Path) -> Result<(), ParamsError> {
        let (_, arrays) = crate::io::checkpoint::Checkpoint::read_params(checkpoint, &self.names)?;
        self.load_arrays(&arrays, &self.tensors)
    }

    /// Copies arrays (same names and shapes) into `dst` tensors.
    pub fn load_arrays(&self, arrays: &[NamedArray], dst: &[Tensor]) -> Result<(), ParamsError> {
        for ((a, t), name) in arrays.iter().zip(dst).zip(&self.names) {
            let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
            if &a.name != name || a.shape != shape {
                return Err(ParamsError::Shape {
                    file: a.name.clone(),
                    file_shape: a.shape.clone(),
                    model: name.clone(),
                    model_shape: shape,
                });
            }
            let src = Tensor::from_slice(&a.data)
                .view(t.size().as_slice())
                .to_device(t.device());
            tch::no_grad(|| t.shallow_clone().copy_(&src));
        }
        Ok(())
    }
}
