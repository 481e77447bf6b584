//! The entry guard of every PromQL text a client sends: size and shape limits checked
//! before the parser runs, the parser itself contained, and the times the expression
//! names bounded so that no later time arithmetic can overflow.
//!
//! `promql-parser` builds and drops its tree recursively and its cost grows faster than
//! linearly with long operator chains, so an 8,000-term `1+1+…` would exhaust a worker's
//! stack. The lexical scan here is linear and allocation-free; the parse then runs only
//! on texts whose tree depth is bounded by `max_depth + max_operators`.

use std::time::Duration;

use promql_parser::parser::{AtModifier, Expr, Offset};

/// The largest time, duration or offset (in milliseconds, either sign) a query may name:
/// 2^52 ms, about 142,000 years. Sums of a handful of such values stay far inside `i64`.
pub const MAX_TIME_MS: i64 = 1 << 52;

/// Limits on a query text, checked before parsing.
#[derive(Debug, Clone, Copy)]
pub struct QueryShape {
    /// Bytes of query text.
    pub max_length: usize,
    /// Nesting of parentheses, brackets and braces.
    pub max_depth: usize,
    /// Binary and unary operators (each one adds a level to the expression tree).
    pub max_operators: usize,
}

impl Default for QueryShape {
    fn default() -> Self {
        QueryShape {
            max_length: 256 * 1024,
            max_depth: 128,
            max_operators: 1000,
        }
    }
}

/// Parses `text` after checking its shape; the error is the message Prometheus' API
/// puts after `invalid parameter "query": `.
pub fn parse_bounded(text: &str, shape: QueryShape) -> Result<Expr, String> {
    check_shape(text, shape)?;
    let parsed = std::panic::catch_unwind(|| promql_parser::parser::parse(text))
        .map_err(|_| "parse error: the query could not be parsed".to_string())?;
    let expr = parsed.map_err(|err| super::prometheus_message(text, &err))?;
    check_times(&expr)?;
    Ok(expr)
}

/// The linear pre-parse check: length, bracket nesting and operator count, with string
/// literals and comments skipped and label matchers (`{…}`) not counted as operators.
pub fn check_shape(text: &str, shape: QueryShape) -> Result<(), String> {
    if text.len() > shape.max_length {
        return Err(format!(
            "query is {} bytes long, more than the limit of {} bytes",
            text.len(),
            shape.max_length
        ));
    }
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut braces = 0usize;
    let mut operators = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' | b'\'' | b'`' => {
                // Skip the literal (backslash escapes except in raw strings).
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    if bytes[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if c == b'{' {
                    braces += 1;
                }
                if depth > shape.max_depth {
                    return Err(format!(
                        "query nests parentheses, brackets or braces more than {} deep",
                        shape.max_depth
                    ));
                }
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if c == b'}' {
                    braces = braces.saturating_sub(1);
                }
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=' | b'!' if braces == 0 => {
                // `==`, `!=`, `<=`, `>=` are one operator.
                if bytes.get(i + 1) == Some(&b'=') {
                    i += 1;
                }
                operators += 1;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while i + 1 < bytes.len()
                    && (bytes[i + 1].is_ascii_alphanumeric()
                        || bytes[i + 1] == b'_'
                        || bytes[i + 1] == b':')
                {
                    i += 1;
                }
                if braces == 0 {
                    let word = &text[start..=i];
                    if ["and", "or", "unless", "atan2"]
                        .iter()
                        .any(|op| word.eq_ignore_ascii_case(op))
                    {
                        operators += 1;
                    }
                }
            }
            _ => {}
        }
        if operators > shape.max_operators {
            return Err(format!(
                "query has more than {} operators",
                shape.max_operators
            ));
        }
        i += 1;
    }
    Ok(())
}

fn duration_ms(duration: &Duration) -> Option<i64> {
    i64::try_from(duration.as_millis())
        .ok()
        .filter(|ms| *ms <= MAX_TIME_MS)
}

fn check_at(at: &Option<AtModifier>) -> Result<(), String> {
    if let Some(AtModifier::At(time)) = at {
        let ms = match time.duration_since(std::time::UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).ok(),
            Err(before) => i64::try_from(before.duration().as_millis())
                .ok()
                .map(|ms| -ms),
        };
        if !ms.is_some_and(time_in_range) {
            return Err("the @ timestamp is out of range".into());
        }
    }
    Ok(())
}

fn check_offset(offset: &Option<Offset>) -> Result<(), String> {
    match offset {
        Some(Offset::Pos(d)) | Some(Offset::Neg(d)) if duration_ms(d).is_none() => {
            Err("the offset is out of range".into())
        }
        _ => Ok(()),
    }
}

/// Every duration, offset and `@` time in the expression is within [`MAX_TIME_MS`].
pub fn check_times(expr: &Expr) -> Result<(), String> {
    let range = |d: &Duration| {
        duration_ms(d)
            .map(|_| ())
            .ok_or_else(|| "the range is out of range".to_string())
    };
    match expr {
        Expr::Aggregate(aggregate) => {
            if let Some(param) = &aggregate.param {
                check_times(param)?;
            }
            check_times(&aggregate.expr)
        }
        Expr::Unary(unary) => check_times(&unary.expr),
        Expr::Binary(binary) => {
            check_times(&binary.lhs)?;
            check_times(&binary.rhs)
        }
        Expr::Paren(paren) => check_times(&paren.expr),
        Expr::Subquery(subquery) => {
            range(&subquery.range)?;
            if let Some(step) = &subquery.step {
                range(step)?;
            }
            check_offset(&subquery.offset)?;
            check_at(&subquery.at)?;
            check_times(&subquery.expr)
        }
        Expr::VectorSelector(selector) => {
            check_offset(&selector.offset)?;
            check_at(&selector.at)
        }
        Expr::MatrixSelector(matrix) => {
            range(&matrix.range)?;
            check_offset(&matrix.vs.offset)?;
            check_at(&matrix.vs.at)
        }
        Expr::Call(call) => call.args.args.iter().try_for_each(|arg| check_times(arg)),
        Expr::Extension(_) | Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
    }
}

/// Whether `t` (milliseconds) is a time a query may ask about.
pub fn time_in_range(t: i64) -> bool {
    t.abs() <= MAX_TIME_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_chains_are_refused_before_parsing() {
        let chain = vec!["1"; 10_000].join("+");
        let started = std::time::Instant::now();
        let err = parse_bounded(&chain, QueryShape::default()).unwrap_err();
        assert!(err.contains("more than 1000 operators"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        let nested = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
        let err = parse_bounded(&nested, QueryShape::default()).unwrap_err();
        assert!(err.contains("128 deep"), "{err}");
        let unary = format!("{}1", "-".repeat(5000));
        assert!(parse_bounded(&unary, QueryShape::default()).is_err());
    }

    #[test]
    fn realistic_queries_pass() {
        for query in [
            r#"sum by (namespace) (rate(container_cpu_usage_seconds_total{namespace=~"kube-.*|monitoring", container!=""}[5m])) / on(namespace) group_left sum by (namespace) (kube_pod_container_resource_limits{resource="cpu"}) > 0.9"#,
            r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="api", path!~"/(health|ready)"}[5m]))) # p99 - latency"#,
            "max_over_time(deriv(rate(x[1m])[5m:30s])[1h:] offset -1d @ 1700000000)",
        ] {
            parse_bounded(query, QueryShape::default()).unwrap();
        }
        let chain = vec!["x"; 500].join(" + ");
        parse_bounded(&chain, QueryShape::default()).unwrap();
    }

    #[test]
    fn absurd_times_are_refused() {
        for query in [
            "x offset 300000000y",
            "rate(x[300000000y])",
            "x @ 1e300",
            "x[5m:300000000y]",
        ] {
            assert!(
                parse_bounded(query, QueryShape::default()).is_err(),
                "{query}"
            );
        }
    }
}
