//! The protocol cases against `jobcast gateway` + `jobcast worker` + a private redis-server.

#[path = "cases/protocol.rs"]
mod cases;
mod common;

protocol_tests!(common::Backend::Redis);
