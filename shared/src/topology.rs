//! Names of the RabbitMQ topology (DESIGN §4), derived from one configurable prefix so that
//! tests and several fleets can share a broker.

/// Header that carries why a message was dead-lettered.
pub const REASON_HEADER: &str = "x-renderfleet-reason";
/// On a task message: how many earlier deliveries of it ended without a result.
pub const DELIVERIES_HEADER: &str = "x-renderfleet-deliveries";

/// The exchanges and queues of one fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// `prefix` is usually `renderfleet`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Direct exchange; routing key = module key.
    pub fn tasks_exchange(&self) -> String {
        format!("{}.tasks", self.prefix)
    }

    /// One durable queue per module.
    pub fn task_queue(&self, module_key: &str) -> String {
        format!("{}.tasks.{module_key}", self.prefix)
    }

    /// Results, progress and heartbeats from workers.
    pub fn results_exchange(&self) -> String {
        format!("{}.results", self.prefix)
    }

    /// Coordinators are competing consumers of this queue.
    pub fn results_queue(&self) -> String {
        format!("{}.results", self.prefix)
    }

    /// Fanout: cancellations and drain requests to every worker.
    pub fn control_exchange(&self) -> String {
        format!("{}.control", self.prefix)
    }

    /// Topic: completion events for consumers on the broker (`shared::events`), routing key
    /// `<event type>.<output type>`. No queue of its own: a consumer binds one.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// Dead-letter exchange (fanout) and its queue.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// Every declaration a fleet needs, in order, for the given modules. Both binaries apply
    /// the same list (the coordinator for every known module, so a task published before any
    /// worker started is never unroutable), and identical arguments keep declarations
    /// idempotent.
    pub fn declarations(&self, modules: &[&str]) -> Vec<Declaration> {
        let mut out = vec![
            Declaration::Exchange { name: self.dead_exchange(), kind: ExchangeKind::Fanout },
            Declaration::Queue { name: self.dead_queue(), dead_letter_to: None },
            Declaration::Bind { queue: self.dead_queue(), exchange: self.dead_exchange(), routing_key: String::new() },
            Declaration::Exchange { name: self.tasks_exchange(), kind: ExchangeKind::Direct },
            Declaration::Exchange { name: self.results_exchange(), kind: ExchangeKind::Direct },
            Declaration::Queue { name: self.results_queue(), dead_letter_to: Some(self.dead_exchange()) },
            Declaration::Bind { queue: self.results_queue(), exchange: self.results_exchange(), routing_key: String::new() },
            Declaration::Exchange { name: self.control_exchange(), kind: ExchangeKind::Fanout },
            Declaration::Exchange { name: self.events_exchange(), kind: ExchangeKind::Topic },
        ];
        for module in modules {
            out.push(Declaration::Queue { name: self.task_queue(module), dead_letter_to: Some(self.dead_exchange()) });
            out.push(Declaration::Bind {
                queue: self.task_queue(module),
                exchange: self.tasks_exchange(),
                routing_key: (*module).to_string(),
            });
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
}

/// One durable exchange, durable queue or binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declaration {
    Exchange {
        name: String,
        kind: ExchangeKind,
    },
    /// Durable queue; rejected messages go to `dead_letter_to` when set.
    Queue {
        name: String,
        dead_letter_to: Option<String>,
    },
    Bind {
        queue: String,
        exchange: String,
        routing_key: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let t = Topology::new("rf-x");
        assert_eq!(t.task_queue("noop"), "rf-x.tasks.noop");
        assert_eq!(t.results_queue(), "rf-x.results");
        let decls = t.declarations(&["noop"]);
        assert!(decls.contains(&Declaration::Bind {
            queue: "rf-x.tasks.noop".into(),
            exchange: "rf-x.tasks".into(),
            routing_key: "noop".into()
        }));
    }
}
