//! Who is in each topic: (gateway, connection) → user, per topic.
//!
//! Every connection is in its own user's topic, so most topics have one or a few members and
//! their entry is most of what presence costs per connection. A topic's members are a plain
//! list until it grows past [`FEW`], then a map, so a small topic holds one 48-byte
//! allocation (a map's smallest table is 192 bytes) and a large one still joins and leaves in
//! constant time.

use jobcast_core::Presence;
use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

/// Members kept in a list; past this, a map.
const FEW: usize = 16;

/// A member's key: its gateway and connection id.
type Key = (Arc<str>, u64);

enum Members {
    Few(Vec<(Key, Box<str>)>),
    Many(HashMap<Key, Box<str>>),
}

impl Members {
    fn len(&self) -> usize {
        match self {
            Self::Few(v) => v.len(),
            Self::Many(m) => m.len(),
        }
    }

    fn join(&mut self, key: Key, user: Box<str>) {
        match self {
            Self::Few(v) => {
                if let Some(slot) = v.iter_mut().find(|(k, _)| *k == key) {
                    slot.1 = user;
                } else if v.len() < FEW {
                    v.push((key, user));
                } else {
                    let mut m: HashMap<Key, Box<str>> = v.drain(..).collect();
                    m.insert(key, user);
                    *self = Self::Many(m);
                }
            }
            Self::Many(m) => {
                m.insert(key, user);
            }
        }
    }

    fn leave(&mut self, key: &Key) {
        match self {
            Self::Few(v) => {
                if let Some(i) = v.iter().position(|(k, _)| k == key) {
                    v.swap_remove(i);
                }
            }
            Self::Many(m) => {
                m.remove(key);
            }
        }
    }

    fn users(&self) -> BTreeSet<&str> {
        match self {
            Self::Few(v) => v.iter().map(|(_, u)| &**u).collect(),
            Self::Many(m) => m.values().map(|u| &**u).collect(),
        }
    }
}

/// Topic → its members.
#[derive(Default)]
pub struct PresenceBook {
    topics: HashMap<String, Members>,
}

impl PresenceBook {
    /// Records that `conn` of `gateway` (user `user`) is in `topic`.
    pub fn join(&mut self, gateway: Arc<str>, topic: &str, conn: u64, user: &str) {
        let key = (gateway, conn);
        match self.topics.get_mut(topic) {
            Some(m) => m.join(key, user.into()),
            None => {
                // `vec![x]` allocates room for exactly one.
                let first = vec![(key, user.into())];
                self.topics.insert(topic.to_owned(), Members::Few(first));
            }
        }
    }

    /// Records that `conn` of `gateway` left `topic`.
    pub fn leave(&mut self, gateway: Arc<str>, topic: &str, conn: u64) {
        if let Some(m) = self.topics.get_mut(topic) {
            m.leave(&(gateway, conn));
            if m.len() == 0 {
                self.topics.remove(topic);
            }
        }
    }

    /// Who is in `topic`: distinct users, sorted, and the number of connections.
    pub fn of(&self, topic: &str) -> Presence {
        let Some(m) = self.topics.get(topic) else {
            return Presence::default();
        };
        Presence {
            users: m.users().into_iter().map(str::to_owned).collect(),
            connections: m.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_topics_join_and_leave() {
        let mut book = PresenceBook::default();
        let gw: Arc<str> = "g".into();
        for conn in 0..40u64 {
            book.join(gw.clone(), "room", conn, &format!("u{}", conn % 3));
            // Joining again changes nothing.
            book.join(gw.clone(), "room", conn, &format!("u{}", conn % 3));
            assert_eq!(book.of("room").connections, conn + 1);
        }
        assert_eq!(book.of("room").users, ["u0", "u1", "u2"]);
        for conn in 0..39u64 {
            book.leave(gw.clone(), "room", conn);
        }
        let p = book.of("room");
        assert_eq!((p.connections, p.users), (1, vec!["u0".to_owned()]));
        // Another gateway's connection with the same id is someone else.
        book.leave("h".into(), "room", 39);
        assert_eq!(book.of("room").connections, 1);
        book.leave(gw, "room", 39);
        assert!(book.topics.is_empty());
        assert_eq!(book.of("room").connections, 0);
    }
}
