//! Which figures `zo-hpc report` makes from the runs' data: per run, the training
//! curves of each stage, Stage 2's per-step diagnostics and the estimator check;
//! across runs, overlays of the curves that two or more runs have.
use super::load::{Run, StandinRow};
use super::plots::{Look, Panel, Series};
use crate::io::metrics::Metrics;
use crate::io::zo_phases::PHASES;

/// One PNG: its file name, its title and a line for report.md.
pub struct Figure {
    pub file: String,
    pub title: String,
    pub about: String,
    pub panels: Vec<Panel>,
}

impl Figure {
    pub(super) fn new(
        file: String,
        title: String,
        about: impl Into<String>,
        panels: Vec<Panel>,
    ) -> Option<Figure> {
        panels.iter().any(Panel::has_data).then(|| Figure {
            file,
            title,
            about: about.into(),
            panels: panels.into_iter().filter(Panel::has_data).collect(),
        })
    }
}

fn stage_title(stage: &str) -> &'static str {
    match stage {
        "jtvae" => "Stage 1 JT-VAE",
        "mpnn" => "Stage 1 MPNN",
        _ => "Stage 2 (zeroth-order)",
    }
}

/// Loss terms per stage, in the order the stages define them.
fn terms(stage: &str) -> &'static [&'static str] {
    match stage {
        "jtvae" => &["word", "topo", "assm", "kl"],
        "zo" => &["pred", "jtvae", "word", "topo", "assm", "kl"],
        _ => &[],
    }
}

/// Table 1's values as Stage 2 records them per epoch.
const RMSES: [&str; 4] = [
    "pipeline_rmse",
    "pipeline_rmse_mean_fill",
    "true_rmse",
    "baseline_rmse",
];

/// A centred moving average over about 2% of the series (raw steps are noisy).
fn smooth(v: &[f64]) -> Vec<f64> {
    let half = (v.len() / 100).min(100);
    (0..v.len())
        .map(|i| {
            let w = &v[i.saturating_sub(half)..(i + half + 1).min(v.len())];
            let finite: Vec<f64> = w.iter().copied().filter(|x| x.is_finite()).collect();
            finite.iter().sum::<f64>() / finite.len().max(1) as f64
        })
        .collect()
}

/// Points (1, v0), (2, v1), …: steps and epochs are counted from 1.
fn numbered(v: &[f64]) -> Vec<(f64, f64)> {
    v.iter()
        .enumerate()
        .map(|(i, &y)| ((i + 1) as f64, y))
        .collect()
}

pub(super) fn series(label: &str, points: Vec<(f64, f64)>, look: Look, color: usize) -> Series {
    Series {
        label: label.into(),
        points,
        look,
        color,
    }
}

/// A per-step series: raw and faint, smoothed on top.
fn steps(p: &mut Panel, v: &[f64]) {
    p.series.push(series("", numbered(v), Look::Faint, 0));
    p.series
        .push(series("", numbered(&smooth(v)), Look::Line, 0));
}

fn step_series<'m>(m: &'m Metrics, name: &str) -> Option<&'m [f64]> {
    if name == "loss" {
        Some(&m.step_loss)
    } else {
        m.step_terms.get(name).map(Vec::as_slice)
    }
}

/// A panel of per-epoch series, one per name the metrics have.
fn epoch_panel(m: &Metrics, title: &str, y: &str, names: &[&str]) -> Panel {
    let mut p = Panel::new(title, "epoch", y);
    for (i, name) in names.iter().enumerate() {
        if let Some(v) = m.epoch.get(*name) {
            p.series.push(series(name, numbered(v), Look::Marked, i));
        }
    }
    p
}

/// All figures of one run.
pub fn for_run(run: &Run) -> Vec<Figure> {
    let mut out = Vec::new();
    let name = &run.name;
    for (&stage, s) in &run.stages {
        let m = &s.metrics;
        let what = stage_title(stage);
        let losses = std::iter::once("loss").chain(terms(stage).iter().copied());
        let panels = losses
            .filter_map(|t| {
                let v = step_series(m, t)?;
                let mut p = Panel::new(t, "step", "per molecule");
                steps(&mut p, v);
                Some(p)
            })
            .collect();
        out.extend(Figure::new(
            format!("{name}_{stage}_loss.png"),
            format!("{name}: {what}, loss per step (faint: raw, line: moving average)"),
            format!("{what}: loss and its terms per step"),
            panels,
        ));
        out.extend(match stage {
            "mpnn" => mpnn_rmse(run, m),
            "jtvae" => jtvae_accuracy(run, m),
            _ => None,
        });
    }
    if let Some(m) = run.stage("zo") {
        out.extend(zo_eval(run, m));
        out.extend(zo_diagnostics(run, m));
        out.extend(zo_phases(run, m));
    }
    if let Some(g) = &run.gradcheck {
        out.extend(gradcheck_cosine(run, &g.standin));
        out.extend(gradcheck_flips(
            &format!("{name}_gradcheck_flip.png"),
            &format!("{name}: the real decoder under z + µσ·u"),
            &[run],
        ));
    }
    out
}

fn mpnn_rmse(run: &Run, m: &Metrics) -> Option<Figure> {
    let mut p = epoch_panel(m, "RMSE", "target units", &["train_rmse", "test_rmse"]);
    if let Some(&b) = m.scalars.get("baseline_test_rmse") {
        let n = m.epoch_step.len().max(1) as f64;
        let line = vec![(1.0, b), (n, b)];
        p.series
            .push(series("predict the mean (test)", line, Look::Dashed, 2));
    }
    Figure::new(
        format!("{}_mpnn_rmse.png", run.name),
        format!("{}: Stage 1 MPNN, RMSE per epoch", run.name),
        "MPNN train and test RMSE per epoch",
        vec![p],
    )
}

fn jtvae_accuracy(run: &Run, m: &Metrics) -> Option<Figure> {
    let acc = [
        "recon_acc",
        "recon_valid",
        "test_word_acc",
        "test_topo_acc",
        "test_assm_acc",
    ];
    let mut panels = vec![
        epoch_panel(m, "accuracy", "share", &acc),
        epoch_panel(
            m,
            "teacher-forced test loss",
            "per molecule",
            &["test_word", "test_topo", "test_assm"],
        ),
    ];
    panels.extend(training_accuracy(m));
    panels.extend(step_eval_panel(
        m,
        "held-out accuracy every eval_every_steps",
        &acc,
    ));
    Figure::new(
        format!("{}_jtvae_accuracy.png", run.name),
        format!(
            "{}: Stage 1 JT-VAE, held-out split per epoch; training accuracies and β per step",
            run.name
        ),
        "JT-VAE reconstruction and teacher-forced accuracies, teacher-forced test losses per epoch, training accuracies and KL weight per step",
        panels,
    )
}

/// The evaluations every `train.eval_every_steps` (`/eval`), against the step;
/// none when the run made none.
fn step_eval_panel(m: &Metrics, title: &str, names: &[&str]) -> Option<Panel> {
    let mut p = Panel::new(title, "step", "share");
    for (i, name) in names.iter().enumerate() {
        if let Some(v) = m.evals.get(*name) {
            let points = m
                .eval_step
                .iter()
                .zip(v)
                .map(|(&s, &y)| (s as f64, y))
                .collect();
            p.series.push(series(name, points, Look::Marked, i));
        }
    }
    (!p.series.is_empty()).then_some(p)
}

/// The teacher-forced training accuracies per step (moving averages) and β, as
/// the reference logs them; none for metrics written before they were recorded.
fn training_accuracy(m: &Metrics) -> Option<Panel> {
    let mut p = Panel::new("training accuracy per step", "step", "share");
    for (i, name) in ["word_acc", "topo_acc", "assm_acc", "beta"]
        .iter()
        .enumerate()
    {
        if let Some(v) = m.step_terms.get(*name) {
            let look = if *name == "beta" {
                Look::Dashed
            } else {
                Look::Line
            };
            p.series.push(series(name, numbered(&smooth(v)), look, i));
        }
    }
    (!p.series.is_empty()).then_some(p)
}

fn zo_eval(run: &Run, m: &Metrics) -> Option<Figure> {
    Figure::new(
        format!("{}_zo_eval.png", run.name),
        format!(
            "{}: Stage 2, Table 1 on the first zo.eval_limit test molecules per epoch",
            run.name
        ),
        "Stage-2 evaluation per epoch: RMSEs, reconstruction accuracy, failures",
        vec![
            epoch_panel(m, "RMSE", "target units", &RMSES),
            epoch_panel(m, "reconstruction accuracy", "share", &["recon_acc"]),
            epoch_panel(
                m,
                "failures",
                "molecules",
                &["decode_failed", "featurize_failed"],
            ),
        ],
    )
}

/// Cache hits per black-box query (base, perturbed and decoder queries, as in
/// `queries_per_s`).
fn cache_share(m: &Metrics) -> Option<Vec<f64>> {
    let get = |n: &str| m.step_terms.get(n);
    let (hits, samples, queries) = (get("cache_hits")?, get("samples")?, get("queries")?);
    let none = vec![0.0; hits.len()];
    let dec = get("decoder_queries").unwrap_or(&none);
    Some(
        (0..hits.len())
            .map(|i| {
                let all = samples.get(i).copied().unwrap_or(0.0)
                    + queries.get(i).copied().unwrap_or(0.0)
                    + dec.get(i).copied().unwrap_or(0.0);
                if all > 0.0 {
                    hits[i] / all
                } else {
                    f64::NAN
                }
            })
            .collect(),
    )
}

fn zo_diagnostics(run: &Run, m: &Metrics) -> Option<Figure> {
    let share = cache_share(m);
    // The knowledge source's own failures, shown where there were any.
    let source_failed = step_series(m, "source_failed").filter(|v| v.iter().any(|&x| x > 0.0));
    let rows: [(&str, &str, Option<&[f64]>); 6] = [
        (
            "flip rate",
            "changed / answered",
            step_series(m, "flip_rate"),
        ),
        (
            "failure rate",
            "failed / queries",
            step_series(m, "failure_rate"),
        ),
        ("cache hits", "share of queries", share.as_deref()),
        (
            "queries per second",
            "slowest rank",
            step_series(m, "queries_per_s"),
        ),
        (
            "imbalance",
            "slowest / mean rank",
            step_series(m, "imbalance"),
        ),
        (
            "knowledge-source failures",
            "queries (crash, hang, garbage, time limit)",
            source_failed,
        ),
    ];
    let panels = rows
        .into_iter()
        .filter_map(|(title, y, v)| {
            let mut p = Panel::new(title, "step", y);
            steps(&mut p, v?);
            Some(p)
        })
        .collect();
    Figure::new(
        format!("{}_zo_diagnostics.png", run.name),
        format!(
            "{}: Stage 2 per step (faint: raw, line: moving average)",
            run.name
        ),
        "Stage-2 flip rate, failure rate, cache hits, queries/s and rank imbalance per step",
        panels,
    )
}

fn zo_phases(run: &Run, m: &Metrics) -> Option<Figure> {
    let mut p = Panel::new("seconds per phase (max over ranks)", "step", "s");
    // The ranks' phases, then the two rank 0 times alone.
    let phases = PHASES.iter().chain(&["allreduce", "optimizer"]);
    for (i, phase) in phases.enumerate() {
        if let Some(v) = m.step_terms.get(&format!("time_{phase}")) {
            p.series
                .push(series(phase, numbered(&smooth(v)), Look::Line, i));
        }
    }
    // Of `featurize`: the physics program's own seconds (summed over ranks).
    if let Some(v) = step_series(m, "source_program_s").filter(|v| v.iter().any(|&x| x > 0.0)) {
        p.series.push(series(
            "physics program (all ranks)",
            numbered(&smooth(v)),
            Look::Dashed,
            PHASES.len() + 2,
        ));
    }
    Figure::new(
        format!("{}_zo_phases.png", run.name),
        format!(
            "{}: Stage 2, time per phase and step (moving average)",
            run.name
        ),
        "Stage-2 seconds per phase and step",
        vec![p],
    )
}

fn gradcheck_cosine(run: &Run, rows: &[StandinRow]) -> Option<Figure> {
    let mut radii: Vec<f64> = rows.iter().map(|r| r.radius).collect();
    radii.sort_by(f64::total_cmp);
    radii.dedup();
    let mut estimators: Vec<&str> = Vec::new();
    for r in rows {
        if !estimators.contains(&r.estimator.as_str()) {
            estimators.push(&r.estimator);
        }
    }
    let panels = radii
        .iter()
        .map(|&radius| {
            let mut p = Panel::new(&format!("µσ = {radius:e}"), "q", "cosine with the gradient");
            p.log_x = true;
            for (i, est) in estimators.iter().enumerate() {
                let mine: Vec<&StandinRow> = rows
                    .iter()
                    .filter(|r| r.radius == radius && r.estimator == *est)
                    .collect();
                let at = |f: fn(&StandinRow) -> f64| mine.iter().map(|r| (r.q, f(r))).collect();
                p.series
                    .push(series(est, at(|r| r.cosine), Look::Marked, i));
                p.series.push(series("", at(|r| r.theory), Look::Dashed, i));
            }
            p
        })
        .collect();
    Figure::new(
        format!("{}_gradcheck_cosine.png", run.name),
        format!(
            "{}: estimators on the smooth stand-in, cosine vs q (dashed: small-µ theory)",
            run.name
        ),
        "gradcheck: cosine of each estimator with the true gradient vs q, per µσ",
        panels,
    )
}

/// Flip rate and failed share vs µσ; one run: with its tie floor; several: flip
/// rates overlaid.
fn gradcheck_flips(file: &str, title: &str, runs: &[&Run]) -> Option<Figure> {
    let mut p = Panel::new("perturbed latents", "µσ", "share of queries");
    p.log_x = true;
    for (i, run) in runs.iter().enumerate() {
        let Some(g) = &run.gradcheck else { continue };
        let col = |f: fn(&(f64, f64, f64)) -> f64| g.flips.iter().map(|r| (r.0, f(r))).collect();
        if runs.len() == 1 {
            p.series
                .push(series("flip rate", col(|r| r.1), Look::Marked, 0));
            p.series
                .push(series("failed decodes", col(|r| r.2), Look::Marked, 1));
            if let (Some(floor), Some(first), Some(last)) =
                (g.tie_floor, g.flips.first(), g.flips.last())
            {
                let line = vec![(first.0, floor), (last.0, floor)];
                p.series.push(series("tie floor", line, Look::Dashed, 2));
            }
        } else {
            p.series
                .push(series(&run.name, col(|r| r.1), Look::Marked, i));
        }
    }
    Figure::new(
        file.into(),
        title.into(),
        "gradcheck: flip rate (and failed decodes) of the real decoder vs µσ",
        vec![p],
    )
}

/// An overlay of one per-epoch or per-step series of a stage, a line per run.
fn overlay(runs: &[Run], stage: &str, name: &str, per_step: bool) -> Panel {
    let x = if per_step { "step" } else { "epoch" };
    let mut p = Panel::new(name, x, "");
    for (i, run) in runs.iter().enumerate() {
        let Some(m) = run.stage(stage) else { continue };
        let v = if per_step {
            step_series(m, name).map(smooth)
        } else {
            m.epoch.get(name).cloned()
        };
        if let Some(v) = v {
            let look = if per_step { Look::Line } else { Look::Marked };
            p.series.push(series(&run.name, numbered(&v), look, i));
        }
    }
    p
}

/// Figures that overlay the runs (only where two or more runs have the data).
pub fn compare(runs: &[Run]) -> Vec<Figure> {
    let fig = |what: &str, title: &str, about: &str, panels: Vec<Panel>| {
        Figure::new(
            format!("compare_{what}.png"),
            format!("all runs: {title}"),
            about,
            panels,
        )
    };
    let with_gradcheck: Vec<&Run> = runs.iter().filter(|r| r.gradcheck.is_some()).collect();
    let overlays = [
        fig(
            "zo_eval",
            "Stage 2 per epoch",
            "Stage-2 pipeline RMSE, true RMSE and reconstruction accuracy per epoch, a line per run",
            ["pipeline_rmse", "true_rmse", "recon_acc"]
                .iter()
                .map(|n| overlay(runs, "zo", n, false))
                .collect(),
        ),
        fig(
            "zo_steps",
            "Stage 2 per step (moving average)",
            "Stage-2 loss, prediction loss, flip rate and queries/s per step, a line per run",
            ["loss", "pred", "flip_rate", "queries_per_s"]
                .iter()
                .map(|n| overlay(runs, "zo", n, true))
                .collect(),
        ),
        fig(
            "mpnn_rmse",
            "Stage 1 MPNN test RMSE per epoch",
            "MPNN test RMSE per epoch, a line per run",
            vec![overlay(runs, "mpnn", "test_rmse", false)],
        ),
        fig(
            "jtvae_loss",
            "Stage 1 JT-VAE loss per step (moving average)",
            "JT-VAE loss per step, a line per run",
            vec![overlay(runs, "jtvae", "loss", true)],
        ),
        gradcheck_flips(
            "compare_gradcheck_flip.png",
            "all runs: flip rate of the real decoder vs µσ",
            &with_gradcheck,
        )
        .filter(|_| with_gradcheck.len() >= 2),
    ];
    let two_runs = |f: &Figure| {
        f.panels
            .iter()
            .any(|p| p.series.iter().filter(|s| p.drawable(s) > 0).count() >= 2)
    };
    overlays.into_iter().flatten().filter(two_runs).collect()
}

#[cfg(test)]
mod tests {
    use super::training_accuracy;
    use crate::io::metrics::Metrics;

    #[test]
    fn training_accuracies_and_beta_are_drawn_when_recorded() {
        let mut m = Metrics::default();
        assert!(training_accuracy(&m).is_none(), "older metrics: no panel");
        for k in ["word_acc", "assm_acc", "beta"] {
            m.step_terms.insert(k.into(), vec![0.1, 0.2, 0.3]);
        }
        let p = training_accuracy(&m).unwrap();
        let names: Vec<&str> = p.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(names, ["word_acc", "assm_acc", "beta"]);
    }

    #[test]
    fn evaluations_every_n_steps_are_drawn_against_their_step() {
        let mut m = Metrics::default();
        assert!(super::step_eval_panel(&m, "t", &["recon_acc"]).is_none());
        m.eval_step = vec![100, 200];
        m.evals.insert("recon_acc".into(), vec![0.1, 0.25]);
        let p = super::step_eval_panel(&m, "t", &["recon_acc", "test_word_acc"]).unwrap();
        assert_eq!(p.series.len(), 1);
        assert_eq!(p.series[0].points, [(100.0, 0.1), (200.0, 0.25)]);
    }
}
