//! Who may open a connection: the `Origin` allow-list (403), the per-IP and per-user caps
//! (429) and the gateway-wide cap (503). An admitted connection holds a [`Ticket`]; dropping
//! it gives its places back, however the connection ends. The same counts answer `/stats`
//! (connections, distinct users, connections by user type) without walking the connections.

use axum::http::StatusCode;
use dashmap::DashMap;
use std::{
    hash::Hash,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

/// Connection limits (0 = no limit).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most connections at once on this gateway.
    pub max_connections: usize,
    /// Most connections at once from one IP address.
    pub max_per_ip: usize,
    /// Most connections at once of one user (`sub`).
    pub max_per_user: usize,
    /// Browser origins allowed to connect (`Origin` header), exact or `*` for any; empty: any.
    /// Requests without an `Origin` (not from a browser) are always allowed.
    pub allowed_origins: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_per_ip: 1_000,
            max_per_user: 100,
            allowed_origins: Vec::new(),
        }
    }
}

/// The live counts behind the limits.
#[derive(Default)]
pub struct Admission {
    total: AtomicUsize,
    by_ip: DashMap<IpAddr, usize>,
    by_user: DashMap<Arc<str>, usize>,
    by_type: DashMap<Arc<str>, usize>,
}

/// An admitted connection's places; given back on drop.
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    user: Arc<str>,
    user_type: Arc<str>,
}

impl Ticket {
    /// The user, shared by all of the user's connections.
    pub fn user(&self) -> &Arc<str> {
        &self.user
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.total.fetch_sub(1, Ordering::SeqCst);
        release(&self.admission.by_ip, &self.ip);
        release(&self.admission.by_user, &self.user);
        release(&self.admission.by_type, &self.user_type);
    }
}

fn release<K: Eq + Hash>(map: &DashMap<K, usize>, key: &K) {
    map.remove_if_mut(key, |_, n| {
        *n = n.saturating_sub(1);
        *n == 0
    });
}

/// Takes a place under `max` (0 = no limit) and returns the map's own copy of the key (so
/// every connection of a user shares one), or `None` when full.
fn take<K: Eq + Hash + Clone>(map: &DashMap<K, usize>, key: K, max: usize) -> Option<K> {
    let mut n = map.entry(key).or_insert(0);
    if max > 0 && *n >= max {
        return None;
    }
    *n += 1;
    Some(n.key().clone())
}

impl Admission {
    /// Connections admitted and not yet closed.
    pub fn count(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Distinct users with a connection admitted (kept by the per-user cap anyway, so
    /// stats need not walk every connection to count them).
    pub fn users(&self) -> usize {
        self.by_user.len()
    }

    /// Connections admitted, by user type.
    pub fn by_user_type(&self) -> std::collections::BTreeMap<String, usize> {
        self.by_type
            .iter()
            .map(|e| (e.key().to_string(), *e.value()))
            .collect()
    }

    /// Admits a connection of `user` (of kind `user_type`, for stats), or says why not
    /// (status and detail).
    pub fn admit(
        self: &Arc<Self>,
        limits: &Limits,
        origin: Option<&str>,
        ip: IpAddr,
        user: Arc<str>,
        user_type: Arc<str>,
    ) -> Result<Ticket, (StatusCode, &'static str)> {
        if let Some(origin) = origin
            && !limits.allowed_origins.is_empty()
            && !limits
                .allowed_origins
                .iter()
                .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
        {
            return Err((StatusCode::FORBIDDEN, "origin not allowed"));
        }
        let max = limits.max_connections;
        if self
            .total
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .is_err()
        {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "connection limit reached"));
        }
        if take(&self.by_ip, ip, limits.max_per_ip).is_none() {
            self.total.fetch_sub(1, Ordering::SeqCst);
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from this address",
            ));
        }
        let Some(user) = take(&self.by_user, user, limits.max_per_user) else {
            self.total.fetch_sub(1, Ordering::SeqCst);
            release(&self.by_ip, &ip);
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections for this user",
            ));
        };
        let user_type = take(&self.by_type, user_type.clone(), 0).unwrap_or(user_type);
        Ok(Ticket {
            admission: self.clone(),
            ip,
            user,
            user_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_release() {
        let a = Arc::new(Admission::default());
        let limits = Limits {
            max_connections: 3,
            max_per_ip: 2,
            max_per_user: 2,
            allowed_origins: vec!["https://app.example".into()],
        };
        let ip1: IpAddr = "10.0.0.1".parse().unwrap();
        let ip2: IpAddr = "10.0.0.2".parse().unwrap();
        let t1 = a
            .admit(&limits, None, ip1, "u".into(), "default".into())
            .unwrap();
        let t2 = a
            .admit(
                &limits,
                Some("https://APP.example"),
                ip1,
                "v".into(),
                "app".into(),
            )
            .unwrap();
        assert_eq!(
            a.admit(&limits, None, ip1, "w".into(), "default".into())
                .err()
                .unwrap()
                .0,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            a.admit(
                &limits,
                Some("https://evil.example"),
                ip2,
                "w".into(),
                "default".into()
            )
            .err()
            .unwrap()
            .0,
            StatusCode::FORBIDDEN
        );
        let t3 = a
            .admit(&limits, None, ip2, "u".into(), "default".into())
            .unwrap();
        assert_eq!(a.by_user_type().get("app"), Some(&1));
        assert_eq!(a.by_user_type().get("default"), Some(&2));
        assert_eq!(
            a.admit(&limits, None, ip2, "x".into(), "default".into())
                .err()
                .unwrap()
                .0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        drop(t3);
        assert_eq!(
            a.admit(&limits, None, ip2, "u".into(), "default".into())
                .map(drop)
                .err(),
            None,
            "the place came back"
        );
        drop((t1, t2));
        assert_eq!(a.count(), 0);
        assert!(
            a.by_ip.is_empty() && a.by_user.is_empty() && a.by_type.is_empty(),
            "no counts left behind"
        );
    }
}
