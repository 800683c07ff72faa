//! Topic names and the patterns of the `topics`/`publish` JWT claims.

/// Longest topic name accepted.
pub const MAX_TOPIC_LEN: usize = 256;

/// The topic every connection of user `sub` is subscribed to.
pub fn user_topic(sub: &str) -> String {
    format!("{USER_TOPIC_PREFIX}{sub}")
}

/// What every [`user_topic`] starts with.
pub const USER_TOPIC_PREFIX: &str = "user:";

/// Whether `topic` is the [`user_topic`] of `sub`, without building it.
pub fn is_user_topic(topic: &str, sub: &str) -> bool {
    topic.strip_prefix(USER_TOPIC_PREFIX) == Some(sub)
}

/// Checks a topic name: 1–256 bytes, no whitespace or control characters, no `*`.
pub fn validate_topic(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err("topic must be 1-256 bytes");
    }
    if topic
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '*')
    {
        return Err("topic may not contain whitespace, control characters or '*'");
    }
    Ok(())
}

/// Whether `pattern` (a claim entry) covers `topic`. A trailing `*` matches any non-empty
/// rest (`room:*` covers `room:1` and `room:1:a`); `*` alone matches every topic; anything
/// else must match exactly.
pub fn pattern_matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.len() > prefix.len() && topic.starts_with(prefix),
        None => pattern == topic,
    }
}

/// Whether any pattern in `patterns` covers `name`.
pub fn any_matches<'a>(patterns: impl IntoIterator<Item = &'a String>, name: &str) -> bool {
    patterns.into_iter().any(|p| pattern_matches(p, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "x"));
        assert!(pattern_matches("room:*", "room:1"));
        assert!(pattern_matches("room:*", "room:1:a"));
        assert!(!pattern_matches("room:*", "room:"));
        assert!(!pattern_matches("room:*", "rooms:1"));
        assert!(pattern_matches("news", "news"));
        assert!(!pattern_matches("news", "news2"));
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic("room:1").is_ok());
        assert!(validate_topic("").is_err());
        assert!(validate_topic("a b").is_err());
        assert!(validate_topic("a*").is_err());
        assert!(validate_topic(&"x".repeat(257)).is_err());
    }
}
