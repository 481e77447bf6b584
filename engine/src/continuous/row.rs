//! The named row type of continuous queries: a `Row` is a vector of `Datum`s, totally
//! ordered and hashable so that differential dataflow can key, arrange and consolidate
//! it, and convertible from and to Arrow columns (DataFusion evaluates every scalar
//! expression on Arrow batches) and to JSON (what subscribers read).

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};

/// One value. Timestamps keep their unit as nanoseconds; maps (label sets) as sorted
/// pairs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Datum {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(F64),
    Str(String),
    /// Nanoseconds since the epoch.
    Time(i64),
    Map(Vec<(String, String)>),
}

/// An `f64` with a total order (`f64::total_cmp`), so rows can be keys. Persisted as its
/// bits: a decimal round trip through a JSON parser need not give back the same double,
/// and a row read back must equal the row that was published.
#[derive(Clone, Copy, Debug)]
pub struct F64(pub f64);

impl Serialize for F64 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0.to_bits())
    }
}

impl<'de> Deserialize<'de> for F64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u64::deserialize(deserializer).map(|bits| F64(f64::from_bits(bits)))
    }
}

impl PartialEq for F64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for F64 {}
impl PartialOrd for F64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for F64 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl std::hash::Hash for F64 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

pub type Row = Vec<Datum>;

/// Whether a column of this type can be carried in a `Datum` (checked when a query is
/// compiled, so a running query never meets a type it cannot hold).
pub fn supported_type(data_type: &DataType) -> bool {
    match data_type {
        DataType::Null
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Timestamp(_, _) => true,
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(fields) => {
                fields.len() == 2
                    && fields
                        .iter()
                        .all(|f| matches!(f.data_type(), DataType::Utf8 | DataType::Utf8View))
            }
            _ => false,
        },
        DataType::Dictionary(_, value) => supported_type(value),
        _ => false,
    }
}

impl Datum {
    pub fn from_scalar(value: ScalarValue) -> Datum {
        use ScalarValue as S;
        match value {
            S::Boolean(Some(b)) => Datum::Bool(b),
            S::Int8(Some(v)) => Datum::Int(v.into()),
            S::Int16(Some(v)) => Datum::Int(v.into()),
            S::Int32(Some(v)) => Datum::Int(v.into()),
            S::Int64(Some(v)) => Datum::Int(v),
            S::UInt8(Some(v)) => Datum::UInt(v.into()),
            S::UInt16(Some(v)) => Datum::UInt(v.into()),
            S::UInt32(Some(v)) => Datum::UInt(v.into()),
            S::UInt64(Some(v)) => Datum::UInt(v),
            S::Float16(Some(v)) => Datum::Float(F64(v.to_f64())),
            S::Float32(Some(v)) => Datum::Float(F64(v.into())),
            S::Float64(Some(v)) => Datum::Float(F64(v)),
            S::Utf8(Some(s)) | S::LargeUtf8(Some(s)) | S::Utf8View(Some(s)) => Datum::Str(s),
            S::TimestampNanosecond(Some(v), _) => Datum::Time(v),
            S::TimestampMicrosecond(Some(v), _) => Datum::Time(v.saturating_mul(1_000)),
            S::TimestampMillisecond(Some(v), _) => Datum::Time(v.saturating_mul(1_000_000)),
            S::TimestampSecond(Some(v), _) => Datum::Time(v.saturating_mul(1_000_000_000)),
            S::Dictionary(_, inner) => Datum::from_scalar(*inner),
            S::Map(array) => map_pairs(array.as_ref()),
            _ => Datum::Null,
        }
    }

    /// A label set as a map (sorted, as `LabelSet` keeps it); `__name__` left out when
    /// `without_name` (the `metrics` view carries it as `name`).
    pub fn labels(labels: &vigil_storage::LabelSet, without_name: bool) -> Datum {
        Datum::Map(
            labels
                .labels()
                .iter()
                .filter(|l| !(without_name && l.name == vigil_storage::labels::METRIC_NAME))
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect(),
        )
    }

    /// As a number, for sums and averages (`None` for non-numbers and nulls).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Datum::Int(v) => Some(*v as f64),
            Datum::UInt(v) => Some(*v as f64),
            Datum::Float(v) => Some(v.0),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    /// The value as a `ScalarValue` of `data_type` (a cast where the kinds differ).
    pub fn to_scalar(&self, data_type: &DataType) -> datafusion::error::Result<ScalarValue> {
        let scalar = match self {
            Datum::Null => return ScalarValue::try_from(data_type),
            Datum::Bool(b) => ScalarValue::Boolean(Some(*b)),
            Datum::Int(v) => ScalarValue::Int64(Some(*v)),
            Datum::UInt(v) => ScalarValue::UInt64(Some(*v)),
            Datum::Float(v) => ScalarValue::Float64(Some(v.0)),
            Datum::Str(s) => ScalarValue::Utf8(Some(s.clone())),
            Datum::Time(ns) => {
                let tz = match data_type {
                    DataType::Timestamp(_, tz) => tz.clone(),
                    _ => None,
                };
                ScalarValue::TimestampNanosecond(Some(*ns), tz)
            }
            Datum::Map(pairs) => return map_scalar(pairs, data_type),
        };
        if &scalar.data_type() == data_type {
            Ok(scalar)
        } else {
            scalar.cast_to(data_type)
        }
    }

    /// The value as JSON: numbers, strings, booleans; timestamps as RFC 3339 text with
    /// milliseconds (as `/api/v1/sql` writes them), maps as objects.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Datum::Null => Value::Null,
            Datum::Bool(b) => Value::Bool(*b),
            Datum::Int(v) => Value::from(*v),
            Datum::UInt(v) => Value::from(*v),
            Datum::Float(v) => serde_json::Number::from_f64(v.0)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(format_special(v.0))),
            Datum::Str(s) => Value::String(s.clone()),
            Datum::Time(ns) => Value::String(format_time(*ns)),
            Datum::Map(pairs) => Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
        }
    }
}

fn format_special(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

fn format_time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    match chrono::DateTime::from_timestamp(secs, nanos) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ns.to_string(),
    }
}

fn map_pairs(array: &datafusion::arrow::array::MapArray) -> Datum {
    use datafusion::arrow::array::AsArray;
    if array.is_empty() || array.is_null(0) {
        return Datum::Null;
    }
    let entries = array.value(0);
    let keys = entries.column(0);
    let values = entries.column(1);
    let text = |column: &ArrayRef, i: usize| -> Option<String> {
        if column.is_null(i) {
            return None;
        }
        match column.data_type() {
            DataType::Utf8 => Some(column.as_string::<i32>().value(i).to_string()),
            DataType::Utf8View => Some(column.as_string_view().value(i).to_string()),
            _ => None,
        }
    };
    let mut pairs: Vec<(String, String)> = (0..entries.len())
        .filter_map(|i| Some((text(keys, i)?, text(values, i).unwrap_or_default())))
        .collect();
    pairs.sort();
    Datum::Map(pairs)
}

fn map_scalar(
    pairs: &[(String, String)],
    data_type: &DataType,
) -> datafusion::error::Result<ScalarValue> {
    use datafusion::arrow::array::{MapBuilder, StringBuilder};
    let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for (k, v) in pairs {
        builder.keys().append_value(k);
        builder.values().append_value(v);
    }
    builder.append(true)?;
    let array = builder.finish();
    let scalar = ScalarValue::Map(Arc::new(array));
    if &scalar.data_type() == data_type {
        Ok(scalar)
    } else {
        scalar.cast_to(data_type)
    }
}

/// Row `i` of `columns`.
pub fn row_at(columns: &[ArrayRef], i: usize) -> datafusion::error::Result<Row> {
    columns
        .iter()
        .map(|column| ScalarValue::try_from_array(column, i).map(Datum::from_scalar))
        .collect()
}

/// Every value of one column, converted once per column (typed loops for the common
/// types; other types through `ScalarValue`).
pub fn column_datums(column: &ArrayRef) -> datafusion::error::Result<Vec<Datum>> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes as t;
    let n = column.len();
    let valid = |i: usize| column.is_valid(i);
    macro_rules! typed {
        ($array:expr, $make:expr) => {{
            let array = $array;
            (0..n)
                .map(|i| {
                    if valid(i) {
                        $make(array.value(i))
                    } else {
                        Datum::Null
                    }
                })
                .collect()
        }};
    }
    Ok(match column.data_type() {
        DataType::Utf8 => typed!(column.as_string::<i32>(), |v: &str| Datum::Str(
            v.to_string()
        )),
        DataType::LargeUtf8 => {
            typed!(column.as_string::<i64>(), |v: &str| Datum::Str(
                v.to_string()
            ))
        }
        DataType::Utf8View => typed!(column.as_string_view(), |v: &str| Datum::Str(v.to_string())),
        DataType::Boolean => typed!(column.as_boolean(), Datum::Bool),
        DataType::Int64 => typed!(column.as_primitive::<t::Int64Type>(), Datum::Int),
        DataType::Int32 => typed!(column.as_primitive::<t::Int32Type>(), |v: i32| Datum::Int(
            v.into()
        )),
        DataType::UInt64 => typed!(column.as_primitive::<t::UInt64Type>(), Datum::UInt),
        DataType::Float64 => typed!(column.as_primitive::<t::Float64Type>(), |v: f64| {
            Datum::Float(F64(v))
        }),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => typed!(
            column.as_primitive::<t::TimestampNanosecondType>(),
            Datum::Time
        ),
        DataType::Timestamp(TimeUnit::Millisecond, _) => typed!(
            column.as_primitive::<t::TimestampMillisecondType>(),
            |v: i64| Datum::Time(v.saturating_mul(1_000_000))
        ),
        _ => (0..n)
            .map(|i| ScalarValue::try_from_array(column, i).map(Datum::from_scalar))
            .collect::<datafusion::error::Result<Vec<_>>>()?,
    })
}

/// Every row of `columns` (all of the same length), converted column by column.
pub fn rows_of(columns: &[ArrayRef], len: usize) -> datafusion::error::Result<Vec<Row>> {
    let mut converted = columns
        .iter()
        .map(|column| column_datums(column).map(Vec::into_iter))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    Ok((0..len)
        .map(|_| {
            converted
                .iter_mut()
                .map(|column| column.next().unwrap_or(Datum::Null))
                .collect()
        })
        .collect())
}

/// `rows` as a batch of `schema` (each datum cast to its column's type).
pub fn to_batch<'a>(
    schema: &SchemaRef,
    rows: impl Iterator<Item = &'a Row> + Clone,
) -> datafusion::error::Result<RecordBatch> {
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (index, field) in schema.fields().iter().enumerate() {
        let scalars = rows
            .clone()
            .map(|row| {
                row.get(index)
                    .unwrap_or(&Datum::Null)
                    .to_scalar(field.data_type())
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let column = if scalars.is_empty() {
            datafusion::arrow::array::new_empty_array(field.data_type())
        } else {
            ScalarValue::iter_to_array(scalars)?
        };
        columns.push(column);
    }
    let options =
        datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.count()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

/// The event time of a timestamp column's row in milliseconds.
pub fn time_ms(datum: &Datum) -> Option<i64> {
    match datum {
        Datum::Time(ns) => Some(ns.div_euclid(1_000_000)),
        _ => None,
    }
}

/// Whether a type is a timestamp (any unit).
pub fn is_timestamp(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Timestamp(
            TimeUnit::Nanosecond | TimeUnit::Microsecond | TimeUnit::Millisecond | TimeUnit::Second,
            _
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};

    #[test]
    fn rows_round_trip_through_arrow() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                true,
            ),
            Field::new("f", DataType::Float64, true),
        ]));
        let rows = vec![
            vec![
                Datum::Int(1),
                Datum::Str("x".into()),
                Datum::Time(5_000_000),
                Datum::Float(F64(0.5)),
            ],
            vec![Datum::Null, Datum::Null, Datum::Null, Datum::Null],
        ];
        let batch = to_batch(&schema, rows.iter()).unwrap();
        assert_eq!(rows_of(batch.columns(), batch.num_rows()).unwrap(), rows);
        assert_eq!(rows[0][2].to_json(), "1970-01-01T00:00:00.005Z");
    }

    #[test]
    fn floats_survive_persistence_bit_for_bit() {
        let value = Datum::Float(F64(395.35714285714283));
        let text = serde_json::to_string(&value).unwrap();
        let back: Datum = serde_json::from_str(&text).unwrap();
        match back {
            Datum::Float(f) => assert_eq!(f.0.to_bits(), 395.35714285714283f64.to_bits()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn floats_have_a_total_order() {
        let mut v = [F64(f64::NAN), F64(1.0), F64(-0.0), F64(0.0)];
        v.sort();
        assert_eq!(v[0], F64(-0.0));
        assert!(v[3].0.is_nan());
    }
}
