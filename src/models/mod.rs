//! Neural models (libtorch through tch). They know graphs and tensors, nothing of
//! MPI or files.
pub mod batch;
pub mod mpnn;
