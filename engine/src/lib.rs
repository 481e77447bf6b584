//! Vigil engine: rules and alerts.
//!
//! - [`rules`]: rule files (Prometheus format and `PrometheusRule` resources), validated
//!   with Prometheus' messages.
//! - [`template`]: the Go-template subset alert labels and annotations use.
//! - [`alerting`]: recording and alerting rule evaluation with Prometheus' state machine
//!   (pending, firing, `for`, `keep_firing_for`, resolved retention, `ALERTS`).
//! - [`unittest`]: `promtool test rules` files run with promtool's semantics.
//!
//! Rules are evaluated by the ad hoc PromQL evaluator at evaluation ticks and at the
//! event time of ingested data (see the server's rule manager). The incremental
//! timely/differential dataflow that is to maintain rule results as data arrives is not
//! built yet; the evaluation here is the reference it will be checked against.

pub mod alerting;
pub mod rules;
pub mod template;
pub mod unittest;
