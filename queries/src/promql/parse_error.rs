//! Parse errors in Prometheus' words: `promql-parser` says `expected type matrix …
//! 'rate'`, Prometheus says `1:6: parse error: expected type range vector … "rate"`.
//! The parser reports no position, so it is recovered from the query where the message
//! names what it points at (the end of the input, a function, an aggregation's
//! argument, a duration); otherwise it is the start of the expression, as Prometheus
//! reports for errors about a whole (binary) expression.

/// `line:column` (1-based, in characters) of byte offset `at` in `query`.
fn position(query: &str, at: usize) -> String {
    let before = &query[..at.min(query.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{line}:{column}")
}

/// The byte offset of the first non-blank character at or after `from`.
fn skip_blanks(query: &str, from: usize) -> usize {
    query[from..]
        .char_indices()
        .find(|(_, c)| !c.is_whitespace())
        .map_or(query.len(), |(i, _)| from + i)
}

/// Where the argument of the call to `name` starts.
fn call_argument(query: &str, name: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = query[from..].find(name) {
        let start = from + found;
        let after = skip_blanks(query, start + name.len());
        let boundary = query[..start]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
        if boundary && query[after..].starts_with('(') {
            return Some(skip_blanks(query, after + 1));
        }
        from = start + name.len();
    }
    None
}

/// Where the aggregated expression of the first aggregation starts: after
/// `by (…)`/`without (…)` and the opening parenthesis.
fn aggregation_argument(query: &str) -> Option<usize> {
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "avg",
        "count",
        "min",
        "max",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "limitk",
        "limit_ratio",
    ];
    let lower = query.to_ascii_lowercase();
    let (found, name) = AGGREGATIONS
        .iter()
        .filter_map(|name| lower.find(name).map(|at| (at, *name)))
        .min()?;
    let mut at = skip_blanks(query, found + name.len());
    for clause in ["by", "without"] {
        if lower[at..].starts_with(clause) {
            let open = skip_blanks(query, at + clause.len());
            if query[open..].starts_with('(') {
                if let Some(close) = query[open..].find(')') {
                    at = skip_blanks(query, open + close + 1);
                }
            }
        }
    }
    query[at..]
        .starts_with('(')
        .then(|| skip_blanks(query, at + 1))
}

/// `promql-parser`'s message for `query`, as Prometheus' API prints it.
pub fn prometheus_message(query: &str, message: &str) -> String {
    // Words: Prometheus' documented type names and Go's double quotes.
    let mut text = message
        .replace("expected type matrix", "expected type range vector")
        .replace("expected type vector", "expected type instant vector")
        .replace("got matrix", "got range vector")
        .replace("got vector", "got instant vector");
    text = go_quotes(&text);
    // The grammar's generic error: where one more operand completes the query, the
    // input ended early (`up +`), which Prometheus names.
    if text == "invalid promql query" && promql_parser::parser::parse(&format!("{query} 1")).is_ok()
    {
        text = "unexpected end of input".into();
    }
    let end = query.trim_end().len();
    let at = if text.contains("unexpected end of input") || text == "unclosed left parenthesis" {
        end
    } else if let Some(rest) = text.strip_prefix("unknown function with name \"") {
        let name = rest.trim_end_matches('"');
        query
            .find(&format!("{name}("))
            .or_else(|| query.find(name))
            .unwrap_or(0)
    } else if let Some(name) = text
        .split("in call to function \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
    {
        call_argument(query, name).unwrap_or(0)
    } else if text.contains("in aggregation expression") {
        aggregation_argument(query).unwrap_or(0)
    } else if let Some(bad) = text.strip_prefix("bad number or duration syntax: ") {
        // Prometheus names the number before the unit it cannot read.
        let digits: String = bad.chars().take_while(|c| c.is_ascii_digit()).collect();
        if !digits.is_empty() && digits.len() < bad.len() {
            let at = query.find(bad).unwrap_or(0);
            text = format!("bad duration syntax: \"{digits}\"");
            at
        } else {
            query.find(bad).unwrap_or(0)
        }
    } else {
        skip_blanks(query, 0).min(end)
    };
    format!("{}: parse error: {text}", position(query, at))
}

/// `'x'` → `"x"` for quoted names (function names, operators): a quote after a
/// blank opens, the next quote closes.
fn go_quotes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open = false;
    let mut previous = ' ';
    for c in text.chars() {
        if c == '\'' && (open || previous.is_whitespace()) {
            open = !open;
            out.push('"');
        } else {
            out.push(c);
        }
        previous = c;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::prometheus_message;

    /// Prometheus 2.42's texts for the same queries (from its API).
    #[test]
    fn messages_as_prometheus_prints_them() {
        let cases = [
            ("sum(", "1:5: parse error: unclosed left parenthesis"),
            (
                "rate(up)",
                "1:6: parse error: expected type range vector in call to function \"rate\", got instant vector",
            ),
            ("foo{", "1:5: parse error: unexpected end of input inside braces"),
            (
                "sum by (job) (up[5m])",
                "1:15: parse error: expected type instant vector in aggregation expression, got range vector",
            ),
            (
                "up[5m] + 1",
                "1:1: parse error: binary expression must contain only scalar and instant vector types",
            ),
            (
                "abs(\"x\")",
                "1:5: parse error: expected type instant vector in call to function \"abs\", got string",
            ),
            (
                "unknown_function(up)",
                "1:1: parse error: unknown function with name \"unknown_function\"",
            ),
            (
                "1 and 2",
                "1:1: parse error: set operator \"and\" not allowed in binary scalar expression",
            ),
            (
                "{}",
                "1:1: parse error: vector selector must contain at least one non-empty matcher",
            ),
            ("up[5x]", "1:4: parse error: bad duration syntax: \"5\""),
            ("up +", "1:5: parse error: unexpected end of input"),
        ];
        for (query, expected) in cases {
            let Err(message) = promql_parser::parser::parse(query) else {
                panic!("{query} parsed");
            };
            assert_eq!(
                prometheus_message(query, &message),
                expected,
                "{query}: {message}"
            );
        }
    }
}
