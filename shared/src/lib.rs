//! The contract that the coordinator, the worker, `renderctl` and (later) an editor agree on:
//! the node registry, graphs and their validation, wire messages, broker topology names, configuration and
//! metric names.
//!
//! This crate does no I/O: no tokio, no lapin, no postgres. Loading configuration takes
//! the file text and the environment as arguments so it stays a pure function.

pub mod artifact;
pub mod cache;
pub mod chunks;
pub mod config;
pub mod events;
pub mod gate;
pub mod graph;
pub mod imagediff;
pub mod legacy;
pub mod materials;
pub mod metrics;
pub mod overrides;
pub mod parts;
pub mod registry;
pub mod runs;
pub mod scheduling;
pub mod starters;
pub mod topology;
pub mod wire;
