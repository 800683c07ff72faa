//! Durable storage of job records in a redb file, with group commit: one writer thread takes
//! every pending write, applies them in one transaction and commits once (one fsync). Notes
//! queued among the writes are handed back together once the writes queued before them are
//! committed, in the order they were queued, so the owner does its after-commit work once per
//! commit, not once per write. Reads see what is committed.

use parking_lot::Mutex;
use redb::{Builder, Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::{collections::HashMap, path::Path, sync::Arc, thread};

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");

/// Writes waiting for the next commit, by key (a later write of a key replaces an earlier one).
type Pending = HashMap<String, Option<Vec<u8>>, foldhash::fast::RandomState>;

/// A write of a record: its key and its bytes (`None` deletes).
pub type Write = (String, Option<Vec<u8>>);

enum Op<N> {
    /// One change's writes, and what to hand back once they are committed: the queue is
    /// touched once per change, not once per write and once more for the note.
    Change {
        writes: Vec<Write>,
        note: Option<N>,
    },
    Stop,
}

/// Handle to the writer thread; `N` is what the owner queues to hear of commits.
pub struct Store<N> {
    tx: std::sync::mpsc::Sender<Op<N>>,
    /// The writer's end of the queue, until [`Store::start`] hands it to the thread.
    rx: Mutex<Option<std::sync::mpsc::Receiver<Op<N>>>>,
    db: Arc<Database>,
}

impl<N: Send + 'static> Store<N> {
    /// Opens (or creates) the database at `path`, with a page cache of at most `cache_bytes`.
    /// Writes queue from now on; [`Store::start`] starts committing them.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, String> {
        let db = Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        {
            let txn = db.begin_write().map_err(|e| e.to_string())?;
            txn.open_table(JOBS).map_err(|e| e.to_string())?;
            txn.commit().map_err(|e| e.to_string())?;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        Ok(Self {
            tx,
            rx: Mutex::new(Some(rx)),
            db: Arc::new(db),
        })
    }

    /// Starts the writer thread. After each commit (or failed commit) it calls `committed`
    /// with the result and the notes queued before the commit's last write, in order.
    pub fn start(
        &self,
        committed: impl FnMut(&Result<(), String>, Vec<N>) + Send + 'static,
    ) -> Result<(), String> {
        let rx = self
            .rx
            .lock()
            .take()
            .ok_or("store writer already started")?;
        let db = self.db.clone();
        thread::Builder::new()
            .name("jobcast-store".into())
            .spawn(move || writer(db, rx, committed))
            .map_err(|e| e.to_string())?;
        Ok(())
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

    /// Queues a change's writes, in order, then its note (if any), handed back once those
    /// writes and every write queued before them are committed.
    pub fn change(&self, writes: Vec<Write>, note: Option<N>) {
        if writes.is_empty() && note.is_none() {
            return;
        }
        self.send(Op::Change { writes, note });
    }

    fn send(&self, op: Op<N>) {
        if self.tx.send(op).is_err() {
            tracing::error!("store writer is gone");
        }
    }
}

impl<N> Drop for Store<N> {
    fn drop(&mut self) {
        let _ = self.tx.send(Op::Stop);
    }
}

fn writer<N>(
    db: Arc<Database>,
    rx: std::sync::mpsc::Receiver<Op<N>>,
    mut committed: impl FnMut(&Result<(), String>, Vec<N>),
) {
    let mut pending = Pending::default();
    let mut notes: Vec<N> = Vec::new();
    loop {
        // Block for the first op, then take everything else already queued: one commit for all.
        let mut stop = false;
        match rx.recv() {
            Ok(op) => stop |= absorb(op, &mut pending, &mut notes),
            Err(_) => stop = true,
        }
        while let Ok(op) = rx.try_recv() {
            stop |= absorb(op, &mut pending, &mut notes);
        }
        if !pending.is_empty() || !notes.is_empty() {
            let started = std::time::Instant::now();
            metrics::histogram!("jobcast_store_commit_writes").record(pending.len() as f64);
            let result = commit(&db, &mut pending).map_err(|e| {
                tracing::error!(error = %e, "job store commit failed");
                e
            });
            metrics::histogram!("jobcast_store_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            committed(&result, std::mem::take(&mut notes));
        }
        if stop {
            return;
        }
    }
}

fn absorb<N>(op: Op<N>, pending: &mut Pending, notes: &mut Vec<N>) -> bool {
    match op {
        Op::Change { writes, note } => {
            pending.extend(writes);
            notes.extend(note);
            false
        }
        Op::Stop => true,
    }
}

fn commit(db: &Database, pending: &mut Pending) -> Result<(), String> {
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
