//! The Vigil server: config, HTTP routes, the serve loop, and the demo cluster.
//!
//! The binary (`main.rs`) is a thin CLI over [`run::serve`]; integration tests build the
//! same [`server::app`] router.

pub mod alert_api;
pub mod auth;
pub mod config;
pub mod demo;
pub mod listener;
pub mod prom_api;
pub mod rule_manager;
pub mod run;
pub mod self_metrics;
pub mod server;
pub mod sql_api;
pub mod web_config;
