//! Data preparation: read a CSV of SMILES and targets, canonicalize with RDKit,
//! deduplicate, split, and choose the featurizer columns (`zo-hpc prepare`).
pub mod csv_table;
pub mod prepare;
pub mod split;
