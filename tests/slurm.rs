//! The Slurm job script under a real one-node Slurm: `tests/slurm/start-cluster.sh`
//! starts slurmctld + slurmd + munged on this machine (root only), then
//! `jobs/hof.slurm` runs the tiny config as an `sbatch` job with 2 ranks through
//! `srun --mpi=pmix`, and its final parameters must equal those of `mpirun -n 2`.
mod common;

use common::{assert_ok, bin, is_root, max_rel_diff, mpirun, read_params, repo, text};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The options that shrink the job script's GPU-cluster defaults (4 ranks with
/// 1 GPU and 4 CPUs each, 4 hours) to a CPU-only job that fits the test node.
const SMALL_JOB: &str = "-N 1 --ntasks-per-node=2 -c 1 --gpus-per-task=0 -t 5";

/// How long the job may take from submission to its end before the test gives up.
const JOB_TIMEOUT: Duration = Duration::from_secs(300);

fn start_cluster() {
    let out = Command::new("bash")
        .arg(repo().join("tests/slurm/start-cluster.sh"))
        .stdin(Stdio::null())
        .output()
        .expect("cannot run tests/slurm/start-cluster.sh");
    assert!(
        out.status.success(),
        "tests/slurm/start-cluster.sh failed:\n{}",
        text(&out)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
}

/// `sbatch --wait --parsable OPTS jobs/hof.slurm` with the job's environment set;
/// cancels the job and fails if it has not ended within `JOB_TIMEOUT`.
fn sbatch_wait(job_out: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new("sbatch");
    c.args(["--wait", "--parsable", "--job-name=zo-hpc-test"])
        .args(SMALL_JOB.split_whitespace())
        .arg(format!("--output={}", job_out.display()))
        .arg("jobs/hof.slurm")
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Input variables of an enclosing allocation or user defaults would override
    // the options above.
    for (k, _) in std::env::vars() {
        if k.starts_with("SBATCH_") || k.starts_with("SLURM_") {
            c.env_remove(k);
        }
    }
    c.envs(env.iter().copied());
    let mut child = c
        .spawn()
        .expect("cannot start sbatch (is slurm-client installed?)");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > JOB_TIMEOUT {
            let queue = Command::new("squeue")
                .arg("-l")
                .output()
                .map(|o| text(&o))
                .unwrap_or_default();
            let _ = Command::new("scancel")
                .args(["--name=zo-hpc-test"])
                .status();
            let _ = child.kill();
            panic!("the Slurm job did not end within {JOB_TIMEOUT:?}\n--- squeue -l\n{queue}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn slurm_job_equals_mpirun() {
    assert!(
        is_root(),
        "the Slurm test needs root: it installs slurm-wlm + munge and starts the daemons \
         (run `make test` as root, as CI does)"
    );
    start_cluster();

    let tmp = tempfile::tempdir().unwrap();
    let mpirun_dir = tmp.path().join("mpirun");
    let slurm_dir = tmp.path().join("slurm");
    let job_out = tmp.path().join("job.out");

    let o = mpirun(
        2,
        &[
            "train",
            "tests/configs/tiny.toml",
            "--out-dir",
            mpirun_dir.to_str().unwrap(),
        ],
    );
    assert_ok(&o);

    let zo_args = format!("--out-dir {}", slurm_dir.display());
    let zo_hpc = bin();
    let o = sbatch_wait(
        &job_out,
        &[
            ("CONFIG", "tests/configs/tiny.toml"),
            ("ZO_HPC", zo_hpc.to_str().unwrap()),
            ("ZO_ARGS", &zo_args),
        ],
    );
    let log = std::fs::read_to_string(&job_out).unwrap_or_else(|e| format!("(no job output: {e})"));
    assert!(
        o.status.success(),
        "the Slurm job failed:\n{}\n--- job output {}\n{log}",
        text(&o),
        job_out.display()
    );
    eprintln!(
        "--- job {} output\n{log}",
        String::from_utf8_lossy(&o.stdout).trim()
    );

    assert!(
        log.contains(", 2 ranks, config tests/configs/tiny.toml"),
        "job header missing:\n{log}"
    );
    for r in 0..2 {
        let line = format!("[zo-hpc {r}/2] info: rank {r}/2 on ");
        assert!(log.contains(&line), "no `{line}` in the job output:\n{log}");
    }

    let a = read_params(&mpirun_dir.join("mpnn/checkpoint.h5"));
    let b = read_params(&slurm_dir.join("mpnn/checkpoint.h5"));
    let diff = max_rel_diff(&a, &b);
    assert_eq!(
        diff, 0.0,
        "mpirun and Slurm runs differ: max relative difference {diff:e}"
    );
}
