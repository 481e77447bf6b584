//! PromQL values: scalars, strings, instant vectors and range vectors.

use vigil_storage::LabelSet;

use super::functions::Point;

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: LabelSet,
    pub t: i64,
    pub f: f64,
    /// The metric name is to be removed at the end of evaluation (Prometheus 3's delayed
    /// name removal), so label functions and `by (__name__)` still see it.
    pub drop_name: bool,
}

/// One series of a range vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: LabelSet,
    pub points: Vec<Point>,
    pub drop_name: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    String(String),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

impl Sample {
    pub fn new(labels: LabelSet, t: i64, f: f64) -> Sample {
        Sample {
            labels,
            t,
            f,
            drop_name: false,
        }
    }
}
