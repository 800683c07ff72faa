//! Values kept by a pair of labels, for metric handles: a labelled `counter!` or `histogram!`
//! builds its key and looks it up in the recorder's map on every call (with the other
//! per-job metrics, one to two percent of the embedded server's samples). A handle kept here
//! is made once per pair, then cloned out under a read lock.

use std::{collections::HashMap, sync::RwLock};

/// Values by (first label, second label), made on first use.
#[derive(Debug, Default)]
pub struct ByLabels<T> {
    map: RwLock<HashMap<String, HashMap<String, T>>>,
}

impl<T: Clone> ByLabels<T> {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
        }
    }

    /// The value of (`a`, `b`), made with `make` the first time it is asked for.
    pub fn get(&self, a: &str, b: &str, make: impl FnOnce() -> T) -> T {
        let read = self.map.read().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = read.get(a).and_then(|m| m.get(b)) {
            return v.clone();
        }
        drop(read);
        let mut write = self.map.write().unwrap_or_else(|e| e.into_inner());
        write
            .entry(a.to_owned())
            .or_default()
            .entry(b.to_owned())
            .or_insert_with(make)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::ByLabels;

    #[test]
    fn makes_each_pair_once() {
        let c = ByLabels::new();
        let mut made = 0;
        for (a, b) in [
            ("m", "ok"),
            ("m", "ok"),
            ("m", "err"),
            ("n", "ok"),
            ("m", "ok"),
        ] {
            let v = c.get(a, b, || {
                made += 1;
                format!("{a}/{b}")
            });
            assert_eq!(v, format!("{a}/{b}"));
        }
        assert_eq!(made, 3);
    }
}
