//! The integration tests: one binary, modules by topic.
//!
//! Tests that need real peers (Prometheus, node_exporter, pyarrow) find them on PATH;
//! `.ci/run` installs them. Every server binds 127.0.0.1 on a free port and every test
//! removes its processes and temporary directories.

mod alerts;
mod auth;
mod bad_input;
mod continuous;
mod crash;
mod demo;
mod hostile;
mod logs;
mod newcomer;
mod node_exporter;
mod otlp;
mod parquet;
mod prom_client;
mod prometheus;
mod promql_api;
mod promql_conformance;
mod remote_write;
mod rule_semantics;
mod rules;
mod rules_differential;
mod rules_live;
mod scrape;
mod storage_safety;
mod traces;
mod util;
