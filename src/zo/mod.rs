//! Zeroth-order machinery: the counter-based random streams that every random
//! draw of the project comes from (`rng`), the keyed perturbation directions
//! (`directions`), the gradient estimators built from function values only
//! (`estimator`), and their checks against autograd on a smooth stand-in for the
//! black box (`gradcheck`) and the statistics of the signal test on the real
//! pipeline (`signal`); the JT-VAE's keyed reparameterization noise (`noise`);
//! perturbing named parameter tensors along directions (`tensors`); the learned
//! control variate of estimator "cv" (`control`); the weights of the
//! score-function estimator through a stochastic decoder (`score`).
pub mod control;
pub mod directions;
pub mod estimator;
pub mod gradcheck;
pub mod noise;
pub mod rng;
pub mod score;
pub mod signal;
pub mod tensors;
