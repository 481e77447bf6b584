use super::*;
use vigil_queries::promql::{finalize, Evaluator, MemorySource, Point, Value};

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random sample streams: a gauge `g`, a gauge `h` and a counter `c_total` for 6
/// instances over 40 minutes, with irregular gaps (some longer than the 5m lookback),
/// repeated values, counter resets and staleness markers; half-integer gauge values,
/// so sums are exact in any order.
fn stream(seed: u64) -> Vec<(LabelSet, i64, f64)> {
    let mut rng = Rng(seed);
    let mut samples = Vec::new();
    for name in ["g", "h", "c_total"] {
        for s in 0..6 {
            let labels = LabelSet::from_pairs([
                ("__name__", name),
                ("job", if s % 2 == 0 { "api" } else { "db" }),
                ("instance", &format!("i{s}")),
            ])
            .expect("labels");
            let mut t = rng.below(60_000) as i64;
            let mut previous = 1.0;
            while t < 40 * 60_000 {
                let value = if rng.below(20) == 0 {
                    vigil_storage::record::stale_marker()
                } else if name == "c_total" {
                    previous = if rng.below(15) == 0 {
                        rng.below(5) as f64
                    } else {
                        previous + rng.below(10) as f64
                    };
                    previous
                } else if rng.below(3) == 0 {
                    previous
                } else {
                    previous = rng.below(20) as f64 / 2.0;
                    previous
                };
                samples.push((labels.clone(), t, value));
                t += match rng.below(10) {
                    0 => 6 * 60_000 + rng.below(120_000) as i64,
                    _ => 5_000 + rng.below(40_000) as i64,
                };
            }
        }
    }
    samples
}

/// Classic histograms `lat_bucket{le=…}` per instance: cumulative counters scraped
/// every 15s with occasional gaps, so rates and quantiles move.
fn histograms(seed: u64) -> Vec<(LabelSet, i64, f64)> {
    let mut rng = Rng(seed ^ 0x5eed);
    let mut samples = Vec::new();
    for s in 0..4 {
        let instance = format!("i{s}");
        let job = if s % 2 == 0 { "api" } else { "db" };
        let mut counts = [0.0f64; 3];
        let mut t = rng.below(15_000) as i64;
        while t < 40 * 60_000 {
            let fast = rng.below(10) as f64;
            let mid = rng.below(5) as f64;
            let slow = rng.below(3) as f64;
            counts[0] += fast;
            counts[1] += fast + mid;
            counts[2] += fast + mid + slow;
            for (le, count) in ["0.1", "1", "+Inf"].iter().zip(counts) {
                let labels = LabelSet::from_pairs([
                    ("__name__", "lat_bucket"),
                    ("job", job),
                    ("instance", instance.as_str()),
                    ("le", le),
                ])
                .expect("labels");
                samples.push((labels, t, count));
            }
            t += if rng.below(12) == 0 {
                7 * 60_000
            } else {
                15_000
            };
        }
    }
    samples
}

fn ad_hoc(source: &MemorySource, expr: &Expr, t: i64) -> Result<BTreeMap<LabelSet, f64>, String> {
    match Evaluator::new(source, t, t).instant_query(expr, t) {
        Ok(Value::Vector(samples)) => Ok(finalize(samples)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|s| (s.labels, s.f))
            .collect()),
        // A scalar rule answers one sample without labels.
        Ok(Value::Scalar(f)) => Ok(BTreeMap::from([(LabelSet::default(), f)])),
        Ok(other) => Err(format!("unexpected {}", other.type_name())),
        Err(err) => Err(err.to_string()),
    }
}

fn close(a: &BTreeMap<LabelSet, f64>, b: &BTreeMap<LabelSet, f64>) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((la, va), (lb, vb))| {
            la == lb
                && (va.to_bits() == vb.to_bits()
                    || (va - vb).abs() <= 1e-9 * va.abs().max(vb.abs()))
        })
}

const RULES: &[&str] = &[
    "g",
    "g > 4",
    "g <= 2.5",
    "2 * g + 1",
    "g > bool 4",
    "sum by (job) (g)",
    "count without (instance) (g > 3)",
    "max by (job) (g)",
    "min(g)",
    "avg by (job) (g)",
    "group by (job) (g != 0)",
    "topk(2, g)",
    "quantile by (job) (0.5, g)",
    "rate(c_total[2m])",
    "sum by (job) (rate(c_total[5m]))",
    "increase(c_total[5m]) > 10",
    "max_over_time(g[3m]) >= 5",
    "avg_over_time(h[5m])",
    "last_over_time(g[2m])",
    "changes(h[10m])",
    "delta(g[4m])",
    "increase(h[2m])",
    "g / on (instance, job) h",
    "g > on (instance) h",
    "g + on (job) group_left sum by (job) (h)",
    "g * ignoring (instance) group_left h",
    "g / on (job) h",
    "g and h > 3",
    "g unless h < 2",
    "g or h",
    "sum by (job) (g) / on (job) count by (job) (h)",
    "abs(g - 5)",
    "clamp_min(g, 3) > 3",
    "round(avg_over_time(h[5m]), 0.5)",
    "predict_linear(g[5m], 600)",
    "quantile_over_time(0.9, h[5m])",
    "absent(nonexistent)",
    "vector(1)",
    "time() - timestamp(g) > 20",
    "3",
    "time() - g",
    "-g < -5",
    "histogram_quantile(0.9, sum by (le, job) (rate(lat_bucket[5m])))",
    "histogram_quantile(0.5, lat_bucket)",
    "label_replace(g, \"host\", \"$1\", \"instance\", \"i(.*)\")",
    "label_join(g, \"both\", \"-\", \"job\", \"instance\")",
    "g - time() < -600",
    "absent(g{instance=\"i0\"})",
    "absent_over_time(h{instance=\"i1\", job=\"db\"}[1m])",
];

#[test]
fn incremental_equals_ad_hoc_at_every_tick() {
    // Ticks every 15s, plus off-grid instants like ingest evaluations.
    let mut ticks: Vec<i64> = (0..=160).map(|k| k * 15_000).collect();
    ticks.extend((0..40).map(|k| k * 61_003 + 7));
    ticks.sort_unstable();
    for seed in [1u64, 7, 42, 1234, 99_991] {
        let mut samples = stream(seed);
        samples.extend(histograms(seed));
        let mut source = MemorySource::default();
        for (labels, t, f) in &samples {
            source.add(labels.clone(), [Point { t: *t, f: *f }]);
        }
        let exprs: Vec<Expr> = RULES
            .iter()
            .map(|rule| promql_parser::parser::parse(rule).expect("parses"))
            .collect();
        let program = Program::compile(&exprs);
        for (rule, compiled) in RULES.iter().zip(&program.rules) {
            assert!(compiled.is_ok(), "{rule}: {compiled:?}");
        }
        // Two workers, fed in one batch out of time order.
        let mut engine = Engine::start(program, 2).expect("engine");
        let mut shuffled = samples.clone();
        shuffled.reverse();
        engine.push_samples(shuffled);
        let mut non_empty = vec![0usize; RULES.len()];
        let mut fallbacks = vec![0usize; RULES.len()];
        for &tick in &ticks {
            engine.evaluate(tick);
            for (index, (rule, expr)) in RULES.iter().zip(&exprs).enumerate() {
                let expected = ad_hoc(&source, expr, tick);
                match engine.answer(index) {
                    Ok(vector) => {
                        let got: BTreeMap<LabelSet, f64> = vector.into_iter().collect();
                        let expected = expected.unwrap_or_else(|err| {
                            panic!("seed {seed}, {rule} at {tick}: ad hoc fails ({err}), incremental answers {got:?}")
                        });
                        assert!(
                            close(&got, &expected),
                            "seed {seed}, {rule} at {tick}:\n incremental {got:?}\n ad hoc {expected:?}"
                        );
                        non_empty[index] += usize::from(!got.is_empty());
                    }
                    Err(reason) => {
                        // Only where the query itself fails: the caller then runs it ad
                        // hoc and reports Prometheus' error.
                        assert!(
                            expected.is_err(),
                            "seed {seed}, {rule} at {tick}: fallback ({reason}) where ad hoc answers"
                        );
                        fallbacks[index] += 1;
                    }
                }
            }
        }
        for (index, rule) in RULES.iter().enumerate() {
            if rule.contains("ignoring (instance) group_left") || *rule == "g / on (job) h" {
                // Many-to-many: always Prometheus' error, through the fallback.
                assert!(fallbacks[index] > ticks.len() / 2, "seed {seed}, {rule}");
                continue;
            }
            if rule.starts_with("absent(g") || rule.starts_with("absent_over_time") {
                // Both states occur: present, and absent in the gaps.
                assert!(
                    non_empty[index] > 0 && non_empty[index] < ticks.len(),
                    "seed {seed}, {rule}: {}",
                    non_empty[index]
                );
                continue;
            }
            // The streams exercise every rule: most ticks have a result.
            assert!(
                non_empty[index] > ticks.len() / 4,
                "seed {seed}, {rule}: {} non-empty, {} fallbacks",
                non_empty[index],
                fallbacks[index]
            );
        }
    }
}

#[test]
fn identical_selectors_share_one_leaf() {
    let exprs: Vec<Expr> = [
        "sum(rate(c_total[5m]))",
        "rate(c_total[5m]) > 1",
        "g",
        "g > 1",
    ]
    .iter()
    .map(|rule| promql_parser::parser::parse(rule).expect("parses"))
    .collect();
    let program = Program::compile(&exprs);
    assert_eq!(program.leaves.len(), 2);
}

#[test]
fn unsupported_constructs_stay_ad_hoc() {
    for rule in [
        "g offset 5m",
        "rate(g[5m] @ 100)",
        "sort(g)",
        "label_replace(g, \"a\", \"$1\", \"job\", \"(\")",
        "timestamp(g offset 1m)",
        "max_over_time(g[10m:1m])",
        "vector(time())",
    ] {
        let expr = promql_parser::parser::parse(rule).expect("parses");
        let program = Program::compile([&expr]);
        assert!(program.rules[0].is_err(), "{rule}");
    }
}

#[test]
fn late_samples_count_as_ad_hoc_would_see_them() {
    let expr = promql_parser::parser::parse("sum(g)").expect("parses");
    let mut program = Program::default();
    let rule = program.add(&expr);
    let mut engine = Engine::start(program, 2).expect("engine");
    let series = |instance: &str| {
        LabelSet::from_pairs([("__name__", "g"), ("instance", instance)]).expect("labels")
    };
    engine.push_samples(vec![(series("a"), 100_000, 1.0)]);
    engine.evaluate(100_000);
    assert_eq!(engine.answer(rule).expect("maintained")[0].1, 1.0);
    // Behind the last evaluation: a new series, and an older sample of a known one
    // (not the newest, so it does not count).
    engine.push_samples(vec![(series("b"), 90_000, 2.0), (series("a"), 95_000, 7.0)]);
    engine.evaluate(100_000);
    assert_eq!(engine.answer(rule).expect("maintained")[0].1, 3.0);
    // A sample ahead of the evaluation time waits for it.
    engine.push_samples(vec![(series("a"), 130_000, 5.0)]);
    engine.evaluate(120_000);
    assert_eq!(engine.answer(rule).expect("maintained")[0].1, 3.0);
    engine.evaluate(130_000);
    assert_eq!(engine.answer(rule).expect("maintained")[0].1, 7.0);
}
