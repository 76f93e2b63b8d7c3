//! HDF5 input and output: the dataset file, checkpoints, the metrics file (with
//! Stage 2's phase names), the eval file and the signal test's group of
//! `gradcheck.h5` (`signal_file`), and the lock on a run folder (`run_lock`, a
//! plain file: one writer per `run.out_dir`).
//! Every file is written to a temporary name and renamed into place, so a crash
//! never leaves a half-written file under the real name. The dataset file's
//! per-molecule stores (records, candidates, trees) share one columnar helper
//! (`columns`). io may import the domain (jtvae), never the other way round.
pub mod candidates;
pub mod checkpoint;
pub mod columns;
pub mod dataset;
pub mod eval_file;
pub mod h5;
pub mod metrics;
pub mod model;
pub mod records;
pub mod run_lock;
pub mod signal_file;
pub mod trees;
pub mod zo_phases;
