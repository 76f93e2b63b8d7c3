//! Zeroth-order machinery. For now the counter-based random streams that every
//! random draw of the project (splits, shuffles, later ZO directions) comes from.
pub mod rng;
