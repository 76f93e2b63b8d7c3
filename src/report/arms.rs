//! Which arm, seed and data set a run of `zo-hpc report` belongs to, and the runs
//! grouped so: the data set is `eval.h5`'s target column (else the config's
//! `data.target_column`); the arm is the config's `run.arm`, else the run folder's
//! name without a trailing seed (`_s42`, `-s42`, `_seed42`, `seed42`); the seed is
//! the config's `run.seed` (42 when the recorded config has none), else the number
//! of that trailing seed. The config is the one Stage 2 recorded in
//! `zo/metrics.h5`, else the one `eval.h5` recorded.
use super::load::Run;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::path::Path;

/// The seed a config without `run.seed` runs with (`config::data`'s default).
const DEFAULT_SEED: u64 = 42;

/// A run's place in the experiment.
pub struct Label {
    pub dataset: String,
    pub arm: String,
    pub seed: Option<u64>,
}

/// The runs of one data set: per arm (in the order of first appearance) the runs
/// by seed; runs without a seed and second runs of an (arm, seed) set apart.
pub struct Group<'r> {
    pub dataset: String,
    pub arms: Vec<(String, BTreeMap<u64, &'r Run>)>,
    pub unseeded: Vec<(String, &'r Run)>,
    pub duplicates: Vec<(String, u64, &'r Run)>,
}

impl<'r> Group<'r> {
    pub fn arm(&self, name: &str) -> Option<&BTreeMap<u64, &'r Run>> {
        self.arms.iter().find(|(a, _)| a == name).map(|(_, r)| r)
    }

    /// The arm `arm` is compared with: for `A_SUFFIX`, `CONTROL_SUFFIX` when the
    /// data set has that arm (the longest such suffix; `es_frz` → `off_frz`), else
    /// `control`; None for the control itself or when there is no control run.
    pub fn control_of(&self, arm: &str, control: &str) -> Option<String> {
        if arm == control {
            return None;
        }
        let suffixed = arm
            .char_indices()
            .filter(|&(_, c)| c == '_')
            .map(|(i, _)| format!("{control}{}", &arm[i..]))
            .find(|c| c != arm && self.arm(c).is_some());
        suffixed.or_else(|| self.arm(control).map(|_| control.to_string()))
    }
}

/// The config text that made the run's Stage 2, parsed.
fn config(run: &Run) -> Option<toml::Table> {
    let text = run
        .stages
        .get("zo")
        .and_then(|s| s.config.clone())
        .or_else(|| run.eval.as_ref().and_then(|e| e.config.clone()))?;
    text.parse().ok()
}

fn get<'t>(cfg: &'t toml::Table, table: &str, key: &str) -> Option<&'t toml::Value> {
    cfg.get(table)?.get(key)
}

/// `name` without a trailing seed, and that seed: `es_frz_s42` → (`es_frz`, 42),
/// `hof_seed43` → (`hof`, 43), `fwd64` → (`fwd64`, None). A name that is only a
/// seed stays whole.
pub fn split_seed(name: &str) -> (String, Option<u64>) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return (name.into(), None);
    }
    let (head, num) = name.split_at(name.len() - digits);
    let stem = if let Some(h) = head.strip_suffix("seed") {
        h
    } else if let Some(h) = head.strip_suffix("_s").or_else(|| head.strip_suffix("-s")) {
        h
    } else {
        return (name.into(), None);
    };
    let stem = stem.trim_end_matches(['_', '-']);
    match (stem.is_empty(), num.parse()) {
        (false, Ok(seed)) => (stem.into(), Some(seed)),
        _ => (name.into(), None),
    }
}

/// The run folder's own name (not the report's unique one).
fn folder_name(dir: &Path) -> String {
    let full = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    full.file_name()
        .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned())
}

/// The data set, arm and seed of a run.
pub fn label(run: &Run) -> Label {
    let cfg = config(run);
    let (stem, name_seed) = split_seed(&folder_name(&run.dir));
    let arm = cfg
        .as_ref()
        .and_then(|c| get(c, "run", "arm"))
        .and_then(toml::Value::as_str)
        .map_or(stem, String::from);
    let seed = match &cfg {
        Some(c) => Some(
            get(c, "run", "seed")
                .and_then(toml::Value::as_integer)
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(DEFAULT_SEED),
        ),
        None => name_seed,
    };
    let dataset = run
        .eval
        .as_ref()
        .and_then(|e| e.target.clone())
        .or_else(|| {
            let c = cfg.as_ref()?;
            get(c, "data", "target_column")?.as_str().map(String::from)
        })
        .unwrap_or_else(|| "unknown target".into());
    Label { dataset, arm, seed }
}

/// The runs that pass `keep`, grouped by data set (in the order of first appearance).
pub fn groups<'r>(runs: &'r [Run], keep: impl Fn(&Run) -> bool) -> Vec<Group<'r>> {
    let mut out: Vec<Group<'r>> = Vec::new();
    for run in runs.iter().filter(|r| keep(r)) {
        let l = label(run);
        let at = match out.iter().position(|g| g.dataset == l.dataset) {
            Some(i) => i,
            None => {
                out.push(Group {
                    dataset: l.dataset.clone(),
                    arms: Vec::new(),
                    unseeded: Vec::new(),
                    duplicates: Vec::new(),
                });
                out.len() - 1
            }
        };
        let g = &mut out[at];
        let Some(seed) = l.seed else {
            g.unseeded.push((l.arm, run));
            continue;
        };
        let arm = match g.arms.iter().position(|(a, _)| *a == l.arm) {
            Some(i) => &mut g.arms[i].1,
            None => {
                g.arms.push((l.arm.clone(), BTreeMap::new()));
                &mut g.arms.last_mut().expect("just pushed").1
            }
        };
        match arm.entry(seed) {
            Entry::Vacant(e) => {
                e.insert(run);
            }
            Entry::Occupied(_) => g.duplicates.push((l.arm, seed, run)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::eval_file::Eval;

    fn run(dir: &str, config: Option<&str>, target: Option<&str>) -> Run {
        Run {
            name: dir.into(),
            dir: format!("/nonexistent/{dir}").into(),
            stages: BTreeMap::new(),
            eval: Some(Eval {
                columns: BTreeMap::new(),
                target: target.map(String::from),
                config: config.map(String::from),
                commit: None,
            }),
            gradcheck: None,
        }
    }

    #[test]
    fn a_trailing_seed_is_split_off_the_folder_name() {
        let s = |n: &str| split_seed(n);
        assert_eq!(s("es_frz_s42"), ("es_frz".into(), Some(42)));
        assert_eq!(s("hof_seed43"), ("hof".into(), Some(43)));
        assert_eq!(s("paper-s7"), ("paper".into(), Some(7)));
        assert_eq!(s("runseed5"), ("run".into(), Some(5)));
        assert_eq!(s("fwd64"), ("fwd64".into(), None));
        assert_eq!(s("hof"), ("hof".into(), None));
        assert_eq!(s("seed42"), ("seed42".into(), None));
        assert_eq!(s("q4s1"), ("q4s1".into(), None));
    }

    #[test]
    fn arm_and_seed_come_from_the_config_first() {
        let labelled = run(
            "whatever_s1",
            Some("[run]\nseed = 44\narm = \"es\"\n"),
            Some("hof"),
        );
        let l = label(&labelled);
        assert_eq!(
            (l.dataset.as_str(), l.arm.as_str(), l.seed),
            ("hof", "es", Some(44))
        );
        // no arm in the config: the folder name; no seed there: the default 42
        let l = label(&run(
            "off_s43",
            Some("[data]\ntarget_column = \"y\"\n"),
            None,
        ));
        assert_eq!(
            (l.dataset.as_str(), l.arm.as_str(), l.seed),
            ("y", "off", Some(42))
        );
        // no config text at all: the folder's seed
        let l = label(&run("off_s43", None, None));
        assert_eq!((l.arm.as_str(), l.seed), ("off", Some(43)));
        assert!(label(&run("off", None, None)).seed.is_none());
    }

    #[test]
    fn groups_by_data_set_arm_and_seed_and_finds_each_arms_control() {
        let c = |seed: u64| format!("[run]\nseed = {seed}\n");
        let runs = [
            run("off_s1", Some(&c(1)), Some("a")),
            run("es_s1", Some(&c(1)), Some("a")),
            run("es_frz_s1", Some(&c(1)), Some("a")),
            run("off_frz_s1", Some(&c(1)), Some("a")),
            run(
                "es_again_s1",
                Some("[run]\nseed = 1\narm = \"es\"\n"),
                Some("a"),
            ),
            run("off", None, Some("a")),
            run("off_s1", Some(&c(1)), Some("b")),
        ];
        let g = groups(&runs, |_| true);
        assert_eq!(g.len(), 2);
        let a = &g[0];
        let names: Vec<&str> = a.arms.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["off", "es", "es_frz", "off_frz"]);
        assert_eq!(a.duplicates.len(), 1);
        assert_eq!(a.unseeded.len(), 1);
        assert_eq!(a.control_of("es", "off").as_deref(), Some("off"));
        assert_eq!(a.control_of("es_frz", "off").as_deref(), Some("off_frz"));
        assert_eq!(a.control_of("off_frz", "off").as_deref(), Some("off"));
        assert_eq!(a.control_of("off", "off"), None);
        assert_eq!(a.control_of("es", "none"), None);
        assert_eq!(g[1].dataset, "b");
    }
}
