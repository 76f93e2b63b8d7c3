//! The signal test's results (`zo-hpc gradcheck`'s part on the real pipeline,
//! computed by `train::signal`): the rows, their group in `gradcheck.h5`, its
//! reader (for `zo-hpc report`) and the Markdown tables, so that the writer, the
//! printout and the report share one definition.
//!
//! Layout (`<out_dir>/gradcheck.h5`):
//! ```text
//! /signal                attrs: dim, molecules, base_failed, base_loss, wall_s
//!   /split_half          one row per (estimator, µσ, q), columns:
//!       estimator (strings), radius, q, queries, molecules, cos_mean, cos_ci,
//!       zero_share, changed_share, failed_share, half_cosine, full_cosine, theory
//!   /descent             attrs (absent when the test did not run): estimator (string),
//!       radius, q, step, random, molecules, wins, losses, ties, excluded, p_value,
//!       grad_mean, grad_ci, random_mean, random_ci, diff_mean, diff_ci
//!   /placebo             the same attrs for the control arm (estimator "placebo")
//! ```
use super::h5;
use hdf5::{File, Group};

/// Split-half agreement at one (estimator, radius, q).
#[derive(Debug, Clone, PartialEq)]
pub struct SplitRow {
    pub estimator: String,
    /// µσ (the temperature τ for score).
    pub radius: f64,
    /// Directions of the full estimate (q/2 per half).
    pub q: f64,
    /// Perturbed queries per molecule for both halves together.
    pub queries: f64,
    /// Molecules whose base decoded and featurized.
    pub molecules: f64,
    /// Mean over molecules of cos(ĝ_A, ĝ_B), an all-zero half counting 0.
    pub cos_mean: f64,
    /// Half-width of its 95% interval (Student t over molecules).
    pub cos_ci: f64,
    /// Share of molecules whose full estimate is all-zero (no query changed the loss).
    pub zero_share: f64,
    /// Share of queries whose loss differs from the base's (decoded to another molecule).
    pub changed_share: f64,
    /// Share of queries that failed (decode or black box).
    pub failed_share: f64,
    /// Noise-corrected cos(ĝ_half, g) = √c̄.
    pub half_cosine: f64,
    /// Noise-corrected cos(ĝ_q, g) = √(2c̄/(1+c̄)) (Spearman–Brown).
    pub full_cosine: f64,
    /// The estimator's cosine on a smooth function at small µ (forward: √(q/(q+d+1))).
    pub theory: f64,
}

/// The descent test at one (estimator, radius, q, step).
#[derive(Debug, Clone, PartialEq)]
pub struct Descent {
    pub estimator: String,
    pub radius: f64,
    pub q: f64,
    /// Step length t: z − t·ĝ/‖ĝ‖ and z + t·v_k (v_k random unit directions).
    pub step: f64,
    /// Random directions per molecule.
    pub random: f64,
    pub molecules: f64,
    /// Δ along −ĝ below the median Δ of the random directions (wins), above it
    /// (losses), equal (ties: also every molecule with ĝ = 0).
    pub wins: f64,
    pub losses: f64,
    pub ties: f64,
    /// Molecules left out: the step along −ĝ, or every random step, failed.
    pub excluded: f64,
    /// Two-sided exact sign test over wins and losses.
    pub p_value: f64,
    /// Mean Δ = f(z − t·ĝ/‖ĝ‖) − f(z) over molecules with ĝ ≠ 0, and its 95% half-width.
    pub grad_mean: f64,
    pub grad_ci: f64,
    /// Mean over the same molecules of the random directions' mean Δ.
    pub random_mean: f64,
    pub random_ci: f64,
    /// Mean of the paired difference (−ĝ minus random).
    pub diff_mean: f64,
    pub diff_ci: f64,
}

/// The estimator name of the descent test's placebo arm: a random unit direction
/// (key slot `zo::signal::PLACEBO_SLOT`) in place of −ĝ/‖ĝ‖, the same test
/// otherwise. Its sign test shows the test's own behaviour when there is no signal.
pub const PLACEBO: &str = "placebo";

/// Everything the signal test found.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// Latent width d.
    pub dim: f64,
    /// Held-out molecules tried, and those whose base decode or featurization failed.
    pub molecules: f64,
    pub base_failed: f64,
    /// Mean per-molecule loss f_i(z_i) = (ŷ − y)² at the encoder means (normalized units).
    pub base_loss: f64,
    pub wall_s: f64,
    pub rows: Vec<SplitRow>,
    pub descent: Option<Descent>,
    /// The same test with a random direction in place of −ĝ (the control arm).
    pub placebo: Option<Descent>,
}

impl SplitRow {
    /// The numeric columns of `/signal/split_half`, in `values` order.
    pub const COLUMNS: [&'static str; 12] = [
        "radius",
        "q",
        "queries",
        "molecules",
        "cos_mean",
        "cos_ci",
        "zero_share",
        "changed_share",
        "failed_share",
        "half_cosine",
        "full_cosine",
        "theory",
    ];

    pub fn values(&self) -> [f64; 12] {
        [
            self.radius,
            self.q,
            self.queries,
            self.molecules,
            self.cos_mean,
            self.cos_ci,
            self.zero_share,
            self.changed_share,
            self.failed_share,
            self.half_cosine,
            self.full_cosine,
            self.theory,
        ]
    }

    pub fn from_values(estimator: String, v: [f64; 12]) -> SplitRow {
        SplitRow {
            estimator,
            radius: v[0],
            q: v[1],
            queries: v[2],
            molecules: v[3],
            cos_mean: v[4],
            cos_ci: v[5],
            zero_share: v[6],
            changed_share: v[7],
            failed_share: v[8],
            half_cosine: v[9],
            full_cosine: v[10],
            theory: v[11],
        }
    }
}

impl Descent {
    /// The numeric attributes of `/signal/descent`, in `values` order.
    pub const ATTRS: [&'static str; 16] = [
        "radius",
        "q",
        "step",
        "random",
        "molecules",
        "wins",
        "losses",
        "ties",
        "excluded",
        "p_value",
        "grad_mean",
        "grad_ci",
        "random_mean",
        "random_ci",
        "diff_mean",
        "diff_ci",
    ];

    pub fn values(&self) -> [f64; 16] {
        [
            self.radius,
            self.q,
            self.step,
            self.random,
            self.molecules,
            self.wins,
            self.losses,
            self.ties,
            self.excluded,
            self.p_value,
            self.grad_mean,
            self.grad_ci,
            self.random_mean,
            self.random_ci,
            self.diff_mean,
            self.diff_ci,
        ]
    }

    pub fn from_values(estimator: String, v: [f64; 16]) -> Descent {
        Descent {
            estimator,
            radius: v[0],
            q: v[1],
            step: v[2],
            random: v[3],
            molecules: v[4],
            wins: v[5],
            losses: v[6],
            ties: v[7],
            excluded: v[8],
            p_value: v[9],
            grad_mean: v[10],
            grad_ci: v[11],
            random_mean: v[12],
            random_ci: v[13],
            diff_mean: v[14],
            diff_ci: v[15],
        }
    }
}

/// The attributes of `/signal` itself, in `Signal::head` order.
const HEAD: [&str; 5] = ["dim", "molecules", "base_failed", "base_loss", "wall_s"];

impl Signal {
    fn head(&self) -> [f64; 5] {
        [
            self.dim,
            self.molecules,
            self.base_failed,
            self.base_loss,
            self.wall_s,
        ]
    }
}

/// Writes `s` as the group `/signal` of `f`.
pub fn write(f: &File, s: &Signal) -> hdf5::Result<()> {
    let g = f.create_group("signal")?;
    for (name, v) in HEAD.iter().zip(s.head()) {
        h5::write_attr(&g, name, &v)?;
    }
    let t = g.create_group("split_half")?;
    let names: Vec<String> = s.rows.iter().map(|r| r.estimator.clone()).collect();
    h5::write_strings(&t, "estimator", &names)?;
    for (j, name) in SplitRow::COLUMNS.iter().enumerate() {
        let col: Vec<f64> = s.rows.iter().map(|r| r.values()[j]).collect();
        h5::write_vec(&t, name, &col)?;
    }
    for (name, d) in [("descent", &s.descent), ("placebo", &s.placebo)] {
        let Some(d) = d else { continue };
        let t = g.create_group(name)?;
        h5::write_str_attr(&t, "estimator", &d.estimator)?;
        for (name, v) in Descent::ATTRS.iter().zip(d.values()) {
            h5::write_attr(&t, name, &v)?;
        }
    }
    Ok(())
}

/// Reads `/signal` of a `gradcheck.h5`; None when the file has none (an older
/// file, or a run with `--no-signal` or without trained Stage-1 models).
pub fn read(f: &File) -> hdf5::Result<Option<Signal>> {
    if !f.link_exists("signal") {
        return Ok(None);
    }
    let g = f.group("signal")?;
    let mut head = [0.0; 5];
    for (v, name) in head.iter_mut().zip(HEAD) {
        *v = h5::read_attr(&g, name)?;
    }
    let t = g.group("split_half")?;
    let names = h5::read_strings(&t, "estimator")?;
    let cols = SplitRow::COLUMNS
        .iter()
        .map(|name| h5::read_vec::<f64>(&t, name))
        .collect::<hdf5::Result<Vec<_>>>()?;
    let rows = names
        .into_iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let mut v = [0.0; 12];
            for (x, col) in v.iter_mut().zip(&cols) {
                *x = *col.get(i)?;
            }
            Some(SplitRow::from_values(name, v))
        })
        .collect();
    Ok(Some(Signal {
        dim: head[0],
        molecules: head[1],
        base_failed: head[2],
        base_loss: head[3],
        wall_s: head[4],
        rows,
        descent: read_descent(&g, "descent")?,
        placebo: read_descent(&g, "placebo")?,
    }))
}

fn read_descent(g: &Group, name: &str) -> hdf5::Result<Option<Descent>> {
    if !g.link_exists(name) {
        return Ok(None);
    }
    let t = g.group(name)?;
    let mut v = [0.0; 16];
    for (x, name) in v.iter_mut().zip(Descent::ATTRS) {
        *x = h5::read_attr(&t, name)?;
    }
    Ok(Some(Descent::from_values(
        h5::read_str_attr(&t, "estimator")?,
        v,
    )))
}

/// "m ± h" (h omitted when not finite).
fn pm(m: f64, h: f64, digits: usize) -> String {
    if h.is_finite() {
        format!("{m:.digits$} ± {h:.digits$}")
    } else {
        format!("{m:.digits$}")
    }
}

/// The split-half table as Markdown.
pub fn split_half_markdown(s: &Signal) -> String {
    let mut out = format!(
        "| estimator | µσ (score: τ) | q | queries | molecules | split-half cos c̄ (95% CI) | all-zero | changed | failed | cos(half, g) = √c̄ | cos(full q, g) = √(2c̄/(1+c̄)) | smooth theory (d = {}) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        s.dim
    );
    for r in &s.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            r.estimator,
            r.radius,
            r.q,
            r.queries,
            r.molecules,
            pm(r.cos_mean, r.cos_ci, 3),
            r.zero_share,
            r.changed_share,
            r.failed_share,
            r.half_cosine,
            r.full_cosine,
            r.theory
        ));
    }
    out
}

/// The descent test and its placebo arm as a Markdown table.
pub fn descent_markdown(arms: &[&Descent]) -> String {
    let mut out = format!(
        "| direction | µσ (score: τ) | q | step t | molecules | wins / losses / ties vs the median of {} random | excluded | sign test p | mean Δ along it | mean Δ random | mean paired difference |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        arms.first().map_or(0.0, |d| d.random)
    );
    for d in arms {
        out.push_str(&descent_row(d));
    }
    out
}

fn descent_row(d: &Descent) -> String {
    let name = if d.estimator == PLACEBO {
        "placebo (a random direction)".to_string()
    } else {
        format!("−ĝ ({})", d.estimator)
    };
    format!(
        "| {} | {} | {} | {:.3} | {} | {} / {} / {} | {} | {:.3e} | {} | {} | {} |\n",
        name,
        d.radius,
        d.q,
        d.step,
        d.molecules,
        d.wins,
        d.losses,
        d.ties,
        d.excluded,
        d.p_value,
        pm(d.grad_mean, d.grad_ci, 4),
        pm(d.random_mean, d.random_ci, 4),
        pm(d.diff_mean, d.diff_ci, 4),
    )
}

/// Both tables with their headings, as `zo-hpc gradcheck` prints them.
pub fn markdown(s: &Signal) -> String {
    let mut out = format!(
        "\n## Signal test on the real pipeline: split-half agreement ({} held-out molecules, {} failed at the base; mean loss at the encoder means {:.4} normalized units², {:.0} s)\n\nf_i(z) = (MPNN(blackbox(decode(z))) − y_i)². Two estimates from disjoint halves of q directions (q/2 each); c̄ = mean over molecules of cos(ĝ_A, ĝ_B), an all-zero half counting 0. If ĝ = g + independent noise, E[ĝ_A·ĝ_B] = ‖g‖², so a half estimate has cos ≈ √c̄ with the smoothed gradient g and the full q-direction estimate cos ≈ √(2c̄/(1+c̄)) (Spearman–Brown), 0 when c̄ ≤ 0. Queries: perturbed points per molecule (both halves); all-zero: share of molecules whose full estimate is 0; changed: share of queries whose loss differs from the base's.\n\n",
        s.molecules, s.base_failed, s.base_loss, s.wall_s
    );
    out.push_str(&split_half_markdown(s));
    let arms: Vec<&Descent> = s.descent.iter().chain(&s.placebo).collect();
    if arms.is_empty() {
        out.push_str("\n(descent test not run: no molecule left)\n");
    } else {
        out.push_str("\n## Signal test: descent (Δ = f(z + t·v) − f(z), normalized units², v a unit direction; a win: Δ along v = −ĝ/‖ĝ‖ below the median Δ of the random unit directions, a tie when equal or ĝ = 0; two-sided exact sign test over wins and losses; means over molecules with ĝ ≠ 0, 95% t intervals; the placebo arm moves along one more random direction instead of −ĝ)\n\n");
        out.push_str(&descent_markdown(&arms));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let row = |e: &str, r: f64| {
            SplitRow::from_values(e.into(), std::array::from_fn(|j| r + j as f64))
        };
        let s = Signal {
            dim: 8.0,
            molecules: 3.0,
            base_failed: 1.0,
            base_loss: 0.5,
            wall_s: 2.0,
            rows: vec![row("forward", 0.1), row("central", 0.3)],
            descent: Some(Descent::from_values(
                "forward".into(),
                std::array::from_fn(|j| j as f64),
            )),
            placebo: Some(Descent::from_values(
                "placebo".into(),
                std::array::from_fn(|j| 2.0 * j as f64),
            )),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.h5");
        h5::write_atomically(&path, |f| write(f, &s)).unwrap();
        let back = read(&h5::open(&path).unwrap()).unwrap().unwrap();
        assert_eq!(back, s);
        let md = markdown(&s);
        assert!(md.contains("| forward | 0.1 | 1.1 |"), "{md}");
        assert!(md.contains("5 / 6 / 7"), "{md}");
        assert!(md.contains("| placebo (a random direction) |"), "{md}");
        let none = Signal {
            descent: None,
            placebo: None,
            rows: Vec::new(),
            ..s
        };
        h5::write_atomically(&path, |f| write(f, &none)).unwrap();
        assert_eq!(read(&h5::open(&path).unwrap()).unwrap().unwrap(), none);
    }
}
