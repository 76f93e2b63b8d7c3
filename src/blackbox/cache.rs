//! A bounded cache of black-box answers by canonical SMILES, in front of any
//! `KnowledgeSource`. In Stage 2 most perturbed latents decode to a handful of
//! molecules, so most featurizations repeat. The answer for a molecule never
//! depends on the cache (sources must be deterministic), so the eviction policy
//! (oldest first) only changes speed, never results. Answers are cached, accidents
//! are not: a `QueryError::Failed` (a crash, time-out, restart, an out-of-step or
//! garbled answer) is asked again next time; a molecule the source itself rejected
//! (`QueryError::Rejected`) is cached like a graph.
use crate::blackbox::source::{KnowledgeSource, QueryError};
use crate::chem::MolGraph;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

pub type Answer = Arc<Result<MolGraph, QueryError>>;

pub struct FeatureCache {
    capacity: usize,
    /// Ask the source for hits too and count answers unlike the cached ones.
    check: bool,
    /// Hits whose fresh answer differed from the cached one, since built.
    differ: u64,
    map: HashMap<String, Answer>,
    order: VecDeque<String>,
}

/// Hits and misses of one `query` call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: usize,
    pub misses: usize,
}

impl FeatureCache {
    /// `capacity` 0 disables caching (every query goes to the source).
    pub fn new(capacity: usize) -> Self {
        FeatureCache {
            capacity,
            check: false,
            differ: 0,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// With `check`, every hit is also asked of the source (a determinism check,
    /// `zo.cache_check`); the cached answer is still the one returned.
    pub fn checking(mut self, check: bool) -> Self {
        self.check = check;
        self
    }

    /// Hits whose fresh answer differed from the cached one (with `checking`).
    pub fn differ(&self) -> u64 {
        self.differ
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// One answer per SMILES (in order); the misses go to `source` in one batch.
    pub fn query(
        &mut self,
        source: &dyn KnowledgeSource,
        smiles: &[String],
    ) -> (Vec<Answer>, CacheStats) {
        let keys: Vec<&str> = smiles.iter().map(String::as_str).collect();
        let hit: Vec<bool> = keys.iter().map(|s| self.map.contains_key(*s)).collect();
        let out = self.lookup(&keys, |miss| {
            let miss: Vec<String> = miss.iter().map(|&i| smiles[i].clone()).collect();
            source.query(&miss)
        });
        if self.check && out.1.hits > 0 {
            self.recheck(source, smiles, &hit, &out.0);
        }
        out
    }

    /// Asks `source` again for the distinct SMILES answered from the cache (`hit`)
    /// and counts the answers unlike `cached`, naming the first few in the log.
    /// A fresh failure (an accident, not an answer) is not compared.
    fn recheck(
        &mut self,
        source: &dyn KnowledgeSource,
        smiles: &[String],
        hit: &[bool],
        cached: &[Answer],
    ) {
        let mut seen = std::collections::HashSet::new();
        let (again, old): (Vec<String>, Vec<&Answer>) = smiles
            .iter()
            .zip(hit)
            .zip(cached)
            .filter(|((s, &h), _)| h && seen.insert(s.as_str()))
            .map(|((s, _), a)| (s.clone(), a))
            .unzip();
        for ((s, fresh), old) in again.iter().zip(source.query(&again)).zip(old) {
            if matches!(fresh, Err(QueryError::Failed(_))) || fresh == **old {
                continue;
            }
            self.differ += 1;
            if self.differ <= 5 {
                log::warn!(
                    "zo.cache_check: the source answered {s:?} unlike its cached answer (a source must be deterministic)"
                );
            }
        }
    }

    /// Answers `keys` from the cache; `answer` gets the positions (first
    /// occurrences) of the distinct missing keys and answers them in order.
    fn lookup<F>(&mut self, keys: &[&str], answer: F) -> (Vec<Answer>, CacheStats)
    where
        F: FnOnce(&[usize]) -> Vec<Result<MolGraph, QueryError>>,
    {
        let mut out: Vec<Option<Answer>> = keys.iter().map(|s| self.map.get(*s).cloned()).collect();
        let mut missing: Vec<usize> = Vec::new();
        for (i, (s, o)) in keys.iter().zip(&out).enumerate() {
            if o.is_none() && !missing.iter().any(|&m| keys[m] == *s) {
                missing.push(i);
            }
        }
        // As if asked one by one: a repeat of a missing key is answered by the
        // source's one answer, a hit (only distinct misses go to the source).
        let stats = CacheStats {
            hits: keys.len() - missing.len(),
            misses: missing.len(),
        };
        if !missing.is_empty() {
            let answers: Vec<Answer> = answer(&missing).into_iter().map(Arc::new).collect();
            let fresh: HashMap<&str, &Answer> =
                missing.iter().map(|&i| keys[i]).zip(&answers).collect();
            for (s, o) in keys.iter().zip(out.iter_mut()) {
                if o.is_none() {
                    *o = fresh.get(s).map(|a| Arc::clone(a));
                }
            }
            for (&i, a) in missing.iter().zip(answers) {
                self.insert(keys[i].to_string(), a);
            }
        }
        (out.into_iter().flatten().collect(), stats)
    }

    fn insert(&mut self, key: String, value: Answer) {
        if self.capacity == 0 || matches!(value.as_ref(), Err(QueryError::Failed(_))) {
            return;
        }
        while self.map.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blackbox::RdkitSource;
    use crate::chem::Featurizer;

    #[test]
    fn hits_misses_eviction_and_failures() {
        let src = RdkitSource::new(Featurizer::full());
        let mut c = FeatureCache::new(2);
        let q = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (a, s) = c.query(&src, &q(&["CCO", "CCO", "c1ccccc1"]));
        assert_eq!(s, CacheStats { hits: 1, misses: 2 });
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].as_ref().as_ref().unwrap().n_atoms, 3);
        let (b, s) = c.query(&src, &q(&["CCO", "not a smiles"]));
        assert_eq!(s, CacheStats { hits: 1, misses: 1 });
        assert!(
            b[1].is_err(),
            "a rejected molecule is an Err, cached like any answer"
        );
        // capacity 2: the oldest entry (CCO) was evicted by the failure's entry
        assert_eq!(c.len(), 2);
        let (_, s) = c.query(&src, &q(&["CCO"]));
        assert_eq!(s.misses, 1);
        let mut off = FeatureCache::new(0);
        off.query(&src, &q(&["CCO"]));
        let (_, s) = off.query(&src, &q(&["CCO"]));
        assert_eq!((s.hits, off.len()), (0, 0));
    }
}
