//! Durable storage of job records in a redb file, with group commit: one writer thread takes
//! every pending write, applies them in one transaction, commits once (one fsync) and then
//! runs each write's follow-up, in the order the writes were made. Reads see what is committed.

use redb::{Builder, Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::{collections::HashMap, path::Path, sync::Arc, thread};
use tokio::sync::oneshot;

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");

/// What runs once a write is committed (or its commit failed), on the writer thread, in the
/// order the writes were made.
pub type Then = Box<dyn FnOnce(&Result<(), String>) + Send>;

enum Op {
    Write {
        key: String,
        value: Option<Vec<u8>>,
        then: Option<Then>,
    },
    /// Runs once every write queued before it is committed.
    After(Then),
    Stop,
}

/// Handle to the writer thread.
pub struct Store {
    tx: std::sync::mpsc::Sender<Op>,
    db: Arc<Database>,
}

impl Store {
    /// Opens (or creates) the database at `path`, with a page cache of at most `cache_bytes`,
    /// and starts the writer thread.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, String> {
        let db = Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        let db = Arc::new(db);
        {
            let txn = db.begin_write().map_err(|e| e.to_string())?;
            txn.open_table(JOBS).map_err(|e| e.to_string())?;
            txn.commit().map_err(|e| e.to_string())?;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let writer_db = db.clone();
        thread::Builder::new()
            .name("jobcast-store".into())
            .spawn(move || writer(writer_db, rx))
            .map_err(|e| e.to_string())?;
        Ok(Self { tx, db })
    }

    /// Calls `f` with every stored record, in key order.
    pub fn load(&self, mut f: impl FnMut(&str, &[u8])) -> Result<(), String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(JOBS).map_err(|e| e.to_string())?;
        for item in table.iter().map_err(|e| e.to_string())? {
            let (k, v) = item.map_err(|e| e.to_string())?;
            f(k.value(), v.value());
        }
        Ok(())
    }

    /// The committed records of `keys`, in order, read in one transaction.
    pub fn get(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, String> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(JOBS).map_err(|e| e.to_string())?;
        keys.iter()
            .map(|key| {
                let value = table.get(*key).map_err(|e| e.to_string())?;
                Ok(value.map(|v| v.value().to_vec()))
            })
            .collect()
    }

    /// Queues a write (`None` deletes); `then` runs once it is committed.
    pub fn write(&self, key: String, value: Option<Vec<u8>>, then: Option<Then>) {
        if self.tx.send(Op::Write { key, value, then }).is_err() {
            tracing::error!("store writer is gone");
        }
    }
}

impl Store {
    /// Resolves once every write queued before it is committed.
    pub fn flush(&self) -> oneshot::Receiver<Result<(), String>> {
        let (t, r) = oneshot::channel();
        let then: Then = Box::new(move |result| {
            let _ = t.send(result.clone());
        });
        let _ = self.tx.send(Op::After(then));
        r
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.tx.send(Op::Stop);
    }
}

fn writer(db: Arc<Database>, rx: std::sync::mpsc::Receiver<Op>) {
    let mut pending: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    let mut thens: Vec<Then> = Vec::new();
    loop {
        // Block for the first op, then take everything else already queued: one commit for all.
        let mut stop = false;
        match rx.recv() {
            Ok(op) => stop |= absorb(op, &mut pending, &mut thens),
            Err(_) => stop = true,
        }
        while let Ok(op) = rx.try_recv() {
            stop |= absorb(op, &mut pending, &mut thens);
        }
        if !pending.is_empty() || !thens.is_empty() {
            let started = std::time::Instant::now();
            metrics::histogram!("jobcast_store_commit_writes").record(pending.len() as f64);
            let result = commit(&db, &mut pending).map_err(|e| {
                tracing::error!(error = %e, "job store commit failed");
                e
            });
            metrics::histogram!("jobcast_store_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            for then in thens.drain(..) {
                then(&result);
            }
        }
        if stop {
            return;
        }
    }
}

fn absorb(op: Op, pending: &mut HashMap<String, Option<Vec<u8>>>, thens: &mut Vec<Then>) -> bool {
    match op {
        Op::Write { key, value, then } => {
            pending.insert(key, value);
            thens.extend(then);
            false
        }
        Op::After(then) => {
            thens.push(then);
            false
        }
        Op::Stop => true,
    }
}

fn commit(db: &Database, pending: &mut HashMap<String, Option<Vec<u8>>>) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut table = txn.open_table(JOBS).map_err(|e| e.to_string())?;
        for (k, v) in pending.drain() {
            match v {
                Some(bytes) => {
                    table
                        .insert(k.as_str(), bytes.as_slice())
                        .map_err(|e| e.to_string())?;
                }
                None => {
                    table.remove(k.as_str()).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())
}
