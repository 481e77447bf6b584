//! Binary operators: arithmetic, comparisons (with `bool`), set operators, and vector
//! matching with `on`/`ignoring`/`group_left`/`group_right` (`promql/engine.go`
//! `VectorBinop`, `VectorscalarBinop`).

use std::collections::{HashMap, HashSet};

use promql_parser::parser::token;
use promql_parser::parser::token::TokenType;
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};
use vigil_storage::labels::METRIC_NAME;
use vigil_storage::LabelSet;

use super::error::{EvalError, EvalResult};
use super::labels::matching_signature;
use super::value::{Sample, Value};

fn is_comparison(op: TokenType) -> bool {
    op.is_comparison_operator()
}

/// `and`, `or`, `unless`.
pub fn is_set(op: TokenType) -> bool {
    matches!(op.id(), token::T_LAND | token::T_LOR | token::T_LUNLESS)
}

/// The result of `lhs op rhs` and whether the element is kept (comparisons filter).
fn apply(op: TokenType, lhs: f64, rhs: f64) -> EvalResult<(f64, bool)> {
    Ok(match op.id() {
        token::T_ADD => (lhs + rhs, true),
        token::T_SUB => (lhs - rhs, true),
        token::T_MUL => (lhs * rhs, true),
        token::T_DIV => (lhs / rhs, true),
        token::T_MOD => (lhs % rhs, true),
        token::T_POW => (lhs.powf(rhs), true),
        token::T_ATAN2 => (lhs.atan2(rhs), true),
        token::T_EQLC => (lhs, lhs == rhs),
        token::T_NEQ => (lhs, lhs != rhs),
        token::T_GTR => (lhs, lhs > rhs),
        token::T_LSS => (lhs, lhs < rhs),
        token::T_GTE => (lhs, lhs >= rhs),
        token::T_LTE => (lhs, lhs <= rhs),
        _ => return Err(EvalError::Unsupported(format!("operator {op}"))),
    })
}

pub fn eval_binary(binary: &BinaryExpr, lhs: Value, rhs: Value, t: i64) -> EvalResult<Value> {
    let op = binary.op;
    let return_bool = binary.modifier.as_ref().is_some_and(|m| m.return_bool);
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            let (value, keep) = apply(op, l, r)?;
            if is_comparison(op) {
                if !return_bool {
                    return Err(EvalError::Execution(
                        "comparisons between scalars must use BOOL modifier".into(),
                    ));
                }
                return Ok(Value::Scalar(if keep { 1.0 } else { 0.0 }));
            }
            Ok(Value::Scalar(value))
        }
        (Value::Vector(samples), Value::Scalar(r)) => {
            vector_scalar(op, samples, r, false, return_bool, t).map(Value::Vector)
        }
        (Value::Scalar(l), Value::Vector(samples)) => {
            vector_scalar(op, samples, l, true, return_bool, t).map(Value::Vector)
        }
        (Value::Vector(l), Value::Vector(r)) => {
            vector_vector(binary, l, r, return_bool, t).map(Value::Vector)
        }
        (l, r) => Err(EvalError::Execution(format!(
            "binary operator on {} and {}",
            l.type_name(),
            r.type_name()
        ))),
    }
}

fn vector_scalar(
    op: TokenType,
    samples: Vec<Sample>,
    scalar: f64,
    swap: bool,
    return_bool: bool,
    t: i64,
) -> EvalResult<Vec<Sample>> {
    let mut out = Vec::with_capacity(samples.len());
    for mut sample in samples {
        let (l, r) = if swap {
            (scalar, sample.f)
        } else {
            (sample.f, scalar)
        };
        let (mut value, mut keep) = apply(op, l, r)?;
        if is_comparison(op) && swap {
            value = r;
        }
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if keep {
            if return_bool || !is_comparison(op) {
                sample.drop_name = true;
            }
            sample.f = value;
            sample.t = t;
            out.push(sample);
        }
    }
    Ok(out)
}

fn signature_parts(
    binary: &BinaryExpr,
) -> (VectorMatchCardinality, bool, Vec<String>, Vec<String>) {
    match &binary.modifier {
        Some(modifier) => {
            let (on, names) = match &modifier.matching {
                Some(LabelModifier::Include(labels)) => (true, labels.labels.clone()),
                Some(LabelModifier::Exclude(labels)) => (false, labels.labels.clone()),
                None => (false, Vec::new()),
            };
            let include = modifier
                .card
                .labels()
                .map(|l| l.labels.clone())
                .unwrap_or_default();
            (modifier.card.clone(), on, names, include)
        }
        None => (
            VectorMatchCardinality::OneToOne,
            false,
            Vec::new(),
            Vec::new(),
        ),
    }
}

fn vector_vector(
    binary: &BinaryExpr,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    return_bool: bool,
    t: i64,
) -> EvalResult<Vec<Sample>> {
    let op = binary.op;
    let (card, on, names, include) = signature_parts(binary);
    let sig = |labels: &LabelSet| matching_signature(labels, on, &names);
    if is_set(op) {
        return Ok(match op.id() {
            token::T_LAND => {
                let right: HashSet<LabelSet> = rhs.iter().map(|s| sig(&s.labels)).collect();
                lhs.into_iter()
                    .filter(|s| right.contains(&sig(&s.labels)))
                    .collect()
            }
            token::T_LUNLESS => {
                let right: HashSet<LabelSet> = rhs.iter().map(|s| sig(&s.labels)).collect();
                lhs.into_iter()
                    .filter(|s| !right.contains(&sig(&s.labels)))
                    .collect()
            }
            _ => {
                let left: HashSet<LabelSet> = lhs.iter().map(|s| sig(&s.labels)).collect();
                let mut out = lhs;
                out.extend(rhs.into_iter().filter(|s| !left.contains(&sig(&s.labels))));
                out
            }
        });
    }
    // The "one" side is indexed; group_right swaps the roles of the sides.
    let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
    let (many, one) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let mut one_by_sig: HashMap<LabelSet, Sample> = HashMap::new();
    for sample in one {
        let key = sig(&sample.labels);
        if one_by_sig.insert(key.clone(), sample).is_some() {
            let side = if one_to_many { "left" } else { "right" };
            return Err(EvalError::Execution(format!(
                "found duplicate series for the match group {key} on the {side} hand-side of the operation: \
                 many-to-many matching not allowed: matching labels must be unique on one side"
            )));
        }
    }
    let mut out = Vec::new();
    let mut seen_one_to_one: HashSet<LabelSet> = HashSet::new();
    let mut seen_result: HashSet<LabelSet> = HashSet::new();
    for sample in many {
        let key = sig(&sample.labels);
        let Some(other) = one_by_sig.get(&key) else {
            continue;
        };
        if matches!(card, VectorMatchCardinality::OneToOne) && !seen_one_to_one.insert(key.clone())
        {
            return Err(EvalError::Execution(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                    .into(),
            ));
        }
        let (l, r) = if one_to_many {
            (other.f, sample.f)
        } else {
            (sample.f, other.f)
        };
        let (mut value, mut keep) = apply(op, l, r)?;
        if return_bool {
            value = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if !keep {
            continue;
        }
        let mut labels = sample.labels.clone();
        let drop_name = return_bool || !is_comparison(op) || sample.drop_name;
        if matches!(card, VectorMatchCardinality::OneToOne) {
            if on {
                let mut kept = LabelSet::default();
                for name in &names {
                    if let Some(value) = labels.get(name) {
                        kept.set(name, value);
                    }
                }
                labels = kept;
            } else {
                for name in &names {
                    labels.set(name, "");
                }
            }
        }
        for name in &include {
            labels.set(name, other.labels.get(name).unwrap_or(""));
        }
        let mut result_key = labels.clone();
        if drop_name {
            result_key.set(METRIC_NAME, "");
        }
        if !seen_result.insert(result_key) && !matches!(card, VectorMatchCardinality::OneToOne) {
            return Err(EvalError::Execution(
                "multiple matches for labels: grouping labels must ensure unique matches".into(),
            ));
        }
        out.push(Sample {
            labels,
            t,
            f: value,
            drop_name,
        });
    }
    Ok(out)
}
