//! One registry of edge counters per process, keyed by counter name and one label (the broker,
//! source or sink concerned). Edge events are rare, so a mutex costs nothing that matters here;
//! the hot path never touches it.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

#[derive(Debug, Default)]
pub struct Registry {
    counts: Mutex<BTreeMap<(&'static str, String), u64>>,
}

/// The process's registry.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

impl Registry {
    pub fn add(&self, counter: &'static str, label: &str, n: u64) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((counter, label.to_string())).or_default() += n;
    }

    pub fn get(&self, counter: &str, label: &str) -> u64 {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.iter()
            .find(|((n, l), _)| *n == counter && l == label)
            .map_or(0, |(_, v)| *v)
    }

    /// Every counter summed over its labels, by name.
    pub fn totals(&self) -> BTreeMap<&'static str, u64> {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = BTreeMap::new();
        for ((name, _), v) in c.iter() {
            *out.entry(*name).or_default() += v;
        }
        out
    }

    /// Every counter with its label and value.
    pub fn snapshot(&self) -> Vec<(&'static str, String, u64)> {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.iter().map(|((n, l), v)| (*n, l.clone(), *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_per_label_and_in_total() {
        let r = Registry::default();
        r.add("dead_lettered", "q1", 2);
        r.add("dead_lettered", "q2", 1);
        r.add("dead_lettered", "q1", 1);
        assert_eq!(r.get("dead_lettered", "q1"), 3);
        assert_eq!(r.get("dead_lettered", "q3"), 0);
        assert_eq!(r.totals()["dead_lettered"], 4);
        assert_eq!(r.snapshot().len(), 2);
    }
}
