//! Aggregation operators (`sum`, `avg`, `topk`, … with `by`/`without`), as
//! `promql/engine.go` `aggregation` defines them.

use std::collections::HashMap;

use promql_parser::parser::token;
use promql_parser::parser::token::TokenType;
use promql_parser::parser::LabelModifier;
use vigil_storage::LabelSet;

use super::error::{EvalError, EvalResult};
use super::functions::{cmp_nan_last, kahan_add, quantile};
use super::labels::{format_value, grouping_labels};
use super::value::{Sample, Value};

struct Group {
    labels: LabelSet,
    members: Vec<Sample>,
}

fn scalar_param(param: &Option<Value>, name: &str) -> EvalResult<f64> {
    match param {
        Some(Value::Scalar(f)) => Ok(*f),
        _ => Err(EvalError::Execution(format!(
            "expected scalar parameter for {name}"
        ))),
    }
}

/// The labels a grouping keeps, without building a label set.
fn kept_labels<'l>(
    labels: &'l LabelSet,
    modifier: Option<&'l LabelModifier>,
) -> Box<dyn Iterator<Item = (&'l str, &'l str)> + 'l> {
    match modifier {
        None => Box::new(std::iter::empty()),
        Some(LabelModifier::Include(keep)) => {
            // `by` keeps labels in the label set's (sorted) order.
            Box::new(
                labels
                    .labels()
                    .iter()
                    .filter(|label| keep.labels.contains(&label.name))
                    .map(|label| (label.name.as_str(), label.value.as_str())),
            )
        }
        Some(LabelModifier::Exclude(drop)) => Box::new(
            labels
                .labels()
                .iter()
                .filter(|label| {
                    label.name != vigil_storage::labels::METRIC_NAME
                        && !drop.labels.contains(&label.name)
                })
                .map(|label| (label.name.as_str(), label.value.as_str())),
        ),
    }
}

fn group_hash(labels: &LabelSet, modifier: Option<&LabelModifier>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    if let Some(LabelModifier::Include(keep)) = modifier {
        // `by (…)`: a few lookups beat a scan of every label.
        for name in &keep.labels {
            labels.get(name).hash(&mut hasher);
        }
        return hasher.finish();
    }
    for (name, value) in kept_labels(labels, modifier) {
        name.hash(&mut hasher);
        value.hash(&mut hasher);
    }
    hasher.finish()
}

/// Whether `labels` belongs to the group whose grouping labels are `key`.
fn same_group(labels: &LabelSet, key: &LabelSet, modifier: Option<&LabelModifier>) -> bool {
    if let Some(LabelModifier::Include(keep)) = modifier {
        return keep
            .labels
            .iter()
            .all(|name| labels.get(name) == key.get(name));
    }
    kept_labels(labels, modifier).eq(key
        .labels()
        .iter()
        .map(|label| (label.name.as_str(), label.value.as_str())))
}

/// Each input series' grouping labels and their hash, remembered across the steps of a
/// range query (steps see the same shared label sets again): keyed by the input label
/// set's identity, which the entry keeps alive.
#[derive(Default)]
pub(crate) struct GroupKeys {
    known: HashMap<usize, (LabelSet, LabelSet, u64)>,
}

impl GroupKeys {
    fn key(&mut self, labels: &LabelSet, modifier: Option<&LabelModifier>) -> (LabelSet, u64) {
        if let Some((_, group, hash)) = self.known.get(&labels.identity()) {
            return (group.clone(), *hash);
        }
        let group = grouping_labels(labels, modifier);
        let hash = group_hash(labels, modifier);
        self.known
            .insert(labels.identity(), (labels.clone(), group.clone(), hash));
        (group, hash)
    }
}

pub fn aggregate(
    op: TokenType,
    samples: Vec<Sample>,
    param: Option<Value>,
    modifier: Option<&LabelModifier>,
    t: i64,
) -> EvalResult<Vec<Sample>> {
    aggregate_with(op, samples, param, modifier, t, None)
}

/// [`aggregate`], with grouping keys taken from (and added to) `keys`.
pub(crate) fn aggregate_with(
    op: TokenType,
    samples: Vec<Sample>,
    param: Option<Value>,
    modifier: Option<&LabelModifier>,
    t: i64,
    mut keys: Option<&mut GroupKeys>,
) -> EvalResult<Vec<Sample>> {
    let id = op.id();
    if id == token::T_LIMIT_RATIO {
        let ratio = scalar_param(&param, "limit_ratio")?;
        if ratio.is_nan() {
            return Err(EvalError::Execution("Ratio value is NaN".into()));
        }
        return Err(EvalError::Unsupported("aggregation limit_ratio".into()));
    }
    if id == token::T_COUNT_VALUES {
        let Some(Value::String(label)) = &param else {
            return Err(EvalError::Execution(
                "count_values needs a string parameter".into(),
            ));
        };
        if !vigil_storage::labels::is_valid_label_name(label) {
            return Err(EvalError::Execution(format!(
                "invalid label name {label:?}"
            )));
        }
        let mut counts: Vec<(LabelSet, f64)> = Vec::new();
        let mut index: HashMap<LabelSet, usize> = HashMap::new();
        for sample in &samples {
            let mut labels = grouping_labels(&sample.labels, modifier);
            labels.set(label, &format_value(sample.f));
            let slot = *index.entry(labels.clone()).or_insert_with(|| {
                counts.push((labels, 0.0));
                counts.len() - 1
            });
            counts[slot].1 += 1.0;
        }
        return Ok(counts
            .into_iter()
            .map(|(labels, f)| Sample::new(labels, t, f))
            .collect());
    }
    // Group, preserving first-seen order. Samples are hashed by their grouping labels
    // in place; a group's label set is built once, when the group is first seen.
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
    for sample in samples {
        if let Some(keys) = keys.as_deref_mut() {
            // Known series: the group labels are computed once per query.
            let (group_labels, hash) = keys.key(&sample.labels, modifier);
            let candidates = index.entry(hash).or_default();
            let slot = match candidates
                .iter()
                .find(|slot| groups[**slot].labels == group_labels)
            {
                Some(slot) => *slot,
                None => {
                    candidates.push(groups.len());
                    groups.push(Group {
                        labels: group_labels,
                        members: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            groups[slot].members.push(sample);
            continue;
        }
        let candidates = index
            .entry(group_hash(&sample.labels, modifier))
            .or_default();
        let slot = match candidates
            .iter()
            .find(|slot| same_group(&sample.labels, &groups[**slot].labels, modifier))
        {
            Some(slot) => *slot,
            None => {
                candidates.push(groups.len());
                groups.push(Group {
                    labels: grouping_labels(&sample.labels, modifier),
                    members: Vec::new(),
                });
                groups.len() - 1
            }
        };
        groups[slot].members.push(sample);
    }
    let mut out = Vec::new();
    match id {
        token::T_TOPK | token::T_BOTTOMK | token::T_LIMITK => {
            let k = scalar_param(&param, "topk")?;
            if k.is_nan() {
                return Err(EvalError::Execution("Parameter value is NaN".into()));
            }
            let k = if k >= 1.0 { k.min(9.0e18) as usize } else { 0 };
            for group in groups {
                let mut members = group.members;
                if id == token::T_TOPK {
                    // NaN sorts last for topk (lowest).
                    members.sort_by(|a, b| cmp_nan_last(a.f, b.f, true));
                } else if id == token::T_BOTTOMK {
                    members.sort_by(|a, b| cmp_nan_last(a.f, b.f, false));
                }
                out.extend(members.into_iter().take(k).map(|mut s| {
                    s.t = t;
                    s
                }));
            }
            return Ok(out);
        }
        _ => {}
    }
    for group in groups {
        let values: Vec<f64> = group.members.iter().map(|m| m.f).collect();
        let f = match id {
            token::T_SUM => {
                let (mut sum, mut c) = (0.0, 0.0);
                for v in &values {
                    kahan_add(&mut sum, &mut c, *v);
                }
                if sum.is_infinite() {
                    sum
                } else {
                    sum + c
                }
            }
            token::T_AVG => {
                let points: Vec<super::functions::Point> = values
                    .iter()
                    .map(|&f| super::functions::Point { t: 0, f })
                    .collect();
                super::functions::avg_over_time(&points).unwrap_or(f64::NAN)
            }
            token::T_COUNT => values.len() as f64,
            token::T_GROUP => 1.0,
            token::T_MIN => {
                values.iter().copied().fold(
                    f64::NAN,
                    |acc, v| if acc.is_nan() || v < acc { v } else { acc },
                )
            }
            token::T_MAX => {
                values.iter().copied().fold(
                    f64::NAN,
                    |acc, v| if acc.is_nan() || v > acc { v } else { acc },
                )
            }
            token::T_STDDEV | token::T_STDVAR => {
                let points: Vec<super::functions::Point> = values
                    .iter()
                    .map(|&f| super::functions::Point { t: 0, f })
                    .collect();
                let var = super::functions::stdvar_over_time(&points).unwrap_or(f64::NAN);
                if id == token::T_STDDEV {
                    var.sqrt()
                } else {
                    var
                }
            }
            token::T_QUANTILE => {
                let phi = scalar_param(&param, "quantile")?;
                let mut values = values;
                quantile(phi, &mut values)
            }
            _ => {
                return Err(EvalError::Unsupported(format!("aggregation {op}")));
            }
        };
        let drop_name = group.labels.metric_name().is_some()
            && group.members.iter().any(|member| member.drop_name);
        out.push(Sample {
            labels: group.labels,
            t,
            f,
            drop_name,
        });
    }
    Ok(out)
}
