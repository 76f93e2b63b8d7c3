//! Helpers shared by the integration tests: run the real `zo-hpc` binary (alone,
//! under `mpirun`), read checkpoints and metrics back, compare parameters.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zo-hpc"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `zo-hpc ARGS` on one rank (no mpirun).
pub fn zo(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(repo())
        .output()
        .expect("cannot start zo-hpc")
}

/// `zo-hpc train CONFIG --out-dir OUT EXTRA…` on one rank.
pub fn train_config(config: &str, out: &Path, extra: &[&str]) -> Output {
    let out = out.display().to_string();
    let mut args = vec!["train", config, "--out-dir", &out];
    args.extend_from_slice(extra);
    zo(&args)
}

/// `mpirun --oversubscribe -n N zo-hpc ARGS`.
pub fn mpirun(n: usize, args: &[&str]) -> Output {
    let mut c = Command::new("mpirun");
    c.arg("--oversubscribe");
    if is_root() {
        c.arg("--allow-run-as-root");
    }
    c.args(["-n", &n.to_string()])
        .arg(bin())
        .args(args)
        .current_dir(repo());
    c.output()
        .expect("cannot start mpirun (is openmpi-bin installed?)")
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn assert_ok(o: &Output) {
    assert!(o.status.success(), "zo-hpc failed:\n{}", text(o));
}

/// All datasets under /params of a checkpoint, by path.
pub fn read_params(checkpoint: &Path) -> BTreeMap<String, Vec<f32>> {
    read_group(checkpoint, "params")
}

/// All f32 datasets under `group` of a checkpoint ("params", "adam/m", "adam/v"), by path.
pub fn read_group(checkpoint: &Path, group: &str) -> BTreeMap<String, Vec<f32>> {
    fn walk(g: &hdf5::Group, prefix: &str, out: &mut BTreeMap<String, Vec<f32>>) {
        for name in g.member_names().unwrap() {
            let path = format!("{prefix}/{name}");
            if let Ok(ds) = g.dataset(&name) {
                out.insert(path, ds.read_raw::<f32>().unwrap());
            } else {
                walk(&g.group(&name).unwrap(), &path, out);
            }
        }
    }
    let f =
        hdf5::File::open(checkpoint).unwrap_or_else(|e| panic!("{}: {e}", checkpoint.display()));
    let mut out = BTreeMap::new();
    walk(&f.group(group).unwrap(), "", &mut out);
    out
}

/// Largest relative difference between two parameter sets (same names required),
/// measured per tensor as ‖a − b‖∞ / max(‖a‖∞, 1e-12).
pub fn max_rel_diff(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut worst = 0f64;
    for (k, va) in a {
        let vb = &b[k];
        assert_eq!(va.len(), vb.len(), "{k}");
        let scale = va
            .iter()
            .fold(0f64, |m, &x| m.max(f64::from(x).abs()))
            .max(1e-12);
        let diff = va.iter().zip(vb).fold(0f64, |m, (&x, &y)| {
            m.max((f64::from(x) - f64::from(y)).abs())
        });
        worst = worst.max(diff / scale);
    }
    worst
}

pub fn read_metrics(path: &Path) -> zo_hpc::io::metrics::Metrics {
    let f = hdf5::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    zo_hpc::io::metrics::Metrics::read_from(&f).unwrap()
}

/// The Python of the repo's venv (h5py lives there), for tests that use h5py as a client.
pub fn python() -> PathBuf {
    let venv = repo().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// The repository's config `config` with its data paths made absolute and `edit`
/// applied, written as `dir/name` (so it can live in a temporary folder); its path.
pub fn config_copy(
    dir: &Path,
    config: &str,
    name: &str,
    edit: impl Fn(String) -> String,
) -> String {
    let text = std::fs::read_to_string(repo().join(config))
        .unwrap()
        .replace(
            "../../inputs/data/",
            &format!("{}/", repo().join("inputs/data").display()),
        );
    let p = dir.join(name);
    std::fs::write(&p, edit(text)).unwrap();
    p.display().to_string()
}

/// The tiny pipeline config (JT-VAE, MPNN, Stage 2) of the Stage-2 tests.
pub fn pipeline_tiny() -> String {
    repo()
        .join("tests/configs/pipeline_tiny.toml")
        .display()
        .to_string()
}

/// Stage 1 (JT-VAE + MPNN, in-process RDKit) of the tiny pipeline, trained once per
/// test binary.
pub fn tiny_stage1() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        for stage in ["jtvae", "mpnn"] {
            assert_ok(&train_config(
                &pipeline_tiny(),
                d.path(),
                &["--stage", stage],
            ));
        }
        d
    })
    .path()
}

/// Copies Stage 1 (both checkpoints and the dataset file) of run folder `from` into `to`.
pub fn copy_stage1(from: &Path, to: &Path) {
    for sub in ["jtvae", "mpnn"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        std::fs::copy(
            from.join(sub).join("checkpoint.h5"),
            to.join(sub).join("checkpoint.h5"),
        )
        .unwrap();
    }
    std::fs::copy(from.join("dataset.h5"), to.join("dataset.h5")).unwrap();
}

/// A run folder `dir/name` holding a copy of the tiny pipeline's Stage 1.
pub fn with_tiny_stage1(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    copy_stage1(tiny_stage1(), &out);
    out
}

/// `zo-hpc train CONFIG --stage zo` into `out` on `ranks` ranks.
pub fn zo_on(ranks: usize, config: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let out = out.display().to_string();
    let mut args = vec!["train", config, "--out-dir", &out, "--stage", "zo"];
    args.extend_from_slice(extra);
    if ranks == 1 {
        zo(&args)
    } else {
        mpirun(ranks, &args)
    }
}

/// The tiny config with `edit` applied, written into `dir` (data paths made absolute).
pub fn variant(dir: &Path, name: &str, edit: impl Fn(String) -> String) -> String {
    let text = std::fs::read_to_string(pipeline_tiny()).unwrap().replace(
        "../../inputs/data/",
        &format!("{}/", repo().join("inputs/data").display()),
    );
    let p = dir.join(name);
    std::fs::write(&p, edit(text)).unwrap();
    p.display().to_string()
}

/// Values of the JT-VAE encoder's tensors among checkpoint parameters `params`
/// (what the latent estimate's own gradient part covers).
pub fn encoder_numel(params: &BTreeMap<String, Vec<f32>>) -> usize {
    params
        .iter()
        .filter(|(k, _)| {
            k.starts_with("/jtvae/")
                && !k.starts_with("/jtvae/decoder/")
                && !k.starts_with("/jtvae/assembly/")
        })
        .map(|(_, v)| v.len())
        .sum()
}
