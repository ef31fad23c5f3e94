//! I/O glue that the coordinator, the worker and the tests share, kept out of `shared`
//! (which does no I/O): the RabbitMQ link ([`broker`]) and logging and metrics set-up
//! ([`telemetry`]).

pub mod boot;
pub mod broker;
pub mod telemetry;
