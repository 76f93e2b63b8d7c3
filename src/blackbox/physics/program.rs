//! One physics program run on one molecule: write its input from an RDKit geometry
//! into a fresh folder, run it (one thread, no stdin, a wall-clock limit, the whole
//! process group killed on expiry) and read the energy and per-atom charges back.
use crate::chem::Geometry;
use crate::config::PhysicsProgram;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a program says about one molecule, per atom of the geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// mopac: heat of formation in kcal/mol; xtb: total energy in Eh.
    pub energy: f64,
    /// One per atom of the geometry (hydrogens included), in elementary charges.
    pub charges: Vec<f64>,
}

/// Why a run gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// The program answered, but not with a result (an error message, no energy, a
    /// non-zero exit): it would say the same again, so the cache keeps it.
    #[error("{0}")]
    Refused(String),
    /// The time limit ran out; the program was killed.
    #[error("no answer within {0} s (killed)")]
    Timeout(f64),
    /// Anything that may go differently next time (no temp folder, cannot start,
    /// killed by a signal).
    #[error("{0}")]
    Broken(String),
}

/// Element symbols by atomic number (1..=86: every element PM7 and GFN2 cover).
const SYMBOLS: [&str; 86] = [
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl",
    "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As",
    "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In",
    "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb",
    "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl",
    "Pb", "Bi", "Po", "At", "Rn",
];

pub fn symbol(z: i32) -> Option<&'static str> {
    usize::try_from(z)
        .ok()
        .and_then(|z| z.checked_sub(1))
        .and_then(|i| SYMBOLS.get(i).copied())
}

/// MOPAC's keywords; `{charge}` is the molecule's formal charge. 1SCF: one SCF at
/// the given geometry, no optimization; THREADS=1: the source runs molecules side
/// by side instead; GEO-OK: do not stop on close contacts (an MMFF geometry is
/// what it is).
pub const MOPAC_KEYWORDS: &str = "PM7 1SCF CHARGE={charge} THREADS=1 GEO-OK";
/// xtb's arguments; `{charge}` and `{unpaired}` (0 or 1, from the electron count).
pub const XTB_ARGUMENTS: &str = "--gfn 2 --sp --chrg {charge} --uhf {unpaired} --norestart";

/// The method keywords of `program` (recorded in the cache).
pub fn method(program: PhysicsProgram) -> &'static str {
    match program {
        PhysicsProgram::Mopac => MOPAC_KEYWORDS,
        PhysicsProgram::Xtb => XTB_ARGUMENTS,
    }
}

/// The executable of `program`.
pub fn executable(program: PhysicsProgram) -> &'static str {
    match program {
        PhysicsProgram::Mopac => "mopac",
        PhysicsProgram::Xtb => "xtb",
    }
}

/// The program's version line ("MOPAC version 22.0.6 …", "xtb version 6.5.1 …").
pub fn version(program: PhysicsProgram) -> Result<String, RunError> {
    let exe = executable(program);
    let out = Command::new(exe)
        .arg("--version")
        .stdin(Stdio::null())
        .env("OMP_NUM_THREADS", "1")
        .output()
        .map_err(|e| {
            RunError::Broken(format!(
                "cannot run `{exe} --version`: {e} (is {exe} installed? scripts/setup.sh installs it)"
            ))
        })?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .map(|l| l.trim().trim_start_matches('*').trim())
        .find(|l| l.to_lowercase().contains("version"))
        .map(|l| l.split(" compiled by").next().unwrap_or(l).to_string())
        .ok_or_else(|| {
            RunError::Broken(format!(
                "`{exe} --version` printed no version: {}",
                text.trim()
            ))
        })
}

/// A folder of its own for one run, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, RunError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "zo-physics-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| RunError::Broken(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `program` on `geom` with at most `limit` wall time. Returns the answer or
/// why not, and the seconds the program ran.
pub fn run(
    program: PhysicsProgram,
    geom: &Geometry,
    limit: Duration,
) -> (Result<Answer, RunError>, f64) {
    let scratch = match Scratch::new() {
        Ok(s) => s,
        Err(e) => return (Err(e), 0.0),
    };
    let dir = &scratch.0;
    let n = geom.atomic_nums.len();
    let mut symbols = Vec::with_capacity(n);
    for &z in &geom.atomic_nums {
        match symbol(z) {
            Some(s) => symbols.push(s),
            None => {
                return (
                    Err(RunError::Refused(format!("element {z} has no parameters"))),
                    0.0,
                )
            }
        }
    }
    let coords = |i: usize| (geom.xyz[3 * i], geom.xyz[3 * i + 1], geom.xyz[3 * i + 2]);
    let charge = geom.formal_charge.to_string();
    let args: Vec<String> = match program {
        PhysicsProgram::Mopac => {
            let mut deck = MOPAC_KEYWORDS.replace("{charge}", &charge);
            deck.push_str("\nzo-hpc physics source\n\n");
            for (i, s) in symbols.iter().enumerate() {
                let (x, y, z) = coords(i);
                deck.push_str(&format!("{s} {x:.6} 0 {y:.6} 0 {z:.6} 0\n"));
            }
            if let Err(e) = std::fs::write(dir.join("mol.mop"), deck) {
                return (
                    Err(RunError::Broken(format!("cannot write the input: {e}"))),
                    0.0,
                );
            }
            vec!["mol.mop".into()]
        }
        PhysicsProgram::Xtb => {
            let mut xyz = format!("{n}\nzo-hpc physics source\n");
            for (i, s) in symbols.iter().enumerate() {
                let (x, y, z) = coords(i);
                xyz.push_str(&format!("{s} {x:.6} {y:.6} {z:.6}\n"));
            }
            if let Err(e) = std::fs::write(dir.join("mol.xyz"), xyz) {
                return (
                    Err(RunError::Broken(format!("cannot write the input: {e}"))),
                    0.0,
                );
            }
            let electrons: i64 = geom.atomic_nums.iter().map(|&z| i64::from(z)).sum::<i64>()
                - i64::from(geom.formal_charge);
            let a = XTB_ARGUMENTS
                .replace("{charge}", &charge)
                .replace("{unpaired}", &electrons.rem_euclid(2).to_string());
            let mut args = vec!["mol.xyz".to_string()];
            args.extend(a.split_whitespace().map(String::from));
            args
        }
    };
    let exe = executable(program);
    let t0 = Instant::now();
    let status = match spawn_and_wait(exe, &args, dir, limit) {
        Ok(s) => s,
        Err(e) => return (Err(e), t0.elapsed().as_secs_f64()),
    };
    let secs = t0.elapsed().as_secs_f64();
    if let Some(sig) = status.signal() {
        return (
            Err(RunError::Broken(format!("{exe} killed by signal {sig}"))),
            secs,
        );
    }
    let answer = match program {
        PhysicsProgram::Mopac => {
            let out = std::fs::read_to_string(dir.join("mol.out")).unwrap_or_default();
            parse_mopac(&out, n)
        }
        PhysicsProgram::Xtb => {
            let out = std::fs::read_to_string(dir.join("stdout")).unwrap_or_default();
            let charges = std::fs::read_to_string(dir.join("charges")).unwrap_or_default();
            if !status.success() {
                let err = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
                Err(RunError::Refused(format!(
                    "xtb exited with {}: {}",
                    status.code().unwrap_or(-1),
                    last_lines(&err, 3)
                )))
            } else {
                parse_xtb(&out, &charges, n)
            }
        }
    };
    (answer, secs)
}

/// Starts `exe` in its own process group in `dir` and waits at most `limit`; on
/// expiry kills the whole group.
fn spawn_and_wait(
    exe: &str,
    args: &[String],
    dir: &Path,
    limit: Duration,
) -> Result<std::process::ExitStatus, RunError> {
    let file = |name: &str| {
        std::fs::File::create(dir.join(name)).map_err(|e| {
            RunError::Broken(format!("cannot create {name} in {}: {e}", dir.display()))
        })
    };
    let mut child = Command::new(exe)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(file("stdout")?)
        .stderr(file("stderr")?)
        .env("OMP_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .process_group(0)
        .spawn()
        .map_err(|e| RunError::Broken(format!("cannot start {exe}: {e}")))?;
    let deadline = Instant::now() + limit;
    let mut nap = Duration::from_micros(500);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => return Err(RunError::Broken(format!("waiting for {exe}: {e}"))),
        }
        let now = Instant::now();
        if now >= deadline {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) on the process group this child leads (process_group(0)).
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(RunError::Timeout(limit.as_secs_f64()));
        }
        std::thread::sleep(nap.min(deadline - now));
        nap = (nap * 2).min(Duration::from_millis(10));
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Reads MOPAC's .out file: FINAL HEAT OF FORMATION and the NET ATOMIC CHARGES of
/// `n` atoms; without them, the text of its error box.
pub fn parse_mopac(out: &str, n: usize) -> Result<Answer, RunError> {
    let hof = out.lines().find_map(|l| {
        let rest = l.split("FINAL HEAT OF FORMATION =").nth(1)?;
        rest.split_whitespace().next()?.parse::<f64>().ok()
    });
    let Some(energy) = hof.filter(|e| e.is_finite()) else {
        return Err(RunError::Refused(mopac_error(out)));
    };
    let mut lines = out
        .lines()
        .skip_while(|l| !l.contains("NET ATOMIC CHARGES"))
        .skip_while(|l| !l.contains("ATOM NO."))
        .skip(1);
    let mut charges = Vec::with_capacity(n);
    for i in 0..n {
        let parsed = lines.next().and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let idx = f.first()?.parse::<usize>().ok()?;
            let q = f.get(2)?.parse::<f64>().ok()?;
            (idx == i + 1 && q.is_finite()).then_some(q)
        });
        match parsed {
            Some(q) => charges.push(q),
            None => {
                return Err(RunError::Refused(format!(
                    "MOPAC's NET ATOMIC CHARGES block lacks atom {}",
                    i + 1
                )))
            }
        }
    }
    Ok(Answer { energy, charges })
}

/// The message in MOPAC's "Error and normal termination messages" box.
fn mopac_error(out: &str) -> String {
    let msg: Vec<String> = out
        .lines()
        .skip_while(|l| !l.contains("Error and normal termination messages"))
        .skip(1)
        .take_while(|l| !l.contains("JOB ENDED") && !l.trim_start().starts_with("****"))
        .map(|l| l.trim().trim_matches('*').trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if msg.is_empty() {
        "no FINAL HEAT OF FORMATION in MOPAC's output".into()
    } else {
        format!("MOPAC: {}", msg.join("; "))
    }
}

/// Reads xtb's standard output (TOTAL ENERGY … Eh) and its `charges` file (`n` lines).
pub fn parse_xtb(out: &str, charges: &str, n: usize) -> Result<Answer, RunError> {
    let energy = out
        .lines()
        .filter(|l| l.contains("TOTAL ENERGY") && l.contains("Eh"))
        .find_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "ENERGY")
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .filter(|e| e.is_finite())
        .ok_or_else(|| {
            RunError::Refused(format!(
                "no TOTAL ENERGY in xtb's output: {}",
                last_lines(out, 3)
            ))
        })?;
    let q: Vec<f64> = charges
        .split_whitespace()
        .map(|w| w.parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| RunError::Refused(format!("xtb's charges file: {e}")))?;
    if q.len() != n || q.iter().any(|x| !x.is_finite()) {
        return Err(RunError::Refused(format!(
            "xtb's charges file has {} values for {n} atoms",
            q.len()
        )));
    }
    Ok(Answer { energy, charges: q })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mopac_output_and_its_errors() {
        let out = "\n          FINAL HEAT OF FORMATION =        -68.22914 KCAL/MOL =    -285.47074 KJ/MOL\n\
                   \n              NET ATOMIC CHARGES AND DIPOLE CONTRIBUTIONS\n\n  ATOM NO.   TYPE          CHARGE      No. of ELECS.   s-Pop       p-Pop\n\
                   \x20   1          C          -0.530564        4.5306     1.06487     3.46569\n\
                   \x20   2          H           0.191196        0.8088     0.80880\n DIPOLE\n";
        let a = parse_mopac(out, 2).unwrap();
        assert_eq!(a.energy, -68.22914);
        assert_eq!(a.charges, vec![-0.530564, 0.191196]);
        assert!(matches!(parse_mopac(out, 3), Err(RunError::Refused(_))));
        let bad = " ****\n *     Error and normal termination messages reported in this calculation     *\n\
                   \x20*                                                                            *\n\
                   \x20*  Data are not available for Cerium.                                        *\n\
                   \x20* JOB ENDED NORMALLY                                                         *\n";
        assert_eq!(
            parse_mopac(bad, 1),
            Err(RunError::Refused(
                "MOPAC: Data are not available for Cerium.".into()
            ))
        );
        assert!(parse_mopac("", 1).is_err());
    }

    #[test]
    fn reads_xtb_output() {
        let out = "          | TOTAL ENERGY              -32.780397668085 Eh   |\n";
        let a = parse_xtb(out, "  -0.1\n 0.1\n", 2).unwrap();
        assert_eq!(a.energy, -32.780397668085);
        assert_eq!(a.charges, vec![-0.1, 0.1]);
        assert!(parse_xtb(out, "0.1\n", 2).is_err());
        assert!(parse_xtb("", "0.1\n", 1).is_err());
    }

    #[test]
    fn symbols_by_atomic_number() {
        assert_eq!(symbol(1), Some("H"));
        assert_eq!(symbol(6), Some("C"));
        assert_eq!(symbol(58), Some("Ce"));
        assert_eq!(symbol(86), Some("Rn"));
        assert_eq!(symbol(0), None);
        assert_eq!(symbol(92), None);
    }
}
