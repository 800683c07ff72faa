//! Topics across gateways: a gateway holds one bus subscription per topic with local
//! subscribers (taken by the first, dropped with the last), records who is in each topic
//! (presence) and tells subscribers who asked about joins and leaves, and pushes frames —
//! serialized once — to local subscribers and, through the bus, to every other gateway.

use crate::{Gateway, hub::Conn};
use bytes::Bytes;
use jobcast_core::{Audience, Presence};
use jobcast_protocol::outbound;
use serde_json::{json, value::RawValue};
use std::sync::Arc;

impl Gateway {
    /// Subscribes `conn` to `topic` (with `topic.join`/`topic.leave` when `watch_presence`).
    pub(crate) fn subscribe(&self, conn: &Arc<Conn>, topic: &str, watch_presence: bool) {
        let (new, first) = self.hub.subscribe(topic, conn, watch_presence);
        if first && let Err(e) = self.bus.subscribe_topic(&self.config.server_id, topic) {
            tracing::warn!(topic, error = %e, "bus subscribe failed");
        }
        if new {
            self.joined_or_left(conn, topic, true);
        }
    }

    /// Unsubscribes `conn` from `topic`; false when it was not subscribed.
    pub(crate) fn unsubscribe(&self, conn: &Conn, topic: &str) -> bool {
        let (was, last) = self.hub.unsubscribe(topic, conn);
        if last {
            self.bus_unsubscribe(topic);
        }
        if was {
            self.joined_or_left(conn, topic, false);
        }
        was
    }

    /// Removes a closed connection from the hub and from every topic it was in.
    pub(crate) fn forget(&self, conn: &Conn) {
        for (topic, last) in self.hub.remove_conn(conn) {
            if last {
                self.bus_unsubscribe(&topic);
            }
            self.joined_or_left(conn, &topic, false);
        }
    }

    fn bus_unsubscribe(&self, topic: &str) {
        if let Err(e) = self.bus.unsubscribe_topic(&self.config.server_id, topic) {
            tracing::warn!(topic, error = %e, "bus unsubscribe failed");
        }
    }

    /// Records the presence change and tells the topic's presence watchers.
    fn joined_or_left(&self, conn: &Conn, topic: &str, joined: bool) {
        let r = if joined {
            self.bus
                .presence_join(&self.instance_id, topic, conn.id, &conn.user)
        } else {
            self.bus.presence_leave(&self.instance_id, topic, conn.id)
        };
        if let Err(e) = r {
            tracing::warn!(topic, error = %e, "presence write failed");
        }
        let method = if joined { "topic.join" } else { "topic.leave" };
        let frame = Bytes::from(outbound::notification(
            method,
            json!({"topic": topic, "user": &*conn.user}),
        ));
        self.hub
            .deliver(topic, Audience::PresenceWatchers, &frame, Some(conn.id));
        if let Err(e) = self.bus.publish_topic(
            &self.config.server_id,
            topic,
            Audience::PresenceWatchers,
            frame,
        ) {
            tracing::warn!(topic, error = %e, "bus publish failed");
        }
    }

    /// Who is in `topic` on every gateway.
    pub(crate) async fn presence(&self, topic: &str) -> jobcast_core::Result<Presence> {
        self.bus.presence(topic).await
    }

    /// Publishes `data` to a topic as `topic.message`: local subscribers at once, other
    /// gateways through the bus. Returns the number of local receivers.
    pub fn publish(&self, topic: &str, data: &RawValue) -> usize {
        self.push(topic, Bytes::from(outbound::topic_message(topic, data)))
    }

    /// Pushes a complete frame, serialized once, to every subscriber of `topic` on every
    /// gateway (every connection for [`jobcast_core::BROADCAST_TOPIC`]). Returns the local
    /// receivers.
    pub fn push(&self, topic: &str, frame: Bytes) -> usize {
        let n = self.hub.deliver(topic, Audience::All, &frame, None);
        if let Err(e) = self
            .bus
            .publish_topic(&self.config.server_id, topic, Audience::All, frame)
        {
            tracing::warn!(topic, error = %e, "bus publish failed");
        }
        n
    }
}
