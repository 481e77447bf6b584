//! Criterion kernels: what one ingest step costs, isolated from the network and disk.
//!
//! - `ingest/remote_write_decode`: snappy + protobuf → `SampleBatch`, 1000 series × 10 samples
//!   (`_interned`: the series already known, as in the server after the first request).
//! - `ingest/exposition_parse`: a node_exporter-sized text exposition (≈1000 lines).
//! - `ingest/wal_codec_encode`: the WAL record of the same batch (version 2: series already
//!   declared in the segment, so samples only: references, Δt, value planes, zstd).
//! - `storage/parquet_encode`: one sorted block of 100k samples to Parquet (zstd).
//! - `storage/wal_replay_v1` / `wal_replay_v2`: `Storage::open` replaying 1M samples of
//!   10k Kubernetes-shaped series (10 labels) from a WAL written in the old format
//!   (labels in every record) and in the current one (series declared once per segment).
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
    // As the server decodes: the series are known from earlier requests.
    let interner = remote_write::SeriesInterner::new(1 << 20);
    group.bench_function("remote_write_decode_interned", |b| {
        b.iter(|| {
            remote_write::decode_with(black_box(&body), &limits, Some(&interner)).expect("decode")
        })
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

/// 10k series with Kubernetes-like label sets, one sample each per round.
fn k8s_rounds(rounds: usize) -> Vec<SampleBatch> {
    let series: Vec<LabelSet> = (0..10_000)
        .map(|i| {
            let pod = format!("api-{:05}-{:x}", i / 100, i * 7919);
            let id = format!(
                "/kubepods/burstable/pod{:032x}/{:064x}",
                i / 100,
                i as u128 * 0x9e37_79b9
            );
            LabelSet::from_pairs([
                (
                    "__name__",
                    [
                        "container_cpu_usage_seconds_total",
                        "container_memory_working_set_bytes",
                    ][i % 2],
                ),
                ("namespace", &format!("ns-{}", i % 20)),
                ("pod", &pod),
                ("container", &format!("c{}", i % 3)),
                ("id", &id),
                ("image", "registry.k8s.io/app/server:v1.2.3"),
                ("instance", &format!("10.0.{}.{}:10250", i / 250, i % 250)),
                ("job", "kubelet"),
                ("node", &format!("node-{}", i % 10)),
                ("endpoint", "https-metrics"),
            ])
            .expect("labels")
        })
        .collect();
    // Recent enough for the retention check of the writes.
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
        - 3 * 3600 * 1000;
    let mut batches = Vec::new();
    for round in 0..rounds {
        for chunk in series.chunks(2000) {
            let mut batch = SampleBatch::default();
            for labels in chunk {
                let idx = batch.push_series(labels.clone());
                batch.push_sample(
                    idx,
                    start + round as i64 * 15_000,
                    (round * 1000) as f64 * 0.37,
                );
            }
            batches.push(batch);
        }
    }
    batches
}

fn replay(c: &mut Criterion) {
    use vigil_storage::{AppendMode, Storage, StorageConfig};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let batches = k8s_rounds(100);
    let samples: usize = batches.iter().map(|b| b.samples.len()).sum();
    let mut group = c.benchmark_group("storage");
    group.throughput(Throughput::Elements(samples as u64));
    group.sample_size(10);
    // Version 1: one self-contained record per batch, written as the old writer did.
    let v1 = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(v1.path().join("wal")).expect("wal dir");
    let mut segment = Vec::new();
    for batch in &batches {
        let mut payload = Vec::new();
        codec::encode_batch(batch, &mut payload);
        segment.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        segment.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        segment.extend_from_slice(&payload);
    }
    std::fs::write(v1.path().join("wal/00000001"), &segment).expect("segment");
    // Version 2: through the storage's own writer.
    let v2 = tempfile::tempdir().expect("tempdir");
    runtime.block_on(async {
        let storage = Storage::open(StorageConfig::new(v2.path()))
            .await
            .expect("open");
        for batch in &batches {
            storage
                .append(batch.clone(), AppendMode::Strict)
                .await
                .expect("append");
        }
    });
    for (name, dir) in [("wal_replay_v1", &v1), ("wal_replay_v2", &v2)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let storage = Storage::open(StorageConfig::new(dir.path()))
                        .await
                        .expect("open");
                    assert_eq!(storage.head_samples(), samples);
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, ingest, storage, replay);
criterion_main!(benches);
