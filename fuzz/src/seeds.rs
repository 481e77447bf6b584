//! `vigil-fuzz gen-seeds`: writes the binary seeds of `corpus/remote_write/` (the text
//! targets' seeds are written by hand). Real `WriteRequest`s as Prometheus sends them,
//! plus tricky ones: special values and extreme timestamps, exemplars and native
//! histograms, invalid labels, non-UTF-8, unknown fields, truncated and lying bodies.

use std::path::Path;

use prost::Message;
use vigil_connectors::remote_write::proto::{
    Exemplar, Label, MetricMetadata, Sample, TimeSeries, WriteRequest,
};

fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    let mut series = TimeSeries::default();
    for (name, value) in labels {
        series.push_label(name, value);
    }
    series.samples = samples
        .iter()
        .map(|&(timestamp, value)| Sample { value, timestamp })
        .collect();
    series
}

fn compress(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(raw)
        .unwrap_or_default()
}

const T0: i64 = 1_700_000_000_000;

fn every_15s(n: i64, f: impl Fn(i64) -> f64) -> Vec<(i64, f64)> {
    (0..n).map(|i| (T0 + i * 15_000, f(i))).collect()
}

/// The seeds, by file name.
pub fn remote_write() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds = Vec::new();
    let encode = |request: &WriteRequest| compress(&request.encode_to_vec());

    let single = WriteRequest {
        timeseries: vec![series(
            &[("__name__", "up"), ("job", "node"), ("instance", "a:9100")],
            &[(T0, 1.0)],
        )],
        metadata: Vec::new(),
    };
    seeds.push(("single_series", encode(&single)));

    // A scrape of a small cluster, as Prometheus' queue manager batches it.
    let mut cluster = WriteRequest::default();
    for (namespace, pod, node) in [
        ("default", "web-6d4cf56db6-abcde", "node-1"),
        ("default", "web-6d4cf56db6-fghij", "node-2"),
        ("kube-system", "coredns-5d78c9869d-xyz12", "node-1"),
    ] {
        cluster.timeseries.push(series(
            &[
                ("__name__", "container_cpu_usage_seconds_total"),
                ("container", "main"),
                ("namespace", namespace),
                ("pod", pod),
                ("node", node),
                ("job", "kubelet"),
                ("metrics_path", "/metrics/cadvisor"),
            ],
            &every_15s(8, |i| 100.0 + i as f64 * 0.37),
        ));
        cluster.timeseries.push(series(
            &[
                ("__name__", "kube_pod_info"),
                ("namespace", namespace),
                ("pod", pod),
                ("node", node),
                ("created_by_kind", "ReplicaSet"),
            ],
            &every_15s(4, |_| 1.0),
        ));
    }
    for le in ["0.005", "0.1", "1", "+Inf"] {
        cluster.timeseries.push(series(
            &[
                ("__name__", "apiserver_request_duration_seconds_bucket"),
                ("verb", "GET"),
                ("le", le),
            ],
            &every_15s(4, |i| 10.0 * i as f64),
        ));
    }
    for (kind, name) in [
        (1, "container_cpu_usage_seconds_total"),
        (2, "kube_pod_info"),
        (3, "apiserver_request_duration_seconds"),
        (0, "mystery"),
        (99, "out_of_range_type"),
    ] {
        cluster.metadata.push(MetricMetadata {
            r#type: kind,
            metric_family_name: name.into(),
            help: format!("Help for {name}."),
            unit: if kind == 1 {
                "seconds".into()
            } else {
                String::new()
            },
        });
    }
    seeds.push(("kubernetes_batch", encode(&cluster)));

    let special = WriteRequest {
        timeseries: vec![
            series(
                &[("__name__", "special_values"), ("job", "x")],
                &[
                    (T0, f64::NAN),
                    (T0 + 1, f64::from_bits(vigil_storage::STALE_NAN_BITS)),
                    (T0 + 2, f64::INFINITY),
                    (T0 + 3, f64::NEG_INFINITY),
                    (T0 + 4, -0.0),
                    (T0 + 5, f64::MIN_POSITIVE),
                    (T0 + 6, f64::MAX),
                ],
            ),
            series(
                &[("__name__", "extreme_timestamps")],
                &[(i64::MIN, 1.0), (-1, 2.0), (0, 3.0), (i64::MAX, 4.0)],
            ),
            series(
                &[("__name__", "out_of_order"), ("job", "x")],
                &[(T0 + 30_000, 1.0), (T0, 2.0), (T0, 3.0)],
            ),
        ],
        metadata: Vec::new(),
    };
    seeds.push(("special_values_and_timestamps", encode(&special)));

    let mut rich = series(
        &[
            ("__name__", "http_request_duration_seconds"),
            ("job", "api"),
        ],
        &[(T0, 0.25)],
    );
    rich.exemplars.push(Exemplar {
        labels: vec![Label {
            name: "trace_id".into(),
            value: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        }],
        value: 0.31,
        timestamp: T0,
    });
    // A native histogram sample, kept undecoded (count 3, sum 0.5, schema 3).
    rich.histograms.push(vec![
        0x08, 0x03, 0x19, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f, 0x28, 0x06,
    ]);
    let mut only_histogram = series(&[("__name__", "native_only")], &[]);
    only_histogram.histograms.push(vec![0x08, 0x01]);
    seeds.push((
        "exemplars_and_histograms",
        encode(&WriteRequest {
            timeseries: vec![rich, only_histogram],
            metadata: Vec::new(),
        }),
    ));

    let invalid = WriteRequest {
        timeseries: vec![
            series(&[("__name__", "9starts_with_digit")], &[(T0, 1.0)]),
            series(&[("__name__", "ok"), ("bad-label", "v")], &[(T0, 1.0)]),
            series(&[("__name__", "dup"), ("a", "1"), ("a", "2")], &[(T0, 1.0)]),
            series(&[("job", "no_name")], &[(T0, 1.0)]),
            series(&[("__name__", "empty_value"), ("a", "")], &[(T0, 1.0)]),
            series(
                &[("__name__", "unicode"), ("city", "Zürich ☃")],
                &[(T0, 1.0)],
            ),
            series(&[("__name__", ""), ("", "empty_name")], &[(T0, 1.0)]),
            series(
                &[("__name__", "long"), ("v", &"x".repeat(5000))],
                &[(T0, 1.0)],
            ),
        ],
        metadata: Vec::new(),
    };
    seeds.push(("invalid_labels", encode(&invalid)));

    let mut many_labels = series(&[("__name__", "many_labels")], &[(T0, 1.0)]);
    for i in 0..80 {
        many_labels.push_label(&format!("l{i:02}"), "v");
    }
    seeds.push((
        "too_many_labels",
        encode(&WriteRequest {
            timeseries: vec![many_labels],
            metadata: Vec::new(),
        }),
    ));

    seeds.push(("empty_request", encode(&WriteRequest::default())));
    seeds.push((
        "series_without_samples",
        encode(&WriteRequest {
            timeseries: vec![series(&[("__name__", "nothing")], &[])],
            metadata: Vec::new(),
        }),
    ));

    // Label { name: "__name__", value: b"\xff\xfe" }: not UTF-8.
    let mut not_utf8 = TimeSeries::default();
    let label = [&[0x0a, 8][..], b"__name__", &[0x12, 2, 0xff, 0xfe]].concat();
    not_utf8.labels_raw.push(label.len() as u8);
    not_utf8.labels_raw.extend_from_slice(&label);
    not_utf8.samples.push(Sample {
        value: 1.0,
        timestamp: T0,
    });
    seeds.push((
        "label_not_utf8",
        encode(&WriteRequest {
            timeseries: vec![not_utf8],
            metadata: Vec::new(),
        }),
    ));

    // Unknown fields (remote_write 2.0's symbols, a fixed64) before a valid series.
    let mut raw = vec![0x2a, 0x03, b'a', b'b', b'c', 0x39, 1, 2, 3, 4, 5, 6, 7, 8];
    raw.extend(single.encode_to_vec());
    seeds.push(("unknown_fields", compress(&raw)));

    let body = encode(&single);
    seeds.push(("not_compressed", single.encode_to_vec()));
    seeds.push(("truncated_body", body[..body.len() / 2].to_vec()));
    // A snappy preamble claiming 4 GiB of output, then a literal.
    seeds.push((
        "lying_length",
        vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, b'x'],
    ));
    seeds
}

pub fn write_remote_write(dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let seeds = remote_write();
    for (name, data) in &seeds {
        std::fs::write(dir.join(name), data)?;
    }
    Ok(seeds.len())
}
