//! The Vigil server: config, HTTP routes, the serve loop, and the demo cluster.
//!
//! The binary (`main.rs`) is a thin CLI over [`run::serve`]; integration tests build the
//! same [`http::app`] router.

pub mod config;
pub mod demo;
pub mod demo_telemetry;
pub mod http;
pub mod rule_manager;
pub mod run;
pub mod self_metrics;
