//! The cluster vocabulary: the sorted set of cluster labels over a data set.
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vocab {
    labels: Vec<String>,
    index: HashMap<String, usize>,
}

impl Vocab {
    pub fn new<I: IntoIterator<Item = String>>(labels: I) -> Vocab {
        let set: BTreeSet<String> = labels.into_iter().collect();
        let labels: Vec<String> = set.into_iter().collect();
        let index = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i))
            .collect();
        Vocab { labels, index }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn get(&self, label: &str) -> Option<usize> {
        self.index.get(label).copied()
    }
}
