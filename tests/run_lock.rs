//! The lock on the run folder through the real binary (issue 20, case 2): a second
//! writer into a folder in use is refused (every writing command, on one rank and
//! under mpirun, where both ranks fail together without a hang) and leaves the
//! folder untouched; the lock goes away when a run ends (done, failed or stopped by
//! its time limit); a crashed run's lock is taken over with a warning.
mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use zo_hpc::io::run_lock::{Holder, LOCK_FILE};

fn tiny() -> String {
    repo().join("tests/configs/tiny.toml").display().to_string()
}

/// A live process (killed when dropped) that "holds" the lock of `dir`.
struct FakeHolder(Child);

impl FakeHolder {
    fn hold(dir: &Path) -> FakeHolder {
        let child = Command::new("sleep").arg("120").spawn().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let h = Holder::of_process(child.id(), "zo-hpc train other.toml");
        std::fs::write(dir.join(LOCK_FILE), h.to_text()).unwrap();
        FakeHolder(child)
    }
}

impl Drop for FakeHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

/// Files of the lock (the lock, its temporary and take-over files) left in `dir`.
fn lock_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(LOCK_FILE))
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_refused(o: &Output, pid: u32, lock: &Path) {
    let err = stderr(o);
    assert!(!o.status.success(), "not refused:\n{}", text(o));
    assert!(
        err.contains(&format!("pid {pid} on host"))
            && err.contains("zo-hpc train other.toml")
            && err.contains(&format!("delete {}", lock.display())),
        "the error does not name the holder and the lock:\n{}",
        text(o)
    );
}

#[test]
fn every_writer_is_refused_by_a_live_holder_and_the_folder_stays_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let holder = FakeHolder::hold(&out);
    let before = snapshot(&out);
    let o = out.display().to_string();
    let pipeline = pipeline_tiny();
    let inside = out.join("ship").display().to_string();
    for args in [
        vec!["train", &tiny(), "--out-dir", &o],
        vec!["prepare", &pipeline, "--out-dir", &o],
        vec!["eval", &pipeline, "--out-dir", &o],
        vec!["gradcheck", &pipeline, "--out-dir", &o],
        vec!["export", &pipeline, "--out-dir", &o, "--to", &inside],
    ] {
        let r = zo(&args);
        assert_refused(&r, holder.0.id(), &out.join(LOCK_FILE));
        assert_eq!(snapshot(&out), before, "{args:?} changed the folder");
    }
}

#[test]
fn the_lock_is_released_when_a_run_ends_done_failed_or_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = out.display().to_string();
    // Stopped by its time limit (status 75), then resumed to the end.
    let r = train_config(&tiny(), &out, &["--time-limit", "0.001"]);
    assert_eq!(r.status.code(), Some(75), "{}", text(&r));
    assert_eq!(lock_files(&out), Vec::<String>::new());
    assert_ok(&train_config(&tiny(), &out, &["--resume"]));
    assert_eq!(lock_files(&out), Vec::<String>::new());
    // Failed after taking the lock (an MPNN-only config has nothing to eval).
    let r = zo(&["eval", &tiny(), "--out-dir", &o]);
    assert!(stderr(&r).contains("eval needs the JT-VAE"), "{}", text(&r));
    assert_eq!(lock_files(&out), Vec::<String>::new());
    // And the next run takes it again.
    let r = train_config(&tiny(), &out, &[]);
    assert_ok(&r);
    assert!(!stderr(&r).contains("lock"), "{}", text(&r));
    assert_eq!(lock_files(&out), Vec::<String>::new());
}

#[test]
fn a_crashed_runs_lock_is_taken_over_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = out.display().to_string();
    let child = Command::new(bin())
        .args(["train", &tiny(), "--out-dir", &o, "--abort-after-step", "4"])
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let r = child.wait_with_output().unwrap();
    assert_eq!(r.status.code(), Some(86), "{}", text(&r));
    let left = std::fs::read_to_string(out.join(LOCK_FILE)).expect("the crash left its lock");
    assert_eq!(Holder::parse(&left).unwrap().pid, pid);
    let r = train_config(&tiny(), &out, &["--resume"]);
    assert_ok(&r);
    let err = stderr(&r);
    assert!(
        err.contains("taking over the stale lock") && err.contains(&format!("pid {pid} has ended")),
        "no warning about the stale lock:\n{err}"
    );
    assert_eq!(lock_files(&out), Vec::<String>::new());
}

/// `mpirun -n 2 zo-hpc ARGS`, killed (and the test failed) if it runs past `limit`.
fn mpirun_within(limit: Duration, args: &[&str]) -> Output {
    let mut c = Command::new("mpirun");
    c.arg("--oversubscribe");
    if is_root() {
        c.arg("--allow-run-as-root");
    }
    let mut child = c
        .args(["-n", "2"])
        .arg(bin())
        .args(args)
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start mpirun");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("mpirun still running after {limit:?}: a rank hangs");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn under_mpirun_both_ranks_fail_together_without_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let holder = FakeHolder::hold(&out);
    let before = snapshot(&out);
    let o = out.display().to_string();
    let r = mpirun_within(
        Duration::from_secs(120),
        &["train", &tiny(), "--out-dir", &o],
    );
    assert_refused(&r, holder.0.id(), &out.join(LOCK_FILE));
    let err = stderr(&r);
    assert!(
        err.contains("[zo-hpc 1/2] error: rank 0 could not lock the run folder"),
        "rank 1 does not say why it stops:\n{err}"
    );
    assert!(!err.contains("MPI_ABORT"), "the ranks were aborted:\n{err}");
    assert_eq!(snapshot(&out), before);
}

/// Issue 20, case 7: a stage folder that takes no files is found before the stage
/// trains (a probe file), not at its first checkpoint. Run as an unprivileged user
/// (through `setpriv` when the tests run as root, whom no mode stops).
#[test]
fn a_read_only_stage_folder_is_refused_before_training() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let stage = out.join("mpnn");
    std::fs::create_dir_all(&stage).unwrap();
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    mode(tmp.path(), 0o755);
    mode(&out, 0o777);
    mode(&stage, 0o555);
    let out_s = out.display().to_string();
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin());
        c
    } else {
        Command::new(bin())
    };
    let o = c
        .args(["train", &tiny(), "--out-dir", &out_s])
        .current_dir(repo())
        .output()
        .unwrap();
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains(&format!("cannot write in {}", stage.display()))
            && t.contains("checked before any work"),
        "{t}"
    );
    assert!(!t.contains("epoch 1"), "no training before the check: {t}");
    assert!(
        std::fs::read_dir(&stage).unwrap().next().is_none(),
        "nothing written in the stage folder"
    );
}
