//! The Lua scripts, one per atomic state change (see `lua/*.lua` for KEYS and ARGV). Each is
//! sent by EVALSHA, and loaded again automatically when Redis answers NOSCRIPT (after a
//! restart or SCRIPT FLUSH).

use redis::Script;

/// Every script, compiled (hashed) once.
pub struct Scripts {
    pub enqueue: Script,
    pub claim: Script,
    pub renew: Script,
    pub progress: Script,
    pub complete: Script,
    pub fail: Script,
    pub cancel: Script,
    pub listen: Script,
    pub tick: Script,
    pub presence: Script,
    pub retry: Script,
    pub purge: Script,
    pub list_ended: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            enqueue: Script::new(include_str!("lua/enqueue.lua")),
            claim: Script::new(include_str!("lua/claim.lua")),
            renew: Script::new(include_str!("lua/renew.lua")),
            progress: Script::new(include_str!("lua/progress.lua")),
            complete: Script::new(include_str!("lua/complete.lua")),
            fail: Script::new(include_str!("lua/fail.lua")),
            cancel: Script::new(include_str!("lua/cancel.lua")),
            listen: Script::new(include_str!("lua/listen.lua")),
            tick: Script::new(include_str!("lua/tick.lua")),
            presence: Script::new(include_str!("lua/presence.lua")),
            retry: Script::new(include_str!("lua/retry.lua")),
            purge: Script::new(include_str!("lua/purge.lua")),
            list_ended: Script::new(include_str!("lua/list_ended.lua")),
        }
    }
}
