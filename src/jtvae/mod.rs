//! The junction-tree VAE (Jin, Barzilay, Jaakkola 2018): tree decomposition of a
//! molecule into clusters, the cluster vocabulary, graph assembly of clusters back
//! into a molecule, and the networks (encoder, tree decoder, assembly scorer).
pub mod assemble;
pub mod batch;
pub mod candidates;
pub mod decode;
pub mod decoder;
pub mod encoder;
pub mod gold;
pub mod graph;
pub mod junction;
pub mod model;
pub mod policy;
pub mod recon;
pub mod sample;
pub mod scorer;
pub mod shared;
pub mod tree;
pub mod vocab;
pub mod walk;
