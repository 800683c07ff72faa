//! Durable storage of job records in a redb file, with group commit: one writer thread takes
//! every pending write, applies them in one transaction, commits once (one fsync) and then
//! acknowledges all of them.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::{collections::HashMap, path::Path, sync::Arc, thread};
use tokio::sync::oneshot;

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");

/// Acknowledgement that a write is durable (or that it failed).
pub type Ack = oneshot::Receiver<Result<(), String>>;

enum Op {
    Write {
        key: String,
        value: Option<Vec<u8>>,
        ack: Option<oneshot::Sender<Result<(), String>>>,
    },
    Flush(oneshot::Sender<Result<(), String>>),
    Stop,
}

/// Handle to the writer thread.
pub struct Store {
    tx: std::sync::mpsc::Sender<Op>,
    db: Arc<Database>,
}

impl Store {
    /// Opens (or creates) the database at `path` and starts the writer thread.
    pub fn open(path: &Path) -> Result<Self, String> {
        let db = Database::create(path).map_err(|e| format!("open {}: {e}", path.display()))?;
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

    /// Every stored record.
    pub fn load(&self) -> Result<Vec<(String, Vec<u8>)>, String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(JOBS).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| e.to_string())? {
            let (k, v) = item.map_err(|e| e.to_string())?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Queues a write (`None` deletes). With `durable`, returns an acknowledgement that
    /// resolves once the write is committed.
    pub fn write(&self, key: String, value: Option<Vec<u8>>, durable: bool) -> Option<Ack> {
        let (ack_tx, ack_rx) = if durable {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        if self
            .tx
            .send(Op::Write {
                key,
                value,
                ack: ack_tx,
            })
            .is_err()
        {
            tracing::error!("store writer is gone");
        }
        ack_rx
    }
}

impl Store {
    /// Resolves once every write queued before it is committed.
    pub fn flush(&self) -> Ack {
        let (t, r) = oneshot::channel();
        let _ = self.tx.send(Op::Flush(t));
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
    let mut acks = Vec::new();
    loop {
        // Block for the first op, then take everything else already queued: one commit for all.
        let mut stop = false;
        match rx.recv() {
            Ok(op) => stop |= absorb(op, &mut pending, &mut acks),
            Err(_) => stop = true,
        }
        while let Ok(op) = rx.try_recv() {
            stop |= absorb(op, &mut pending, &mut acks);
        }
        if !pending.is_empty() || !acks.is_empty() {
            let result = commit(&db, &mut pending).map_err(|e| {
                tracing::error!(error = %e, "job store commit failed");
                e
            });
            for ack in acks.drain(..) {
                let _: Result<_, _> = oneshot::Sender::send(ack, result.clone());
            }
        }
        if stop {
            return;
        }
    }
}

fn absorb(
    op: Op,
    pending: &mut HashMap<String, Option<Vec<u8>>>,
    acks: &mut Vec<oneshot::Sender<Result<(), String>>>,
) -> bool {
    match op {
        Op::Write { key, value, ack } => {
            pending.insert(key, value);
            acks.extend(ack);
            false
        }
        Op::Flush(ack) => {
            acks.push(ack);
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
