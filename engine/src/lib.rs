//! Vigil engine: rules and alerts.
//!
//! - [`rules`]: rule files (Prometheus format and `PrometheusRule` resources), validated
//!   with Prometheus' messages.
//! - [`template`]: the Go-template subset alert labels and annotations use.
//! - [`alerting`]: recording and alerting rule evaluation with Prometheus' state machine
//!   (pending, firing, `for`, `keep_firing_for`, resolved retention, `ALERTS`).
//! - [`unittest`]: `promtool test rules` files run with promtool's semantics.
//!
//! - [`incremental`]: the first slice of the differential dataflow: selectors,
//!   comparison filters and `sum`/`count`/`min`/`max`/`group` aggregations maintained
//!   as samples arrive, checked against the ad hoc evaluator at every tick by a
//!   property test.
//!
//! The server's rule manager still evaluates every rule with the ad hoc PromQL
//! evaluator (at ticks and at the event time of ingested data); wiring the incremental
//! plans into it is the next step.

pub mod alerting;
pub mod incremental;
pub mod rules;
pub mod template;
pub mod unittest;
