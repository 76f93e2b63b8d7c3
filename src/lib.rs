//! zo-hpc: MPI-parallel training of deep models *through* scientific software that
//! has no gradients (zeroth-order SciML, arXiv 2206.02785).
//!
//! Data flows through the modules in this order: `config` → `data` → `chem` /
//! `blackbox` → `models` / `jtvae` → `pipeline` (the model chain) → `zo` → `train`
//! → `dist` → `io`; `report` reads the files of finished runs back into plots and
//! a summary. Imports run one way (checked by `tests/layout.rs`): `chem`, `zo` and
//! `dist` import nothing of the project; then `config`; `models`; `jtvae`; `io`
//! (file formats know the domain types, not the reverse); `blackbox`; `data`;
//! `pipeline`; `train`; `report` reads files through `io` only.
/// The git commit this binary was built from ("unknown" outside a git checkout).
pub const COMMIT: &str = env!("ZO_HPC_COMMIT");

pub mod blackbox;
pub mod chem;
pub mod config;
pub mod data;
pub mod dist;
pub mod io;
pub mod jtvae;
pub mod models;
pub mod pipeline;
pub mod report;
pub mod train;
pub mod zo;
