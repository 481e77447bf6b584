//! The Python `prometheus-api-client` (PyPI) against Vigil: the client's own calls
//! (`all_metrics`, `get_current_metric_value`, `custom_query`, `custom_query_range`,
//! `get_metric_range_data`) parse Vigil's answers and see the written data.

use std::process::Command;

use crate::util::{write_web_counters, Vigil};

const SCRIPT: &str = r#"
import sys, json, datetime
from prometheus_api_client import PrometheusConnect
url, end = sys.argv[1], float(sys.argv[2])
prom = PrometheusConnect(url=url, disable_ssl=True)
out = {}
out["all_metrics"] = sorted(prom.all_metrics())
out["current"] = prom.get_current_metric_value("client_requests_total", label_config={"pod": "b"})
out["instant"] = prom.custom_query("sum by (job) (rate(client_requests_total[1m]))", params={"time": end})
out["range"] = prom.custom_query_range(
    "sum(rate(client_requests_total[1m]))",
    start_time=datetime.datetime.fromtimestamp(end - 120),
    end_time=datetime.datetime.fromtimestamp(end),
    step="30",
)
data = prom.get_metric_range_data(
    "client_requests_total",
    label_config={"pod": "a"},
    start_time=datetime.datetime.fromtimestamp(end - 300),
    end_time=datetime.datetime.fromtimestamp(end),
)
out["raw_points"] = sum(len(series["values"]) for series in data)
print(json.dumps(out))
"#;

#[test]
fn prometheus_api_client_reads_vigil() {
    let check = Command::new("python3")
        .args(["-c", "import prometheus_api_client"])
        .output()
        .expect("python3");
    assert!(
        check.status.success(),
        "prometheus-api-client is not installed (bash scripts/test installs it)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let start = write_web_counters(&vigil, "client_requests_total");
    let end = (start + 600_000) as f64 / 1000.0;
    let output = Command::new("python3")
        .args(["-c", SCRIPT, &vigil.url, &end.to_string()])
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("client output is json");
    assert!(
        out["all_metrics"]
            .as_array()
            .expect("list")
            .iter()
            .any(|name| name == "client_requests_total"),
        "{out}"
    );
    assert_eq!(out["current"][0]["metric"]["pod"], "b", "{out}");
    assert_eq!(out["current"][0]["value"][1], "12000", "{out}");
    assert_eq!(out["instant"][0]["metric"]["job"], "web", "{out}");
    assert_eq!(out["instant"][0]["value"][1], "30", "{out}");
    let range = out["range"][0]["values"].as_array().expect("values");
    assert_eq!(range.len(), 5, "{out}");
    assert!(range.iter().all(|point| point[1] == "30"), "{out}");
    // 5 minutes of 10s samples, window (end-300s, end] → 30 points (the client queries
    // the raw samples with a range selector).
    assert_eq!(out["raw_points"], 30, "{out}");
}
