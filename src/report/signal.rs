//! The signal test of `gradcheck.h5` (`/signal`, read by `io::signal_file`) in a
//! report: a figure of the noise-corrected cosine of a q-direction estimate with
//! the smoothed gradient against q (a panel per estimator, a line per µσ, the
//! smooth-function theory dashed), and the descent test as a table in report.md.
use super::figures::{series, Figure};
use super::load::Run;
use super::plots::{Look, Panel};
use crate::io::signal_file::{self, Signal};

/// The cosine figure of one run's signal test.
pub fn figure(run: &Run, s: &Signal) -> Option<Figure> {
    let mut estimators: Vec<&str> = Vec::new();
    let mut radii: Vec<f64> = Vec::new();
    for r in &s.rows {
        if !estimators.contains(&r.estimator.as_str()) {
            estimators.push(&r.estimator);
        }
        if !radii.contains(&r.radius) {
            radii.push(r.radius);
        }
    }
    radii.sort_by(f64::total_cmp);
    let panels = estimators
        .iter()
        .map(|est| {
            let mut p = Panel::new(est, "q (directions)", "cos(ĝ_q, g), noise-corrected");
            p.log_x = true;
            let mine = |radius: f64| {
                s.rows
                    .iter()
                    .filter(move |r| r.estimator == *est && r.radius == radius)
            };
            for (i, &radius) in radii.iter().enumerate() {
                let points: Vec<_> = mine(radius).map(|r| (r.q, r.full_cosine)).collect();
                if points.is_empty() {
                    continue; // score's τ are not the others' µσ
                }
                let name = if *est == "score" { "τ" } else { "µσ" };
                p.series.push(series(
                    &format!("{name} = {radius}"),
                    points,
                    Look::Marked,
                    i,
                ));
            }
            let theory = radii
                .first()
                .map(|&r0| mine(r0).map(|r| (r.q, r.theory)).collect())
                .unwrap_or_default();
            p.series.push(series(
                "smooth f (theory)",
                theory,
                Look::Dashed,
                radii.len(),
            ));
            p
        })
        .collect();
    Figure::new(
        format!("{}_gradcheck_signal.png", run.name),
        format!(
            "{}: signal test, √(2c̄/(1+c̄)) vs q, {} molecules (dashed: smooth f)",
            run.name, s.molecules
        ),
        "gradcheck: the signal test, noise-corrected cosine of a q-direction estimate with the smoothed gradient vs q, per estimator and µσ",
        panels,
    )
}

/// The report.md section: each run's descent test (and a pointer to the figure).
pub fn section(runs: &[Run]) -> Option<String> {
    let with: Vec<(&Run, &Signal)> = runs
        .iter()
        .filter_map(|r| Some((r, r.gradcheck.as_ref()?.signal.as_ref()?)))
        .collect();
    if with.is_empty() {
        return None;
    }
    let mut out = String::from("\n## Signal test on the real pipeline (`gradcheck.h5`)\n");
    for (run, s) in with {
        out.push_str(&format!(
            "\n{}: {} held-out molecules, {} split-half rows (plot `{}_gradcheck_signal.png`).\n\n",
            run.name,
            s.molecules,
            s.rows.len(),
            run.name
        ));
        let arms: Vec<_> = s.descent.iter().chain(&s.placebo).collect();
        if arms.is_empty() {
            out.push_str("No descent test.\n");
        } else {
            out.push_str(&signal_file::descent_markdown(&arms));
        }
    }
    Some(out)
}
