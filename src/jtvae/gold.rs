//! Gold-path statistics: each molecule of a list decomposed into its junction
//! tree and rebuilt along its gold path (`assemble::gold_path`), counted, with the
//! reason of every failure. A check of the chemistry on real data sets, apart from
//! `assemble` so that the tree decomposition and assembly import one way.
use super::assemble::gold_path;
use super::graph::MolGraph;
use super::tree::{decompose_smiles, LabelCache};
use crate::chem;

/// Gold-path statistics over a list of SMILES.
#[derive(Debug, Default, Clone)]
pub struct GoldStats {
    pub molecules: usize,
    pub rebuilt: usize,
    /// (SMILES, why) of the failures.
    pub failures: Vec<(String, String)>,
}

impl GoldStats {
    pub fn rate(&self) -> f64 {
        self.rebuilt as f64 / self.molecules.max(1) as f64
    }
}

/// Decomposes each molecule and rebuilds it along its gold path.
pub fn gold_stats(smiles: &[String]) -> GoldStats {
    let mut cache = LabelCache::default();
    let mut labels: std::collections::HashMap<String, MolGraph> = std::collections::HashMap::new();
    let mut st = GoldStats::default();
    for s in smiles {
        st.molecules += 1;
        let result = (|| -> Result<(), String> {
            let (mol, tree) = decompose_smiles(s, &mut cache).map_err(|e| e.to_string())?;
            let mut graphs = Vec::with_capacity(tree.labels.len());
            for l in &tree.labels {
                if !labels.contains_key(l) {
                    let k = chem::parse_kekule(l).map_err(|e| e.to_string())?;
                    labels.insert(l.clone(), MolGraph::from_kekule(&k));
                }
                graphs.push(labels[l].clone());
            }
            gold_path(&mol, &tree, &graphs)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })();
        match result {
            Ok(()) => st.rebuilt += 1,
            Err(why) => st.failures.push((s.clone(), why)),
        }
    }
    st
}
