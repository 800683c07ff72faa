//! Durable storage of job records in a redb file, with group commit: one writer thread takes
//! every pending write, applies them in one transaction and commits once (one fsync). Notes
//! queued among the writes are handed back together once the writes queued before them are
//! committed, in the order they were queued, so the owner does its after-commit work once per
//! commit, not once per write. Reads see what is committed.
//!
//! Writes travel packed ([`Writes`]): a change's keys and records in one buffer, copied into
//! the writer's queue. The writer takes the whole queue at once by swapping it with a spare
//! it keeps, so no write is an allocation of its own, and the writer frees nothing the threads
//! that change jobs allocated (docs/decisions.md, session 14).

use parking_lot::{Condvar, Mutex};
use redb::{Builder, Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");

/// A queue's buffers are shrunk back to this many bytes and writes after their commit, so one
/// burst does not keep its memory for good (the writer keeps two queues' worth).
const KEEP_BYTES: usize = 4 << 20;
const KEEP_WRITES: usize = 64 << 10;

/// Writes of records, in order, packed in one buffer: each write's key, then its record.
#[derive(Debug, Default)]
pub struct Writes {
    bytes: Vec<u8>,
    /// Per write: where its key ends in `bytes`, and where its record ends (`None` deletes).
    /// Each write starts where the one before it ended.
    ends: Vec<(usize, Option<usize>)>,
}

impl Writes {
    /// Writes `key`'s record, which `record` appends to the buffer it is given; `size` is
    /// about how long the record is, so the buffer grows once.
    pub fn put(&mut self, key: &str, size: usize, record: impl FnOnce(&mut Vec<u8>)) {
        self.bytes.reserve(key.len() + size);
        self.bytes.extend_from_slice(key.as_bytes());
        let key_end = self.bytes.len();
        record(&mut self.bytes);
        self.ends.push((key_end, Some(self.bytes.len())));
    }

    /// Deletes `key`'s record.
    pub fn delete(&mut self, key: &str) {
        self.bytes.extend_from_slice(key.as_bytes());
        self.ends.push((self.bytes.len(), None));
    }

    /// Appends `other`'s writes after these.
    pub fn append(&mut self, other: &Writes) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.ends.extend(
            other
                .ends
                .iter()
                .map(|&(k, v)| (base + k, v.map(|v| base + v))),
        );
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Each write's key and record (`None` deletes), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        let mut start = 0;
        self.ends.iter().map(move |&(key_end, end)| {
            let key = &self.bytes[start..key_end];
            let record = end.map(|end| &self.bytes[key_end..end]);
            start = end.unwrap_or(key_end);
            (key, record)
        })
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.bytes.shrink_to(KEEP_BYTES);
        self.ends.shrink_to(KEEP_WRITES);
    }
}

/// What waits for the writer: writes in the order they were queued, the notes queued among
/// them, and whether the store is being dropped.
struct Queue<N> {
    writes: Writes,
    notes: Vec<N>,
    stop: bool,
}

impl<N> Default for Queue<N> {
    fn default() -> Self {
        Self {
            writes: Writes::default(),
            notes: Vec::new(),
            stop: false,
        }
    }
}

struct Shared<N> {
    queue: Mutex<Queue<N>>,
    /// Signalled when something is queued.
    queued: Condvar,
}

/// Handle to the writer thread; `N` is what the owner queues to hear of commits.
pub struct Store<N> {
    shared: Arc<Shared<N>>,
    started: AtomicBool,
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
        Ok(Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                queued: Condvar::new(),
            }),
            started: AtomicBool::new(false),
            db: Arc::new(db),
        })
    }

    /// Starts the writer thread. After each commit (or failed commit) it calls `committed`
    /// with the result and the notes queued before the commit's last write, in order.
    pub fn start(
        &self,
        committed: impl FnMut(&Result<(), String>, Vec<N>) + Send + 'static,
    ) -> Result<(), String> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Err("store writer already started".into());
        }
        let db = self.db.clone();
        let shared = self.shared.clone();
        thread::Builder::new()
            .name("jobcast-store".into())
            .spawn(move || writer(db, &shared, committed))
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
    /// writes and every write queued before them are committed. A later write of a key
    /// replaces an earlier one not yet committed.
    pub fn change(&self, writes: &Writes, note: Option<N>) {
        if writes.is_empty() && note.is_none() {
            return;
        }
        let mut queue = self.shared.queue.lock();
        queue.writes.append(writes);
        queue.notes.extend(note);
        drop(queue);
        self.shared.queued.notify_one();
    }
}

impl<N> Drop for Store<N> {
    fn drop(&mut self) {
        self.shared.queue.lock().stop = true;
        self.shared.queued.notify_one();
    }
}

fn writer<N>(
    db: Arc<Database>,
    shared: &Shared<N>,
    mut committed: impl FnMut(&Result<(), String>, Vec<N>),
) {
    let mut batch = Queue::default();
    loop {
        // Wait for something, then take everything queued: one commit for all.
        {
            let mut queue = shared.queue.lock();
            while queue.writes.is_empty() && queue.notes.is_empty() && !queue.stop {
                shared.queued.wait(&mut queue);
            }
            std::mem::swap(&mut queue.writes, &mut batch.writes);
            std::mem::swap(&mut queue.notes, &mut batch.notes);
            batch.stop = queue.stop;
        }
        if !batch.writes.is_empty() || !batch.notes.is_empty() {
            let started = std::time::Instant::now();
            let result = commit(&db, &batch.writes).map_err(|e| {
                tracing::error!(error = %e, "job store commit failed");
                e
            });
            metrics::histogram!("jobcast_store_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            committed(&result, std::mem::take(&mut batch.notes));
            batch.writes.clear();
        }
        if batch.stop {
            return;
        }
    }
}

/// Applies the last write of each key in one transaction and commits it.
fn commit(db: &Database, writes: &Writes) -> Result<(), String> {
    let mut last: HashMap<&[u8], Option<&[u8]>, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(writes.len(), Default::default());
    for (key, record) in writes.iter() {
        last.insert(key, record);
    }
    metrics::histogram!("jobcast_store_commit_writes").record(last.len() as f64);
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut table = txn.open_table(JOBS).map_err(|e| e.to_string())?;
        for (key, record) in last {
            let key = std::str::from_utf8(key).map_err(|e| format!("job key: {e}"))?;
            match record {
                Some(bytes) => {
                    table.insert(key, bytes).map_err(|e| e.to_string())?;
                }
                None => {
                    table.remove(key).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(w: &Writes) -> Vec<(String, Option<String>)> {
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        w.iter().map(|(k, v)| (text(k), v.map(text))).collect()
    }

    fn pair(k: &str, v: Option<&str>) -> (String, Option<String>) {
        (k.to_owned(), v.map(str::to_owned))
    }

    #[test]
    fn writes_come_back_in_order_after_an_append() {
        let mut a = Writes::default();
        a.put("job-1", 3, |b| b.extend_from_slice(b"one"));
        a.delete("job-2");
        let mut b = Writes::default();
        b.put("job-3", 0, |_| {});
        b.delete("job-4");
        b.put("job-1", 3, |b| b.extend_from_slice(b"again"));
        let mut all = Writes::default();
        all.append(&a);
        all.append(&b);
        assert_eq!(all.len(), 5);
        assert_eq!(
            listed(&all),
            vec![
                pair("job-1", Some("one")),
                pair("job-2", None),
                pair("job-3", Some("")),
                pair("job-4", None),
                pair("job-1", Some("again")),
            ]
        );
        all.clear();
        assert!(all.is_empty() && listed(&all).is_empty());
    }

    #[test]
    fn a_cleared_queue_lets_go_of_a_burst() {
        let mut w = Writes::default();
        for i in 0..2 * KEEP_WRITES {
            w.put(&format!("job-{i}"), 64, |b| b.resize(b.len() + 64, 0));
        }
        assert!(w.bytes.capacity() > KEEP_BYTES && w.ends.capacity() > KEEP_WRITES);
        w.clear();
        assert!(w.bytes.capacity() <= KEEP_BYTES && w.ends.capacity() <= KEEP_WRITES);
    }

    #[test]
    fn the_last_write_of_a_key_is_the_one_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store: Store<u32> = Store::open(&dir.path().join("jobs.redb"), 1 << 20).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut w = Writes::default();
        w.put("a", 1, |b| b.extend_from_slice(b"1"));
        w.put("b", 1, |b| b.extend_from_slice(b"1"));
        w.put("a", 1, |b| b.extend_from_slice(b"2"));
        w.delete("b");
        w.put("c", 1, |b| b.extend_from_slice(b"1"));
        // Queued before the writer starts, so all of it is one commit.
        store.change(&w, Some(1));
        store.change(&Writes::default(), Some(2));
        store
            .start(move |result, notes| tx.send((result.clone(), notes)).unwrap())
            .unwrap();
        assert_eq!(rx.recv().unwrap(), (Ok(()), vec![1, 2]));
        assert_eq!(
            store.get(&["a", "b", "c"]).unwrap(),
            vec![Some(b"2".to_vec()), None, Some(b"1".to_vec())]
        );
        assert!(store.start(|_, _| {}).is_err(), "started twice");
    }
}
