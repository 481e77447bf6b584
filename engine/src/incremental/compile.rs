//! From a rule's PromQL expression to a dataflow plan: a tree of [`Node`]s over shared
//! [`Leaf`] inputs, or the reason it stays on the ad hoc evaluator.

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::label::Matcher;
use promql_parser::parser::token::{self, TokenType};
use promql_parser::parser::{BinaryExpr, Expr, LabelModifier};
use vigil_queries::promql::{
    absent, double_exponential_smoothing, elementwise, eval_binary, predict_linear,
    quantile_over_time, range_kernel, EvalError, Evaluator, LabelRewrite, Point, RangeKernel,
    Value, Window,
};
use vigil_storage::LabelSet;

/// Why an expression is evaluated ad hoc instead of incrementally.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// A range function: a shared kernel, or one with constant parameters.
#[derive(Debug, Clone, Copy)]
pub enum RangeFn {
    Kernel(RangeKernel),
    /// `quantile_over_time(φ, …)`.
    Quantile(f64),
    /// `predict_linear(…, seconds)`: the intercept is at the evaluation time.
    PredictLinear(f64),
    /// `double_exponential_smoothing(…, sf, tf)` (`holt_winters`).
    Smoothing(f64, f64),
}

impl RangeFn {
    pub fn apply(&self, points: &[Point], window: Window) -> Option<f64> {
        match *self {
            RangeFn::Kernel(kernel) => (kernel.apply)(points, window),
            RangeFn::Quantile(phi) => quantile_over_time(phi, points),
            RangeFn::PredictLinear(seconds) => predict_linear(points, window.end, seconds),
            RangeFn::Smoothing(sf, tf) => double_exponential_smoothing(points, sf, tf),
        }
    }

    /// The value moves with the evaluation time, not only with the window's samples.
    pub fn uses_window(&self) -> bool {
        match self {
            RangeFn::Kernel(kernel) => kernel.uses_window,
            RangeFn::PredictLinear(_) => true,
            RangeFn::Quantile(_) | RangeFn::Smoothing(..) => false,
        }
    }

    /// Over points that all have one value, the result does not depend on where the
    /// window lies (`rate`, `increase`, `delta` are 0).
    pub fn constant_when_flat(&self) -> bool {
        matches!(self, RangeFn::Kernel(kernel) if kernel.uses_window)
    }

    pub fn keep_name(&self) -> bool {
        matches!(self, RangeFn::Kernel(kernel) if kernel.keep_name)
    }
}

/// A per-element function with its parameters fixed; `empty` when it maps every
/// element to nothing (`clamp` with max < min).
#[derive(Clone)]
pub struct Elementwise {
    pub op: Arc<dyn Fn(f64) -> f64 + Send + Sync>,
    pub empty: bool,
}

impl std::fmt::Debug for Elementwise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elementwise")
            .field("empty", &self.empty)
            .finish()
    }
}

/// An input the driver maintains from the sample stream: a selector's instant vector
/// (latest sample within the lookback), or a range function over each matching
/// series' window.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The selector (or function call) text; equal texts share one leaf.
    pub key: String,
    pub matchers: Vec<Matcher>,
    /// Window length (ms) and the range function.
    pub range: Option<(i64, RangeFn)>,
    /// `timestamp(selector)`: the instant vector's sample times (seconds) as values.
    pub timestamp: bool,
}

/// One operator of the plan. `key` is the sub-expression's text: identical
/// sub-expressions across rules are built once and shared.
#[derive(Debug, Clone)]
pub enum Node {
    Leaf(usize),
    /// One sample without labels (`vector(1)`, or a rule whose expression is a scalar).
    Constant {
        key: String,
        value: f64,
    },
    /// `time() op vector` or `vector op time()`: recomputed at every epoch (the value
    /// moves with the evaluation time).
    Clock {
        key: String,
        binary: Arc<BinaryExpr>,
        time_left: bool,
        input: Box<Node>,
    },
    /// `label_replace` / `label_join` per element.
    Relabel {
        key: String,
        rewrite: Arc<LabelRewrite>,
        input: Box<Node>,
    },
    /// `histogram_quantile(φ, buckets)`: reduced per histogram (labels without `le`).
    HistogramQuantile {
        key: String,
        phi: f64,
        input: Box<Node>,
    },
    /// A per-element function (`abs`, `clamp_min(…, 0)`, `round` …); drops the name.
    Map {
        key: String,
        function: Elementwise,
        input: Box<Node>,
    },
    /// `absent(v)` / `absent_over_time(v[r])`: one sample with `labels` while `input`
    /// is empty.
    Absent {
        key: String,
        labels: LabelSet,
        input: Box<Node>,
    },
    /// `vector op constant` or `constant op vector`, per element.
    Scalar {
        key: String,
        binary: Arc<BinaryExpr>,
        scalar: f64,
        scalar_left: bool,
        input: Box<Node>,
    },
    /// An aggregation, reduced per group.
    Aggregate {
        key: String,
        op: TokenType,
        param: Option<Value>,
        modifier: Option<LabelModifier>,
        input: Box<Node>,
    },
    /// Vector matching (arithmetic, comparison, set operators, `group_left/right`),
    /// evaluated per matching signature.
    Binary {
        key: String,
        binary: Arc<BinaryExpr>,
        on: bool,
        names: Vec<String>,
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
}

/// Per group, per rule: the rule's plan index, or why it stays ad hoc.
pub type GroupPlans = Vec<Vec<Result<usize, Unsupported>>>;

/// Every rule's plan over one shared set of leaves.
#[derive(Debug, Default, Clone)]
pub struct Program {
    pub leaves: Vec<Leaf>,
    pub rules: Vec<Result<Node, Unsupported>>,
    leaf_index: HashMap<String, usize>,
}

impl Program {
    /// Compiles each expression (in order); unsupported ones keep their reason.
    pub fn compile<'a>(exprs: impl IntoIterator<Item = &'a Expr>) -> Program {
        let mut program = Program::default();
        for expr in exprs {
            program.add(expr);
        }
        program
    }

    /// Adds one expression; returns its index among the rules.
    pub fn add(&mut self, expr: &Expr) -> usize {
        // A rule whose expression is a scalar answers one sample without labels, as
        // Prometheus' rule query function does (`expr: 1`, the Watchdog's `vector(1)`).
        let node = match constant(expr) {
            Some(value) => Ok(Node::Constant {
                key: expr.to_string(),
                value,
            }),
            None => self.node(expr),
        };
        self.rules.push(node);
        self.rules.len() - 1
    }

    /// Adds every rule of `groups`. A group with `query_offset` stays ad hoc: its
    /// rules are evaluated at another time than the engine's epochs.
    pub fn add_groups<'g>(
        &mut self,
        groups: impl IntoIterator<Item = &'g crate::rules::Group>,
    ) -> GroupPlans {
        groups
            .into_iter()
            .map(|group| {
                group
                    .rules
                    .iter()
                    .map(|rule| {
                        if group.query_offset_ms != 0 {
                            return Err(Unsupported("query_offset".into()));
                        }
                        let index = self.add(&rule.expr);
                        match &self.rules[index] {
                            Ok(_) => Ok(index),
                            Err(reason) => Err(reason.clone()),
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// The leaves rule `rule` reads.
    pub fn leaves_of(&self, rule: usize) -> Vec<usize> {
        fn walk(node: &Node, out: &mut Vec<usize>) {
            match node {
                Node::Leaf(index) => out.push(*index),
                Node::Constant { .. } => {}
                Node::Clock { input, .. }
                | Node::Relabel { input, .. }
                | Node::HistogramQuantile { input, .. }
                | Node::Map { input, .. }
                | Node::Absent { input, .. }
                | Node::Scalar { input, .. }
                | Node::Aggregate { input, .. } => walk(input, out),
                Node::Binary { lhs, rhs, .. } => {
                    walk(lhs, out);
                    walk(rhs, out);
                }
            }
        }
        let mut out = Vec::new();
        if let Some(Ok(node)) = self.rules.get(rule) {
            walk(node, &mut out);
        }
        out
    }

    fn leaf(
        &mut self,
        key: String,
        matchers: Vec<Matcher>,
        range: Option<(i64, RangeFn)>,
    ) -> usize {
        if let Some(&index) = self.leaf_index.get(&key) {
            return index;
        }
        let timestamp = range.is_none() && key.starts_with("timestamp(");
        self.leaves.push(Leaf {
            key: key.clone(),
            matchers,
            range,
            timestamp,
        });
        self.leaf_index.insert(key, self.leaves.len() - 1);
        self.leaves.len() - 1
    }

    fn node(&mut self, expr: &Expr) -> Result<Node, Unsupported> {
        match expr {
            Expr::Paren(paren) => self.node(&paren.expr),
            Expr::VectorSelector(vs) => {
                if vs.offset.is_some() || vs.at.is_some() {
                    return Err(Unsupported("offset or @ modifier".into()));
                }
                let matchers =
                    Evaluator::selector_matchers(vs).map_err(|err| Unsupported(err.to_string()))?;
                Ok(Node::Leaf(self.leaf(expr.to_string(), matchers, None)))
            }
            Expr::Call(call) => self.call(expr, call),
            Expr::Aggregate(agg) => {
                let supported = [
                    token::T_SUM,
                    token::T_AVG,
                    token::T_COUNT,
                    token::T_MIN,
                    token::T_MAX,
                    token::T_GROUP,
                    token::T_STDDEV,
                    token::T_STDVAR,
                    token::T_TOPK,
                    token::T_BOTTOMK,
                    token::T_QUANTILE,
                    token::T_COUNT_VALUES,
                ];
                if !supported.contains(&agg.op.id()) {
                    return Err(Unsupported(format!("aggregation {}", agg.op)));
                }
                let param = match &agg.param {
                    None => None,
                    Some(param) => Some(match param.as_ref() {
                        Expr::StringLiteral(s) => Value::String(s.val.clone()),
                        other => Value::Scalar(constant(other).ok_or_else(|| {
                            Unsupported("aggregation parameter that is not a constant".into())
                        })?),
                    }),
                };
                let input = self.node(&agg.expr)?;
                Ok(Node::Aggregate {
                    key: expr.to_string(),
                    op: agg.op,
                    param,
                    modifier: agg.modifier.clone(),
                    input: Box::new(input),
                })
            }
            Expr::Binary(binary) => {
                let key = expr.to_string();
                if is_time(&binary.lhs) || is_time(&binary.rhs) {
                    let time_left = is_time(&binary.lhs);
                    let other = if time_left { &binary.rhs } else { &binary.lhs };
                    if is_time(other) || constant(other).is_some() {
                        return Err(Unsupported("scalar expression".into()));
                    }
                    return Ok(Node::Clock {
                        key,
                        binary: Arc::new(binary.clone()),
                        time_left,
                        input: Box::new(self.node(other)?),
                    });
                }
                match (constant(&binary.lhs), constant(&binary.rhs)) {
                    (Some(_), Some(_)) => Err(Unsupported("scalar expression".into())),
                    (None, Some(scalar)) => Ok(Node::Scalar {
                        key,
                        binary: Arc::new(binary.clone()),
                        scalar,
                        scalar_left: false,
                        input: Box::new(self.node(&binary.lhs)?),
                    }),
                    (Some(scalar), None) => Ok(Node::Scalar {
                        key,
                        binary: Arc::new(binary.clone()),
                        scalar,
                        scalar_left: true,
                        input: Box::new(self.node(&binary.rhs)?),
                    }),
                    (None, None) => {
                        let (on, names) =
                            match binary.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                                Some(LabelModifier::Include(list)) => (true, list.labels.clone()),
                                Some(LabelModifier::Exclude(list)) => (false, list.labels.clone()),
                                None => (false, Vec::new()),
                            };
                        let lhs = self.node(&binary.lhs)?;
                        let rhs = self.node(&binary.rhs)?;
                        Ok(Node::Binary {
                            key,
                            binary: Arc::new(binary.clone()),
                            on,
                            names,
                            lhs: Box::new(lhs),
                            rhs: Box::new(rhs),
                        })
                    }
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {
                Err(Unsupported("a constant".into()))
            }
            Expr::Unary(unary) => Ok(Node::Map {
                key: expr.to_string(),
                function: Elementwise {
                    op: Arc::new(|v: f64| -v),
                    empty: false,
                },
                input: Box::new(self.node(&unary.expr)?),
            }),
            Expr::Subquery(_) => Err(Unsupported("subquery".into())),
            Expr::MatrixSelector(_) => Err(Unsupported("range vector".into())),
            Expr::Extension(_) => Err(Unsupported("extension".into())),
        }
    }
}

impl Program {
    fn call(
        &mut self,
        expr: &Expr,
        call: &promql_parser::parser::Call,
    ) -> Result<Node, Unsupported> {
        let name = call.func.name;
        let args: Vec<&Expr> = call.args.args.iter().map(|arg| arg.as_ref()).collect();
        let constants = |args: &[&Expr]| -> Result<Vec<f64>, Unsupported> {
            args.iter()
                .map(|arg| {
                    constant(arg).ok_or_else(|| {
                        Unsupported(format!("{name} with a parameter that is not a constant"))
                    })
                })
                .collect()
        };
        let range = match name {
            "quantile_over_time" => {
                let phi = constants(args.get(..1).unwrap_or_default())?;
                Some((
                    args.get(1),
                    RangeFn::Quantile(phi.first().copied().unwrap_or(f64::NAN)),
                ))
            }
            "predict_linear" => {
                let seconds = constants(args.get(1..2).unwrap_or_default())?;
                Some((
                    args.first(),
                    RangeFn::PredictLinear(seconds.first().copied().unwrap_or(0.0)),
                ))
            }
            "double_exponential_smoothing" | "holt_winters" => {
                let params = constants(args.get(1..3).unwrap_or_default())?;
                match *params.as_slice() {
                    [sf, tf] if sf > 0.0 && sf < 1.0 && tf > 0.0 && tf < 1.0 => {
                        Some((args.first(), RangeFn::Smoothing(sf, tf)))
                    }
                    _ => return Err(Unsupported(format!("{name} with invalid factors"))),
                }
            }
            _ => range_kernel(name).map(|kernel| (args.first(), RangeFn::Kernel(kernel))),
        };
        if let Some((matrix, function)) = range {
            if args.len() != 1 && matches!(function, RangeFn::Kernel(_)) {
                return Err(Unsupported(format!("{name} with several arguments")));
            }
            return self.range_leaf(expr.to_string(), name, matrix.copied(), function);
        }
        let strings = |args: &[&Expr]| -> Result<Vec<String>, Unsupported> {
            args.iter()
                .map(|arg| match arg {
                    Expr::StringLiteral(s) => Ok(s.val.clone()),
                    _ => Err(Unsupported(format!("{name} with a non-literal argument"))),
                })
                .collect()
        };
        let invalid = |err: EvalError| Unsupported(err.to_string());
        match name {
            "label_replace" | "label_join" => {
                let Some((first, rest)) = args.split_first() else {
                    return Err(Unsupported(format!("{name} arguments")));
                };
                let mut rest = strings(rest)?.into_iter();
                let mut next = || rest.next().unwrap_or_default();
                let rewrite = if name == "label_replace" {
                    let (dst, replacement, src, pattern) = (next(), next(), next(), next());
                    LabelRewrite::replace(dst, replacement, src, &pattern).map_err(invalid)?
                } else {
                    let (dst, separator) = (next(), next());
                    LabelRewrite::join(dst, separator, rest.collect()).map_err(invalid)?
                };
                Ok(Node::Relabel {
                    key: expr.to_string(),
                    rewrite: Arc::new(rewrite),
                    input: Box::new(self.node(first)?),
                })
            }
            "histogram_quantile" => {
                let [phi, buckets] = args.as_slice() else {
                    return Err(Unsupported(format!("{name} arguments")));
                };
                let phi = constants(&[phi])?[0];
                Ok(Node::HistogramQuantile {
                    key: expr.to_string(),
                    phi,
                    input: Box::new(self.node(buckets)?),
                })
            }
            "timestamp" => {
                let [Expr::VectorSelector(vs)] = args.as_slice() else {
                    return Err(Unsupported("timestamp of an expression".into()));
                };
                if vs.offset.is_some() || vs.at.is_some() {
                    return Err(Unsupported("offset or @ modifier".into()));
                }
                let matchers =
                    Evaluator::selector_matchers(vs).map_err(|err| Unsupported(err.to_string()))?;
                Ok(Node::Leaf(self.leaf(
                    format!("timestamp({})", args[0]),
                    matchers,
                    None,
                )))
            }
            "vector" => {
                let value = constants(&args)?;
                match value.as_slice() {
                    [value] => Ok(Node::Constant {
                        key: expr.to_string(),
                        value: *value,
                    }),
                    _ => Err(Unsupported("vector arguments".into())),
                }
            }
            "absent" | "absent_over_time" => {
                let [arg] = args.as_slice() else {
                    return Err(Unsupported(format!("{name} arguments")));
                };
                let labels = absent(true, arg, 0)
                    .into_iter()
                    .next()
                    .map(|sample| sample.labels)
                    .unwrap_or_default();
                let input = if name == "absent" {
                    self.node(arg)?
                } else {
                    let kernel = range_kernel("count_over_time")
                        .ok_or_else(|| Unsupported("count_over_time".into()))?;
                    self.range_leaf(
                        format!("count_over_time({arg})"),
                        name,
                        Some(arg),
                        RangeFn::Kernel(kernel),
                    )?
                };
                Ok(Node::Absent {
                    key: expr.to_string(),
                    labels,
                    input: Box::new(input),
                })
            }
            _ => {
                let Some((first, rest)) = args.split_first() else {
                    return Err(Unsupported(format!("function {name}")));
                };
                let params = constants(rest)?;
                let op = elementwise(name, &params)
                    .ok_or_else(|| Unsupported(format!("function {name}")))?;
                let empty = name == "clamp" && params.get(1) < params.first();
                Ok(Node::Map {
                    key: expr.to_string(),
                    function: Elementwise { op, empty },
                    input: Box::new(self.node(first)?),
                })
            }
        }
    }

    fn range_leaf(
        &mut self,
        key: String,
        name: &str,
        matrix: Option<&Expr>,
        function: RangeFn,
    ) -> Result<Node, Unsupported> {
        let Some(Expr::MatrixSelector(matrix)) = matrix else {
            return Err(Unsupported(format!("{name} over a subquery")));
        };
        if matrix.vs.offset.is_some() || matrix.vs.at.is_some() {
            return Err(Unsupported("offset or @ modifier".into()));
        }
        let matchers =
            Evaluator::selector_matchers(&matrix.vs).map_err(|err| Unsupported(err.to_string()))?;
        let range_ms = matrix.range.as_millis() as i64;
        Ok(Node::Leaf(self.leaf(
            key,
            matchers,
            Some((range_ms, function)),
        )))
    }
}

/// `time()` (possibly in parentheses).
fn is_time(expr: &Expr) -> bool {
    match expr {
        Expr::Call(call) => call.func.name == "time" && call.args.args.is_empty(),
        Expr::Paren(p) => is_time(&p.expr),
        _ => false,
    }
}

/// The value of a constant scalar expression (`0.95`, `-1`, `1024 * 1024`, `(2)`).
fn constant(expr: &Expr) -> Option<f64> {
    match expr {
        Expr::NumberLiteral(n) => Some(n.val),
        Expr::Paren(p) => constant(&p.expr),
        Expr::Unary(u) => constant(&u.expr).map(|v| -v),
        Expr::Binary(b) => {
            let (l, r) = (constant(&b.lhs)?, constant(&b.rhs)?);
            match eval_binary(b, Value::Scalar(l), Value::Scalar(r), 0) {
                Ok(Value::Scalar(v)) => Some(v),
                _ => None,
            }
        }
        _ => None,
    }
}
