//! Every Redis key and channel name jobcast uses, built here and nowhere else. All of a
//! queue's keys share the hash tag `{queue}`, so they live in one Redis Cluster slot and every
//! Lua script may touch any of them.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{q}:j:<id>` | hash | one job (fields documented in `lua/enqueue.lua`) |
//! | `{q}:l:<id>` | set | other gateways listening to the job's events (the submitting one is the job's field `g`) |
//! | `{q}:ready:<method>` | zset | queued jobs; score = (1000 − priority)·2^42 + sequence |
//! | `{q}:mark:<method>` | list | at most one marker: "work may be ready" (workers BLPOP it) |
//! | `{q}:delayed` | zset | delayed jobs by run time (ms) |
//! | `{q}:active` | zset | running jobs by lease deadline (ms) |
//! | `{q}:endlog` | list | the ended log: `<end ms>:<id>` per ended job, oldest first, for the retention purge (`lua/prelude.lua`) |
//! | `{q}:endhead` | string | the ended log's head as a position that does not move: entries dropped from the head add to it, entries moved in front take from it (an operator's purge walks these positions) |
//! | `{q}:ended` | zset | jobs ended by versions before the log, by end time (ms): moved to the log's head by `tick`, no longer written |
//! | `{q}:seq` | string | sequence counter |
//! | `{q}:open` | string | number of jobs not yet ended |
//! | `{q}:owners` | hash | owner → number of their jobs not yet ended (owners with none are absent) |
//! | `{q}:ends` | hash | ended jobs kept, by state (completed, failed, cancelled) |
//! | `{q}:workers` | zset | worker ids by announcement expiry (ms) |
//! | `{q}:wm:<worker>` | string | JSON list of the worker's methods (with TTL) |
//! | `{q}:pr:<topic>` | hash | presence: `<gateway>\|<connection>` → user |
//! | `{q}:gateways` | zset | gateway instance ids by report expiry (ms) |
//! | `{q}:gw:<gateway>` | string | the gateway's last stats report (with TTL) |
//!
//! Channels: `{q}:inbox:<gateway>` (job events for that gateway), `{q}:ctl:<worker>` (cancel
//! and lease-lost signals for that worker), `{q}:t:<topic>` (topic messages).
//!
//! Nothing grows without bound:
//! - Jobs not yet ended (`ready`, `delayed`, `active`, and their hashes) are capped by
//!   `max_open_jobs` (`{q}:open`): past it, enqueue refuses (-32005 to the caller).
//! - Ended jobs — results, and failed jobs kept as dead letters — are in the ended log and are
//!   deleted with their listener set by the `tick` script once older than the retention period,
//!   or, oldest first, past `max_ended_jobs` (in batches, every tick of every worker). An entry
//!   whose job was retried or purged since is dropped when it reaches the log's head.
//! - A listener set holds at most one id per gateway; a marker list holds at most one element
//!   (it is pushed to only when empty).
//! - `{q}:workers` entries past their expiry are removed whenever the method list is read;
//!   `{q}:wm:<worker>` keys carry a TTL.
//! - Channels hold nothing: a message to a gateway that is gone is dropped by Redis.
//! - A presence hash holds one field per subscribed connection; a connection's field goes
//!   when it leaves, and fields of gateways that stopped reporting are dropped whenever the
//!   topic's presence is read. `{q}:gateways` entries past expiry go at every report.

/// The key builder of one queue.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys of queue `name` (the hash tag).
    pub fn new(name: &str) -> Self {
        Self {
            prefix: format!("{{{name}}}:"),
        }
    }

    /// The common prefix `{q}:` (Lua scripts build per-job keys from it).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Prefix of job hashes (`{q}:j:`), for scripts that reach jobs by id.
    pub fn job_prefix(&self) -> String {
        self.job("")
    }

    /// Prefix of listener sets.
    pub fn listeners_prefix(&self) -> String {
        self.listeners("")
    }

    /// Prefix of ready sets.
    pub fn ready_prefix(&self) -> String {
        self.ready("")
    }

    /// Prefix of marker lists.
    pub fn mark_prefix(&self) -> String {
        self.mark("")
    }

    /// Prefix of gateway inbox channels.
    pub fn inbox_prefix(&self) -> String {
        self.inbox("")
    }

    /// Prefix of worker control channels.
    pub fn control_prefix(&self) -> String {
        self.control("")
    }

    /// Prefix of topic channels.
    pub fn topic_prefix(&self) -> String {
        self.topic("")
    }

    /// A job's hash.
    pub fn job(&self, id: &str) -> String {
        format!("{}j:{id}", self.prefix)
    }

    /// A job's listener set.
    pub fn listeners(&self, id: &str) -> String {
        format!("{}l:{id}", self.prefix)
    }

    /// Ready jobs of a method.
    pub fn ready(&self, method: &str) -> String {
        format!("{}ready:{method}", self.prefix)
    }

    /// The marker list of a method.
    pub fn mark(&self, method: &str) -> String {
        format!("{}mark:{method}", self.prefix)
    }

    /// Delayed jobs.
    pub fn delayed(&self) -> String {
        format!("{}delayed", self.prefix)
    }

    /// Running jobs by lease deadline.
    pub fn active(&self) -> String {
        format!("{}active", self.prefix)
    }

    /// Jobs ended by earlier versions, by end time (moved to the log, not written).
    pub fn ended(&self) -> String {
        format!("{}ended", self.prefix)
    }

    /// The ended log.
    pub fn ended_log(&self) -> String {
        format!("{}endlog", self.prefix)
    }

    /// The ended log's head position.
    pub fn ended_log_head(&self) -> String {
        format!("{}endhead", self.prefix)
    }

    /// The sequence counter.
    pub fn seq(&self) -> String {
        format!("{}seq", self.prefix)
    }

    /// The open-jobs counter.
    pub fn open(&self) -> String {
        format!("{}open", self.prefix)
    }

    /// Open jobs counted by owner.
    pub fn owners(&self) -> String {
        format!("{}owners", self.prefix)
    }

    /// Ended jobs kept, counted by state.
    pub fn ends(&self) -> String {
        format!("{}ends", self.prefix)
    }

    /// Live workers by expiry.
    pub fn workers(&self) -> String {
        format!("{}workers", self.prefix)
    }

    /// A worker's method list.
    pub fn worker_methods(&self, worker: &str) -> String {
        format!("{}wm:{worker}", self.prefix)
    }

    /// A gateway's inbox channel.
    pub fn inbox(&self, gateway: &str) -> String {
        format!("{}inbox:{gateway}", self.prefix)
    }

    /// A worker's control channel.
    pub fn control(&self, worker: &str) -> String {
        format!("{}ctl:{worker}", self.prefix)
    }

    /// A topic's channel.
    pub fn topic(&self, topic: &str) -> String {
        format!("{}t:{topic}", self.prefix)
    }

    /// Who is in a topic: field `<gateway>|<connection>` = user.
    pub fn presence(&self, topic: &str) -> String {
        format!("{}pr:{topic}", self.prefix)
    }

    /// A presence field.
    pub fn presence_field(gateway: &str, conn: u64) -> String {
        format!("{gateway}|{conn}")
    }

    /// Live gateways by report expiry (ms).
    pub fn gateways(&self) -> String {
        format!("{}gateways", self.prefix)
    }

    /// A gateway's last report (stats JSON, with a TTL).
    pub fn gateway_report(&self, gateway: &str) -> String {
        format!("{}gw:{gateway}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_shares_the_hash_tag() {
        let k = Keys::new("jobcast");
        for key in [
            k.job("a"),
            k.listeners("a"),
            k.ready("m"),
            k.mark("m"),
            k.delayed(),
            k.active(),
            k.ended(),
            k.ended_log(),
            k.ended_log_head(),
            k.seq(),
            k.open(),
            k.ends(),
            k.owners(),
            k.workers(),
            k.worker_methods("w"),
            k.inbox("g"),
            k.control("w"),
            k.topic("room:1"),
            k.presence("room:1"),
            k.gateways(),
            k.gateway_report("g"),
        ] {
            assert!(key.starts_with("{jobcast}:"), "{key}");
        }
    }
}
