//! The protocol cases against `jobcast serve` (embedded backend).

#[path = "cases/protocol.rs"]
mod cases;
mod common;

protocol_tests!(common::Backend::Embedded);
