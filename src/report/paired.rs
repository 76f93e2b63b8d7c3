//! The arm view of `zo-hpc report` (issue 19's paired experiment): per data set,
//! Stage 2 of each arm as mean ± sample sd with the 95% t-interval of the mean,
//! and each arm's paired difference to its control arm over the seeds both have
//! (mean, 95% t-interval, pairs, pairs that favour the arm); runs without a
//! partner are listed. A forest plot per data set and metric: one dot per seed,
//! the interval, a zero line. Grouping and the control rule are `arms`'.
use super::arms::{groups, Group};
use super::figures::Figure;
use super::load::Run;
use super::plots::{Look, Panel, Series};
use super::stats::{pair, summarize, Paired, Summary};
use crate::io::eval_file::{cell, EVALUATED, PIPELINE_RMSE, RECON_ACC, STAGE1, STAGE2, TRUE_RMSE};
use std::collections::BTreeMap;

/// The metrics compared, and whether a larger value is better.
const METRICS: [(&str, bool); 5] = [
    (PIPELINE_RMSE, false),
    (TRUE_RMSE, false),
    (RECON_ACC, true),
    ("pipeline_rmse_mean_fill", false),
    ("decode_failed", false),
];

/// The metrics plotted (one PNG per data set each).
const PLOTTED: [&str; 3] = [PIPELINE_RMSE, TRUE_RMSE, RECON_ACC];

fn value(run: &Run, label: &str, row: &str) -> Option<f64> {
    run.eval.as_ref()?.columns.get(label)?.get(row).copied()
}

fn has_stage2(run: &Run) -> bool {
    value(run, STAGE2, EVALUATED).is_some()
}

/// An arm's Stage-2 values of `row` by seed.
fn by_seed(runs: &BTreeMap<u64, &Run>, row: &str) -> BTreeMap<u64, f64> {
    runs.iter()
        .filter_map(|(s, r)| Some((*s, value(r, STAGE2, row)?)))
        .collect()
}

/// Whether the report has an arm view: two or more runs with a Stage-2 column.
pub fn applies(runs: &[Run]) -> bool {
    runs.iter().filter(|r| has_stage2(r)).count() >= 2
}

/// "mean ± sd [lo, hi]", the value alone for one run.
fn summary_cell(row: &str, s: &Summary) -> String {
    match (s.sd, s.interval) {
        (Some(sd), Some((lo, hi))) => format!(
            "{} ± {} [{}, {}]",
            cell(row, s.mean),
            cell(row, sd),
            cell(row, lo),
            cell(row, hi)
        ),
        _ => cell(row, s.mean),
    }
}

/// "mean [lo, hi] (k/n)": k of the n pairs favour the arm.
fn paired_cell(row: &str, better_high: bool, p: &Paired) -> String {
    let d = p.values();
    let Some(s) = summarize(&d) else {
        return "–".into();
    };
    let favour = d
        .iter()
        .filter(|&&x| if better_high { x > 0.0 } else { x < 0.0 })
        .count();
    let at = match s.interval {
        Some((lo, hi)) => format!(
            "{} [{}, {}]",
            cell(row, s.mean),
            cell(row, lo),
            cell(row, hi)
        ),
        None => cell(row, s.mean),
    };
    format!("{at} ({favour}/{})", s.n)
}

fn seeds(runs: &BTreeMap<u64, &Run>) -> String {
    let s: Vec<String> = runs.keys().map(u64::to_string).collect();
    s.join(" ")
}

/// The per-arm table of one data set, Stage 1 first (its distinct values: one
/// model shared by every arm shows once).
fn arm_table(g: &Group) -> String {
    let heads: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
    let mut s = format!(
        "| arm | runs | seeds | {} |\n|---|---|---|{}\n",
        heads.join(" | "),
        "---|".repeat(heads.len())
    );
    let all: Vec<&Run> = g
        .arms
        .iter()
        .flat_map(|(_, r)| r.values().copied())
        .collect();
    let stage1: Vec<String> = METRICS
        .iter()
        .map(|(row, _)| {
            let mut v: Vec<f64> = all.iter().filter_map(|r| value(r, STAGE1, row)).collect();
            v.sort_by(f64::total_cmp);
            v.dedup();
            summarize(&v).map_or("–".into(), |x| summary_cell(row, &x))
        })
        .collect();
    s.push_str(&format!("| Stage 1 | – | – | {} |\n", stage1.join(" | ")));
    for (arm, runs) in &g.arms {
        let cells: Vec<String> = METRICS
            .iter()
            .map(|(row, _)| {
                let v: Vec<f64> = by_seed(runs, row).into_values().collect();
                summarize(&v).map_or("–".into(), |x| summary_cell(row, &x))
            })
            .collect();
        s.push_str(&format!(
            "| {arm} | {} | {} | {} |\n",
            runs.len(),
            seeds(runs),
            cells.join(" | ")
        ));
    }
    s
}

/// Each arm against its control: (arm, control, pairing of every metric).
fn pairings(g: &Group, control: &str) -> Vec<(String, String, Vec<Paired>)> {
    let mut out = Vec::new();
    for (arm, runs) in &g.arms {
        let Some(c) = g.control_of(arm, control) else {
            continue;
        };
        let Some(cruns) = g.arm(&c) else { continue };
        let per = METRICS
            .iter()
            .map(|(row, _)| pair(&by_seed(runs, row), &by_seed(cruns, row)))
            .collect();
        out.push((arm.clone(), c, per));
    }
    out
}

/// The paired table of one data set and what could not be paired.
fn paired_table(g: &Group, control: &str) -> String {
    let ps = pairings(g, control);
    if ps.is_empty() {
        return format!(
            "\nNo paired differences: no run of the control arm `{control}` (`zo-hpc report --control NAME` names another).\n"
        );
    }
    let heads: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
    let mut s = format!(
        "\nPaired differences, arm − control, over the seeds both have: mean [95% t-interval] (pairs that favour the arm / pairs; lower is better but for {RECON_ACC}, whose differences are percentage points):\n\n| arm | control | pairs | {} |\n|---|---|---|{}\n",
        heads.join(" | "),
        "---|".repeat(heads.len())
    );
    let mut lonely = Vec::new();
    for (arm, c, per) in &ps {
        let cells: Vec<String> = METRICS
            .iter()
            .zip(per)
            .map(|((row, high), p)| paired_cell(row, *high, p))
            .collect();
        let pairs = per.first().map_or(0, |p| p.diffs.len());
        s.push_str(&format!(
            "| {arm} | {c} | {pairs} | {} |\n",
            cells.join(" | ")
        ));
        if let Some(p) = per.first() {
            for seed in &p.only_arm {
                lonely.push(format!("`{arm}` seed {seed} (no `{c}` run with that seed)"));
            }
        }
    }
    for (arm, runs) in &g.arms {
        if *arm != control && g.control_of(arm, control).is_none() {
            lonely.push(format!("`{arm}` seeds {} (no control arm)", seeds(runs)));
        }
    }
    for (arm, r) in &g.unseeded {
        lonely.push(format!("`{arm}` in `{}` (no seed)", r.dir.display()));
    }
    for (arm, seed, r) in &g.duplicates {
        lonely.push(format!(
            "`{arm}` seed {seed} in `{}` (a second run of that arm and seed; the first is used)",
            r.dir.display()
        ));
    }
    if !lonely.is_empty() {
        s.push_str(&format!("\nNot paired: {}.\n", lonely.join("; ")));
    }
    s
}

/// The Markdown section (None without two runs with a Stage-2 column).
pub fn section(runs: &[Run], control: &str) -> Option<String> {
    if !applies(runs) {
        return None;
    }
    let mut s = format!(
        "\nRuns grouped by data set (target column) and arm (`run.arm`, else the folder name without a trailing `_s<N>`/`_seed<N>`), paired by `run.seed`. The control of arm `A_X` is `{control}_X` where that arm exists, else `{control}` (`--control`).\n"
    );
    for g in groups(runs, has_stage2) {
        s.push_str(&format!(
            "\n### {}\n\nStage 2 per arm: mean ± sample sd [95% t-interval of the mean]:\n\n{}",
            g.dataset,
            arm_table(&g)
        ));
        s.push_str(&paired_table(&g, control));
    }
    Some(s)
}

/// A file-name-safe version of `s`.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The forest plot of one data set and metric: an arm per row (first on top),
/// its paired differences as dots (one per seed), its interval and mean, a zero line.
fn forest(g: &Group, control: &str, row: &str, k: usize) -> Option<Figure> {
    let ps = pairings(g, control);
    let pct = if row == RECON_ACC { 100.0 } else { 1.0 };
    let unit = if row == RECON_ACC { " (points)" } else { "" };
    let mut p = Panel::new(row, &format!("arm − control{unit}"), "");
    let n = ps.len();
    p.y_names = ps
        .iter()
        .rev()
        .map(|(a, c, _)| format!("{a} − {c}"))
        .collect();
    for (i, (_, _, per)) in ps.iter().enumerate() {
        let y = (n - i) as f64;
        let d: Vec<f64> = per[k].values().iter().map(|v| v * pct).collect();
        let m = d.len().max(1) as f64;
        let dots = d
            .iter()
            .enumerate()
            .map(|(j, &x)| (x, y + 0.3 * ((j as f64 + 0.5) / m - 0.5)))
            .collect();
        let mut push = |points, look| {
            p.series.push(Series {
                label: String::new(),
                points,
                look,
                color: i,
            })
        };
        push(dots, Look::Dots);
        if let Some(s) = summarize(&d) {
            if let Some((lo, hi)) = s.interval {
                push(vec![(lo, y), (hi, y)], Look::Line);
            }
            push(vec![(s.mean, y - 0.2), (s.mean, y + 0.2)], Look::Line);
        }
    }
    p.series.push(Series {
        label: String::new(),
        points: vec![(0.0, 0.5), (0.0, n as f64 + 0.5)],
        look: Look::Dashed,
        color: 7,
    });
    if n == 0 {
        return None;
    }
    Figure::new(
        format!("paired_{}_{}.png", safe(&g.dataset), row),
        format!(
            "{}: {row}, Stage 2 arm − control (dot: a seed; tick: mean; bar: 95% t-interval)",
            g.dataset
        ),
        format!("{}: paired differences of {row} to the control, one dot per seed, with the 95% t-interval", g.dataset),
        vec![p],
    )
}

/// The forest plots of every data set with a control.
pub fn figures(runs: &[Run], control: &str) -> Vec<Figure> {
    if !applies(runs) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for g in groups(runs, has_stage2) {
        for row in PLOTTED {
            let Some(k) = METRICS.iter().position(|m| m.0 == row) else {
                continue;
            };
            out.extend(forest(&g, control, row, k));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::eval_file::Eval;

    /// A run of `arm` with `seed` whose Stage 2 has `v` in every metric.
    fn run(arm: &str, seed: u64, v: f64) -> Run {
        let col = |v: f64| {
            METRICS
                .iter()
                .map(|m| (m.0.to_string(), v))
                .chain([(EVALUATED.to_string(), 8.0)])
                .collect()
        };
        Run {
            name: format!("{arm}_s{seed}"),
            dir: format!("/nonexistent/{arm}_s{seed}").into(),
            stages: BTreeMap::new(),
            eval: Some(Eval {
                columns: BTreeMap::from([(STAGE1.into(), col(9.0)), (STAGE2.into(), col(v))]),
                target: Some("y".into()),
                config: Some(format!("[run]\nseed = {seed}\narm = \"{arm}\"\n")),
                commit: None,
            }),
            gradcheck: None,
        }
    }

    #[test]
    fn the_forest_plot_has_a_row_per_arm_a_dot_per_pair_and_a_zero_line() {
        let runs = [
            run("off", 1, 5.0),
            run("off", 2, 6.0),
            run("es", 1, 4.0),
            run("es", 2, 3.0),
            run("es", 3, 1.0),
            run("off_frz", 1, 7.0),
            run("es_frz", 1, 7.5),
        ];
        let figs = figures(&runs, "off");
        let names: Vec<&str> = figs.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(
            names,
            [
                "paired_y_pipeline_rmse.png",
                "paired_y_true_rmse.png",
                "paired_y_recon_acc.png"
            ]
        );
        let p = &figs[0].panels[0];
        // top to bottom: es, off_frz, es_frz (y = 3, 2, 1)
        assert_eq!(p.y_names, ["es_frz − off_frz", "off_frz − off", "es − off"]);
        let dots: Vec<&Series> = p.series.iter().filter(|s| s.look == Look::Dots).collect();
        let xs: Vec<f64> = dots[0].points.iter().map(|q| q.0).collect();
        assert_eq!(xs, [-1.0, -3.0], "es − off for seeds 1 and 2");
        assert!(dots[0].points.iter().all(|q| (q.1 - 3.0).abs() < 0.2));
        assert_eq!(dots[2].points[0].0, 0.5, "es_frz − off_frz");
        let zero = p.series.iter().find(|s| s.look == Look::Dashed).unwrap();
        assert_eq!(zero.points, [(0.0, 0.5), (0.0, 3.5)]);
        // recon_acc in percentage points
        let recon = &figs[2].panels[0];
        let d = recon.series.iter().find(|s| s.look == Look::Dots).unwrap();
        assert_eq!(d.points[0].0, -100.0);
        // the section lists es seed 3 as unpaired; no control → no figure
        let md = section(&runs, "off").unwrap();
        assert!(
            md.contains("`es` seed 3 (no `off` run with that seed)"),
            "{md}"
        );
        assert!(figures(&runs, "none").is_empty());
        assert!(section(&runs[..1], "off").is_none(), "one run: no arm view");
    }
}
