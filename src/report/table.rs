//! The Markdown of report.md: Table 1 (Stage 1 vs Stage 2 from each run's
//! `eval.h5`, a column per run and stage), its mean ± sample standard deviation
//! over runs, and what each run was made with (config keys, ranks, commit). The
//! rows, column labels and cell format are `io::eval_file`'s, the file's owner.
use super::load::{Run, STAGES};
use crate::io::eval_file::{cell, EVALUATED, ROWS, STAGE1, STAGE2};

/// The config keys shown per run.
const KEYS: [&str; 6] = [
    "run.seed",
    "zo.mu",
    "zo.q",
    "zo.estimator",
    "zo.lambda",
    "zo.decoder",
];

/// Table 1 over all runs; None when no run has an `eval.h5`.
pub fn table1(runs: &[Run]) -> Option<String> {
    // (header, run, column label)
    let mut cols: Vec<(String, &Run, &str)> = Vec::new();
    for run in runs {
        for label in run.eval.iter().flat_map(|e| e.columns.keys()) {
            cols.push((format!("{} {label}", run.name), run, label));
        }
    }
    if cols.is_empty() {
        return None;
    }
    let heads: Vec<String> = cols.iter().map(|c| c.0.clone()).collect();
    let mut s = rows_table(&heads, |row, i| {
        let (_, run, label) = cols[i];
        value(run, label, row).map(|v| cell(row, v))
    });
    s.push_str(&spread(runs));
    Some(s)
}

/// A Markdown table with a row per metric of `ROWS` and a column per header;
/// `at(row, column)` gives a cell ("–" where None).
fn rows_table(heads: &[String], at: impl Fn(&str, usize) -> Option<String>) -> String {
    let mut s = format!(
        "| metric | {} |\n|---|{}\n",
        heads.join(" | "),
        "---|".repeat(heads.len())
    );
    for row in ROWS {
        let cells: Vec<String> = (0..heads.len())
            .map(|i| at(row, i).unwrap_or_else(|| "–".into()))
            .collect();
        s.push_str(&format!("| {row} | {} |\n", cells.join(" | ")));
    }
    s
}

fn value(run: &Run, label: &str, row: &str) -> Option<f64> {
    run.eval.as_ref()?.columns.get(label)?.get(row).copied()
}

/// Mean and sample standard deviation (n ≥ 2).
pub fn mean_sd(v: &[f64]) -> Option<(f64, f64)> {
    if v.len() < 2 {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, var.sqrt()))
}

/// Mean ± sd over the runs that have a `stage2` column (and of `stage1` where
/// its values differ between runs, i.e. Stage 1 was not shared); empty with
/// fewer than two such runs.
fn spread(runs: &[Run]) -> String {
    let with2: Vec<&Run> = runs
        .iter()
        .filter(|r| value(r, STAGE2, EVALUATED).is_some())
        .collect();
    if with2.len() < 2 {
        return String::new();
    }
    let over = |label: &str, row: &str| -> Vec<f64> {
        with2.iter().filter_map(|r| value(r, label, row)).collect()
    };
    let differs = ROWS.iter().any(|row| {
        let v = over(STAGE1, row);
        v.windows(2).any(|w| w[0] != w[1])
    });
    let labels: Vec<&str> = if differs {
        vec![STAGE1, STAGE2]
    } else {
        vec![STAGE2]
    };
    let heads: Vec<String> = labels.iter().map(|l| format!("{l} mean ± sd")).collect();
    format!(
        "\nMean ± sample standard deviation over the {} runs with a Stage-2 column{}:\n\n{}",
        with2.len(),
        if differs {
            ""
        } else {
            " (their Stage-1 values are the same)"
        },
        rows_table(&heads, |row, i| {
            let (m, sd) = mean_sd(&over(labels[i], row))?;
            Some(format!("{} ± {}", cell(row, m), cell(row, sd)))
        })
    )
}

/// A config key's value from the config text ("a.b" → table a, key b).
fn config_value(config: &toml::Table, key: &str) -> String {
    let mut at: Option<&toml::Value> = None;
    for (i, part) in key.split('.').enumerate() {
        at = if i == 0 {
            config.get(part)
        } else {
            at.and_then(|v| v.get(part))
        };
    }
    match at {
        Some(toml::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "default".into(),
    }
}

/// What each run was made with.
pub fn runs_section(runs: &[Run]) -> String {
    let mut s = String::new();
    for run in runs {
        s.push_str(&format!(
            "\n### {}\n\n- folder: `{}`\n",
            run.name,
            run.dir.display()
        ));
        // The config that made the last stage: Stage 2's keys live there.
        let latest = STAGES.iter().rev().find_map(|st| run.stages.get(st));
        let path = latest.and_then(|st| st.config_path.clone());
        let text = latest
            .and_then(|st| st.config.clone())
            .or_else(|| run.eval.as_ref().and_then(|e| e.config.clone()));
        let keys = match text.as_deref().map(str::parse::<toml::Table>) {
            Some(Ok(t)) => KEYS
                .iter()
                .map(|k| format!("`{k}` = {}", config_value(&t, k)))
                .collect::<Vec<_>>()
                .join(", "),
            Some(Err(e)) => format!("config text unreadable ({})", e.message()),
            None => "no config text recorded".into(),
        };
        s.push_str(&format!(
            "- config: `{}`: {keys}\n",
            path.as_deref().unwrap_or("unknown path")
        ));
        let ranks: Vec<String> = run
            .stages
            .iter()
            .map(|(st, r)| {
                let n = r.ranks.map_or("?".into(), |n| n.to_string());
                format!("{st} {n}")
            })
            .collect();
        if !ranks.is_empty() {
            s.push_str(&format!("- ranks: {}\n", ranks.join(", ")));
        }
        s.push_str(&format!("- commit: {}\n", commits(run)));
    }
    s
}

/// The `commit` attributes of the run's files: one value, or each with its files
/// when they differ; "unknown" when none has one.
fn commits(run: &Run) -> String {
    let mut found: Vec<(String, Vec<&str>)> = Vec::new();
    let files = run
        .stages
        .iter()
        .map(|(st, r)| (*st, r.commit.as_ref()))
        .chain(run.eval.iter().map(|e| ("eval", e.commit.as_ref())));
    for (file, commit) in files {
        let Some(c) = commit else { continue };
        match found.iter_mut().find(|(k, _)| k == c) {
            Some((_, fs)) => fs.push(file),
            None => found.push((c.clone(), vec![file])),
        }
    }
    match found.len() {
        0 => "unknown".into(),
        1 => found[0].0.clone(),
        _ => found
            .iter()
            .map(|(c, fs)| format!("{c} ({})", fs.join(", ")))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::eval_file::Eval;
    use crate::report::load::StageRun;
    use std::collections::BTreeMap;

    fn run(name: &str, stage1: f64, stage2: f64, commit: Option<&str>) -> Run {
        let col = |v: f64| ROWS.iter().map(|r| (r.to_string(), v)).collect();
        let columns = BTreeMap::from([(STAGE1.into(), col(stage1)), (STAGE2.into(), col(stage2))]);
        Run {
            name: name.into(),
            dir: name.into(),
            stages: BTreeMap::new(),
            eval: Some(Eval {
                columns,
                target: None,
                config: Some("[run]\nseed = 7\n[zo]\nestimator = \"central\"\nmu = 0.01\n".into()),
                commit: commit.map(String::from),
            }),
            gradcheck: None,
        }
    }

    #[test]
    fn mean_and_sample_sd() {
        assert_eq!(mean_sd(&[1.0, 2.0, 3.0]), Some((2.0, 1.0)));
        assert_eq!(mean_sd(&[1.0]), None);
    }

    #[test]
    fn stage1_gets_a_spread_only_when_it_differs_between_runs() {
        let shared = [run("a", 1.0, 2.0, None), run("b", 1.0, 4.0, None)];
        let t = table1(&shared).unwrap();
        assert!(t.contains("| stage2 mean ± sd |"), "{t}");
        assert!(t.contains("| pipeline_rmse | 3 ± 1.4142 |"), "{t}");
        let own = [run("a", 1.0, 2.0, None), run("b", 3.0, 4.0, None)];
        let t = table1(&own).unwrap();
        assert!(t.contains("| stage1 mean ± sd | stage2 mean ± sd |"), "{t}");
        assert!(
            t.contains("| a stage1 | a stage2 | b stage1 | b stage2 |"),
            "{t}"
        );
    }

    #[test]
    fn config_keys_commit_and_defaults() {
        let s = runs_section(&[run("a", 1.0, 2.0, Some("abc123"))]);
        assert!(
            s.contains(
                "`run.seed` = 7, `zo.mu` = 0.01, `zo.q` = default, `zo.estimator` = central"
            ),
            "{s}"
        );
        assert!(s.contains("- commit: abc123"), "{s}");
        let mut r = run("b", 1.0, 2.0, Some("abc123"));
        r.stages.insert(
            "zo",
            StageRun {
                metrics: Default::default(),
                ranks: Some(4),
                config: None,
                config_path: None,
                commit: Some("def456".into()),
            },
        );
        let s = runs_section(&[r]);
        assert!(s.contains("- ranks: zo 4"), "{s}");
        assert!(s.contains("- commit: def456 (zo); abc123 (eval)"), "{s}");
    }
}
