//! `zo-bench`: throughput benchmark (not a test). Prints
//! 1. featurization throughput of the RDKit black box (molecules/s) on the shipped
//!    ZINC and QM9 subsets, and
//! 2. MPNN training throughput (molecules/s) of `zo-hpc train inputs/bench.toml`
//!    on 1 and 2 MPI ranks, measured side by side in one invocation.
//!
//!
//! `zo-bench --jtvae` instead measures the JT-VAE chemistry on the full shipped data
//! sets: decomposition throughput, vocabulary sizes, vocabulary coverage of test
//! molecules, and the gold-path rebuild rate.
//!
//! `zo-bench --jtvae-speed CONFIG --run DIR [--limit N]` measures JT-VAE encode and
//! decode throughput of the checkpoint in DIR (a run of CONFIG) on 1 and 2 ranks,
//! with the share of decode time in the tree decoder, candidate enumeration (RDKit)
//! and assembly scoring, through `zo-hpc eval`.
//!
//! Usage: `zo-bench [--repeat N] [--ranks 1,2] [--jtvae [--gold N]]
//! [--jtvae-speed CONFIG --run DIR [--limit N]]` from the repository root (or `make bench`).
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use zo_hpc::blackbox::{KnowledgeSource, RdkitSource};
use zo_hpc::chem::Featurizer;
use zo_hpc::jtvae::{assemble::gold_stats, tree, vocab::Vocab};

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
    let mut cmd = launcher(zo, ranks);
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
    let phases = ["forward_backward", "allreduce", "optimizer"];
    // Per epoch, the slowest rank's time in each phase bounds the step time.
    let secs: f64 = phases
        .iter()
        .map(|p| m.timing_max.get(*p).map_or(0.0, |v| v.iter().sum::<f64>()))
        .sum();
    let molecules = (cfg.data.n_train * m.epoch_step.len()) as f64;
    Ok((molecules / secs, wall))
}

/// `zo-hpc` itself for one rank, `mpirun -n N zo-hpc` for more.
fn launcher(zo: &Path, ranks: usize) -> Command {
    if ranks == 1 {
        return Command::new(zo);
    }
    let mut c = Command::new("mpirun");
    c.arg("--oversubscribe");
    if is_root() {
        c.arg("--allow-run-as-root");
    }
    c.args(["-n", &ranks.to_string()]).arg(zo);
    c
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
    if args.iter().any(|a| a == "--jtvae") {
        let gold: usize = flag("--gold")
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(2000);
        return jtvae(gold);
    }
    let zo: PathBuf = std::env::current_exe()?.with_file_name("zo-hpc");
    if let Some(config) = flag("--jtvae-speed") {
        let run = flag("--run")
            .context("--jtvae-speed needs --run DIR (a run of the config with a checkpoint)")?;
        let limit = flag("--limit").unwrap_or_else(|| "200".into());
        return jtvae_speed(&zo, &config, Path::new(&run), &limit, &ranks);
    }
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

/// Reads (smiles, value of `column`) from a shipped gzip CSV.
fn read_gz(path: &str, column: &str) -> anyhow::Result<Vec<(String, String)>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    let mut r = csv::Reader::from_reader(flate2::read::MultiGzDecoder::new(f));
    let h = r.headers()?.clone();
    let si = h
        .iter()
        .position(|x| x == "smiles")
        .context("no smiles column")?;
    let ci = h
        .iter()
        .position(|x| x == column)
        .with_context(|| format!("no {column} column"))?;
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec?;
        out.push((rec[si].to_string(), rec[ci].to_string()));
    }
    Ok(out)
}

/// Labels of every molecule (None where decomposition failed), and molecules/s.
fn decompose_all(smiles: &[String]) -> (Vec<Option<Vec<String>>>, f64) {
    let mut cache = tree::LabelCache::default();
    let t0 = Instant::now();
    let out: Vec<_> = smiles
        .iter()
        .map(|s| {
            tree::decompose_smiles(s, &mut cache)
                .ok()
                .map(|(_, t)| t.labels)
        })
        .collect();
    (out, smiles.len() as f64 / t0.elapsed().as_secs_f64())
}

fn coverage(train: &[&Option<Vec<String>>], test: &[&Option<Vec<String>>]) -> (usize, f64) {
    let vocab = Vocab::new(train.iter().filter_map(|l| l.as_ref()).flatten().cloned());
    let covered = test
        .iter()
        .filter(|l| {
            l.as_ref()
                .is_some_and(|l| l.iter().all(|x| vocab.get(x).is_some()))
        })
        .count();
    (vocab.len(), covered as f64 / test.len().max(1) as f64)
}

fn jtvae(gold: usize) -> anyhow::Result<()> {
    println!("zo-bench --jtvae: RDKit {}", zo_hpc::chem::rdkit_version());
    // ZINC: the JT-VAE authors' split (valid = training material, test = held out).
    let zinc = read_gz("inputs/data/zinc_jtvae_29k.csv.gz", "jtvae_split")?;
    let qm9 = read_gz("inputs/data/qm9_hof298.csv.gz", "qm9_index")?;
    for (name, rows) in [("ZINC", &zinc), ("QM9", &qm9)] {
        let smiles: Vec<String> = rows.iter().map(|(s, _)| s.clone()).collect();
        let (labels, rate) = decompose_all(&smiles);
        let failed = labels.iter().filter(|l| l.is_none()).count();
        let all = Vocab::new(labels.iter().filter_map(|l| l.as_ref()).flatten().cloned());
        println!(
            "\n{name}: {} molecules, decomposed at {rate:.0} molecules/s, {failed} failed",
            smiles.len()
        );
        println!("  vocabulary over all molecules: {} clusters", all.len());
        // Coverage of a held-out split by a vocabulary of the training split.
        let splits: Vec<(&str, Vec<usize>, Vec<usize>)> = if name == "ZINC" {
            let tr = (0..rows.len()).filter(|&i| rows[i].1 == "valid").collect();
            let te = (0..rows.len()).filter(|&i| rows[i].1 == "test").collect();
            let perm = zo_hpc::zo::rng::Stream::new(42, "split", &[]).permutation(rows.len());
            vec![
                ("JT-VAE valid / test files", tr, te),
                (
                    "paper split 5500 / 5000 (seed 42)",
                    perm[..5500].to_vec(),
                    perm[5500..10500].to_vec(),
                ),
            ]
        } else {
            let perm = zo_hpc::zo::rng::Stream::new(42, "split", &[]).permutation(rows.len());
            vec![(
                "paper split 5600 / 7000 (seed 42)",
                perm[..5600].to_vec(),
                perm[5600..12600].to_vec(),
            )]
        };
        for (what, tr, te) in splits {
            let trl: Vec<_> = tr.iter().map(|&i| &labels[i]).collect();
            let tel: Vec<_> = te.iter().map(|&i| &labels[i]).collect();
            let (v, cov) = coverage(&trl, &tel);
            println!(
                "  {what}: training vocabulary {v}, test molecules fully covered {:.2}%",
                100.0 * cov
            );
        }
        let n = gold.min(smiles.len());
        let step = (smiles.len() / n).max(1);
        let sample: Vec<String> = smiles.iter().step_by(step).take(n).cloned().collect();
        let t0 = Instant::now();
        let st = gold_stats(&sample);
        println!(
            "  gold path: {} / {} rebuilt ({:.2}%), {:.0} molecules/s",
            st.rebuilt,
            st.molecules,
            100.0 * st.rate(),
            st.molecules as f64 / t0.elapsed().as_secs_f64()
        );
        for (s, why) in st.failures.iter().take(5) {
            println!("    failed: {s}: {why}");
        }
    }
    Ok(())
}

/// Encode/decode throughput of a trained JT-VAE on 1 and 2 ranks, via `zo-hpc eval`.
fn jtvae_speed(
    zo: &Path,
    config: &str,
    run: &Path,
    limit: &str,
    ranks: &[usize],
) -> anyhow::Result<()> {
    println!(
        "JT-VAE encode/decode ({config}, checkpoint in {}, {limit} held-out molecules):",
        run.display()
    );
    let mut base: Option<(f64, f64)> = None;
    for &r in ranks {
        let mut cmd = launcher(zo, r);
        cmd.args(["eval", config, "--limit", limit, "--out-dir"])
            .arg(run);
        let o = cmd.output().context("starting zo-hpc eval")?;
        if !o.status.success() {
            bail!(
                "zo-hpc eval failed on {r} ranks:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let f = hdf5::File::open(run.join("eval.h5"))?;
        let a = |k: &str| -> anyhow::Result<f64> { Ok(f.attr(k)?.read_scalar::<f64>()?) };
        let n = a("molecules")?;
        // Times are summed over ranks; ranks work in parallel on their shares.
        let enc = n / (a("encode_s")? / r as f64);
        let dec = n / (a("decode_s")? / r as f64);
        let (e0, d0) = *base.get_or_insert((enc, dec));
        let d = a("decode_s")?.max(1e-9);
        println!(
            "  {r} rank(s): encode {enc:8.1} molecules/s (x{:.2}), decode {dec:6.1} molecules/s (x{:.2}); decode time: tree {:.0}%, enumeration {:.0}%, scoring {:.0}%; reconstructed {:.1}%",
            enc / e0,
            dec / d0,
            100.0 * a("decode_tree_s")? / d,
            100.0 * a("decode_enumerate_s")? / d,
            100.0 * a("decode_score_s")? / d,
            100.0 * a("recon_acc")?
        );
    }
    Ok(())
}
