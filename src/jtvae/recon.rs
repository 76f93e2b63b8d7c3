//! The tally of a JT-VAE's reconstruction of held-out molecules (`Recon`): how
//! many decoded back exactly, validly or not at all, where the decoding time went,
//! and the SMILES pairs. Stage 1 computes it; `io::eval_file` stores it.

/// Reconstruction of held-out molecules: decode(mean of encode(x)) against x, as
/// canonical SMILES without stereo (stereo is not modelled).
#[derive(Debug, Clone, Default)]
pub struct Recon {
    pub molecules: f64,
    pub exact: f64,
    /// Decodes that gave a valid molecule (exact or not).
    pub valid: f64,
    pub tree_too_large: f64,
    pub other_failed: f64,
    /// Wall seconds (summed over ranks) encoding and decoding; the decode workers'
    /// seconds (summed over workers and ranks) in the tree decoder networks,
    /// candidate enumeration (RDKit) and assembly scoring.
    pub encode_s: f64,
    pub decode_s: f64,
    pub tree_s: f64,
    pub enumerate_s: f64,
    pub score_s: f64,
    /// On rank 0: the input and decoded SMILES of every molecule, in order
    /// (decoded "" where decoding failed); empty on other ranks.
    pub smiles: Vec<String>,
    pub decoded: Vec<String>,
}
