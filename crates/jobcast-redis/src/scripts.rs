//! The Lua scripts, one per atomic state change (see `lua/*.lua` for KEYS and ARGV). Each is
//! sent by EVALSHA, and loaded again automatically when Redis answers NOSCRIPT (after a
//! restart or SCRIPT FLUSH). The scripts that open, requeue, end, list and purge jobs share
//! the helpers of `lua/prelude.lua`.

use redis::Script;

/// A script that uses the helpers of `lua/prelude.lua`, which is prepended to it.
macro_rules! with_prelude {
    ($name:literal) => {
        Script::new(concat!(
            include_str!("lua/prelude.lua"),
            include_str!(concat!("lua/", $name, ".lua"))
        ))
    };
}

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
    pub hand_back: Script,
}

impl Scripts {
    /// Every script, for loading them all at once.
    pub fn all(&self) -> [&Script; 14] {
        [
            &self.enqueue,
            &self.claim,
            &self.renew,
            &self.progress,
            &self.complete,
            &self.fail,
            &self.cancel,
            &self.listen,
            &self.tick,
            &self.presence,
            &self.retry,
            &self.purge,
            &self.list_ended,
            &self.hand_back,
        ]
    }

    pub fn new() -> Self {
        Self {
            enqueue: with_prelude!("enqueue"),
            claim: with_prelude!("claim"),
            renew: Script::new(include_str!("lua/renew.lua")),
            progress: with_prelude!("progress"),
            complete: with_prelude!("complete"),
            fail: with_prelude!("fail"),
            cancel: with_prelude!("cancel"),
            listen: with_prelude!("listen"),
            tick: with_prelude!("tick"),
            presence: Script::new(include_str!("lua/presence.lua")),
            retry: with_prelude!("retry"),
            purge: with_prelude!("purge"),
            list_ended: with_prelude!("list_ended"),
            hand_back: with_prelude!("hand_back"),
        }
    }
}
