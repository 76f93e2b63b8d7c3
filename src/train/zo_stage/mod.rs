//! Stage "zo" (the paper's Stage 2): end-to-end training through the JT-VAE
//! decoder and the black box. Per sample i of the rank's shard (global id `gid`):
//!
//! - encode x_i → mean z_i (first-order in the encoder u);
//! - decode z_i → base molecule → black box → graph → MPNN embed h_i (w1) → head ŷ_i (w2);
//!   backprop of Σ(ŷ − y)² gives w2's gradient and a_i = ∂L/∂h_i, then `h·a` gives w1's;
//! - latent ZO: the estimator's queries z_i + µσ·u_j (directions keyed
//!   (seed, "latent", step, gid, k)) are decoded, featurized and embedded without
//!   gradient; δ_j = a_i·(h_ij − h_i); a query that decodes to the base molecule has
//!   δ = 0 exactly and is neither featurized nor embedded; a failed query drops its
//!   direction. The estimate ĝ_i enters the encoder through the surrogate z_i·ĝ_i;
//! - decoder ZO (decoder = "zo"): q directions over the decoder's parameters, one
//!   independent stream per named tensor keyed (seed, "decoder", step, k, name);
//!   the rank's scalars c_k = Σ_i a_i·(h_ik − h_i)/(µ2σ) ride in the step's one
//!   allreduce and every rank adds Σ_k c_k D_k / q to the decoder's gradient slot;
//! - λ·∇ of the JT-VAE loss (teacher forced, VAE noise keyed (seed, "vae", step, gid)).
//!
//! Model code stays free of MPI: everything crossing ranks goes through the loop.
//! The files: `objective` (the stage as the loop sees it: set-up, parameters,
//! evaluation, `run`), `step` (one step as a list of phases), `queries` (the
//! latent and decoder zeroth-order phases), `score` (estimator "score": the
//! score function through the decoder sampled at a temperature, in place of
//! both), `state` (what the phases read and hand on), `counters` (what a step
//! counts and times).
mod control;
mod counters;
mod objective;
mod queries;
mod score;
mod state;
mod step;

pub use counters::PHASES;
pub use objective::{run, ZoObjective};
