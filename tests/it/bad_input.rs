//! Bad input gets a 4xx with a message; the server keeps serving; nothing is half-written.

use vigil_storage::{Label, LabelSet, SampleBatch};

use crate::util::{batch, now_ms, Vigil};

fn config() -> &'static str {
    "limits:\n  max_body_bytes: 100000\n  max_labels_per_series: 8\n  max_label_value_length: 64\n  max_series_per_request: 50\n"
}

#[test]
fn rejected_requests_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), Some(config()));
    let now = now_ms();

    let (status, body) = vigil.write_raw(b"this is not a remote write request");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("snappy"), "{body}");

    // gzip instead of snappy.
    let gzip_magic = [
        0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x01, 0x00,
    ];
    let (status, body) = vigil.write_raw(&gzip_magic);
    assert_eq!(status, 400, "{body}");

    // Valid snappy of a non-protobuf payload.
    let garbage = snap::raw::Encoder::new()
        .compress_vec(&[0xff; 64])
        .expect("snappy");
    let (status, body) = vigil.write_raw(&garbage);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("protobuf"), "{body}");

    // Oversized body: 413 from the HTTP layer.
    let (status, _) = vigil.write_raw(&vec![0u8; 200_000]);
    assert_eq!(status, 413);

    // Too many series for one request.
    let (status, body) = vigil.write(&batch("too_many", 60, 1, now));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limit"), "{body}");

    // One good series and one invalid label name in the same request: all or nothing.
    let mut mixed = batch("mixed_metric", 1, 3, now);
    let bad = LabelSet::new(vec![
        Label {
            name: "__name__".into(),
            value: "mixed_metric".into(),
        },
        Label {
            name: "bad-label".into(),
            value: "x".into(),
        },
    ])
    .expect("labels");
    let idx = mixed.push_series(bad);
    mixed.push_sample(idx, now, 1.0);
    let (status, body) = vigil.write(&mixed);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad-label"), "{body}");

    // Invalid metric name, and a label value over the limit.
    for labels in [
        vec![("__name__", "1bad")],
        vec![("__name__", "ok_name"), ("long", &"x".repeat(100) as &str)],
        vec![("job", "no_name")],
    ] {
        let mut bad = SampleBatch::default();
        let idx = bad.push_series(LabelSet::from_pairs(labels).expect("labels"));
        bad.push_sample(idx, now, 1.0);
        let (status, body) = vigil.write(&bad);
        assert_eq!(status, 400, "{body}");
    }

    // Out-of-order sample in a request: the whole request is rejected, like Prometheus.
    let (status, _) = vigil.write(&batch("ooo_metric", 1, 5, now - 10_000));
    assert_eq!(status, 204);
    let mut ooo = batch("ooo_metric", 1, 1, now);
    ooo.push_sample(0, now - 60_000, 1.0);
    let (status, body) = vigil.write(&ooo);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("out of order"), "{body}");

    // The server still serves, and none of the rejected samples exist.
    assert_eq!(
        vigil.count("SELECT count(*) FROM metrics WHERE name = 'mixed_metric'"),
        0
    );
    assert_eq!(
        vigil.count("SELECT count(*) FROM metrics WHERE name = 'too_many'"),
        0
    );
    assert_eq!(
        vigil.count("SELECT count(*) FROM metrics WHERE name = 'ooo_metric'"),
        5
    );
    let (status, _) = vigil.write(&batch("after_errors", 1, 1, now));
    assert_eq!(status, 204);

    // Rejections are counted by reason.
    let (_, metrics) =
        crate::util::blocking_get(&format!("{}/metrics", vigil.url)).expect("metrics");
    assert!(
        metrics.contains("vigil_rejected_writes_total{reason=\"invalid_label\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_rejected_writes_total{reason=\"out_of_order\"} 1"),
        "{metrics}"
    );
}

#[test]
fn sql_errors_follow_prometheus_envelope() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = Vigil::start(&dir.path().join("data"), None);
    let (status, body) = vigil.sql_raw("SELEC nonsense", "json");
    assert_eq!(status, 400);
    let value: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(value["status"], "error");
    assert_eq!(value["errorType"], "bad_data");
    let (status, body) = vigil.sql_raw("SELECT * FROM no_such_table", "json");
    assert_eq!(status, 400, "{body}");
    let (status, _) = vigil.sql_raw("SELECT 1", "xml");
    assert_eq!(status, 400);
}

/// `/api/v1/sql` runs queries only: statements that would change the shared catalog,
/// read or write the host's files or change settings are refused with 400 `bad_data`
/// naming the statement kind, and nothing they name happens.
#[test]
fn sql_refuses_everything_but_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vigil = crate::util::Vigil::start(&dir.path().join("data"), None);
    let (status, _) = vigil.write(&crate::util::batch(
        "sql_guard",
        1,
        3,
        crate::util::now_ms() - 10_000,
    ));
    assert_eq!(status, 204);
    let copied = dir.path().join("copied.csv");
    let statements = [
        (
            "CREATE EXTERNAL TABLE host (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'"
                .to_string(),
            "DDL",
        ),
        (format!("COPY (SELECT 1) TO '{}'", copied.display()), "DML"),
        ("CREATE TABLE t AS SELECT 1 AS x".to_string(), "DDL"),
        ("CREATE VIEW samples2 AS SELECT 1 AS x".to_string(), "DDL"),
        ("DROP VIEW metrics".to_string(), "DDL"),
        (
            "INSERT INTO samples VALUES (1, now(), 1.0)".to_string(),
            "DML",
        ),
        (
            "SET datafusion.execution.batch_size = 1".to_string(),
            "Statement",
        ),
    ];
    for (statement, kind) in &statements {
        let (status, body) = vigil.sql_raw(statement, "json");
        assert_eq!(status, 400, "{statement}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(error["errorType"], "bad_data", "{statement}: {body}");
        let message = error["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("{kind} not supported")),
            "{statement}: {message}"
        );
    }
    assert!(!copied.exists(), "COPY wrote a file");
    // Queries, EXPLAIN and SHOW still work, over the unchanged catalog.
    assert_eq!(
        vigil.count("SELECT count(*) FROM metrics WHERE name = 'sql_guard'"),
        3
    );
    assert!(!vigil.sql("EXPLAIN SELECT 1").is_empty());
    assert!(vigil
        .sql("SHOW TABLES")
        .iter()
        .any(|row| row["table_name"] == "metrics"));
}
