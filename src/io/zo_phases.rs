//! The names of Stage 2's per-step phases: each rank times them every step, and
//! Stage 2's metrics.h5 stores them as the `time_<phase>` series (max and `_mean`
//! over ranks, see `metrics`). Stage 2 writes these series and `zo-hpc report`
//! plots them, both from this list.

/// The phases each rank times per step (`time_<phase>` in metrics.h5).
pub const PHASES: [&str; 8] = [
    "encode",
    "decode",
    "featurize",
    "embed",
    "backward",
    "decoder_zo",
    "control",
    "score",
];
