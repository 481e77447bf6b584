//! Criterion kernels: what one ingest step costs, isolated from the network and disk.
//!
//! - `ingest/remote_write_decode`: snappy + protobuf → `SampleBatch`, 1000 series × 10 samples.
//! - `ingest/exposition_parse`: a node_exporter-sized text exposition (≈1000 lines).
//! - `ingest/wal_codec_encode`: the WAL record of the same batch (version 2: series already
//!   declared in the segment, so samples only: references, Δt, value planes, zstd).
//! - `storage/parquet_encode`: one sorted block of 100k samples to Parquet (zstd).
//!
//! Run: `cargo bench --bench main` (add `-- <filter>` to pick one).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil_connectors::remote_write;
use vigil_connectors::scrape::exposition::{self, Format};
use vigil_storage::head::sample_batch;
use vigil_storage::{codec, parquet_block, LabelSet, Limits, SampleBatch, SeriesId};

fn batch(n_series: usize, n_samples: usize) -> SampleBatch {
    let mut batch = SampleBatch::default();
    for series in 0..n_series {
        let pod = format!("pod-{series}");
        let labels = LabelSet::from_pairs([
            ("__name__", "container_cpu_usage_seconds_total"),
            ("namespace", "shop"),
            ("pod", pod.as_str()),
            ("container", "app"),
            ("job", "kubelet"),
        ])
        .expect("labels");
        let idx = batch.push_series(labels);
        for sample in 0..n_samples {
            batch.push_sample(
                idx,
                1_700_000_000_000 + sample as i64 * 15_000,
                (series * sample) as f64 * 0.25,
            );
        }
    }
    batch
}

fn ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingest");
    let input = batch(1000, 10);
    let body = remote_write::encode(&input);
    let limits = Limits::default();
    group.throughput(Throughput::Elements(input.samples.len() as u64));
    group.bench_function("remote_write_decode", |b| {
        b.iter(|| remote_write::decode(black_box(&body), &limits).expect("decode"))
    });
    group.bench_function("wal_codec_encode", |b| {
        let ids: Vec<SeriesId> = input.series.iter().map(LabelSet::series_id).collect();
        let batch = codec::BatchRef {
            ids: &ids,
            series: &input.series,
            samples: &input.samples,
        };
        let mut encoder = codec::SegmentEncoder::default();
        let mut out = Vec::with_capacity(1 << 20);
        // The first record declares the series; steady state is the later records.
        encoder.encode(&batch, &mut out).expect("encode");
        b.iter(|| encoder.encode(black_box(&batch), &mut out).expect("encode"))
    });
    let mut text = String::new();
    for idx in 0..1000 {
        text.push_str(&format!(
            "node_cpu_seconds_total{{cpu=\"{}\",mode=\"{}\"}} {}.{}\n",
            idx / 8,
            ["idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice"][idx % 8],
            idx * 1234,
            idx % 100
        ));
    }
    group.throughput(Throughput::Elements(1000));
    group.bench_function("exposition_parse", |b| {
        b.iter(|| exposition::parse(black_box(&text), Format::Text).expect("parse"))
    });
    group.finish();
}

fn storage(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage");
    let n = 100_000usize;
    let ids: Vec<u64> = (0..n).map(|i| (i / 100) as u64).collect();
    let timestamps: Vec<i64> = (0..n)
        .map(|i| 1_700_000_000_000 + (i % 100) as i64 * 15_000)
        .collect();
    let values: Vec<f64> = (0..n).map(|i| (i % 100) as f64 * 1.5).collect();
    let block = sample_batch(ids, timestamps, values);
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(20);
    group.bench_function("parquet_encode", |b| {
        b.iter(|| parquet_block::encode(black_box(&block)).expect("encode"))
    });
    group.finish();
}

criterion_group!(benches, ingest, storage);
criterion_main!(benches);
