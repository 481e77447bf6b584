//! Vigil engine: the incremental dataflow (timely + differential) that will maintain
//! recording rules, alert conditions and continuous queries as data arrives.
//!
//! Nothing is implemented here yet: the crate exists so the workspace has its final
//! shape and dependency direction (`engine` → `storage`, never the reverse). The
//! PromQL function semantics it will call already live in
//! `vigil_queries::promql::functions`, shared with the ad hoc evaluator.
