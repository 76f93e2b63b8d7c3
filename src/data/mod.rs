//! Data preparation: read a CSV of SMILES and targets, canonicalize with RDKit,
//! deduplicate, split, and choose the featurizer columns (`zo-hpc prepare`); with
//! `[jtvae]`, the JT-VAE's vocabulary, trees and assembly candidates (over the ranks);
//! and the JT-VAE's training samples built from the prepared file (`samples`); what
//! decided a prepared file, checked whenever it is read (`provenance`).
pub mod candidates;
pub mod csv_table;
pub mod gather;
pub mod jtvae;
pub mod listing;
pub mod prepare;
pub mod provenance;
pub mod rank_trees;
pub mod samples;
pub mod split;
