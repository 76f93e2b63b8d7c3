//! Bounds on the work one molecule may cause. Every molecule that enters from
//! outside (a row of a user's CSV, a black-box query, a decoded molecule) is checked
//! against them before the expensive steps, so one pathological row (a SMILES of
//! 100 000 characters) is a reported bad row or a counted failed query, not an
//! hour of canonicalization and decomposition.
use super::mol::{ChemError, Molecule};

/// Default largest molecule, in atoms (heavy atoms and written hydrogens): the
/// shipped data sets reach 38 (ZINC) and 9 (QM9).
pub const MAX_ATOMS: usize = 150;
/// Default longest SMILES, in bytes (the shipped data sets reach ~120).
pub const MAX_SMILES_LENGTH: usize = 1000;

/// `data.max_atoms` and `data.max_smiles_length` of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_atoms: usize,
    pub max_smiles_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_atoms: MAX_ATOMS,
            max_smiles_length: MAX_SMILES_LENGTH,
        }
    }
}

impl Limits {
    /// Refuses a SMILES longer than `max_smiles_length` (before any parsing).
    pub fn check_smiles(&self, smiles: &str) -> Result<(), ChemError> {
        if smiles.len() > self.max_smiles_length {
            return Err(ChemError {
                smiles: format!("{}… ({} bytes)", prefix(smiles, 40), smiles.len()),
                message: format!(
                    "SMILES of {} bytes exceeds data.max_smiles_length = {}",
                    smiles.len(),
                    self.max_smiles_length
                ),
            });
        }
        Ok(())
    }

    /// Refuses a molecule of more than `max_atoms` atoms.
    pub fn check_atoms(&self, smiles: &str, n_atoms: usize) -> Result<(), ChemError> {
        if n_atoms > self.max_atoms {
            return Err(ChemError {
                smiles: smiles.to_string(),
                message: format!("{n_atoms} atoms exceed data.max_atoms = {}", self.max_atoms),
            });
        }
        Ok(())
    }

    /// Both checks, parsing the SMILES once when its length passes. A SMILES that
    /// does not parse passes: it is the caller's own parse that reports it.
    pub fn check_size(&self, smiles: &str) -> Result<(), ChemError> {
        self.check_smiles(smiles)?;
        match Molecule::from_smiles(smiles).and_then(|m| m.facts()) {
            Ok(f) => self.check_atoms(smiles, f.n_atoms()),
            Err(_) => Ok(()),
        }
    }
}

fn prefix(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_their_key_and_keep_messages_short() {
        let l = Limits {
            max_atoms: 5,
            max_smiles_length: 20,
        };
        assert!(l.check_size("CCO").is_ok());
        assert!(l.check_size("not a smiles").is_ok());
        let e = l.check_size("CCCCCC").unwrap_err();
        assert!(
            e.message.contains("6 atoms exceed data.max_atoms = 5"),
            "{e}"
        );
        let long = "C".repeat(100_000);
        let e = l.check_size(&long).unwrap_err();
        assert!(e.message.contains("data.max_smiles_length = 20"), "{e}");
        assert!(e.to_string().len() < 200, "{e}");
    }
}
