//! Data preparation: read a CSV of SMILES and targets, canonicalize with RDKit,
//! deduplicate, split, and choose the featurizer columns (`zo-hpc prepare`); and
//! the JT-VAE's training samples built from the prepared file (`samples`).
pub mod csv_table;
pub mod prepare;
pub mod samples;
pub mod split;
