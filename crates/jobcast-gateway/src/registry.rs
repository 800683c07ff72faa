//! The gateway's view of which methods live workers serve, refreshed from the queue's method
//! registry, with each params JSON Schema compiled once.
//!
//! A call is checked against the list in hand. Once that list is older than [`FRESH`], the
//! call that notices starts one refresh in the background and goes on with it: no call waits
//! for a refresh, and calls arriving meanwhile start none of their own. Only the first list,
//! and a method the list does not have (a worker may have just started), are fetched while
//! the call waits.

use futures_util::future::BoxFuture;
use jobcast_core::{JobQueue, MethodInfo};
use parking_lot::RwLock;
use serde_json::Value;
use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// How long a fetched method list is used before it is refreshed (in the background).
const FRESH: Duration = Duration::from_millis(1000);
/// Unknown methods trigger a refresh at most this often.
const MISS_REFRESH: Duration = Duration::from_millis(100);

struct Entry {
    info: MethodInfo,
    validator: Option<Arc<jsonschema::Validator>>,
}

struct Cache {
    fetched: Option<Instant>,
    methods: HashMap<String, Arc<Entry>>,
}

/// Result of checking a call against the registry.
pub enum Check {
    /// Served, params valid.
    Ok,
    /// No live worker serves it.
    NotFound,
    /// Params fail the schema; the message says where.
    InvalidParams(String),
    /// The method is unknown here and the registry cannot be read (backend unreachable).
    Unavailable,
}

/// Reads the method list from the queue.
type Fetch =
    Arc<dyn Fn() -> BoxFuture<'static, jobcast_core::Result<Vec<MethodInfo>>> + Send + Sync>;

/// Cached method registry.
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    fetch: Fetch,
    /// How long a list is used before a refresh ([`FRESH`], but for tests).
    fresh: Duration,
    cache: RwLock<Cache>,
    /// A background refresh is running.
    refreshing: AtomicBool,
}

impl Inner {
    /// Refetches the list when it is older than `max_age`; false when the fetch failed.
    async fn refresh(&self, max_age: Duration) -> bool {
        if self
            .cache
            .read()
            .fetched
            .is_some_and(|t| t.elapsed() < max_age)
        {
            return true;
        }
        match (self.fetch)().await {
            Ok(list) => {
                // The list in use stays readable until the new one replaces it: calls checked
                // meanwhile must not see an empty registry (they would get -32601).
                let mut methods = HashMap::with_capacity(list.len());
                for info in list {
                    // Reuse the compiled validator when the schema did not change.
                    let kept = self
                        .cache
                        .read()
                        .methods
                        .get(&info.name)
                        .filter(|e| e.info == info)
                        .cloned();
                    let entry = kept.unwrap_or_else(|| Arc::new(compile(info)));
                    methods.insert(entry.info.name.clone(), entry);
                }
                let mut c = self.cache.write();
                c.methods = methods;
                c.fetched = Some(Instant::now());
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "method registry refresh failed");
                false
            }
        }
    }
}

impl Registry {
    /// A registry reading from `queue`.
    pub fn new(queue: Arc<dyn JobQueue>) -> Self {
        Self::with_fetch(
            Arc::new(move || {
                let queue = queue.clone();
                Box::pin(async move { queue.methods().await })
            }),
            FRESH,
        )
    }

    fn with_fetch(fetch: Fetch, fresh: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                fetch,
                fresh,
                cache: RwLock::new(Cache {
                    fetched: None,
                    methods: HashMap::new(),
                }),
                refreshing: AtomicBool::new(false),
            }),
        }
    }

    /// Starts a refresh in the background when the list fetched at `fetched` is older than
    /// the freshness and none is running.
    fn refresh_if_stale(&self, fetched: Instant) {
        let inner = &self.inner;
        if fetched.elapsed() >= inner.fresh && !inner.refreshing.swap(true, Ordering::AcqRel) {
            let inner = inner.clone();
            tokio::spawn(async move {
                inner.refresh(Duration::ZERO).await;
                inner.refreshing.store(false, Ordering::Release);
            });
        }
    }

    /// Whether `method` was served when the list was last fetched (no fetch).
    pub fn serves(&self, method: &str) -> bool {
        self.inner.cache.read().methods.contains_key(method)
    }

    /// Checks that `method` is served and `params` (raw JSON) fit its schema.
    pub async fn check(&self, method: &str, params: &str) -> Check {
        let inner = &self.inner;
        // Read apart, so the lock is not held while fetching (which takes it to write).
        let fetched = inner.cache.read().fetched;
        let mut reachable = match fetched {
            // The first list is fetched while the call waits.
            None => inner.refresh(Duration::ZERO).await,
            Some(at) => {
                self.refresh_if_stale(at);
                true
            }
        };
        let mut entry = inner.cache.read().methods.get(method).cloned();
        if entry.is_none() && reachable {
            reachable = inner.refresh(MISS_REFRESH).await;
            entry = inner.cache.read().methods.get(method).cloned();
        }
        let Some(entry) = entry else {
            return if reachable {
                Check::NotFound
            } else {
                Check::Unavailable
            };
        };
        let Some(validator) = &entry.validator else {
            return Check::Ok;
        };
        let Ok(value) = serde_json::from_str::<Value>(params) else {
            return Check::InvalidParams("params are not JSON".into());
        };
        match validator.iter_errors(&value).next() {
            None => Check::Ok,
            Some(err) => {
                let path = err.instance_path().to_string();
                let at = if path.is_empty() {
                    "params".to_owned()
                } else {
                    format!("params{path}")
                };
                Check::InvalidParams(format!("invalid params: {at}: {err}"))
            }
        }
    }

    /// The methods live workers serve (a list older than the freshness is fetched again
    /// first: this is an explicit question).
    pub async fn list(&self) -> Vec<MethodInfo> {
        // On a failed refresh the last list known is the best answer there is.
        let _ = self.inner.refresh(self.inner.fresh).await;
        let mut v: Vec<MethodInfo> = self
            .inner
            .cache
            .read()
            .methods
            .values()
            .map(|e| e.info.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

fn compile(info: MethodInfo) -> Entry {
    let validator = info.params_schema.as_ref().and_then(|s| match jsonschema::validator_for(s) {
        Ok(v) => Some(Arc::new(v)),
        Err(e) => {
            tracing::error!(method = %info.name, error = %e, "worker declared an invalid params schema; not enforced");
            None
        }
    });
    Entry { info, validator }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobcast_core::WorkerAnnouncement;
    use jobcast_embedded::{Embedded, EmbeddedConfig};

    /// Calls checked while the list is being refreshed still find a served method (the old
    /// refresh emptied the cache while building the new list, so some got -32601).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refresh_never_hides_served_methods() {
        let dir = tempfile::tempdir().unwrap();
        let e = Embedded::open(EmbeddedConfig::new(dir.path().join("j.redb"))).unwrap();
        let queue: Arc<dyn JobQueue> = Arc::new(e);
        let methods = (0..50)
            .map(|i| MethodInfo {
                name: format!("m{i}"),
                params_schema: Some(serde_json::json!({"type": "object"})),
            })
            .collect();
        queue
            .announce(&WorkerAnnouncement {
                worker_id: "w".into(),
                methods,
                ttl: Duration::from_secs(60),
            })
            .await
            .unwrap();
        let reg = Arc::new(Registry::new(queue));
        let refresher = {
            let reg = reg.clone();
            tokio::spawn(async move {
                for _ in 0..2000 {
                    reg.inner.refresh(Duration::ZERO).await;
                }
            })
        };
        let mut missed = 0;
        while !refresher.is_finished() {
            if !matches!(reg.check("m7", "{}").await, Check::Ok) {
                missed += 1;
            }
        }
        assert_eq!(missed, 0, "served method reported missing during refreshes");
    }

    /// A list past its freshness is refreshed in the background, once at a time: checks go on
    /// with the list in hand while the refresh has not answered (here it never does).
    #[tokio::test]
    async fn checks_never_wait_for_a_refresh() {
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let fetch: Fetch = {
            let fetches = fetches.clone();
            Arc::new(move || {
                if fetches.fetch_add(1, Ordering::SeqCst) == 0 {
                    let list = vec![MethodInfo {
                        name: "m".into(),
                        params_schema: None,
                    }];
                    Box::pin(async move { Ok(list) })
                } else {
                    Box::pin(std::future::pending())
                }
            })
        };
        // Every list is stale as soon as it is fetched.
        let reg = Registry::with_fetch(fetch, Duration::ZERO);
        for _ in 0..100 {
            let check = tokio::time::timeout(Duration::from_secs(5), reg.check("m", "{}"));
            assert!(matches!(check.await, Ok(Check::Ok)), "a check waited");
            tokio::task::yield_now().await;
        }
        // The first list, then one refresh, still running.
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        assert!(reg.serves("m"));
    }
}
