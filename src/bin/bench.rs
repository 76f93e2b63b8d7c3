//! `zo-bench`: throughput benchmark (not a test). Prints
//! 1. featurization throughput of the RDKit black box (molecules/s) on the shipped
//!    ZINC and QM9 subsets: from SMILES, of molecules already built by RDKit (as
//!    the decoder hands them over), RDKit's parse alone, and a Python RDKit
//!    featurizer of the same columns (`scripts/py_featurize_bench.py`, when
//!    /usr/bin/python3 has RDKit), and
//! 2. MPNN training throughput (molecules/s) of `zo-hpc train inputs/bench.toml`
//!    on 1 and 2 MPI ranks, measured side by side in one invocation (with
//!    `--micro-batch M[,M…]` also with `train.micro_batch = M`, the exact,
//!    rank-count-invariant gradient sums, and its ratio to the float row).
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
//! `zo-bench --zo CONFIG --run DIR [--steps N] [--qs 1,4,16] [--estimators a,b]`
//! measures Stage-2 throughput: for every estimator (default: the config's) × ranks ×
//! q × `zo.skip_unchanged` (true, false) it copies the Stage 1 of DIR (a run of
//! CONFIG: `jtvae/` and `mpnn/` checkpoints — or none, then the config's
//! `zo.pretrained` — and `dataset.h5`) into a fresh temporary folder, runs `zo-hpc train VARIANT --stage zo --max-steps N`
//! (default 10) and, from the per-step metrics without the first (warm-up) step,
//! prints samples/s, queries/s, the flip rate, the share of the step time in each
//! phase, the rank imbalance and the ratio of the step time to the (1 + q)-query
//! bound (the measured cost of one query, decode + featurize + embed, times the
//! 1 + q queries of each sample of a rank).
//!
//! Usage: `zo-bench [--repeat N] [--ranks 1,2] [--micro-batch M[,M…]] [--jtvae [--gold N]]
//! [--jtvae-speed CONFIG --run DIR [--limit N]] [--zo CONFIG --run DIR [--steps N]
//! [--qs 1,4,16] [--estimators forward,es,cv]]` from the repository root (or `make bench`).
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use zo_hpc::blackbox::{KnowledgeSource, RdkitSource};
use zo_hpc::chem::{Featurizer, Molecule};
use zo_hpc::jtvae::{gold::gold_stats, tree, vocab::Vocab};

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

/// Rates (molecules/s) of the three featurization paths and of RDKit's parse
/// alone, over `repeat` passes of `smiles`, measured side by side.
struct FeaturizeRates {
    parse: f64,
    from_smiles: f64,
    built: f64,
}

fn featurize_rates(smiles: &[String], repeat: usize) -> FeaturizeRates {
    let source = RdkitSource::new(Featurizer::full());
    let _ = source.query(&smiles[..smiles.len().min(10)]); // warm-up
                                                           // Molecules already held by RDKit (as the decoder hands them over).
    let mols: Vec<Molecule> = smiles
        .iter()
        .filter_map(|s| Molecule::from_smiles(s).ok())
        .collect();
    let refs: Vec<&Molecule> = mols.iter().collect();
    let mut best = [0f64; 3];
    // Passes interleave the three paths chunk by chunk (50 molecules), so that a
    // burst of other load on the machine hits all three alike; a pass goes over the
    // molecules often enough to last ~0.1 s or more; the best pass of each counts.
    const CHUNK: usize = 50;
    let rounds = (4000 / smiles.len().max(1)).max(1);
    for _ in 0..repeat {
        let (mut secs, mut ok) = ([0f64; 3], [0usize; 3]);
        for _ in 0..rounds {
            for (chunk, mols) in smiles.chunks(CHUNK).zip(refs.chunks(CHUNK)) {
                let t0 = Instant::now();
                ok[0] += chunk
                    .iter()
                    .filter(|s| Molecule::from_smiles(s).is_ok())
                    .count();
                let t1 = Instant::now();
                ok[1] += source.query(chunk).iter().filter(|r| r.is_ok()).count();
                let t2 = Instant::now();
                ok[2] += source
                    .query_molecules(mols)
                    .iter()
                    .filter(|r| r.is_ok())
                    .count();
                let t3 = Instant::now();
                secs[0] += (t1 - t0).as_secs_f64();
                secs[1] += (t2 - t1).as_secs_f64();
                secs[2] += (t3 - t2).as_secs_f64();
            }
        }
        for k in 0..3 {
            best[k] = best[k].max(ok[k] as f64 / secs[k].max(1e-9));
        }
    }
    FeaturizeRates {
        parse: best[0],
        from_smiles: best[1],
        built: best[2],
    }
}

/// The Python RDKit featurizer of the same columns (`scripts/py_featurize_bench.py`)
/// on `file`, when the system Python has RDKit (Debian python3-rdkit).
fn python_rate(file: &str, repeat: usize) -> Option<f64> {
    let o = Command::new("/usr/bin/python3")
        .args(["scripts/py_featurize_bench.py", file, &repeat.to_string()])
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs the bench config on `ranks` ranks and returns training molecules/s
/// (training phases only: evaluation and checkpoints excluded).
fn train_rate(zo: &Path, config: &Path, ranks: usize, out: &Path) -> anyhow::Result<(f64, f64)> {
    let mut cmd = launcher(zo, ranks);
    cmd.arg("train").arg(config).arg("--out-dir").arg(out);
    let t0 = Instant::now();
    let o = cmd.output().context("starting zo-hpc")?;
    let wall = t0.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!(
            "zo-hpc failed on {ranks} ranks:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let path = out.join("mpnn/metrics.h5");
    let f = hdf5::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let m = zo_hpc::io::metrics::Metrics::read_from(&f)?;
    let cfg = zo_hpc::config::Config::load(config)?;
    let phases = ["forward_backward", "allreduce", "optimizer"];
    // Per epoch, the slowest rank's time in each phase bounds the step time.
    let secs: f64 = phases
        .iter()
        .map(|p| m.timing_max.get(*p).map_or(0.0, |v| v.iter().sum::<f64>()))
        .sum();
    let molecules = (cfg.data.n_train * m.epoch_step.len()) as f64;
    Ok((molecules / secs, wall))
}

/// A comma-separated list of positive numbers given as `name` (or `default`).
fn parse_list(name: &str, value: Option<String>, default: &str) -> anyhow::Result<Vec<usize>> {
    let text = value.unwrap_or_else(|| default.into());
    let list = text
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{name} {text}: expected numbers such as {default}"))?;
    if list.is_empty() || list.contains(&0) {
        bail!("{name} {text}: expected positive numbers such as {default}");
    }
    Ok(list)
}

fn check_exists(zo: &Path) -> anyhow::Result<()> {
    if !zo.exists() {
        bail!(
            "{} not found: build with `scripts/cargo.sh build --release --bins`",
            zo.display()
        );
    }
    Ok(())
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
    let ranks = parse_list("--ranks", flag("--ranks"), "1,2")?;
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
    if let Some(config) = flag("--zo") {
        let run = flag("--run").context("--zo needs --run DIR (a run of CONFIG with Stage 1)")?;
        let steps: usize = flag("--steps")
            .map(|s| s.parse())
            .transpose()
            .context("--steps: not a number")?
            .unwrap_or(10);
        if steps < 2 {
            bail!("--steps {steps}: need 2 or more (the first, warm-up step is dropped)");
        }
        let estimators = flag("--estimators")
            .map(|s| s.split(',').map(|e| e.trim().to_string()).collect())
            .unwrap_or_default();
        let grid = ZoGrid {
            estimators,
            ranks,
            qs: parse_list("--qs", flag("--qs"), "1,4,16")?,
            steps,
        };
        check_exists(&zo)?;
        return zo_bench(&zo, Path::new(&config), Path::new(&run), &grid);
    }
    check_exists(&zo)?;
    println!("zo-bench: RDKit {}", zo_hpc::chem::rdkit_version());
    println!(
        "\nfeaturization (RDKit black box, all 78 + 12 columns, best of {repeat} interleaved passes, one core):"
    );
    for (name, file) in [
        ("ZINC subset", "inputs/data/zinc_demo.csv"),
        ("QM9 subset", "inputs/data/hof_demo.csv"),
    ] {
        let smiles = read_smiles(Path::new(file))?;
        let r = featurize_rates(&smiles, repeat);
        println!("  {name} ({} molecules), molecules/s:", smiles.len());
        println!("    RDKit parse alone          {:10.0}", r.parse);
        println!(
            "    featurize from SMILES      {:10.0}  ({:.0}% of the parse-only rate)",
            r.from_smiles,
            100.0 * r.from_smiles / r.parse
        );
        println!(
            "    featurize built molecules  {:10.0}  (x{:.1} the parse-only rate)",
            r.built,
            r.built / r.parse
        );
        match python_rate(file, repeat) {
            Some(py) => println!(
                "    Python RDKit featurizer    {py:10.0}  (built molecules x{:.1}, from SMILES x{:.1})",
                r.built / py,
                r.from_smiles / py
            ),
            None => println!("    Python RDKit featurizer    skipped (no RDKit for /usr/bin/python3: apt-get install python3-rdkit)"),
        }
    }
    println!("\nMPNN training (inputs/bench.toml: paper-size MPNN, ZINC subset, global batch 16):");
    let tmp = std::env::temp_dir().join(format!("zo-bench-{}", std::process::id()));
    let _cleanup = Cleanup(tmp.clone());
    std::fs::create_dir_all(&tmp)?;
    let bench = Path::new("inputs/bench.toml");
    // --micro-batch M[,M…]: the same run with `train.micro_batch = M` (exact,
    // rank-count-invariant sums) next to each float row.
    let micro = match flag("--micro-batch") {
        Some(v) => parse_list("--micro-batch", Some(v), "")?,
        None => Vec::new(),
    };
    let mut base = None;
    for &r in &ranks {
        let out = tmp.join(format!("ranks{r}"));
        let (rate, wall) = train_rate(&zo, bench, r, &out)?;
        let speedup = base.map(|b: f64| rate / b).unwrap_or(1.0);
        base.get_or_insert(rate);
        println!("  {r} rank(s)  {rate:8.1} molecules/s  (x{speedup:.2} vs first row; whole run {wall:.1} s)");
        for &m in &micro {
            let config = micro_batch_variant(bench, &tmp, m)?;
            let out = tmp.join(format!("ranks{r}_micro{m}"));
            let (exact, wall) = train_rate(&zo, &config, r, &out)?;
            println!(
                "  {r} rank(s)  {exact:8.1} molecules/s  with micro_batch = {m}: x{:.3} the float row above (exact sums; whole run {wall:.1} s)",
                exact / rate
            );
        }
    }
    Ok(())
}

/// `config` with `train.micro_batch = m`, written into `dir` (its data path made absolute).
fn micro_batch_variant(config: &Path, dir: &Path, m: usize) -> anyhow::Result<PathBuf> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let base = std::fs::canonicalize(config.parent().unwrap_or(Path::new(".")))?;
    let text = text
        .replace("csv = \"", &format!("csv = \"{}/", base.display()))
        .replacen("[train]\n", &format!("[train]\nmicro_batch = {m}\n"), 1);
    let path = dir.join(format!("bench_micro{m}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
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

/// The value after `name` on the command line.
fn flag_value(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
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
        let multi_ring: Vec<&String> = all
            .labels()
            .iter()
            .filter(|l| zo_hpc::chem::parse_kekule(l).is_ok_and(|k| k.rings.len() > 1))
            .collect();
        println!(
            "  vocabulary over all molecules: {} clusters ({} of them multi-ring systems, e.g. {:?})",
            all.len(),
            multi_ring.len(),
            &multi_ring[..multi_ring.len().min(6)]
        );
        if let Some(path) = flag_value("--vocab-out") {
            let file = format!("{path}.{}.txt", name.to_lowercase());
            std::fs::write(&file, all.labels().join("\n") + "\n")
                .with_context(|| format!("writing {file}"))?;
        }
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
        let n = if gold == 0 {
            smiles.len()
        } else {
            gold.min(smiles.len())
        };
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

/// Decode batch sizes of `--jtvae-speed`.
const DECODE_BATCHES: [usize; 3] = [1, 8, 64];

/// Encode/decode throughput of a trained JT-VAE on 1 and 2 ranks and decode batch
/// sizes 1, 8 and 64, via `zo-hpc eval --batch`.
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
    let mut first_decoded: Option<Vec<String>> = None;
    for &r in ranks {
        for batch in DECODE_BATCHES {
            let mut cmd = launcher(zo, r);
            cmd.args(["eval", config, "--limit", limit, "--batch"])
                .arg(batch.to_string())
                .arg("--out-dir")
                .arg(run);
            let o = cmd.output().context("starting zo-hpc eval")?;
            if !o.status.success() {
                bail!(
                    "zo-hpc eval failed on {r} ranks:\n{}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            // A JT-VAE-only config writes its evaluation beside its checkpoint.
            let path = [run.join("jtvae").join("eval.h5"), run.join("eval.h5")]
                .into_iter()
                .find(|p| p.exists())
                .with_context(|| format!("no eval.h5 in {} or its jtvae/", run.display()))?;
            let f = hdf5::File::open(&path)?;
            let a = |k: &str| -> anyhow::Result<f64> { Ok(f.attr(k)?.read_scalar::<f64>()?) };
            let n = a("molecules")?;
            // Times are summed over ranks; ranks work in parallel on their shares.
            let enc = n / (a("encode_s")? / r as f64);
            let dec = n / (a("decode_s")? / r as f64);
            let (e0, d0) = *base.get_or_insert((enc, dec));
            // Shares of the decode workers' summed time.
            let d =
                (a("decode_tree_s")? + a("decode_enumerate_s")? + a("decode_score_s")?).max(1e-9);
            let decoded: Vec<String> = f
                .dataset("decoded")
                .and_then(|d| d.read_raw::<hdf5::types::VarLenUnicode>())
                .context("eval.h5 has no /decoded")?
                .iter()
                .map(|s| s.as_str().to_string())
                .collect();
            let reference = first_decoded.get_or_insert_with(|| decoded.clone());
            let same = decoded
                .iter()
                .zip(reference.iter())
                .filter(|(a, b)| a == b)
                .count();
            println!(
                "  {r} rank(s), batch {batch:3}: encode {enc:8.1} molecules/s (x{:.2}), decode {dec:6.1} molecules/s (x{:.2}); decode time: tree {:.0}%, enumeration {:.0}%, scoring {:.0}%; reconstructed {:.1}%; same molecules as the first row: {same}/{}",
                enc / e0,
                dec / d0,
                100.0 * a("decode_tree_s")? / d,
                100.0 * a("decode_enumerate_s")? / d,
                100.0 * a("decode_score_s")? / d,
                100.0 * a("recon_acc")?,
                decoded.len()
            );
        }
    }
    Ok(())
}

/// The cases of `zo-bench --zo`: every estimator × ranks × q × skip_unchanged.
struct ZoGrid {
    /// `zo.estimator` values (empty: the config's).
    estimators: Vec<String>,
    ranks: Vec<usize>,
    qs: Vec<usize>,
    steps: usize,
}

/// One Stage-2 run of the grid.
#[derive(Debug, Clone)]
struct ZoCase {
    estimator: Option<String>,
    ranks: usize,
    q: usize,
    skip: bool,
}

/// Phases whose share of the step time is shown, with the series read for each:
/// per-rank phases as the mean over ranks (so the rest of the step is waiting for
/// the slowest rank or untimed work), allreduce and optimizer as timed on rank 0.
const SHARE_PHASES: [(&str, &str); 9] = [
    ("encode", "time_encode_mean"),
    ("decode", "time_decode_mean"),
    ("featurize", "time_featurize_mean"),
    ("embed", "time_embed_mean"),
    ("backward", "time_backward_mean"),
    ("control", "time_control_mean"),
    ("score", "time_score_mean"),
    ("allreduce", "time_allreduce"),
    ("optimizer", "time_optimizer"),
];

/// Sums over the kept steps (the first, warm-up step dropped) of one run.
#[derive(Debug, Clone)]
struct ZoSums {
    steps: usize,
    samples: f64,
    /// Perturbed queries (q per sample with a base molecule).
    queries: f64,
    /// Black-box queries of every kind: base + perturbed + decoder.
    all_queries: f64,
    changed: f64,
    /// Perturbed queries that decoded (the denominator of the flip rate).
    answered: f64,
    /// Σ (time_step + time_allreduce + time_optimizer): the wall time of the steps.
    step_s: f64,
    /// Σ (time_decode + time_featurize + time_embed), max over ranks: query work.
    query_s: f64,
    /// Seconds in each of `SHARE_PHASES`.
    phase_s: [f64; SHARE_PHASES.len()],
    /// Mean over the kept steps of the slowest / mean rank compute time.
    imbalance: f64,
}

impl ZoSums {
    fn from_metrics(m: &zo_hpc::io::metrics::Metrics) -> anyhow::Result<ZoSums> {
        let kept = |name: &str| -> anyhow::Result<&[f64]> {
            let v = m
                .step_terms
                .get(name)
                .with_context(|| format!("metrics.h5 has no /step/{name}"))?;
            v.get(1..)
                .filter(|k| !k.is_empty())
                .with_context(|| format!("/step/{name}: {} step(s), need 2 or more", v.len()))
        };
        let sum = |name: &str| -> anyhow::Result<f64> { Ok(kept(name)?.iter().sum()) };
        let mut phase_s = [0.0; SHARE_PHASES.len()];
        for (s, (_, series)) in phase_s.iter_mut().zip(SHARE_PHASES) {
            *s = sum(series)?;
        }
        let imbalance = kept("imbalance")?;
        Ok(ZoSums {
            steps: imbalance.len(),
            samples: sum("samples")?,
            // the score estimator's sampled decodes are its queries
            queries: sum("queries")? + sum("score_samples")?,
            all_queries: sum("samples")?
                + sum("queries")?
                + sum("score_samples")?
                + sum("decoder_queries")?,
            changed: sum("changed")?,
            answered: sum("queries")? - sum("failed_decode")?,
            step_s: sum("time_step")? + sum("time_allreduce")? + sum("time_optimizer")?,
            query_s: sum("time_decode")? + sum("time_featurize")? + sum("time_embed")?,
            phase_s,
            imbalance: imbalance.iter().sum::<f64>() / imbalance.len() as f64,
        })
    }

    /// Seconds of one query (decode + featurize + embed) per base or perturbed query.
    fn query_cost(&self) -> f64 {
        self.query_s / (self.samples + self.queries).max(1.0)
    }

    /// Measured step time over the (1 + q)-query bound: `c` seconds per query times
    /// 1 + q queries for each sample of one rank.
    fn bound_ratio(&self, case: &ZoCase, c: f64) -> f64 {
        let per_rank_samples = self.samples / case.ranks as f64;
        self.step_s / (c * (1 + case.q) as f64 * per_rank_samples)
    }
}

/// Removes a file or folder when dropped (config variants, temporary run folders),
/// also when a run fails.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = if self.0.is_dir() {
            std::fs::remove_dir_all(&self.0)
        } else {
            std::fs::remove_file(&self.0)
        };
    }
}

/// The config text with `zo.q` and `zo.skip_unchanged` set (a `[zo]` section is
/// added where there is none).
fn zo_variant(text: &str, case: &ZoCase) -> anyhow::Result<String> {
    let mut doc: toml::Table = text.parse().context("parsing the config")?;
    let zo = doc
        .entry("zo")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .context("config: `zo` is not a section")?;
    zo.insert("q".into(), toml::Value::Integer(case.q as i64));
    zo.insert("skip_unchanged".into(), toml::Value::Boolean(case.skip));
    if let Some(e) = &case.estimator {
        zo.insert("estimator".into(), toml::Value::String(e.clone()));
    }
    toml::to_string(&doc).context("writing the config variant")
}

/// Writes the variant of `config` for `case` next to it (relative paths in the
/// config stay valid) under a name of this process; removed when dropped.
fn write_variant(config: &Path, text: &str, case: &ZoCase) -> anyhow::Result<Cleanup> {
    let dir = config.parent().unwrap_or(Path::new("."));
    let name = format!(
        ".zo-bench-{}-{}-r{}-q{}-{}.toml",
        std::process::id(),
        case.estimator.as_deref().unwrap_or("cfg"),
        case.ranks,
        case.q,
        if case.skip { "skip" } else { "noskip" }
    );
    let path = dir.join(name);
    std::fs::write(&path, zo_variant(text, case)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Cleanup(path))
}

/// Copies Stage 1 of `run` (JT-VAE and MPNN checkpoints, dataset file) into `out`;
/// without the checkpoints Stage 2 starts from the config's `zo.pretrained`.
fn copy_stage1(run: &Path, out: &Path) -> anyhow::Result<()> {
    for file in ["jtvae/checkpoint.h5", "mpnn/checkpoint.h5", "dataset.h5"] {
        let (from, to) = (run.join(file), out.join(file));
        if file != "dataset.h5" && !from.is_file() {
            continue;
        }
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::copy(&from, &to).with_context(|| {
            format!(
                "copying {} (--run must hold a finished Stage 1 of the config)",
                from.display()
            )
        })?;
    }
    Ok(())
}

/// Runs Stage 2 of one case on a fresh copy of Stage 1 and sums its metrics.
fn run_zo_case(
    zo: &Path,
    config: &Path,
    text: &str,
    run: &Path,
    case: ZoCase,
    steps: usize,
    out: &Path,
) -> anyhow::Result<ZoSums> {
    let _ = std::fs::remove_dir_all(out);
    let _out = Cleanup(out.to_path_buf());
    copy_stage1(run, out)?;
    let variant = write_variant(config, text, &case)?;
    let mut cmd = launcher(zo, case.ranks);
    cmd.arg("train")
        .arg(&variant.0)
        .args([
            "--stage",
            "zo",
            "--max-steps",
            &steps.to_string(),
            "--out-dir",
        ])
        .arg(out);
    let o = cmd.output().context("starting zo-hpc")?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let tail: Vec<&str> = err.lines().rev().take(20).collect();
        bail!(
            "zo-hpc train --stage zo failed ({case:?}):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let path = out.join("zo/metrics.h5");
    let f = hdf5::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let m = zo_hpc::io::metrics::Metrics::read_from(&f)
        .with_context(|| format!("reading {}", path.display()))?;
    ZoSums::from_metrics(&m).with_context(|| format!("{}", path.display()))
}

/// Prints the machine, the threads per rank and the command line.
fn print_zo_setup(cfg: &zo_hpc::config::Config, grid: &ZoGrid) {
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let args: Vec<String> = std::env::args().collect();
    println!("zo-bench --zo: RDKit {}", zo_hpc::chem::rdkit_version());
    println!("command: {}", args.join(" "));
    println!(
        "machine: nproc {nproc}, load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let threads: Vec<String> = grid
        .ranks
        .iter()
        .map(|&r| match cfg.train.threads {
            Some(t) => format!("{r} rank(s): {t} (train.threads)"),
            None => format!("{r} rank(s): {} (nproc / ranks)", (nproc / r).max(1)),
        })
        .collect();
    println!("threads per rank: {}", threads.join(", "));
    println!(
        "{} Stage-2 steps per case, the first (warm-up) dropped; estimator {:?}, mu {}",
        grid.steps, cfg.zo.estimator, cfg.zo.mu
    );
    if !grid.estimators.is_empty() {
        println!("estimators: {}", grid.estimators.join(", "));
    }
}

/// The case whose query cost is the reference c: skip_unchanged off (every query
/// pays decode + featurize + embed), the fewest ranks and the smallest q.
fn reference(results: &[(ZoCase, ZoSums)]) -> Option<&(ZoCase, ZoSums)> {
    results
        .iter()
        .filter(|(c, _)| !c.skip)
        .min_by_key(|(c, _)| (c.ranks, c.q, c.estimator.is_some()))
}

fn print_zo_table(results: &[(ZoCase, ZoSums)]) -> anyhow::Result<()> {
    let (rc, rs) = reference(results).context("no skip_unchanged = false case")?;
    let c = rs.query_cost();
    println!(
        "\nc = {:.2} ms per query (decode + featurize + embed) per base or perturbed \
         query, measured with ranks {} q {} skip false",
        1e3 * c,
        rc.ranks,
        rc.q
    );
    let shares: Vec<&str> = SHARE_PHASES.iter().map(|(n, _)| *n).collect();
    println!(
        "\n| estimator | ranks | q | skip | samples/s | queries/s | flip rate | step s | share of step time: {} | imbalance | ratio to (1+q)-query bound |",
        shares.join(" / ")
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (case, s) in results {
        let share: Vec<String> = s
            .phase_s
            .iter()
            .map(|p| format!("{:.0}%", 100.0 * p / s.step_s))
            .collect();
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.1} | {:.3} | {:.3} | {} | {:.2} | {:.2} |",
            case.estimator.as_deref().unwrap_or("(config)"),
            case.ranks,
            case.q,
            case.skip,
            s.samples / s.step_s,
            s.all_queries / s.step_s,
            s.changed / s.answered.max(1.0),
            s.step_s / s.steps as f64,
            share.join(" / "),
            s.imbalance,
            s.bound_ratio(case, c)
        );
    }
    println!(
        "\nsamples/s and queries/s (base + perturbed + decoder queries) over the step time \
         (slowest rank's compute + allreduce + optimizer); flip rate = perturbed queries \
         decoding to another molecule / perturbed queries decoded; per-rank phase shares \
         are means over ranks; step s = mean step time"
    );
    Ok(())
}

/// `zo-bench --zo`: Stage-2 throughput over ranks × q × skip_unchanged.
fn zo_bench(zo: &Path, config: &Path, run: &Path, grid: &ZoGrid) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let cfg = zo_hpc::config::Config::load(config)
        .with_context(|| format!("loading {}", config.display()))?;
    print_zo_setup(&cfg, grid);
    let tmp = std::env::temp_dir().join(format!("zo-bench-zo-{}", std::process::id()));
    let _tmp = Cleanup(tmp.clone());
    let mut results = Vec::new();
    let estimators: Vec<Option<String>> = if grid.estimators.is_empty() {
        vec![None]
    } else {
        grid.estimators.iter().cloned().map(Some).collect()
    };
    for estimator in &estimators {
        for &ranks in &grid.ranks {
            for &q in &grid.qs {
                for skip in [true, false] {
                    let case = ZoCase {
                        estimator: estimator.clone(),
                        ranks,
                        q,
                        skip,
                    };
                    eprintln!("zo-bench: {case:?} ...");
                    let e = estimator.as_deref().unwrap_or("cfg");
                    let out = tmp.join(format!("{e}-r{ranks}-q{q}-{skip}"));
                    let sums = run_zo_case(zo, config, &text, run, case.clone(), grid.steps, &out)?;
                    results.push((case, sums));
                }
            }
        }
    }
    print_zo_table(&results)
}
