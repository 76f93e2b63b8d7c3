//! One running external source: the child process with a writer thread on its stdin
//! and a reader thread on its stdout, so that no call here blocks past a deadline
//! whatever the source does (stops reading, stops writing, never ends a line).
//! The child gets its own process group, killed as a whole, so helpers it started
//! (a shell script's `sleep`, an MPI-less solver) go with it; and a mark in its
//! environment (`ZO_HPC_SOURCE_ID`), inherited by its helpers, by which those that
//! left the group (`setsid`, a daemon's double fork) are found and killed too.
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest line read before the handshake set a bound (`Process::set_max_line`:
/// what `data.max_atoms` atoms can take); beyond the bound the rest of the line is
/// skipped unread into memory and the line is replaced by an invalid one.
const MAX_LINE: usize = 64 << 20;

/// Largest size of a source's stderr log (all its starts together); beyond it the
/// source's stderr is read and dropped, with one line saying so.
pub const MAX_LOG: u64 = 64 << 20;

/// The environment variable that marks a source and everything it starts.
pub const MARK_VAR: &str = "ZO_HPC_SOURCE_ID";

/// Sources started by this process so far (part of each mark).
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// Why no line came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoLine {
    /// The deadline passed.
    Timeout,
    /// The source closed its stdout (exited or crashed).
    Closed,
    /// The source closed its stdout in the middle of a line (this many bytes, no
    /// newline): a crash while answering, never an answer.
    Partial(usize),
}

/// A started source process.
pub struct Process {
    child: Child,
    /// Requests to the writer thread; dropped to close the child's stdin.
    to_stdin: Option<Sender<Vec<u8>>>,
    /// Whole lines, or `Err(bytes)` for a last line the stream ended inside.
    lines: Receiver<Result<String, usize>>,
    /// Longest line the reader keeps (bytes).
    max_line: Arc<AtomicUsize>,
    /// `MARK_VAR=<mark>`, as it appears in `/proc/<pid>/environ`.
    mark: String,
    killed: bool,
}

impl Process {
    /// Starts `command` in `dir` with stdout piped and stderr appended to `stderr`
    /// (up to `MAX_LOG` bytes in that file).
    pub fn spawn(command: &[String], dir: &Path, stderr: File) -> std::io::Result<Process> {
        let (program, args) = command.split_first().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command")
        })?;
        // A relative program with a folder in it is relative to `dir`, as its
        // arguments are (Rust leaves this case to the platform).
        let program = if program.contains('/') {
            dir.join(program)
        } else {
            program.into()
        };
        let mark = format!(
            "{MARK_VAR}={}.{}.{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env(MARK_VAR, &mark[MARK_VAR.len() + 1..])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn()?;
        let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (stdin, stdout, err) = match pipes {
            (Some(i), Some(o), Some(e)) => (i, o, e),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(std::io::Error::other("no pipes to the child"));
            }
        };
        let (to_stdin, requests) = mpsc::channel();
        let (line_tx, lines) = mpsc::channel();
        let max_line = Arc::new(AtomicUsize::new(MAX_LINE));
        let limit = Arc::clone(&max_line);
        let spawned = std::thread::Builder::new()
            .name("source-stdin".into())
            .spawn(move || write_all(stdin, requests))
            .and_then(|_| {
                std::thread::Builder::new()
                    .name("source-stdout".into())
                    .spawn(move || read_lines(stdout, line_tx, &limit))
            })
            .and_then(|_| {
                std::thread::Builder::new()
                    .name("source-stderr".into())
                    .spawn(move || copy_log(err, stderr))
            });
        let mut p = Process {
            child,
            to_stdin: Some(to_stdin),
            lines,
            max_line,
            mark,
            killed: false,
        };
        if let Err(e) = spawned {
            p.kill();
            return Err(e);
        }
        Ok(p)
    }

    /// From the next line on, keep at most `bytes` of a line (the rest is skipped).
    pub fn set_max_line(&self, bytes: usize) {
        self.max_line.store(bytes.max(1), Ordering::Relaxed);
    }

    /// Queues `line` for the child's stdin (never blocks).
    pub fn send(&self, line: String) {
        if let Some(tx) = &self.to_stdin {
            // A closed writer means the child is gone: the missing answers say so.
            let _ = tx.send(line.into_bytes());
        }
    }

    /// The next line of the child's stdout, waiting until `deadline` at most.
    pub fn line(&self, deadline: Instant) -> Result<String, NoLine> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(wait) {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(bytes)) => Err(NoLine::Partial(bytes)),
            Err(RecvTimeoutError::Timeout) => Err(NoLine::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(NoLine::Closed),
        }
    }

    /// A line already waiting, if any (answers nobody asked for; a partial one
    /// shown as such).
    pub fn stray_line(&self) -> Option<String> {
        self.lines
            .try_recv()
            .ok()
            .map(|l| l.unwrap_or_else(|n| format!("(the first {n} bytes of a line, then its end)")))
    }

    /// Kills the process group and reaps the child; its exit status if known.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.to_stdin = None;
        if !self.killed {
            self.killed = true;
            // Not reaped yet (see `exited`), so the group id is still the child's.
            kill_group(self.child.id());
            let _ = self.child.kill();
            kill_marked(&self.mark);
        }
        self.child.wait().ok()
    }

    /// Closes stdin, gives the child `grace` to exit on its own, then kills what is
    /// left of its group.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.to_stdin = None;
        let end = Instant::now() + grace;
        while Instant::now() < end && !self.exited() {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill()
    }

    /// Whether the child has exited, without reaping it.
    fn exited(&self) -> bool {
        let pid: libc::id_t = self.child.id();
        // SAFETY: waitid with WNOWAIT only reads the child's state into `info`.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PID,
                pid,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            r != 0 || info.si_pid() != 0
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kill_group(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals that process group only; the
        // group is ours (process_group(0) made the child its leader).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// Kills every process whose environment holds `mark` (helpers that left the
/// source's process group), scanning `/proc` again until none is left, since a
/// helper may start another while it is being killed. One that cleared its
/// environment is not found: README says so.
fn kill_marked(mark: &str) {
    let me = std::process::id();
    for _ in 0..10 {
        let found = marked(mark, me);
        if found.is_empty() {
            return;
        }
        for pid in found {
            // SAFETY: kill(2) on a pid that carried our mark a moment ago.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The processes (not `me`) whose environment holds `mark` as a whole entry.
fn marked(mark: &str, me: u32) -> Vec<libc::pid_t> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let want = mark.as_bytes();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&pid| u32::try_from(pid).is_ok_and(|p| p != me))
        .filter(|pid| {
            // Unreadable (another user's, or gone): not ours.
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&c| c == 0).any(|entry| entry == want))
        })
        .collect()
}

/// The source is killed when this rank dies (`PR_SET_PDEATHSIG`), even one busy
/// computing that never reads its closed stdin. Only when spawned from the main
/// thread: the signal follows the spawning *thread*'s exit, and sources are queried
/// from the rank's main thread.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: getpid/gettid have no preconditions.
    let (parent, main) = unsafe { (libc::getpid(), libc::gettid() == libc::getpid()) };
    if !main {
        return;
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The rank may have died before the prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

fn write_all(mut stdin: ChildStdin, requests: Receiver<Vec<u8>>) {
    for bytes in requests {
        if stdin
            .write_all(&bytes)
            .and_then(|()| stdin.flush())
            .is_err()
        {
            return;
        }
    }
}

fn read_lines(stdout: ChildStdout, lines: Sender<Result<String, usize>>, max_line: &AtomicUsize) {
    let mut r = BufReader::with_capacity(1 << 16, stdout);
    loop {
        let mut buf = Vec::new();
        let Some(cut) = read_line(&mut r, &mut buf, max_line) else {
            return;
        };
        let line = if cut {
            // Skip the rest of the over-long line, a buffer at a time.
            let max = buf.len();
            drop(buf);
            if !skip_line(&mut r) {
                return;
            }
            Ok(format!("(a line of more than {max} bytes, more than data.max_atoms atoms can take: skipped unread)"))
        } else if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            Ok(String::from_utf8_lossy(&buf).into_owned())
        } else {
            // The stream ended inside this line: the source died while writing it.
            Err(buf.len())
        };
        if lines.send(line).is_err() {
            return;
        }
    }
}

/// Reads one line (with its newline) into `buf`, at most `max_line` bytes; the
/// bound is read again for every chunk, since it is set after the handshake while
/// this thread may already wait for the next line. `Some(true)`: cut at the bound;
/// `Some(false)`: a whole line (or the last one, without a newline); `None`: the
/// stream ended (or failed) before any byte.
fn read_line(
    r: &mut BufReader<ChildStdout>,
    buf: &mut Vec<u8>,
    max_line: &AtomicUsize,
) -> Option<bool> {
    loop {
        let avail = match r.fill_buf() {
            Ok([]) => return (!buf.is_empty()).then_some(false),
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return (!buf.is_empty()).then_some(false),
        };
        let (take, done) = match avail.iter().position(|&c| c == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        let room = max_line.load(Ordering::Relaxed).saturating_sub(buf.len());
        if take > room {
            buf.extend_from_slice(&avail[..room]);
            r.consume(room);
            return Some(true);
        }
        buf.extend_from_slice(&avail[..take]);
        r.consume(take);
        if done {
            return Some(false);
        }
    }
}

/// Appends the source's stderr to `log` while the file is under `MAX_LOG` bytes,
/// then drains it (so the source never blocks on a full pipe), saying so once.
fn copy_log(mut err: std::process::ChildStderr, mut log: File) {
    let mut buf = vec![0u8; 1 << 16];
    let mut full = false;
    loop {
        let n = match err.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if full {
            continue;
        }
        let size = log.metadata().map_or(0, |m| m.len());
        let room = MAX_LOG.saturating_sub(size) as usize;
        let _ = log.write_all(&buf[..n.min(room)]);
        if n > room {
            full = true;
            let _ = writeln!(
                log,
                "\n--- zo-hpc: this log reached {} MiB; the source's further stderr is dropped",
                MAX_LOG >> 20
            );
        }
    }
}

/// Reads and drops the rest of a line; false when the stream ended.
fn skip_line(r: &mut BufReader<ChildStdout>) -> bool {
    loop {
        let (used, done) = match r.fill_buf() {
            Ok([]) | Err(_) => return false,
            Ok(b) => match b.iter().position(|&c| c == b'\n') {
                Some(i) => (i + 1, true),
                None => (b.len(), false),
            },
        };
        r.consume(used);
        if done {
            return true;
        }
    }
}
