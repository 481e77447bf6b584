//! PromQL: the function semantics shared by the ad hoc and the continuous paths.
//!
//! The parser (`promql-parser`) and the planner onto DataFusion come next; the pure
//! functions in [`functions`] are the single implementation both will call.

pub mod functions;
