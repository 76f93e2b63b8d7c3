//! The JT-VAE's reparameterization noise, drawn from the counter-based streams:
//! sample `gid` at step `s` gets the stream keyed (seed, "vae", s, gid), so its
//! noise is the same on 1 rank or 64 (both JT-VAE stages use it).
use super::rng::Stream;
use tch::{Device, Tensor};

/// Reparameterization noise `[B, latent]` of samples `gids` at `step`, keyed
/// (seed, "vae", step, gid): the same on whichever rank owns a sample.
pub fn vae_noise(seed: u64, gids: &[usize], step: usize, latent: i64, device: Device) -> Tensor {
    let mut eps = Vec::with_capacity(gids.len() * latent as usize);
    for &gid in gids {
        let mut s = Stream::new(seed, "vae", &[step as u64, gid as u64]);
        eps.extend((0..latent).map(|_| s.normal() as f32));
    }
    Tensor::from_slice(&eps)
        .view([gids.len() as i64, latent])
        .to_device(device)
}
