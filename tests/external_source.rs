//! The external-process knowledge source (`source.kind = "external"`): the example
//! source `inputs/sources/rdkit_features.py` gives the in-process featurizer's
//! graphs; each fault of `tests/sources/broken.py` (crash, hang, garbage, short or
//! shifted answers, a source that stops reading, one that dies at start-up) fails
//! only the molecules concerned, with the counters, restarts, their limit and the
//! per-rank stderr log as documented; a wrong protocol version or missing columns is
//! a start-up error. Then Stage 1 (MPNN) and Stage 2 through the real binary, on 1
//! and 2 ranks, with the example source and with broken ones.
mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};
use zo_hpc::blackbox::external::ExternalSource;
use zo_hpc::blackbox::{KnowledgeSource, QueryError, SourceContext, SourceStats};
use zo_hpc::chem::{Featurizer, Limits, MolGraph};
use zo_hpc::config::ExternalConfig;

const PYTHON: &str = "/usr/bin/python3";

fn example() -> String {
    repo()
        .join("inputs/sources/rdkit_features.py")
        .display()
        .to_string()
}

fn broken() -> String {
    repo().join("tests/sources/broken.py").display().to_string()
}

fn ctx(dir: &Path) -> SourceContext {
    SourceContext {
        rank: 3,
        threads: 1,
        log_dir: dir.join("logs"),
        config_dir: dir.to_path_buf(),
        data_dir: dir.to_path_buf(),
    }
}

fn cfg(command: &[&str], timeout_s: f64, max_restarts: usize, batch_size: usize) -> ExternalConfig {
    ExternalConfig {
        command: command.iter().map(|s| s.to_string()).collect(),
        timeout_s: Some(timeout_s),
        max_restarts: Some(max_restarts),
        batch_size: Some(batch_size),
        max_abs_feature: None,
    }
}

/// The broken source in `mode` (`k` good batches per process) with the full featurizer.
fn start_broken(
    dir: &Path,
    mode: &str,
    k: usize,
    timeout_s: f64,
    max_restarts: usize,
) -> anyhow::Result<ExternalSource> {
    let k = k.to_string();
    Ok(ExternalSource::start(
        &cfg(&[PYTHON, &broken(), mode, &k], timeout_s, max_restarts, 4),
        &Featurizer::full(),
        Limits::default(),
        &ctx(dir),
    )?)
}

fn mols(n: usize) -> Vec<String> {
    ["CCO", "c1ccccc1", "CC(=O)N", "C1CC1"]
        .iter()
        .cycle()
        .take(n)
        .map(|s| s.to_string())
        .collect()
}

/// "ok" / "rejected" / "failed" per answer.
fn kinds(r: &[Result<MolGraph, QueryError>]) -> Vec<&'static str> {
    r.iter()
        .map(|x| match x {
            Ok(_) => "ok",
            Err(QueryError::Rejected(_)) => "rejected",
            Err(QueryError::Failed(_)) => "failed",
        })
        .collect()
}

fn stats(failed: u64, timeouts: u64, restarts: u64) -> (u64, u64, u64) {
    (failed, timeouts, restarts)
}

fn counted(s: SourceStats) -> (u64, u64, u64) {
    (s.failed, s.timeouts, s.restarts)
}

fn log_of(src: &ExternalSource) -> String {
    std::fs::read_to_string(src.stderr_log()).unwrap()
}

#[test]
fn the_example_source_gives_the_in_process_graphs() {
    let dir = tempfile::tempdir().unwrap();
    let smiles: Vec<String> = [
        "CCO",
        "c1ccccc1",
        "c1cc[nH]c1",
        "C[NH3+]",
        "CC(=O)[O-]",
        "[Na+].[Cl-]",
        "F/C=C/F",
        "F/C=C\\F",
        "C[C@H](N)C(=O)O",
        "C[C@@H](N)C(=O)O",
        "ClC(Br)(I)F",
        "C1CC2CCC1C2",
        "O=S(=O)(O)c1ccc(cc1)B(O)O",
        "C#N",
        "[CH2]C",
        "[2H]OC",
        "c1ccc2c(c1)[nH]c1ccccc12",
        "C1=CC=CC=C1[Se]C",
        "O=[N+]([O-])c1ccccc1",
        "CCCCCCCCCCCCCCCCCC(=O)O",
        "[Fe+2]",
        "C",
        "CC(C)(C)[Si](C)(C)OC",
        "OC1=CC(=O)C=CC1=O",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut q = smiles.clone();
    q.push("not a smiles".into());
    q.push("C".repeat(60));
    q.push("C".repeat(2000));
    let limits = Limits {
        max_atoms: 50,
        max_smiles_length: 1000,
    };
    // full columns, and the kept columns of a dataset (a subset, in its order)
    let subset = Featurizer {
        atom_keep: vec![0, 1, 2, 7, 44, 45, 62, 69, 75, 76, 77],
        bond_keep: vec![0, 3, 4, 6, 8],
    };
    for featurizer in [Featurizer::full(), subset] {
        let src = ExternalSource::start(
            &cfg(&[PYTHON, &example()], 30.0, 0, 7),
            &featurizer,
            limits,
            &ctx(dir.path()),
        )
        .unwrap();
        assert_eq!(src.name(), "external:rdkit-python");
        assert!(src.extra_atom_columns().is_empty());
        let r = src.query(&q);
        assert_eq!(r.len(), q.len());
        for (s, got) in smiles.iter().zip(&r) {
            let want = featurizer.featurize(s).unwrap();
            assert_eq!(got.as_ref().unwrap(), &want, "{s}");
        }
        let n = smiles.len();
        assert_eq!(kinds(&r[n..]), ["rejected"; 3]);
        let msg = |k: usize| r[n + k].as_ref().unwrap_err().to_string();
        assert!(
            msg(1).contains("60 atoms exceed data.max_atoms = 50"),
            "{}",
            msg(1)
        );
        assert!(
            msg(2).contains("data.max_smiles_length = 1000"),
            "{}",
            msg(2)
        );
        assert_eq!(counted(src.stats()), stats(0, 0, 0));
        assert!(src.query(&[]).is_empty());
        // RDKit's own complaint about the bad SMILES is in this rank's log
        let log_path = dir.path().join("logs/source.rank3.stderr.log");
        assert_eq!(src.stderr_log(), log_path);
        let log = log_of(&src);
        assert!(log.contains("SMILES Parse Error"), "{log}");
        assert!(log.contains("--- zo-hpc: starting"), "{log}");
    }
}

#[test]
fn a_source_that_crashes_midway_is_restarted_until_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let src = start_broken(dir.path(), "crash", 1, 30.0, 2).unwrap();
    let q = mols(4);
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(kinds(&src.query(&q)).join(" "));
    }
    // Each crash fails the molecule being answered; the two after it are asked
    // again of the restarted source, until the restarts are spent.
    let good = "ok ok ok ok";
    let crash = "ok failed ok ok";
    let last = "ok failed failed failed";
    let dead = "failed failed failed failed";
    assert_eq!(seen, [good, crash, crash, last, dead, dead, dead]);
    assert_eq!(counted(src.stats()), stats(3 + 2 + 12, 0, 2));
    let t = Instant::now();
    assert_eq!(kinds(&src.query(&q)), ["failed"; 4]);
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "gave up, so fails at once"
    );
    let log = log_of(&src);
    assert_eq!(log.matches("--- zo-hpc: starting").count(), 3, "{log}");
    assert_eq!(log.matches("broken.py crash: crashing").count(), 3, "{log}");
}

/// Issue 20, case 7: a source that dies in the middle of writing an answer fails
/// that molecule only (the half line is never parsed as an answer, nor taken for
/// the next one); the molecules after it are answered by the restarted source, and
/// the failure is not cached.
#[test]
fn a_source_that_dies_mid_line_fails_only_the_molecule_it_was_answering() {
    let dir = tempfile::tempdir().unwrap();
    let src = start_broken(dir.path(), "partial", 1, 30.0, 3).unwrap();
    let mut cache = zo_hpc::blackbox::FeatureCache::new(100);
    let mut ask = |q: &[String]| {
        let (a, _) = cache.query(&src, q);
        a.iter().map(|x| (**x).clone()).collect::<Vec<_>>()
    };
    let first = mols(4);
    let second: Vec<String> = ["CCN", "CCC", "CCCl", "C1CCC1"].map(String::from).to_vec();
    assert_eq!(kinds(&ask(&first)), ["ok"; 4]);
    let r = ask(&second);
    assert_eq!(kinds(&r), ["ok", "failed", "ok", "ok"]);
    let m = r[1].as_ref().unwrap_err().to_string();
    assert!(
        m.contains("bytes into its answer to") && m.contains(&format!("{:?}", second[1])),
        "{m}"
    );
    // asked again (not cached), answered by the restarted process
    assert_eq!(kinds(&ask(&second)), ["ok"; 4]);
    assert_eq!(counted(src.stats()), stats(1, 0, 1));
    let log = log_of(&src);
    assert_eq!(log.matches("crashing mid-line").count(), 1, "{log}");
}

/// Issue 20, case 4: `batch` counts from 0 per process, restarts included, so a
/// source that numbers its answers itself (as README allows) stays in step after a
/// restart instead of being killed at every batch until its restarts are spent.
#[test]
fn a_restarted_source_is_asked_from_batch_0_again() {
    let dir = tempfile::tempdir().unwrap();
    let src = start_broken(dir.path(), "strict", 2, 30.0, 3).unwrap();
    let q = mols(4);
    let seen: Vec<String> = (0..6).map(|_| kinds(&src.query(&q)).join(" ")).collect();
    // the molecule it died on fails; the rest of that batch goes to the restart
    let (good, lost) = ("ok ok ok ok", "failed ok ok ok");
    assert_eq!(seen, [good, good, lost, good, good, good]);
    assert_eq!(counted(src.stats()), stats(1, 0, 1));
    let log = log_of(&src);
    assert_eq!(
        log.matches("broken.py strict: crashing once").count(),
        1,
        "{log}"
    );
    assert!(log.contains("broken.py strict: batch 0\n"), "{log}");
}

/// Issue 20, case 6: an answer line longer than `data.max_atoms` atoms can take
/// (here a valid 20 000-atom graph, ~5 MB) is cut while reading, never parsed: that
/// molecule fails, the source stays in step, the rest of the batch is answered.
#[test]
fn an_answer_longer_than_max_atoms_allows_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let src = start_broken(dir.path(), "huge", 20_000, 30.0, 1).unwrap();
    let r = src.query(&mols(4));
    assert_eq!(kinds(&r), ["failed", "ok", "ok", "ok"]);
    let why = format!("{:?}", r[0]);
    assert!(why.contains("data.max_atoms atoms can take"), "{why}");
    assert_eq!(counted(src.stats()), stats(1, 0, 0));
    assert_eq!(kinds(&src.query(&mols(4))), ["ok"; 4]);
}

/// Issue 20, case 5 (the source's part): a finite but absurd value (1e20) fails its
/// molecule, counted, like a `NaN` would; `source.max_abs_feature` sets the bound.
#[test]
fn an_absurd_feature_value_fails_its_molecule() {
    let dir = tempfile::tempdir().unwrap();
    let src = start_broken(dir.path(), "absurd", 1, 30.0, 1).unwrap();
    assert_eq!(kinds(&src.query(&mols(4))), ["ok"; 4]);
    let r = src.query(&mols(4));
    assert_eq!(kinds(&r), ["failed", "ok", "ok", "ok"]);
    let why = format!("{:?}", r[0]);
    assert!(
        why.contains("exceeds source.max_abs_feature = 1e6"),
        "{why}"
    );
    assert_eq!(counted(src.stats()), stats(1, 0, 0));
}

/// Issue 20, case 3: `zo.cache_check` asks the source again for cached molecules and
/// counts answers unlike the cached ones (`source_differ`): a drifting source is
/// caught, the deterministic example source is not; the run's results are those
/// without the check.
#[test]
fn cache_check_counts_a_source_that_is_not_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, command: &[&str], check: bool| {
        let cfg = with_source(dir.path(), &format!("{name}.toml"), command, "");
        if check {
            let t = std::fs::read_to_string(&cfg).unwrap();
            std::fs::write(&cfg, t.replace("[zo]\n", "[zo]\ncache_check = true\n")).unwrap();
        }
        let out = with_tiny_stage1(dir.path(), name);
        assert_ok(&zo_on(1, &cfg, &out, &["--max-steps", "3"]));
        let m = read_metrics(&out.join("zo/metrics.h5"));
        let differ: f64 = m.step_terms["source_differ"].iter().sum();
        (differ, read_params(&out.join("zo/checkpoint.h5")))
    };
    let (drift, _) = run("drift", &[PYTHON, &broken(), "drift"], true);
    assert!(drift > 0.0, "a drifting source was not caught");
    let example = example();
    let (plain, checked) = run("example", &[PYTHON, &example], true);
    assert_eq!(plain, 0.0, "the example source is deterministic");
    let (_, unchecked) = run("example_off", &[PYTHON, &example], false);
    assert_eq!(checked, unchecked, "the check changed the results");
}

/// Issue 20 (from the last notes): a killed rank's external source stops with it,
/// even one that never reads its (closed) stdin.
#[test]
fn a_source_dies_with_its_killed_rank() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!("echo $$ > src.pid; exec {PYTHON} {} deaf", broken());
    let cfg = with_source(
        dir.path(),
        "deaf.toml",
        &["sh", "-c", &script],
        "timeout_s = 120",
    );
    let out = with_tiny_stage1(dir.path(), "deaf");
    let mut rank = std::process::Command::new(bin())
        .args([
            "train",
            &cfg,
            "--stage",
            "zo",
            "--out-dir",
            out.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("src.pid");
    let t = Instant::now();
    let pid = loop {
        let text = std::fs::read_to_string(&pid_file).unwrap_or_default();
        if let Ok(pid) = text.trim().parse::<i32>() {
            break pid;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the source never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(1));
    rank.kill().unwrap();
    rank.wait().unwrap();
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    };
    let t = Instant::now();
    while !gone(pid) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let alive = !gone(pid);
    // Its own helper (`sleep 3600`) is the source's business: clean it up here.
    // SAFETY: kill(2) on a process group id, no memory involved.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    assert!(!alive, "the source {pid} outlived its killed rank");
}

/// Issue 20 (speed): a step's perturbed queries reach the source in as few requests
/// as `batch_size` allows, not one SMILES per request: at most two requests per step
/// (the base molecules, then the changed queries) plus the end-of-epoch evaluations.
#[test]
fn a_steps_queries_go_to_the_source_together() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = with_source(
        dir.path(),
        "slow.toml",
        &[PYTHON, &broken(), "slow", "0"],
        "",
    );
    let t = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, t.replace("\nq = 2\n", "\nq = 8\n")).unwrap();
    let out = with_tiny_stage1(dir.path(), "slow");
    assert_ok(&zo_on(1, &cfg, &out, &["--max-steps", "10"]));
    let m = read_metrics(&out.join("zo/metrics.h5"));
    let changed: f64 = m.step_terms["changed"].iter().sum();
    let log = std::fs::read_to_string(out.join("zo/source.rank0.stderr.log")).unwrap();
    let requests = log.matches("broken.py slow: batch").count();
    assert!(changed > 40.0, "too few changed queries to tell: {changed}");
    assert!(
        requests <= 2 * 10 + 4,
        "{requests} requests for 10 steps, {changed} changed queries"
    );
}

/// Issue 20, case 7: the source's stderr log is capped (64 MiB, all starts
/// together); the source is not blocked by it and answers.
#[test]
fn the_sources_stderr_log_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let src = start_broken(dir.path(), "chatty", 70, 60.0, 1).unwrap();
    assert_eq!(kinds(&src.query(&mols(4))), ["ok"; 4]);
    let cap = zo_hpc::blackbox::external::MAX_LOG;
    let t = Instant::now();
    let mut size = 0;
    while t.elapsed() < Duration::from_secs(10) {
        size = std::fs::metadata(src.stderr_log()).unwrap().len();
        if size >= cap {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let size2 = std::fs::metadata(src.stderr_log()).unwrap().len();
    assert!(size >= cap && size2 <= cap + 200, "{size} {size2}");
    let log = log_of(&src);
    assert!(
        log.ends_with("further stderr is dropped\n"),
        "{}",
        &log[log.len() - 200..]
    );
}

/// Issue 20, case 3: the cache keeps answers, not accidents. Molecules a crash
/// failed are asked again (and answered by the restarted source); a molecule the
/// source rejects is cached like a graph.
#[test]
fn the_cache_keeps_answers_and_rejections_but_not_failures() {
    let dir = tempfile::tempdir().unwrap();
    let src = start_broken(dir.path(), "crash", 1, 30.0, 3).unwrap();
    let mut cache = zo_hpc::blackbox::FeatureCache::new(100);
    let first: Vec<String> = ["CCO", "CCN", "CCC", "not a smiles"]
        .map(String::from)
        .to_vec();
    let second: Vec<String> = ["c1ccccc1", "C1CC1", "CC(=O)N", "CCCl"]
        .map(String::from)
        .to_vec();
    let ask = |c: &mut zo_hpc::blackbox::FeatureCache, q: &[String]| {
        let (a, st) = c.query(&src, q);
        let k: Vec<Result<MolGraph, QueryError>> = a.iter().map(|x| (**x).clone()).collect();
        (kinds(&k).join(" "), st.hits)
    };
    assert_eq!(ask(&mut cache, &first), ("ok ok ok rejected".into(), 0));
    // The process crashes after answering the first molecule of its second batch;
    // the two after the one it died on go to the restarted process.
    assert_eq!(ask(&mut cache, &second), ("ok failed ok ok".into(), 0));
    assert_eq!(ask(&mut cache, &second), ("ok ok ok ok".into(), 3));
    assert_eq!(ask(&mut cache, &first), ("ok ok ok rejected".into(), 4));
    assert_eq!(src.stats().restarts, 1);
}

#[test]
fn a_hung_source_times_out_and_is_killed_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let src = start_broken(dir.path(), "hang", 2, 0.5, 3).unwrap();
    let q = mols(6); // two batches of 4 and 2
    assert_eq!(kinds(&src.query(&q)), ["ok"; 6]);
    let t = Instant::now();
    // second process life: batch 2 (4 molecules) hangs; the next batch restarts
    let r = src.query(&q);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert_eq!(
        kinds(&r),
        ["failed", "failed", "failed", "failed", "ok", "ok"]
    );
    assert!(r[0]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("timeout_s = 0.5"));
    assert_eq!(counted(src.stats()), stats(4, 4, 1));
    let log = log_of(&src);
    assert!(log.contains("broken.py hang: hanging"), "{log}");
    drop(src);
    // the `sleep 3600` the source started went with its process group
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(!ps.contains(&format!("{} hang", broken())), "{ps}");
    assert!(!ps.contains("sleep 3601"), "{ps}");
}

/// Issue 20, case 7: a helper that left the source's process group (`setsid`) is
/// found by the source's mark in its environment and killed with the source.
#[test]
fn a_helper_in_a_session_of_its_own_goes_with_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let helpers = || {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "sid,pgid,args"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&ps.stdout)
            .lines()
            .filter(|l| l.ends_with("sleep 3602"))
            .count()
    };
    let before = helpers();
    let src = start_broken(dir.path(), "setsid", 1, 30.0, 1).unwrap();
    assert_eq!(kinds(&src.query(&mols(4))), ["ok"; 4]);
    assert_eq!(helpers(), before + 1, "the helper runs");
    drop(src);
    assert_eq!(helpers(), before, "the helper went with its source");
}

#[test]
fn garbage_and_invalid_rows_fail_their_molecules_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, why) in [
        ("garbage", "not JSON"),
        ("badrows", "77 features where the handshake declared 78"),
    ] {
        let src = start_broken(dir.path(), mode, 1, 30.0, 2).unwrap();
        assert_eq!(kinds(&src.query(&mols(4))), ["ok"; 4], "{mode}");
        let r = src.query(&mols(5));
        assert_eq!(kinds(&r), ["failed"; 5], "{mode}");
        let m = r[0].as_ref().unwrap_err().to_string();
        assert!(m.contains(why), "{mode}: {m}");
        assert_eq!(counted(src.stats()), stats(5, 0, 0), "{mode}");
    }
}

#[test]
fn too_few_or_shifted_answers_fail_and_restart_the_source() {
    let dir = tempfile::tempdir().unwrap();
    // short: three of four answers, then nothing: the fourth times out
    let src = start_broken(dir.path(), "short", 1, 0.5, 2).unwrap();
    assert_eq!(kinds(&src.query(&mols(4))), ["ok"; 4]);
    assert_eq!(kinds(&src.query(&mols(4))), ["ok", "ok", "ok", "failed"]);
    assert_eq!(counted(src.stats()), stats(1, 1, 0));
    assert_eq!(kinds(&src.query(&mols(4))), ["ok"; 4]);
    assert_eq!(counted(src.stats()), stats(1, 1, 1));
    // desync: answers carry the wrong index: out of step at once; the first
    // molecule fails, the rest is asked again of the restarted source
    let src = start_broken(dir.path(), "desync", 1, 30.0, 2).unwrap();
    assert_eq!(kinds(&src.query(&mols(4))), ["ok"; 4]);
    let r = src.query(&mols(4));
    assert_eq!(kinds(&r), ["failed", "ok", "ok", "ok"]);
    let m = r[0].as_ref().unwrap_err().to_string();
    assert!(m.contains("out of step") && m.contains("index 0"), "{m}");
    assert_eq!(counted(src.stats()), stats(1, 0, 1));
}

#[test]
fn a_source_that_stops_reading_cannot_block_the_rank() {
    let dir = tempfile::tempdir().unwrap();
    let src = ExternalSource::start(
        &cfg(&[PYTHON, &broken(), "deaf"], 0.5, 0, 100),
        &Featurizer::full(),
        Limits::default(),
        &ctx(dir.path()),
    )
    .unwrap();
    // one request of 100 × 900 bytes: more than a pipe holds, so writing blocks
    let q: Vec<String> = (0..100).map(|_| "C".repeat(900)).collect();
    let t = Instant::now();
    let r = src.query(&q);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(kinds(&r), ["failed"; 100]);
    assert_eq!(counted(src.stats()), stats(100, 100, 0));
}

#[test]
fn a_source_that_dies_at_start_up_fails_every_query() {
    let dir = tempfile::tempdir().unwrap();
    let src = start_broken(dir.path(), "startup", 0, 30.0, 2).unwrap();
    assert!(src.extra_atom_columns().is_empty());
    assert_eq!(src.stats().restarts, 2);
    assert_eq!(kinds(&src.query(&mols(6))), ["failed"; 6]);
    assert_eq!(counted(src.stats()), stats(6, 0, 2));
    let log = log_of(&src);
    assert_eq!(log.matches("cannot load my model").count(), 3, "{log}");
}

#[test]
fn a_wrong_version_missing_columns_or_no_program_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = format!(
        "{:#}",
        start_broken(dir.path(), "version", 0, 30.0, 2)
            .err()
            .unwrap()
    );
    assert!(
        e.contains("version 2") && e.contains("version 1") && e.contains("broken.py"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        start_broken(dir.path(), "fewcols", 0, 30.0, 2)
            .err()
            .unwrap()
    );
    assert!(
        e.contains("\"element=C\"") && e.contains("broken.py"),
        "{e}"
    );
    let e = ExternalSource::start(
        &cfg(&["./no_such_source"], 30.0, 2, 4),
        &Featurizer::full(),
        Limits::default(),
        &ctx(dir.path()),
    )
    .err()
    .unwrap();
    assert!(format!("{e:#}").contains("no_such_source"), "{e:#}");
}

#[test]
fn extra_atom_columns_follow_the_datasets_columns() {
    let dir = tempfile::tempdir().unwrap();
    let src = start_broken(dir.path(), "extra", 9, 30.0, 0).unwrap();
    assert_eq!(src.extra_atom_columns(), ["mass"]);
    let r = src.query(&["CO".to_string()]);
    let g = r[0].as_ref().unwrap();
    let want = Featurizer::full().featurize("CO").unwrap();
    assert_eq!(g.atom_dim, want.atom_dim + 1);
    let d = g.atom_dim;
    assert_eq!(&g.atom_x[..d - 1], &want.atom_x[..d - 1]);
    assert!(
        (g.atom_x[d - 1] - 0.12011).abs() < 1e-5,
        "{}",
        g.atom_x[d - 1]
    );
    assert!((g.atom_x[2 * d - 1] - 0.15999).abs() < 1e-5);
    assert_eq!(g.edge_x, want.edge_x, "the extra bond column is ignored");
}

// ---- through the binary ---------------------------------------------------

/// The tiny config with an external `[source]` running `command` (+ `keys`).
fn with_source(dir: &Path, name: &str, command: &[&str], keys: &str) -> String {
    let command: Vec<String> = command.iter().map(|s| format!("{s:?}")).collect();
    config_copy(dir, "tests/configs/pipeline_tiny.toml", name, |t| {
        format!(
            "{t}\n[source]\nkind = \"external\"\ncommand = [{}]\n{keys}\n",
            command.join(", ")
        )
    })
}

fn train(ranks: usize, config: &str, out: &Path, stage: &str) -> std::process::Output {
    let out = out.display().to_string();
    let args = [
        "train",
        config,
        "--out-dir",
        &out,
        "--stage",
        stage,
        "--max-steps",
        "3",
    ];
    if ranks == 1 {
        zo(&args)
    } else {
        mpirun(ranks, &args)
    }
}

fn source_counts(out: &Path) -> (f64, f64, f64) {
    let m = read_metrics(&out.join("zo/metrics.h5"));
    let sum = |k: &str| m.step_terms[k].iter().sum::<f64>();
    (
        sum("source_failed"),
        sum("source_timeouts"),
        sum("source_restarts"),
    )
}

#[test]
fn stage_2_runs_with_the_example_source_on_1_and_2_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_source(
        dir.path(),
        "ext.toml",
        &[PYTHON, &example()],
        "batch_size = 5",
    );
    for ranks in [1, 2] {
        let out = with_tiny_stage1(dir.path(), &format!("run{ranks}"));
        let o = train(ranks, &config, &out, "zo");
        assert_ok(&o);
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(log.contains("external source \"rdkit-python\""), "{log}");
        assert_eq!(source_counts(&out), (0.0, 0.0, 0.0));
        for rank in 0..ranks {
            assert!(out
                .join(format!("zo/source.rank{rank}.stderr.log"))
                .is_file());
        }
    }
}

#[test]
fn stage_2_finishes_with_a_crashing_or_hanging_source_and_counts_its_failures() {
    let dir = tempfile::tempdir().unwrap();
    let crash = with_source(
        dir.path(),
        "crash.toml",
        &[PYTHON, &broken(), "crash", "2"],
        "max_restarts = 1",
    );
    let out = with_tiny_stage1(dir.path(), "crash");
    let o = train(2, &crash, &out, "zo");
    assert_ok(&o);
    let (failed, _, restarts) = source_counts(&out);
    assert!(
        failed > 0.0 && restarts > 0.0,
        "{failed} {restarts}\n{}",
        text(&o)
    );
    // A source answering 1e20 in one molecule per batch: Stage 2 goes on, counted.
    let absurd = with_source(
        dir.path(),
        "absurd.toml",
        &[PYTHON, &broken(), "absurd", "1"],
        "",
    );
    let out = with_tiny_stage1(dir.path(), "absurd");
    let o = train(1, &absurd, &out, "zo");
    assert_ok(&o);
    let (failed, _, restarts) = source_counts(&out);
    assert!(
        failed > 0.0 && restarts == 0.0,
        "{failed} {restarts}\n{}",
        text(&o)
    );
    // With the bound lifted the 1e20 reaches the MPNN, whose weights it wrecks:
    // from then on every sample's loss is non-finite, and the run stops saying so,
    // its metrics up to that step written first.
    let lifted = with_source(
        dir.path(),
        "lifted.toml",
        &[PYTHON, &broken(), "absurd", "1"],
        "max_abs_feature = 1e30",
    );
    let out = with_tiny_stage1(dir.path(), "lifted");
    let o = train(1, &lifted, &out, "zo");
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("had a non-finite loss"), "{}", text(&o));
    assert!(out.join("zo/metrics.h5").is_file(), "{}", text(&o));
    // A value whose sample alone overflows (3e38, within f32): that sample's loss
    // is non-finite and it is left out, counted; the others train, the run ends.
    let overflow = with_source(
        dir.path(),
        "overflow.toml",
        &[PYTHON, &broken(), "absurd", "1", "3e38"],
        "max_abs_feature = 1e39",
    );
    let out = with_tiny_stage1(dir.path(), "overflow");
    let o = zo_on(1, &overflow, &out, &["--max-steps", "6"]);
    assert_ok(&o);
    let m = read_metrics(&out.join("zo/metrics.h5"));
    let left_out: f64 = m.step_terms["nonfinite"].iter().sum();
    assert!(left_out > 0.0, "{}", text(&o));
    assert!(
        m.step_loss.iter().all(|l| l.is_finite()),
        "{:?}",
        m.step_loss
    );
    let hang = with_source(
        dir.path(),
        "hang.toml",
        &[PYTHON, &broken(), "hang", "1"],
        "timeout_s = 0.5\nmax_restarts = 1",
    );
    let out = with_tiny_stage1(dir.path(), "hang");
    let o = train(1, &hang, &out, "zo");
    assert_ok(&o);
    let (failed, timeouts, _) = source_counts(&out);
    assert!(
        failed > 0.0 && timeouts > 0.0,
        "{failed} {timeouts}\n{}",
        text(&o)
    );
}

#[test]
fn stage_1_mpnn_trains_on_a_source_with_an_extra_column() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_source(
        dir.path(),
        "extra.toml",
        &[PYTHON, &broken(), "extra", "1000"],
        "",
    );
    let out = with_tiny_stage1(dir.path(), "extra");
    std::fs::remove_dir_all(out.join("mpnn")).unwrap();
    let o = train(1, &config, &out, "mpnn");
    assert_ok(&o);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("incl. mass"), "{log}");
    assert!(
        log.contains("\"order\"") && log.contains("ignored"),
        "{log}"
    );
    assert!(out.join("mpnn/checkpoint.h5").is_file());
}
