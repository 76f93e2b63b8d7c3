//! The lock on a run folder (issue 20): one process at a time writes into a
//! `run.out_dir`. The lock is the file `<out_dir>/.zo-hpc.lock`, made whole in a
//! temporary file and hard-linked to its name (a link fails when the name exists, on
//! NFS and Lustre too, where `flock` may not work; so of two processes starting at
//! once exactly one wins, and nobody ever reads a half-written lock). It names its
//! holder: host, pid, the process's start time (`/proc/<pid>/stat` field 22, so a
//! reused pid is told apart), the boot, the command line and since when (UTC).
//!
//! A second writer is refused with an error naming the holder. A lock whose holder
//! is on this host and gone (no such pid, a zombie, another process under that pid,
//! or a boot since) is stale after a crash: it is taken over with a warning; so is a
//! lock file that cannot be read (empty, truncated) once it is a few seconds old. A
//! holder on another host cannot be checked and always refuses. [`RunLock`] deletes
//! the lock when dropped, if the file is still its own.
//!
//! Plain files, no MPI: the caller decides which rank takes the lock.
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The lock file's name inside the run folder.
pub const LOCK_FILE: &str = ".zo-hpc.lock";

/// An unreadable lock file younger than this may still be being written (on a file
/// system without hard links): wait for it rather than take it over.
const YOUNG: Duration = Duration::from_secs(3);
/// Tries before giving up on a lock that keeps changing under us.
const ATTEMPTS: usize = 100;
/// A take-over takes microseconds: a guard file older than this was left by a crash.
const TAKEOVER: Duration = Duration::from_secs(10);

/// Who holds (or wants) the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// Clock ticks after boot at which the process started (`/proc/<pid>/stat` field 22).
    pub start_time: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id` of the host.
    pub boot_id: Option<String>,
    pub command: String,
    /// When the lock was taken (RFC 3339, UTC).
    pub since: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} on host {} (`{}`), since {}",
            self.pid, self.host, self.command, self.since
        )
    }
}

/// Errors of taking the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the run folder {dir} is in use by another zo-hpc process: {holder}{note}. Two \
         processes writing into one run folder spoil each other's files: wait for it to \
         end or give this run another run.out_dir (--out-dir); if that process is gone, \
         delete {path}"
    )]
    Held {
        dir: PathBuf,
        path: PathBuf,
        holder: Box<Holder>,
        note: String,
    },
    #[error("cannot lock the run folder {dir}: {what}: {source}")]
    Io {
        dir: PathBuf,
        what: String,
        source: std::io::Error,
    },
    #[error(
        "cannot lock the run folder {dir}: its lock file {path} kept changing ({ATTEMPTS} tries)"
    )]
    Contended { dir: PathBuf, path: PathBuf },
    /// On the other ranks of an MPI job, when rank 0 failed (its error says why).
    #[error("rank 0 could not lock the run folder {0} (see rank 0's error)")]
    OnRoot(PathBuf),
}

/// What a process id stands for on this host now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// No such process, or a zombie (it has ended).
    Gone,
    /// Running; its start time where `/proc` tells it.
    Running { start_time: Option<u64> },
}

/// Whether a parsed lock still stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its holder is running on this host.
    Live,
    /// Its holder is on another host (cannot be checked).
    Elsewhere,
    /// Its holder is gone; why, for the warning.
    Stale(String),
}

/// Judges a holder against this host (`host`, `boot_id`) and what `probe` says of its pid.
pub fn verdict(
    h: &Holder,
    host: &str,
    boot_id: Option<&str>,
    probe: impl Fn(u32) -> Process,
) -> Verdict {
    if h.host != host {
        return Verdict::Elsewhere;
    }
    if let (Some(then), Some(now)) = (h.boot_id.as_deref(), boot_id) {
        if then != now {
            return Verdict::Stale("this host has rebooted since".into());
        }
    }
    match probe(h.pid) {
        Process::Gone => Verdict::Stale(format!("pid {} has ended", h.pid)),
        Process::Running {
            start_time: Some(now),
        } if h.start_time.is_some_and(|then| then != now) => Verdict::Stale(format!(
            "pid {} is now another process (started at tick {now}, not {})",
            h.pid,
            h.start_time.unwrap_or_default()
        )),
        Process::Running { .. } => Verdict::Live,
    }
}

/// This host's name.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its full length, which is passed.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if r == 0 && end > 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".into()
    }
}

/// This boot's id (Linux), to tell a lock from before a reboot.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The state and start time (field 22) in the text of `/proc/<pid>/stat`.
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    // The command name (field 2) is in parentheses and may hold spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    Some((state, fields.get(22 - 3)?.parse().ok()?))
}

/// What `pid` is on this host now: `kill(pid, 0)` says whether it exists (also for
/// another user's process, which `/proc` may hide), `/proc/<pid>/stat` its state and
/// start time where it can be read.
pub fn probe(pid: u32) -> Process {
    let Ok(id) = libc::pid_t::try_from(pid) else {
        return Process::Gone;
    };
    if id <= 0 {
        return Process::Gone;
    }
    // SAFETY: signal 0 sends nothing; it only checks whether the process exists.
    let r = unsafe { libc::kill(id, 0) };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return Process::Gone;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    match stat.as_deref().and_then(parse_stat) {
        Some(('Z' | 'X', _)) => Process::Gone,
        Some((_, t)) => Process::Running {
            start_time: Some(t),
        },
        None => Process::Running { start_time: None },
    }
}

impl Holder {
    /// The holder record of process `pid` on this host, taking the lock now for `command`.
    pub fn of_process(pid: u32, command: &str) -> Holder {
        let start_time = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
            .map(|(_, t)| t);
        Holder {
            host: host_name(),
            pid,
            start_time,
            boot_id: boot_id(),
            command: command.to_string(),
            since: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        }
    }

    /// The lock file's text.
    pub fn to_text(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# zo-hpc: this process writes into this run folder (the lock is deleted when it ends).\n\
             # If that process is gone, delete this file.\n{body}"
        )
    }

    /// Reads a lock file's text; None when it cannot be read (empty, truncated, garbage).
    pub fn parse(text: &str) -> Option<Holder> {
        toml::from_str(text).ok()
    }
}

/// The held lock of a run folder; dropping it deletes the lock file (if still its own).
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    /// The file as written (an inode number alone may be reused by the next file).
    file: Identity,
}

/// A file's inode and text.
#[derive(Debug, PartialEq, Eq)]
struct Identity {
    ino: u64,
    text: String,
}

impl Identity {
    fn of(path: &Path) -> std::io::Result<Identity> {
        let (text, meta) = read_with_meta(path)?;
        Ok(Identity {
            ino: meta.ino(),
            text,
        })
    }
}

impl RunLock {
    /// Takes the lock of `dir` (created when missing) for this process running
    /// `command`, taking over a stale one with a warning.
    pub fn acquire(dir: &Path, command: &str) -> Result<RunLock, LockError> {
        let me = Holder::of_process(std::process::id(), command);
        acquire_as(dir, &me, probe)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Only our own file: if it was deleted by hand and taken by another, leave that.
        let ours = Identity::of(&self.path).is_ok_and(|f| f == self.file);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("could not delete the lock {}: {e}", self.path.display());
            }
        }
    }
}

/// [`RunLock::acquire`] for holder `me`, with the process probe given (for tests).
pub fn acquire_as(
    dir: &Path,
    me: &Holder,
    probe: impl Fn(u32) -> Process,
) -> Result<RunLock, LockError> {
    let io = |what: String| {
        let dir = dir.to_path_buf();
        move |source| LockError::Io { dir, what, source }
    };
    std::fs::create_dir_all(dir).map_err(io("creating it".into()))?;
    let path = dir.join(LOCK_FILE);
    let tmp = dir.join(temp_name(me));
    write_whole(&tmp, &me.to_text()).map_err(io(format!("writing {}", tmp.display())))?;
    let r = contend(dir, &path, &tmp, me, probe);
    let _ = std::fs::remove_file(&tmp);
    r
}

/// A temporary name no other process or call uses.
fn temp_name(me: &Holder) -> String {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let host: String = me
        .host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{LOCK_FILE}.{host}.{}.{n}.tmp", me.pid)
}

fn write_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// Tries to make `path` ours until it is, or a live holder refuses.
fn contend(
    dir: &Path,
    path: &Path,
    tmp: &Path,
    me: &Holder,
    probe: impl Fn(u32) -> Process,
) -> Result<RunLock, LockError> {
    let io = |what: &str, source| LockError::Io {
        dir: dir.to_path_buf(),
        what: format!("{what} {}", path.display()),
        source,
    };
    let (host, boot) = (host_name(), boot_id());
    for _ in 0..ATTEMPTS {
        if let Some(ino) = create(path, tmp, me).map_err(|e| io("creating", e))? {
            return Ok(RunLock {
                path: path.to_path_buf(),
                file: Identity {
                    ino,
                    text: me.to_text(),
                },
            });
        }
        let (text, meta) = match read_with_meta(path) {
            Ok(x) => x,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io("reading", e)),
        };
        let why = match Holder::parse(&text) {
            Some(h) => match verdict(&h, &host, boot.as_deref(), &probe) {
                Verdict::Live => return Err(held(dir, path, h, "")),
                Verdict::Elsewhere => {
                    let note = format!(" (another host: it cannot be checked from {host})");
                    return Err(held(dir, path, h, &note));
                }
                Verdict::Stale(why) => format!("held by {h}, but {why}"),
            },
            None if age(&meta) < YOUNG => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            None => "it cannot be read (empty or cut short by a crash)".to_string(),
        };
        let judged = Identity {
            ino: meta.ino(),
            text,
        };
        if take_over(path, &judged).map_err(|e| io("taking over", e))? {
            log::warn!(
                "taking over the stale lock {}: {why}; the run folder may hold that run's unfinished files",
                path.display()
            );
        }
    }
    Err(LockError::Contended {
        dir: dir.to_path_buf(),
        path: path.to_path_buf(),
    })
}

fn held(dir: &Path, path: &Path, h: Holder, note: &str) -> LockError {
    LockError::Held {
        dir: dir.to_path_buf(),
        path: path.to_path_buf(),
        holder: Box::new(h),
        note: note.to_string(),
    }
}

fn read_with_meta(path: &Path) -> std::io::Result<(String, std::fs::Metadata)> {
    let f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    let text = std::io::read_to_string(f)?;
    Ok((text, meta))
}

fn age(meta: &std::fs::Metadata) -> Duration {
    meta.modified()
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or(Duration::MAX)
}

/// Makes `path` a link to the whole file `tmp`; its inode when this call made it,
/// None when `path` exists. Where hard links are not supported, `path` is created
/// exclusively and written (a reader may then see it empty for a moment: see YOUNG).
fn create(path: &Path, tmp: &Path, me: &Holder) -> std::io::Result<Option<u64>> {
    match std::fs::hard_link(tmp, path) {
        Ok(()) => return std::fs::metadata(tmp).map(|m| Some(m.ino())),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => {
            // NFS: the link may have been made although the reply was lost.
            if let Ok(m) = std::fs::metadata(tmp) {
                if m.nlink() == 2 {
                    return Ok(Some(m.ino()));
                }
            }
            let no_links = matches!(
                e.kind(),
                ErrorKind::Unsupported | ErrorKind::PermissionDenied
            ) || e.raw_os_error() == Some(libc::EPERM);
            if !no_links {
                return Err(e);
            }
        }
    }
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(e),
    };
    f.write_all(me.to_text().as_bytes())?;
    f.sync_all()?;
    Ok(Some(f.metadata()?.ino()))
}

/// Removes the stale lock `path` if it is still the file judged (same inode, same
/// text). Only the process that made `<path>.takeover` (created exclusively) may
/// remove it, so that of several processes taking it over at once exactly one
/// does, and the others then meet the lock of whoever links first. Whether this
/// call removed it.
fn take_over(path: &Path, judged: &Identity) -> std::io::Result<bool> {
    let guard = path.with_file_name(format!("{LOCK_FILE}.takeover"));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&guard)
    {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            // Another process is taking it over; one that died doing so left this.
            if std::fs::metadata(&guard).is_ok_and(|m| age(&m) > TAKEOVER) {
                let _ = std::fs::remove_file(&guard);
            }
            std::thread::sleep(Duration::from_millis(20));
            return Ok(false);
        }
        Err(e) => return Err(e),
    }
    let same = Identity::of(path).is_ok_and(|f| f == *judged);
    let r = match same {
        true => std::fs::remove_file(path).map(|()| true),
        false => Ok(false),
    };
    let _ = std::fs::remove_file(&guard);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(host: &str, pid: u32, start: Option<u64>) -> Holder {
        Holder {
            host: host.into(),
            pid,
            start_time: start,
            boot_id: Some("b1".into()),
            command: "zo-hpc train a.toml".into(),
            since: "2026-12-07T21:00:00Z".into(),
        }
    }

    #[test]
    fn the_lock_text_reads_back_and_broken_texts_do_not() {
        let h = holder("node1", 42, Some(123));
        let t = h.to_text();
        assert!(t.starts_with("# zo-hpc") && t.contains("delete this file"));
        assert_eq!(Holder::parse(&t), Some(h));
        let cut = &t[..t.len() - 12];
        for bad in ["", "\n", cut, "host = \"x\"\npid = ", "\u{0}\u{0}\u{0}"] {
            assert_eq!(Holder::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn proc_stat_gives_state_and_start_time() {
        let line =
            "4242 (a b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(line), Some(('S', 987_654)));
        assert_eq!(parse_stat("4242 (x) Z 1"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (_, t) = parse_stat(&own).unwrap();
        assert!(t > 0);
        assert!(
            matches!(probe(std::process::id()), Process::Running { start_time: Some(s) } if s == t)
        );
    }

    #[test]
    fn verdicts_live_stale_and_elsewhere() {
        let h = holder("node1", 42, Some(100));
        let running = |t| move |_| Process::Running { start_time: t };
        let v = |host, boot, p: &dyn Fn(u32) -> Process| verdict(&h, host, boot, p);
        assert_eq!(v("node1", Some("b1"), &running(Some(100))), Verdict::Live);
        assert_eq!(v("node1", None, &running(None)), Verdict::Live);
        assert_eq!(
            v("node2", Some("b1"), &|_| Process::Gone),
            Verdict::Elsewhere
        );
        let stale = |x: Verdict, what: &str| match x {
            Verdict::Stale(why) => assert!(why.contains(what), "{why}"),
            other => panic!("{other:?}, expected stale ({what})"),
        };
        stale(
            v("node1", Some("b1"), &|_| Process::Gone),
            "pid 42 has ended",
        );
        stale(
            v("node1", Some("b1"), &running(Some(101))),
            "another process",
        );
        stale(v("node1", Some("b2"), &running(Some(100))), "rebooted");
    }

    /// The pid of a process that has ended (and been reaped).
    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    #[test]
    fn a_second_taker_is_refused_until_the_first_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let a = RunLock::acquire(&run, "first").unwrap();
        assert_eq!(a.path(), run.join(LOCK_FILE));
        let e = RunLock::acquire(&run, "second").unwrap_err().to_string();
        let pid = std::process::id().to_string();
        assert!(
            e.contains(&pid) && e.contains("`first`") && e.contains(&host_name()),
            "{e}"
        );
        assert!(e.contains(&format!("delete {}", a.path().display())), "{e}");
        drop(a);
        assert!(!run.join(LOCK_FILE).exists());
        let names: Vec<_> = std::fs::read_dir(&run).unwrap().collect();
        assert!(names.is_empty(), "left behind: {names:?}");
        let b = RunLock::acquire(&run, "second").unwrap();
        let h = Holder::parse(&std::fs::read_to_string(b.path()).unwrap()).unwrap();
        assert_eq!((h.pid, h.command.as_str()), (std::process::id(), "second"));
    }

    #[test]
    fn stale_and_unreadable_locks_are_taken_over_foreign_hosts_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let mut dead = Holder::of_process(std::process::id(), "crashed");
        dead.pid = dead_pid();
        std::fs::write(&path, dead.to_text()).unwrap();
        let l = RunLock::acquire(dir.path(), "next").unwrap();
        drop(l);
        // Garbage or an empty file, old enough not to be one being written.
        for text in ["", "host = \"x\"\npi"] {
            std::fs::write(&path, text).unwrap();
            let old = SystemTime::now() - Duration::from_secs(60);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(old)
                .unwrap();
            drop(RunLock::acquire(dir.path(), "next").unwrap());
        }
        let mut far = Holder::of_process(std::process::id(), "elsewhere");
        far.host = "some-other-node".into();
        std::fs::write(&path, far.to_text()).unwrap();
        let e = RunLock::acquire(dir.path(), "next")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("some-other-node") && e.contains("another host"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), far.to_text());
    }

    #[test]
    fn a_zombie_holds_nothing() {
        let mut z = std::process::Command::new("true").spawn().unwrap();
        let stat = format!("/proc/{}/stat", z.id());
        for _ in 0..500 {
            let s = std::fs::read_to_string(&stat).unwrap();
            if parse_stat(&s).is_some_and(|(st, _)| st == 'Z') {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(probe(z.id()), Process::Gone);
        z.wait().unwrap();
    }

    #[test]
    fn a_lock_file_being_written_is_waited_for_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        std::fs::write(&path, "").unwrap();
        let other = Holder::of_process(std::process::id(), "the writer");
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                std::fs::write(&path, other.to_text()).unwrap();
            });
            let e = RunLock::acquire(dir.path(), "next")
                .unwrap_err()
                .to_string();
            assert!(e.contains("`the writer`"), "{e}");
        });
    }

    #[test]
    fn dropping_leaves_a_lock_that_is_not_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let a = RunLock::acquire(dir.path(), "a").unwrap();
        std::fs::remove_file(a.path()).unwrap();
        let b = RunLock::acquire(dir.path(), "b").unwrap();
        drop(a);
        assert!(b.path().exists(), "a deleted b's lock");
    }

    #[test]
    fn of_many_starting_at_once_on_a_stale_lock_exactly_one_wins() {
        for round in 0..40 {
            let dir = tempfile::tempdir().unwrap();
            let mut dead = Holder::of_process(std::process::id(), "crashed");
            dead.pid = dead_pid();
            std::fs::write(dir.path().join(LOCK_FILE), dead.to_text()).unwrap();
            let barrier = std::sync::Barrier::new(6);
            let won: Vec<bool> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..6)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            RunLock::acquire(dir.path(), "racer")
                        })
                    })
                    .collect();
                let rs: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
                rs.iter().map(Result::is_ok).collect()
            });
            assert_eq!(
                won.iter().filter(|&&w| w).count(),
                1,
                "round {round}: {won:?}"
            );
        }
    }
}
