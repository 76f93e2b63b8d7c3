//! The junction-tree VAE's chemistry (Jin, Barzilay, Jaakkola 2018): tree
//! decomposition of a molecule into clusters, the cluster vocabulary, and graph
//! assembly of clusters back into a molecule.
pub mod assemble;
pub mod batch;
pub mod decoder;
pub mod graph;
pub mod tree;
pub mod vocab;
