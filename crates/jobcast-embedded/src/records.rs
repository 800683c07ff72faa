//! The jobs held in memory: for each job id, either its whole record or, once the job has ended
//! and its final record is committed, only what the queue needs without reading the store (its
//! state and owner; its end time is in the state's index of ended jobs). Ended jobs are kept
//! for the whole retention period, so they are most of the jobs; their records are read back
//! from the store when asked for.
//!
//! The map is split into shards, each record boxed, keyed with foldhash (randomly seeded,
//! several times cheaper than SipHash on these short ids). A single map stops every caller of
//! the queue while it grows, for as long as it takes to move all its entries. Timed under the
//! state lock in a closed-loop run: 22, 48 and 101 ms at 115k, 229k and 459k boxed records; the
//! run's slowest call took 791 ms with records stored inline, 195 ms boxed, and 36 ms boxed and
//! split into [`SHARDS`] maps, where one growth moves a sixty-fourth of the entries.

use crate::state::JobRecord;
use foldhash::fast::RandomState;
use jobcast_core::JobState;
use std::{collections::HashMap, hash::BuildHasher};

/// Number of shards.
const SHARDS: usize = 64;

/// What is held of one job.
pub enum Slot {
    /// The whole record: the job is open, or has ended and its final record is not yet known
    /// to be committed.
    Whole(Box<JobRecord>),
    /// An ended job whose final record is in the store.
    Stored(Ended),
}

/// What is kept in memory of an ended job whose record is in the store.
pub struct Ended {
    /// How it ended.
    pub state: JobState,
    /// Who submitted it.
    pub owner: Box<str>,
}

impl Slot {
    /// The job's state.
    pub fn state(&self) -> JobState {
        match self {
            Slot::Whole(r) => r.state,
            Slot::Stored(e) => e.state,
        }
    }

    /// Who submitted the job.
    pub fn owner(&self) -> &str {
        match self {
            Slot::Whole(r) => &r.owner,
            Slot::Stored(e) => &e.owner,
        }
    }
}

/// Job id → what is held of it.
pub struct Records {
    shards: Vec<HashMap<String, Slot, RandomState>>,
    hasher: RandomState,
    len: usize,
}

impl Default for Records {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| HashMap::default()).collect(),
            hasher: RandomState::default(),
            len: 0,
        }
    }
}

impl Records {
    fn shard(&self, id: &str) -> usize {
        (self.hasher.hash_one(id) % SHARDS as u64) as usize
    }

    /// What is held of `id`.
    pub fn slot(&self, id: &str) -> Option<&Slot> {
        self.shards[self.shard(id)].get(id)
    }

    /// The whole record of `id`, if it is held.
    pub fn get(&self, id: &str) -> Option<&JobRecord> {
        match self.slot(id)? {
            Slot::Whole(r) => Some(r),
            Slot::Stored(_) => None,
        }
    }

    /// The whole record of `id`, if it is held, to change.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut JobRecord> {
        let i = self.shard(id);
        match self.shards[i].get_mut(id)? {
            Slot::Whole(r) => Some(r),
            Slot::Stored(_) => None,
        }
    }

    /// Holds `rec` whole under its id, replacing anything held there.
    pub fn insert(&mut self, rec: JobRecord) {
        let id = rec.id.clone();
        self.put(id, Slot::Whole(Box::new(rec)));
    }

    /// Holds only the end of `rec`, an ended job whose record is in the store.
    pub fn insert_ended(&mut self, rec: JobRecord) {
        let ended = Ended {
            state: rec.state,
            owner: rec.owner.into_boxed_str(),
        };
        self.put(rec.id, Slot::Stored(ended));
    }

    fn put(&mut self, id: String, slot: Slot) {
        let i = self.shard(&id);
        if self.shards[i].insert(id, slot).is_none() {
            self.len += 1;
        }
    }

    /// Keeps only [`Ended`] of `id`, if its whole record is held, has ended, and is still the
    /// one numbered `seq` (a retry numbers the job anew). Returns whether it did.
    pub fn keep_ended_only(&mut self, id: &str, seq: u64) -> bool {
        let i = self.shard(id);
        let Some(slot) = self.shards[i].get_mut(id) else {
            return false;
        };
        let ended = match slot {
            Slot::Whole(r) if r.seq == seq && r.state.is_terminal() => Ended {
                state: r.state,
                owner: std::mem::take(&mut r.owner).into_boxed_str(),
            },
            _ => return false,
        };
        *slot = Slot::Stored(ended);
        true
    }

    /// Takes `id` out.
    pub fn remove(&mut self, id: &str) -> Option<Slot> {
        let i = self.shard(id);
        let slot = self.shards[i].remove(id)?;
        self.len -= 1;
        Some(slot)
    }

    /// Number of jobs held.
    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove() {
        let mut r = Records::default();
        for i in 0..1000 {
            r.insert(JobRecord::for_test(&format!("j{i}")));
        }
        r.insert(JobRecord::for_test("j7"));
        assert_eq!(r.len(), 1000);
        assert_eq!(r.get("j7").map(|x| x.id.as_str()), Some("j7"));
        r.get_mut("j8").unwrap().attempt = 3;
        assert_eq!(r.get("j8").unwrap().attempt, 3);
        assert!(r.remove("j9").is_some());
        assert!(r.remove("j9").is_none() && r.get("j9").is_none());
        assert_eq!(r.len(), 999);
    }

    #[test]
    fn keeps_only_the_end_of_an_ended_job_of_the_same_number() {
        let mut r = Records::default();
        let mut rec = JobRecord::for_test("a");
        rec.owner = "alice".into();
        rec.seq = 5;
        r.insert(rec);
        assert!(!r.keep_ended_only("a", 5), "an open job is kept whole");
        let rec = r.get_mut("a").unwrap();
        rec.state = JobState::Failed;
        assert!(
            !r.keep_ended_only("a", 4),
            "another numbering is kept whole"
        );
        assert!(!r.keep_ended_only("b", 5));
        assert!(r.keep_ended_only("a", 5));
        assert!(r.get("a").is_none());
        let slot = r.slot("a").unwrap();
        assert_eq!((slot.state(), slot.owner()), (JobState::Failed, "alice"));
        assert!(matches!(slot, Slot::Stored(_)));
        assert!(!r.keep_ended_only("a", 5), "already kept ended only");
        assert_eq!(r.len(), 1);
    }
}
