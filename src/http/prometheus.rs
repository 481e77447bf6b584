//! The Prometheus HTTP API (`web/api/v1/api.go`): `/api/v1/query`, `query_range`, `series`,
//! `labels`, `label/<name>/values`, `metadata`, `status/buildinfo`, `format_query` and
//! `parse_query`, with Prometheus' parameters, JSON shapes, error types and limits.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value as JsonValue};
use vigil_queries::promql::{
    time_in_range, Annotations, EvalError, Evaluator, PrefetchSource, QueryShape, Sample, Series,
    StorageSource, Value, DEFAULT_LOOKBACK_MS, MAX_TIME_MS,
};
use vigil_storage::LabelSet;

use super::error::ApiError;
use super::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/query", get(query_handler).post(query_handler))
        .route(
            "/api/v1/query_range",
            get(query_range_handler).post(query_range_handler),
        )
        .route("/api/v1/series", get(series_handler).post(series_handler))
        .route("/api/v1/labels", get(labels_handler).post(labels_handler))
        .route("/api/v1/label/{name}/values", get(label_values_handler))
        .route("/api/v1/metadata", get(metadata_handler))
        .route("/api/v1/status/buildinfo", get(buildinfo_handler))
        .route(
            "/api/v1/format_query",
            get(format_query_handler).post(format_query_handler),
        )
        .route(
            "/api/v1/parse_query",
            get(parse_query_handler).post(parse_query_handler),
        )
}

/// Prometheus refuses range queries with more points than this per series.
const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// Query-string parameters merged with a form-encoded body, as Prometheus accepts both.
fn params(
    query: HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> HashMap<String, String> {
    form_pairs(query.into_iter().collect(), headers, body)
        .into_iter()
        .collect()
}

/// Float seconds as milliseconds, `None` for non-numbers; `Some(None)` when the value is
/// not finite or beyond ±2^52 ms (about 142,000 years), so no later time arithmetic can
/// overflow.
fn float_seconds_ms(text: &str) -> Option<Option<i64>> {
    let seconds = text.parse::<f64>().ok()?;
    let ms = seconds * 1000.0;
    Some((ms.is_finite() && ms.abs() <= MAX_TIME_MS as f64).then(|| ms.round() as i64))
}

/// A time parameter: Unix seconds (float) or RFC 3339; milliseconds out.
fn parse_time(text: &str) -> Option<i64> {
    match float_seconds_ms(text) {
        Some(ms) => ms,
        None => Some(
            chrono::DateTime::parse_from_rfc3339(text)
                .ok()?
                .timestamp_millis(),
        ),
    }
    .filter(|t| time_in_range(*t))
}

/// A duration parameter: float seconds or a Prometheus duration; milliseconds out.
fn parse_step(text: &str) -> Option<i64> {
    match float_seconds_ms(text) {
        Some(ms) => ms,
        None => vigil_connectors::duration::parse(text)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .filter(|ms| time_in_range(*ms)),
    }
}

use super::now_ms;
use vigil_queries::promql::format_value as format_float;

fn metric(labels: &LabelSet) -> JsonValue {
    let mut map = Map::new();
    for label in labels.labels() {
        map.insert(label.name.clone(), JsonValue::String(label.value.clone()));
    }
    JsonValue::Object(map)
}

fn point(t: i64, f: f64) -> JsonValue {
    json!([t as f64 / 1000.0, format_float(f)])
}

/// Vectors and matrices are written straight into the response body (a dashboard's
/// range query is tens of thousands of points: no JSON tree per point). Strings and
/// numbers use serde_json's encoders, so the text is what `json!` would print.
struct ResultWriter(Vec<u8>);

impl ResultWriter {
    fn json(&mut self, value: &impl serde::Serialize) {
        // Writing a string or a number into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.0, value);
    }

    fn metric(&mut self, labels: &LabelSet) {
        self.0.push(b'{');
        for (idx, label) in labels.labels().iter().enumerate() {
            if idx > 0 {
                self.0.push(b',');
            }
            self.json(&label.name);
            self.0.push(b':');
            self.json(&label.value);
        }
        self.0.push(b'}');
    }

    fn point(&mut self, t: i64, f: f64) {
        self.0.push(b'[');
        self.json(&(t as f64 / 1000.0));
        self.0.push(b',');
        self.json(&format_float(f));
        self.0.push(b']');
    }

    /// `[item, item, …]`.
    fn list<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Self, &T)) {
        self.0.push(b'[');
        for (idx, value) in items.iter().enumerate() {
            if idx > 0 {
                self.0.push(b',');
            }
            item(self, value);
        }
        self.0.push(b']');
    }

    fn vector(samples: &[Sample], t: i64) -> Vec<u8> {
        let mut out = ResultWriter(Vec::with_capacity(64 + samples.len() * 128));
        out.list(samples, |out, sample| {
            out.0.extend_from_slice(br#"{"metric":"#);
            out.metric(&sample.labels);
            out.0.extend_from_slice(br#","value":"#);
            out.point(t, sample.f);
            out.0.push(b'}');
        });
        out.0
    }

    fn matrix(series: &[Series]) -> Vec<u8> {
        let points: usize = series.iter().map(|s| s.points.len()).sum();
        let mut out = ResultWriter(Vec::with_capacity(64 + series.len() * 128 + points * 32));
        out.list(series, |out, s| {
            out.0.extend_from_slice(br#"{"metric":"#);
            out.metric(&s.labels);
            out.0.extend_from_slice(br#","values":"#);
            out.list(&s.points, |out, p| out.point(p.t, p.f));
            out.0.push(b'}');
        });
        out.0
    }
}

/// A success envelope around an already encoded `result`.
fn success_encoded(result_type: &str, result: Vec<u8>, annotations: &Annotations) -> Response {
    let mut body = ResultWriter(Vec::with_capacity(result.len() + 256));
    body.0
        .extend_from_slice(br#"{"status":"success","data":{"resultType":"#);
    body.json(&result_type);
    body.0.extend_from_slice(br#","result":"#);
    body.0.extend_from_slice(&result);
    body.0.push(b'}');
    if !annotations.warnings.is_empty() {
        body.0.extend_from_slice(br#","warnings":"#);
        body.json(&annotations.warnings);
    }
    if !annotations.infos.is_empty() {
        body.0.extend_from_slice(br#","infos":"#);
        body.json(&annotations.infos);
    }
    body.0.push(b'}');
    (
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from(body.0),
    )
        .into_response()
}

fn success(result_type: &str, result: JsonValue, annotations: &Annotations) -> Response {
    let mut body =
        json!({"status": "success", "data": {"resultType": result_type, "result": result}});
    if !annotations.warnings.is_empty() {
        body["warnings"] = json!(annotations.warnings);
    }
    if !annotations.infos.is_empty() {
        body["infos"] = json!(annotations.infos);
    }
    Json(body).into_response()
}

/// Parses the `query` parameter under the shape limits (length, nesting, operators:
/// checked before the parser runs), on a blocking thread: a parse never occupies an
/// async worker.
async fn parse_query(
    params: &HashMap<String, String>,
) -> Result<promql_parser::parser::Expr, ApiError> {
    let Some(text) = params.get("query").cloned() else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "bad_data",
            "invalid parameter \"query\": query is empty".into(),
        ));
    };
    let parsed = tokio::task::spawn_blocking(move || {
        vigil_queries::promql::parse_bounded(&text, QueryShape::default())
    })
    .await
    .unwrap_or_else(|err| Err(format!("parse error: {err}")));
    parsed.map_err(|message| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "bad_data",
            format!("invalid parameter \"query\": {message}"),
        )
    })
}

/// What one query evaluates: the parsed expression, its time range (the range `@
/// start()`/`@ end()` refer to) and the request's `timeout` parameter.
struct QueryRun {
    expr: promql_parser::parser::Expr,
    start: i64,
    end: i64,
    timeout: Option<std::time::Duration>,
}

/// Runs the evaluator on a blocking thread (it reads storage synchronously), each
/// selector's span read once, under the configured timeout and sample limit.
async fn evaluate<T: Send + 'static>(
    state: Arc<AppState>,
    query: QueryRun,
    run: impl FnOnce(&Evaluator<'_>, &promql_parser::parser::Expr) -> Result<T, EvalError>
        + Send
        + 'static,
) -> Result<(T, Annotations), ApiError> {
    let timeout = query
        .timeout
        .map_or(state.query.timeout, |t| t.min(state.query.timeout));
    let evaluated = tokio::task::spawn_blocking(move || {
        let source = StorageSource {
            storage: &state.storage,
        };
        let prefetch = PrefetchSource::new(
            &source,
            &query.expr,
            query.start,
            query.end,
            DEFAULT_LOOKBACK_MS,
        );
        let mut evaluator = Evaluator::new(&prefetch, query.start, query.end);
        evaluator.max_samples = state.query.max_samples;
        evaluator.deadline = Some(std::time::Instant::now() + timeout);
        let value = run(&evaluator, &query.expr)?;
        Ok::<_, EvalError>((value, evaluator.annotations()))
    })
    .await?;
    Ok(evaluated?)
}

/// The optional `timeout` parameter.
fn timeout_param(
    params: &HashMap<String, String>,
) -> Result<Option<std::time::Duration>, ApiError> {
    match params.get("timeout") {
        None => Ok(None),
        Some(text) => match parse_step(text) {
            Some(ms) if ms > 0 => Ok(Some(std::time::Duration::from_millis(ms as u64))),
            _ => Err(ApiError::bad_data(format!(
                "invalid parameter \"timeout\": cannot parse {text:?} to a valid duration"
            ))),
        },
    }
}

pub async fn query_handler(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = params(query, &headers, &body);
    let expr = parse_query(&params).await?;
    let t = match params.get("time") {
        Some(text) => parse_time(text).ok_or_else(|| {
            ApiError::bad_data(format!(
                "invalid parameter \"time\": cannot parse {text:?} to a valid timestamp"
            ))
        })?,
        None => now_ms(),
    };
    let run = QueryRun {
        expr,
        start: t,
        end: t,
        timeout: timeout_param(&params)?,
    };
    let (value, notes) = evaluate(state, run, move |ev, expr| ev.instant_query(expr, t)).await?;
    Ok(match value {
        Value::Scalar(f) => success("scalar", point(t, f), &notes),
        Value::String(s) => success("string", json!([t as f64 / 1000.0, s]), &notes),
        Value::Vector(samples) => {
            success_encoded("vector", ResultWriter::vector(&samples, t), &notes)
        }
        Value::Matrix(series) => success_encoded("matrix", ResultWriter::matrix(&series), &notes),
    })
}

pub async fn query_range_handler(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = params(query, &headers, &body);
    let expr = parse_query(&params).await?;
    let get = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
    let bad = |name: &str| {
        ApiError::bad_data(format!(
            "invalid parameter \"{name}\": cannot parse {:?}",
            get(name)
        ))
    };
    let start = parse_time(get("start")).ok_or_else(|| bad("start"))?;
    let end = parse_time(get("end")).ok_or_else(|| bad("end"))?;
    let step = parse_step(get("step")).ok_or_else(|| bad("step"))?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    if step <= 0 {
        return Err(ApiError::bad_data("invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer"));
    }
    // Both ends are within ±2^52 ms (`parse_time`), so the difference cannot overflow.
    if (end - start) / step > MAX_POINTS_PER_SERIES {
        return Err(ApiError::bad_data("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"));
    }
    // As Prometheus' engine refuses it when the query is created (2.42's text: no
    // `invalid parameter` prefix).
    let documented = match expr.value_type() {
        promql_parser::parser::value::ValueType::Vector
        | promql_parser::parser::value::ValueType::Scalar => None,
        promql_parser::parser::value::ValueType::Matrix => Some("range vector"),
        promql_parser::parser::value::ValueType::String => Some("string"),
    };
    if let Some(documented) = documented {
        return Err(ApiError::bad_data(format!(
            "invalid expression type \"{documented}\" for range query, must be Scalar or instant Vector"
        )));
    }
    let run = QueryRun {
        expr,
        start,
        end,
        timeout: timeout_param(&params)?,
    };
    let (series, notes) = evaluate(state, run, move |ev, expr| {
        ev.range_query(expr, start, end, step)
    })
    .await?;
    Ok(success_encoded(
        "matrix",
        ResultWriter::matrix(&series),
        &notes,
    ))
}

/// The selectors of repeated `match[]` parameters; `Err` is a ready 400 response.
fn match_selectors(
    params: &[(String, String)],
) -> Result<Vec<Vec<promql_parser::label::Matcher>>, ApiError> {
    let mut selectors = Vec::new();
    for (name, value) in params {
        if name != "match[]" {
            continue;
        }
        match vigil_queries::promql::parse_bounded(value, QueryShape::default()) {
            Ok(promql_parser::parser::Expr::VectorSelector(selector)) => {
                let mut matchers = selector.matchers.matchers.clone();
                if let Some(metric) = &selector.name {
                    matchers.push(promql_parser::label::Matcher::new(
                        promql_parser::label::MatchOp::Equal,
                        "__name__",
                        metric,
                    ));
                }
                selectors.push(matchers);
            }
            _ => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    format!("invalid parameter \"match[]\": {value:?} is not a series selector"),
                ))
            }
        }
    }
    Ok(selectors)
}

/// Series matching any selector (all series without selectors). With `start` and/or
/// `end` only series with a sample in `[start, end]` count, as in Prometheus; without
/// them every series storage knows does.
async fn matching_series(
    state: &Arc<AppState>,
    selectors: &[Vec<promql_parser::label::Matcher>],
    pairs: &[(String, String)],
) -> Result<Vec<LabelSet>, ApiError> {
    let param = |name: &str| -> Result<Option<i64>, ApiError> {
        match pairs.iter().rev().find(|(k, _)| k == name) {
            None => Ok(None),
            Some((_, text)) => parse_time(text).map(Some).ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    format!(
                        "invalid parameter \"{name}\": cannot parse {text:?} to a valid timestamp"
                    ),
                )
            }),
        }
    };
    let (start, end) = (param("start")?, param("end")?);
    let mut series: Vec<LabelSet> = if start.is_none() && end.is_none() {
        state
            .storage
            .series_matching(|labels| {
                selectors.is_empty()
                    || selectors
                        .iter()
                        .any(|m| vigil_queries::promql::matches(m, labels))
            })
            .into_iter()
            .map(|(_, labels)| (*labels).clone())
            .collect()
    } else {
        let (start, end) = (start.unwrap_or(i64::MIN / 2), end.unwrap_or(i64::MAX / 2));
        let selectors: Vec<Vec<promql_parser::label::Matcher>> = if selectors.is_empty() {
            vec![vec![promql_parser::label::Matcher::new(
                promql_parser::label::MatchOp::NotEqual,
                "__name__",
                "",
            )]]
        } else {
            selectors.to_vec()
        };
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            let source = StorageSource {
                storage: &state.storage,
            };
            let mut found = std::collections::BTreeSet::new();
            for matchers in &selectors {
                let selected =
                    vigil_queries::promql::SeriesSource::select(&source, matchers, start - 1, end)
                        .map_err(|e| {
                            ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                        })?;
                found.extend(selected.into_iter().map(|s| s.labels));
            }
            Ok::<_, ApiError>(found.into_iter().collect())
        })
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??
    };
    series.sort();
    series.dedup();
    Ok(series)
}

fn form_pairs(
    query: Vec<(String, String)>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Vec<(String, String)> {
    let mut pairs = query;
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        if let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) {
            pairs.extend(form);
        }
    }
    pairs
}

fn data(value: JsonValue) -> Response {
    Json(json!({"status": "success", "data": value})).into_response()
}

pub async fn series_handler(
    State(state): State<Arc<AppState>>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let pairs = form_pairs(query, &headers, &body);
    let selectors = match_selectors(&pairs)?;
    if selectors.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let series = matching_series(&state, &selectors, &pairs).await?;
    Ok(data(series.iter().map(metric).collect()))
}

pub async fn labels_handler(
    State(state): State<Arc<AppState>>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let pairs = form_pairs(query, &headers, &body);
    let selectors = match_selectors(&pairs)?;
    let mut names = std::collections::BTreeSet::new();
    for series in matching_series(&state, &selectors, &pairs).await? {
        for label in series.labels() {
            names.insert(label.name.clone());
        }
    }
    Ok(data(names.into_iter().collect()))
}

pub async fn label_values_handler(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let selectors = match_selectors(&query)?;
    if !vigil_storage::labels::is_valid_label_name(&name) {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let mut values = std::collections::BTreeSet::new();
    for series in matching_series(&state, &selectors, &query).await? {
        if let Some(value) = series.get(&name) {
            values.insert(value.to_string());
        }
    }
    Ok(data(values.into_iter().collect()))
}

pub async fn buildinfo_handler() -> Response {
    data(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
}

/// `GET /api/v1/metadata`: metric metadata received over remote_write, as
/// `{name: [{type, help, unit}]}`; `metric`, `limit` and `limit_per_metric` as in
/// Prometheus (a negative or absent limit means no limit).
pub async fn metadata_handler(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit = |name: &str| -> Result<Option<usize>, ApiError> {
        match query.get(name).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(text) => match text.parse::<i64>() {
                Ok(n) if n < 0 => Ok(None),
                Ok(n) => Ok(Some(n as usize)),
                Err(_) => Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    format!("{name} must be a number"),
                )),
            },
        }
    };
    let limit_count = limit("limit")?;
    limit("limit_per_metric")?;
    let metadata = state.metadata.read();
    let mut data = Map::new();
    // One entry per metric is kept, so `limit_per_metric` never cuts anything.
    for (name, meta) in metadata.iter() {
        if query.get("metric").is_some_and(|wanted| wanted != name) {
            continue;
        }
        if limit_count.is_some_and(|limit| data.len() >= limit) {
            break;
        }
        data.insert(
            name.clone(),
            json!([{"type": meta.kind, "help": meta.help, "unit": meta.unit}]),
        );
    }
    Ok(Json(json!({"status": "success", "data": data})).into_response())
}

/// `/api/v1/format_query`: the query pretty-printed as Prometheus formats it.
pub async fn format_query_handler(
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let expr = parse_query(&params(query, &headers, &body)).await?;
    Ok(Json(json!({"status": "success", "data": expr.prettify()})).into_response())
}

/// `/api/v1/parse_query`: the syntax tree as JSON, in the shape Prometheus' UI reads.
pub async fn parse_query_handler(
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let expr = parse_query(&params(query, &headers, &body)).await?;
    let tree = serde_json::to_value(&expr).map_err(|err| ApiError::internal(err.to_string()))?;
    Ok(Json(json!({"status": "success", "data": tree})).into_response())
}
