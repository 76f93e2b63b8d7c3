//! `zo-bench`: throughput benchmark (not a test). Prints
//! 1. featurization throughput of the RDKit black box (molecules/s) on the shipped
//!    ZINC and QM9 subsets, and
//! 2. MPNN training throughput (molecules/s) of `zo-hpc train inputs/bench.toml`
//!    on 1 and 2 MPI ranks, measured side by side in one invocation.
//!
//! Usage: `zo-bench [--repeat N] [--ranks 1,2]` from the repository root (or `make bench`).
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use zo_hpc::blackbox::{KnowledgeSource, RdkitSource};
use zo_hpc::chem::Featurizer;

fn read_smiles(path: &Path) -> anyhow::Result<Vec<String>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))?;
    let col = r
        .headers()?
        .iter()
        .position(|h| h == "smiles")
        .with_context(|| format!("{}: no smiles column", path.display()))?;
    let mut out = Vec::new();
    for rec in r.records() {
        out.push(rec?.get(col).unwrap_or_default().to_string());
    }
    Ok(out)
}

fn featurize_rate(smiles: &[String], repeat: usize) -> f64 {
    let source = RdkitSource::new(Featurizer::full());
    let _ = source.query(&smiles[..smiles.len().min(10)]); // warm-up
    let t0 = Instant::now();
    let mut ok = 0usize;
    for _ in 0..repeat {
        ok += source.query(smiles).iter().filter(|r| r.is_ok()).count();
    }
    ok as f64 / t0.elapsed().as_secs_f64()
}

/// Runs the bench config on `ranks` ranks and returns training molecules/s
/// (training phases only: evaluation and checkpoints excluded).
fn train_rate(zo: &Path, ranks: usize, out: &Path) -> anyhow::Result<(f64, f64)> {
    let mut cmd = if ranks == 1 {
        Command::new(zo)
    } else {
        let mut c = Command::new("mpirun");
        c.arg("--oversubscribe");
        if is_root() {
            c.arg("--allow-run-as-root");
        }
        c.args(["-n", &ranks.to_string()]).arg(zo);
        c
    };
    cmd.args(["train", "inputs/bench.toml", "--out-dir"])
        .arg(out);
    let t0 = Instant::now();
    let o = cmd.output().context("starting zo-hpc")?;
    let wall = t0.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!(
            "zo-hpc failed on {ranks} ranks:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let f = hdf5::File::open(out.join("metrics.h5"))?;
    let m = zo_hpc::io::metrics::Metrics::read_from(&f)?;
    let cfg = zo_hpc::config::Config::load(Path::new("inputs/bench.toml"))?;
    let phases = ["batch", "forward_backward", "allreduce", "optimizer"];
    // Per epoch, the slowest rank's time in each phase bounds the step time.
    let secs: f64 = phases
        .iter()
        .map(|p| m.timing_max.get(*p).map_or(0.0, |v| v.iter().sum::<f64>()))
        .sum();
    let molecules = (cfg.data.n_train * m.epoch_step.len()) as f64;
    Ok((molecules / secs, wall))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let repeat: usize = flag("--repeat")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let ranks: Vec<usize> = flag("--ranks")
        .unwrap_or_else(|| "1,2".into())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let zo: PathBuf = std::env::current_exe()?.with_file_name("zo-hpc");
    if !zo.exists() {
        bail!(
            "{} not found: build with `cargo build --release --bins`",
            zo.display()
        );
    }
    println!("zo-bench: RDKit {}", zo_hpc::chem::rdkit_version());
    println!("\nfeaturization (RDKit black box, all 78 + 12 columns, {repeat} passes):");
    for (name, file) in [
        ("ZINC subset", "inputs/data/zinc_demo.csv"),
        ("QM9 subset", "inputs/data/hof_demo.csv"),
    ] {
        let smiles = read_smiles(Path::new(file))?;
        let rate = featurize_rate(&smiles, repeat);
        println!(
            "  {name:12} {:5} molecules  {rate:10.0} molecules/s",
            smiles.len()
        );
    }
    println!("\nMPNN training (inputs/bench.toml: paper-size MPNN, ZINC subset, global batch 16):");
    let tmp = std::env::temp_dir().join(format!("zo-bench-{}", std::process::id()));
    let mut base = None;
    for &r in &ranks {
        let out = tmp.join(format!("ranks{r}"));
        let (rate, wall) = train_rate(&zo, r, &out)?;
        let speedup = base.map(|b: f64| rate / b).unwrap_or(1.0);
        base.get_or_insert(rate);
        println!("  {r} rank(s)  {rate:8.1} molecules/s  (x{speedup:.2} vs first row; whole run {wall:.1} s)");
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
