//! The paper's training as one command: the stages of `train.stages` (Stage 1
//! JT-VAE, Stage 1 MPNN, Stage 2 zeroth-order) in order, each in its own
//! sub-folder `<out_dir>/<stage>/` with its own checkpoint and metrics. A stage
//! whose checkpoint is complete and was made with the same settings is skipped;
//! `--resume` continues the first stage that is not complete (and starts it when
//! it has no checkpoint yet but an earlier stage is complete: a job chain that
//! stopped between two stages). A stop (`--time-limit`, a signal) between or
//! inside stages ends the pipeline with [`Outcome::Stopped`]. Stage 2's key also
//! holds the digests of the Stage-1 checkpoints it starts from: after they change,
//! it is neither skipped as done nor resumed. (The model chain
//! itself is `crate::pipeline`.)
use super::stop::Outcome;
use super::RunOptions;
use crate::config::{Config, Stage, INPUTS};
use crate::dist::Dist;
use crate::io::checkpoint::Checkpoint;

/// What to do with one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Fresh = 0,
    Resume = 1,
    Skip = 2,
}

/// Decides on rank 0 (which reads the checkpoint), shared with every rank.
/// `after_complete`: an earlier stage of this invocation was complete (skipped).
fn plan(
    sc: &Config,
    stage: Stage,
    (resume, limit): (bool, Option<usize>),
    after_complete: bool,
    dist: &Dist,
) -> anyhow::Result<Plan> {
    let mut code = 0u64;
    let mut err = None;
    if dist.is_root() {
        let (p, e) = decide(sc, stage, (resume, limit), after_complete);
        err = e;
        code = p as u64 + if err.is_some() { 10 } else { 0 };
    }
    let code = dist.broadcast_u64(code);
    if code >= 10 {
        anyhow::bail!(
            "{}",
            err.unwrap_or_else(|| "--resume: no checkpoint on rank 0".into())
        );
    }
    Ok(match code {
        1 => Plan::Resume,
        2 => Plan::Skip,
        _ => Plan::Fresh,
    })
}

/// `plan`'s decision on rank 0, from the stage's checkpoint: the plan and, for a
/// `--resume` that cannot be honoured, the error.
fn decide(
    sc: &Config,
    stage: Stage,
    (resume, limit): (bool, Option<usize>),
    after_complete: bool,
) -> (Plan, Option<String>) {
    let ck = sc.run.out_dir.join("checkpoint.h5");
    let mut err = None;
    let prev = crate::io::checkpoint::previous_path(&ck);
    let p = if ck.is_file() || prev.is_file() {
        // A damaged or missing checkpoint with a readable previous one: decide on
        // that one (`--resume` then reads it, saying so).
        let head = Checkpoint::head(&ck)
            .map_err(anyhow::Error::from)
            .or_else(|e| {
                Checkpoint::head(&prev).map_err(|_| e).inspect(|_| {
                    log::warn!(
                        "stage {}: {} cannot be used; deciding on the previous checkpoint {}",
                        stage.name(),
                        ck.display(),
                        prev.display()
                    )
                })
            });
        match head {
            Ok(h) if h.complete && h.stage_key == sc.stage_key(stage) => {
                log::info!(
                    "stage {}: complete at step {} in {} (same settings): skipped",
                    stage.name(),
                    h.step,
                    ck.display()
                );
                Plan::Skip
            }
            Ok(h)
                if h.stage_key == sc.stage_key(stage)
                    && limit.is_some_and(|l| h.step >= l as u64) =>
            {
                log::info!(
                        "stage {}: at step {} in {} (same settings), the --max-steps limit: skipped (not complete; --resume continues it)",
                        stage.name(),
                        h.step,
                        ck.display()
                    );
                Plan::Skip
            }
            Ok(h) if resume && h.stage_key == sc.stage_key(stage) => Plan::Resume,
            Ok(h) if resume && inputs_changed(&h.stage_key, &sc.stage_key(stage)) => {
                err = Some(format!(
                    "--resume: {} was started from other Stage-1 checkpoints than {} and {} \
                         hold now (they changed since); train Stage 2 afresh without --resume",
                    ck.display(),
                    sc.stage_checkpoint(Stage::Jtvae).display(),
                    sc.stage_checkpoint(Stage::Mpnn).display()
                ));
                Plan::Fresh
            }
            Ok(h) if resume => {
                // --resume never starts a stage over: name what differs.
                err = Some(format!(
                    "--resume: {} was made with other settings than {} gives now:\n{}\n\
                         Train the stage afresh without --resume (its checkpoint is replaced), \
                         or restore those settings",
                    ck.display(),
                    sc.path.display(),
                    key_differences(&h.stage_key, &sc.stage_key(stage)).join("\n")
                ));
                Plan::Fresh
            }
            Ok(h) => {
                let why = if inputs_changed(&h.stage_key, &sc.stage_key(stage)) {
                    "was started from Stage-1 checkpoints that have changed since"
                } else if h.stage_key != sc.stage_key(stage) {
                    "was made with other settings"
                } else {
                    "is not complete (use --resume to continue it)"
                };
                log::warn!(
                    "stage {}: {} {why}: training the stage from the start",
                    stage.name(),
                    ck.display()
                );
                Plan::Fresh
            }
            Err(e) if resume => {
                err = Some(format!("--resume: unreadable checkpoint: {e:#}"));
                Plan::Fresh
            }
            Err(e) => {
                log::warn!(
                    "stage {}: unreadable checkpoint ({e:#}): training the stage from the start",
                    stage.name()
                );
                Plan::Fresh
            }
        }
    } else if resume && after_complete {
        log::info!(
            "stage {}: no checkpoint yet, the stages before it are complete: --resume starts it",
            stage.name()
        );
        Plan::Fresh
    } else if resume {
        err = Some(format!("--resume: no checkpoint at {}", ck.display()));
        Plan::Fresh
    } else {
        Plan::Fresh
    };
    (p, err)
}

/// The Stage-1 checkpoints Stage 2 starts from, by contents: `jtvae=<sha256 prefix>
/// mpnn=<…>` (`missing` for a file not there: loading it fails later, saying so).
fn stage1_digests(sc: &Config) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for st in [Stage::Jtvae, Stage::Mpnn] {
        let path = sc.stage_checkpoint(st);
        let digest = if path.is_file() {
            let hex = crate::data::provenance::file_sha256(&path)?;
            format!("sha256:{}", &hex[..16])
        } else {
            "missing".into()
        };
        parts.push(format!("{}={digest}", st.name()));
    }
    Ok(parts.join(" "))
}

/// The settings two stage keys disagree on, one line each ("  epochs: 3 when
/// trained, 5 now"): the keys are compared field by field (`name=value` and
/// `name: value` items of their `|` parts), so a change is named, not only seen.
fn key_differences(stored: &str, current: &str) -> Vec<String> {
    let (a, b) = (key_fields(stored), key_fields(current));
    let mut out = Vec::new();
    for (name, old) in &a {
        match b.iter().find(|(n, _)| n == name) {
            Some((_, new)) if new == old => {}
            Some((_, new)) => out.push(format!("  {name}: {old} when trained, {new} now")),
            None => out.push(format!("  {name}: {old} when trained, not set now")),
        }
    }
    for (name, new) in &b {
        if !a.iter().any(|(n, _)| n == name) {
            out.push(format!("  {name}: not set when trained, {new} now"));
        }
    }
    if out.is_empty() && stored != current {
        out.push(format!("  stage key: {stored}\n  now:       {current}"));
    }
    out
}

/// The (name, value) items of a stage key, in order; the fields of a struct's
/// Debug text are named after it (e.g. `JtvaeConfig.beta`).
fn key_fields(key: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in key.split('|') {
        let (owner, body) = match part.split_once(" { ") {
            Some((o, b)) => (
                o.trim().trim_start_matches("Some(").to_string(),
                b.trim_end_matches(')')
                    .trim_end()
                    .trim_end_matches('}')
                    .trim(),
            ),
            None => (String::new(), part),
        };
        for item in split_top_level(body) {
            let pair = item
                .split_once(": ")
                .or_else(|| item.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()));
            let Some((k, v)) = pair else { continue };
            let name = if owner.is_empty() {
                k
            } else {
                format!("{owner}.{k}")
            };
            out.push((name, v));
        }
    }
    out
}

/// Items of `s` split at ", " (Debug text) or at spaces between `k=v` words, not
/// inside brackets, braces or quotes.
fn split_top_level(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quoted) = (Vec::new(), String::new(), 0i32, false);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '(' | '[' | '{' if !quoted => depth += 1,
            ')' | ']' | '}' if !quoted => depth -= 1,
            _ => {}
        }
        let sep = !quoted
            && depth == 0
            && ((c == ',' && chars.peek() == Some(&' ')) || (c == ' ' && cur.contains('=')));
        if sep {
            if c == ',' {
                chars.next();
            }
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// Whether two stage keys agree on the settings but not on the stage's input files.
fn inputs_changed(stored: &str, current: &str) -> bool {
    let split = |k: &str| {
        k.split_once(INPUTS)
            .map_or((k.to_string(), String::new()), |(a, b)| {
                (a.into(), b.into())
            })
    };
    let (a, ai) = split(stored);
    let (b, bi) = split(current);
    a == b && !ai.is_empty() && ai != bi
}

/// Checks on rank 0 (which writes the stage's files) that the stage folder takes
/// files, before any work; every rank stops with the same error.
fn writable(sc: &Config, dist: &Dist) -> anyhow::Result<()> {
    let mut err = None;
    if dist.is_root() {
        err = crate::io::h5::check_writable(&sc.run.out_dir).err();
    }
    if dist.broadcast_u64(u64::from(err.is_some())) != 0 {
        return Err(err.map_or_else(
            || anyhow::anyhow!("the stage folder is not writable on rank 0"),
            anyhow::Error::from,
        ));
    }
    Ok(())
}

/// Runs `only` or every stage of `cfg.stages()`.
pub fn run(
    cfg: &Config,
    dist: &Dist,
    only: Option<Stage>,
    opts: &RunOptions,
) -> anyhow::Result<Outcome> {
    let stages = only.map_or_else(|| cfg.stages(), |s| vec![s]);
    let mut resume = opts.resume;
    let mut earlier_complete = false;
    // Whether this invocation trained a stage (a stop before the next one is then
    // progress; before the first it would not be).
    let mut trained = false;
    for stage in stages {
        let mut sc = cfg.for_stage(stage);
        if stage == Stage::Zo && dist.is_root() {
            sc.stage_inputs = stage1_digests(&sc)?;
        }
        let p = plan(&sc, stage, (resume, opts.max_steps), earlier_complete, dist)?;
        if p == Plan::Skip {
            earlier_complete = true;
            continue;
        }
        if trained && opts.stop.active() && opts.stop.wanted_by_any(dist, std::time::Duration::ZERO)
        {
            if dist.is_root() {
                log::warn!(
                    "stopping before stage {}: {}; run the same command with --resume to continue",
                    stage.name(),
                    opts.stop.reason()
                );
            }
            return Ok(Outcome::Stopped);
        }
        writable(&sc, dist)?;
        // --resume applies to the first stage that still has work.
        resume = false;
        let o = RunOptions {
            resume: p == Plan::Resume,
            ..opts.clone()
        };
        if dist.is_root() {
            log::info!(
                "stage {}: {} in {}",
                stage.name(),
                if o.resume { "resuming" } else { "training" },
                sc.run.out_dir.display()
            );
        }
        let outcome = match stage {
            Stage::Jtvae => super::jtvae_stage::run(&sc, dist, &o),
            Stage::Mpnn => super::mpnn_stage::run(&sc, dist, &o),
            Stage::Zo => super::zo_stage::run(&sc, dist, &o),
        }
        .map_err(|e| e.context(format!("stage {}", stage.name())))?;
        if outcome == Outcome::Stopped {
            return Ok(outcome);
        }
        earlier_complete = true;
        trained = true;
    }
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::inputs_changed;

    #[test]
    fn key_differences_name_each_changed_setting() {
        use super::key_differences;
        let a = "jtvae|csv=d.csv n_train=10|epochs=3 batch=16 lr=0.001 clip=5 max_steps=None seed=7|Some(JtvaeConfig { vocab_csv: Some(\"a, b.csv\"), hidden: 32, beta: 1.0 })";
        let b = "jtvae|csv=d.csv n_train=10|epochs=5 batch=16 lr=0.001 clip=5 max_steps=None seed=7 micro_batch=4|Some(JtvaeConfig { vocab_csv: Some(\"a, b.csv\"), hidden: 64, beta: 1.0 })";
        let d = key_differences(a, b);
        assert_eq!(
            d,
            [
                "  epochs: 3 when trained, 5 now",
                "  JtvaeConfig.hidden: 32 when trained, 64 now",
                "  micro_batch: not set when trained, 4 now",
            ]
        );
        assert!(key_differences(a, a).is_empty());
    }

    #[test]
    fn only_a_change_of_the_input_files_counts() {
        let k = |inputs: &str| format!("zo|data|train|settings|inputs {inputs}");
        assert!(inputs_changed(&k("jtvae=a mpnn=b"), &k("jtvae=a mpnn=c")));
        assert!(!inputs_changed(&k("jtvae=a mpnn=b"), &k("jtvae=a mpnn=b")));
        // Other settings, or a key from before the inputs were recorded: not this case.
        assert!(!inputs_changed("zo|other|inputs jtvae=a", &k("jtvae=b")));
        assert!(!inputs_changed("zo|data|train|settings", &k("jtvae=a")));
    }
}
