//! Vigil engine: rules and alerts.
//!
//! - [`rules`]: rule files (Prometheus format and `PrometheusRule` resources), validated
//!   with Prometheus' messages.
//! - [`template`]: the Go-template subset alert labels and annotations use.
//! - [`alerting`]: recording and alerting rule evaluation with Prometheus' state machine
//!   (pending, firing, `for`, `keep_firing_for`, resolved retention, `ALERTS`).
//! - [`unittest`]: `promtool test rules` files run with promtool's semantics (compiled
//!   rules answered by the incremental engine, as in the server).
//! - [`incremental`]: rules compiled into one timely/differential dataflow and
//!   maintained as samples arrive: selectors, range functions, per-element functions,
//!   aggregations, vector matching and set operators, `absent`, `histogram_quantile`
//!   (`incremental/compile.rs` lists what compiles); checked against the ad hoc
//!   evaluator by a property test.
//!
//! - [`continuous`]: continuous SQL queries (DataFusion's planner → a differential
//!   dataflow per query), their results as tables, and the subscription hub (snapshot,
//!   numbered changes, progress, resume).
//! - [`service`]: the timely workers every continuous program runs on — the rules'
//!   program (`incremental::maintained`) and each continuous SQL query.
//!
//! The server's rule manager (`src/rule_manager/`) answers every rule that compiles
//! from the maintained program and evaluates the rest (and any instant where a maintained
//! vector is in error) with the ad hoc PromQL evaluator.

pub mod alerting;
pub mod continuous;
pub mod incremental;
pub mod rules;
pub mod service;
pub mod template;
pub mod unittest;
