//! The data-scarcity view of `zo-hpc report`: when the runs were made with
//! different numbers of labeled molecules (`data.n_labeled`), their `eval.h5`
//! figures grouped by knowledge source and label count — a table and a plot of the
//! RMSE through the pipeline against the labels, Stage 1 and Stage 2 per source,
//! mean ± sample sd over the runs (seeds) of a group. Row and column names and the
//! cell format are `io::eval_file`'s.
use super::figures::Figure;
use super::load::Run;
use super::plots::{Look, Panel, Series};
use super::table::mean_sd;
use crate::io::eval_file::{cell, PIPELINE_RMSE, STAGE1, STAGE2, TRUE_RMSE};
use std::collections::BTreeMap;

/// (source kind, labeled molecules) of a run with an `eval.h5` and its config.
fn group_of(run: &Run) -> Option<(String, u64)> {
    let cfg: toml::Table = toml::from_str(run.eval.as_ref()?.config.as_deref()?).ok()?;
    let data = cfg.get("data")?;
    let n_train = data.get("n_train")?.as_integer()?;
    let labeled = data
        .get("n_labeled")
        .and_then(toml::Value::as_integer)
        .unwrap_or(n_train)
        .min(n_train);
    let source = cfg
        .get("source")
        .and_then(|s| s.get("kind"))
        .and_then(toml::Value::as_str)
        .unwrap_or("rdkit");
    Some((source.to_string(), u64::try_from(labeled).ok()?))
}

/// Values of `row` in column `label` (`STAGE1`/`STAGE2`) per (source, labels).
type Groups = BTreeMap<(String, u64), Vec<f64>>;

fn groups(runs: &[Run], label: &str, row: &str) -> Groups {
    let mut g = Groups::new();
    for r in runs {
        let (Some(key), Some(v)) = (
            group_of(r),
            r.eval
                .as_ref()
                .and_then(|e| e.columns.get(label))
                .and_then(|c| c.get(row))
                .copied(),
        ) else {
            continue;
        };
        g.entry(key).or_default().push(v);
    }
    g
}

/// Whether the runs span two or more label counts (else there is no study).
pub fn applies(runs: &[Run]) -> bool {
    let mut n: Vec<u64> = runs.iter().filter_map(group_of).map(|(_, n)| n).collect();
    n.sort_unstable();
    n.dedup();
    n.len() >= 2
}

/// Mean ± sd (n) of a group's values; the value alone for one run.
fn summary(row: &str, v: &[f64]) -> String {
    match (mean_sd(v), v) {
        (Some((m, sd)), _) => format!("{} ± {} ({})", cell(row, m), cell(row, sd), v.len()),
        (None, [x]) => cell(row, *x),
        _ => "–".into(),
    }
}

/// The columns: (header, column label, source) for each source in the runs.
fn columns(runs: &[Run]) -> Vec<(String, &'static str, String)> {
    let mut sources: Vec<String> = runs.iter().filter_map(group_of).map(|(s, _)| s).collect();
    sources.sort();
    sources.dedup();
    let mut cols = Vec::new();
    for s in sources {
        cols.push((format!("Stage 1 ({s})"), STAGE1, s.clone()));
        cols.push((format!("Stage 2 ({s})"), STAGE2, s));
    }
    cols
}

/// Stage 1 of a group is one model shared by its seeds: its value is reported
/// once (the sd over identical values would only say so).
fn values(g: &Groups, label: &str, key: &(String, u64)) -> Vec<f64> {
    let mut v = g.get(key).cloned().unwrap_or_default();
    if label == STAGE1 {
        v.dedup();
    }
    v
}

/// The Markdown section: a row per label count, a column per source and stage.
pub fn section(runs: &[Run]) -> String {
    let cols = columns(runs);
    let mut labels: Vec<u64> = runs.iter().filter_map(group_of).map(|(_, n)| n).collect();
    labels.sort_unstable();
    labels.dedup();
    let mut s = String::new();
    for (row, what) in [
        (PIPELINE_RMSE, "RMSE through the pipeline"),
        (TRUE_RMSE, "RMSE of the MPNN on the true molecules"),
    ] {
        let per: Vec<Groups> = cols.iter().map(|(_, l, _)| groups(runs, l, row)).collect();
        s.push_str(&format!(
            "\n{what} (`{row}`) against the labeled training molecules; mean ± sample sd (runs):\n\n| labeled | {} |\n|---|{}\n",
            cols.iter().map(|c| c.0.as_str()).collect::<Vec<_>>().join(" | "),
            "---|".repeat(cols.len())
        ));
        for &n in &labels {
            let cells: Vec<String> = cols
                .iter()
                .zip(&per)
                .map(|((_, l, src), g)| summary(row, &values(g, l, &(src.clone(), n))))
                .collect();
            s.push_str(&format!("| {n} | {} |\n", cells.join(" | ")));
        }
    }
    s
}

/// The plot: each metric against the labels (log x), a line per source and stage
/// through the group means, a vertical bar of ± one sd at each.
pub fn figure(runs: &[Run]) -> Option<Figure> {
    let cols = columns(runs);
    let panels = [
        (PIPELINE_RMSE, "RMSE through the pipeline (held-out)"),
        (TRUE_RMSE, "MPNN on the true molecules (held-out)"),
    ]
    .iter()
    .map(|&(row, title)| {
        let mut p = Panel::new(title, "labeled training molecules", "RMSE");
        p.log_x = true;
        for (k, (head, label, src)) in cols.iter().enumerate() {
            let g = groups(runs, label, row);
            let mut line = Vec::new();
            for ((s, n), _) in g.iter().filter(|((s, _), _)| s == src) {
                let v = values(&g, label, &(s.clone(), *n));
                let x = *n as f64;
                match mean_sd(&v) {
                    Some((m, sd)) => {
                        line.push((x, m));
                        p.series.push(Series {
                            label: String::new(),
                            points: vec![(x, m - sd), (x, m + sd)],
                            look: Look::Line,
                            color: k,
                        });
                    }
                    None => line.extend(v.first().map(|&m| (x, m))),
                }
            }
            p.series.push(Series {
                label: head.clone(),
                points: line,
                look: if *label == STAGE1 {
                    Look::Dashed
                } else {
                    Look::Marked
                },
                color: k,
            });
        }
        p
    })
    .collect();
    Figure::new(
        "scarcity.png".into(),
        "Data scarcity: RMSE against labeled molecules".into(),
        "RMSE through the pipeline and on the true molecules against the labeled training molecules, per source and stage (mean ± sd over seeds)",
        panels,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::eval_file::Eval;

    fn run(labels: Option<u64>, source: Option<&str>, stage1: f64, stage2: f64) -> Run {
        let col = |v: f64| {
            BTreeMap::from([
                (PIPELINE_RMSE.to_string(), v),
                (TRUE_RMSE.to_string(), v / 2.0),
            ])
        };
        let mut config = String::from("[data]\nn_train = 100\n");
        if let Some(n) = labels {
            config.push_str(&format!("n_labeled = {n}\n"));
        }
        if let Some(s) = source {
            config.push_str(&format!("[source]\nkind = \"{s}\"\n"));
        }
        Run {
            name: "r".into(),
            dir: "r".into(),
            stages: BTreeMap::new(),
            eval: Some(Eval {
                columns: BTreeMap::from([
                    (STAGE1.into(), col(stage1)),
                    (STAGE2.into(), col(stage2)),
                ]),
                target: None,
                config: Some(config),
                commit: None,
            }),
            gradcheck: None,
        }
    }

    #[test]
    fn groups_by_source_and_labels_with_stage1_once_per_group() {
        let one = [
            run(None, None, 5.0, 4.0),
            run(Some(100), Some("rdkit"), 5.0, 6.0),
        ];
        assert!(!applies(&one), "all runs have every label");
        let runs = [
            run(None, None, 5.0, 4.0),
            run(None, None, 5.0, 6.0),
            run(Some(10), None, 9.0, 8.0),
            run(Some(10), Some("physics"), 3.0, 2.0),
            run(Some(10), Some("physics"), 3.0, 4.0),
        ];
        assert!(applies(&runs));
        let s = section(&runs);
        // rows: 10 then 100 labels; columns: physics stages, then rdkit stages
        assert!(s.contains("| labeled | Stage 1 (physics) | Stage 2 (physics) | Stage 1 (rdkit) | Stage 2 (rdkit) |"), "{s}");
        assert!(s.contains("| 10 | 3 | 3 ± 1.4142 (2) | 9 | 8 |"), "{s}");
        assert!(s.contains("| 100 | – | – | 5 | 5 ± 1.4142 (2) |"), "{s}");
        assert!(
            s.contains("| 10 | 1.5000 | 1.5000 ± 0.7071 (2) | 4.5000 | 4 |"),
            "{s}"
        );
        let f = figure(&runs).expect("a figure");
        assert_eq!(f.file, "scarcity.png");
        let p = &f.panels[0];
        assert!(p.log_x);
        let line = |label: &str| &p.series.iter().find(|s| s.label == label).unwrap().points;
        assert_eq!(line("Stage 2 (rdkit)"), &vec![(10.0, 8.0), (100.0, 5.0)]);
        assert_eq!(line("Stage 2 (physics)"), &vec![(10.0, 3.0)]);
        assert_eq!(line("Stage 1 (physics)"), &vec![(10.0, 3.0)]);
    }
}
