//! The tally of a JT-VAE's reconstruction of held-out molecules (`Recon`): how
//! many decoded back exactly, validly or not at all, where the decoding time went,
//! and the SMILES pairs; and the same by the JT-VAE paper's sampling protocol
//! (`SampledRecon`). Stage 1 computes them; `io::eval_file` stores them.

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

/// The protocol's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Protocol {
    /// Latents drawn from q(z | x) per molecule.
    pub encodings: usize,
    /// Stochastic decodes per latent.
    pub decodings: usize,
    /// Temperature of every decoding decision.
    pub temperature: f64,
}

/// Reconstruction by `Protocol`, summed over ranks.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledRecon {
    pub protocol: Protocol,
    pub molecules: f64,
    pub decodes: f64,
    /// Decodes identical to their input (canonical SMILES without stereo).
    pub exact_decodes: f64,
    /// Molecules whose most frequent decode (ties: the smallest SMILES) is the input.
    pub majority_exact: f64,
    /// Molecules with at least one exact decode.
    pub any_exact: f64,
    /// Decodes that failed (no molecule).
    pub failed_decodes: f64,
}

impl SampledRecon {
    /// The JT-VAE paper's reconstruction accuracy: exact decodes / decodes.
    pub fn accuracy(&self) -> f64 {
        self.exact_decodes / self.decodes.max(1.0)
    }
}
