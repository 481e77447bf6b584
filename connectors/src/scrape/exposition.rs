//! Parser for the Prometheus text exposition format (0.0.4) and OpenMetrics 1.0 text.
//!
//! Differences handled: OpenMetrics timestamps are seconds (float), text-format ones are
//! milliseconds (integer); OpenMetrics exemplars (`# {…} v ts`) are skipped; `# EOF` ends
//! OpenMetrics input.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    /// The format named by a `Content-Type` header.
    pub fn from_content_type(content_type: &str) -> Format {
        if content_type
            .trim_start()
            .starts_with("application/openmetrics-text")
        {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedSample {
    /// Labels in input order, `__name__` first.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

struct Cursor<'a> {
    line: &'a str,
    pos: usize,
    line_no: usize,
}

impl<'a> Cursor<'a> {
    fn error(&self, message: impl Into<String>) -> Error {
        Error::Exposition {
            line: self.line_no,
            message: message.into(),
        }
    }
    fn rest(&self) -> &'a str {
        &self.line[self.pos..]
    }
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    fn skip_spaces(&mut self) {
        let trimmed = self.rest().trim_start_matches([' ', '\t']);
        self.pos = self.line.len() - trimmed.len();
    }
    fn take_while(&mut self, pred: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let end = rest.find(|c: char| !pred(c)).unwrap_or(rest.len());
        self.pos += end;
        &rest[..end]
    }
    fn expect(&mut self, c: char) -> Result<()> {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            Ok(())
        } else {
            Err(self.error(format!("expected {c:?}, found {:?}", self.rest())))
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

pub fn parse(body: &str, format: Format) -> Result<Vec<ParsedSample>> {
    let mut samples = Vec::new();
    for (idx, line) in body.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('#') {
            if format == Format::OpenMetrics && trimmed == "# EOF" {
                break;
            }
            continue;
        }
        let mut cursor = Cursor {
            line: trimmed,
            pos: 0,
            line_no: idx + 1,
        };
        samples.push(parse_sample(&mut cursor, format)?);
    }
    Ok(samples)
}

fn parse_sample(cursor: &mut Cursor<'_>, format: Format) -> Result<ParsedSample> {
    let name = cursor.take_while(is_name_char);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(cursor.error(format!("invalid metric name in {:?}", cursor.line)));
    }
    let mut labels = vec![("__name__".to_string(), name.to_string())];
    cursor.skip_spaces();
    if cursor.peek() == Some('{') {
        cursor.pos += 1;
        loop {
            cursor.skip_spaces();
            if cursor.peek() == Some('}') {
                cursor.pos += 1;
                break;
            }
            let label = cursor.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
            if label.is_empty() {
                return Err(cursor.error(format!("invalid label name in {:?}", cursor.line)));
            }
            cursor.skip_spaces();
            cursor.expect('=')?;
            cursor.skip_spaces();
            cursor.expect('"')?;
            let value = parse_label_value(cursor)?;
            if labels.iter().any(|(existing, _)| existing == label) {
                return Err(cursor.error(format!("duplicate label {label:?}")));
            }
            labels.push((label.to_string(), value));
            cursor.skip_spaces();
            match cursor.peek() {
                Some(',') => cursor.pos += 1,
                Some('}') => {}
                _ => return Err(cursor.error(format!("expected ',' or '}}' in {:?}", cursor.line))),
            }
        }
    }
    cursor.skip_spaces();
    let value_text = cursor.take_while(|c| c != ' ' && c != '\t');
    let value = parse_float(value_text)
        .ok_or_else(|| cursor.error(format!("invalid sample value {value_text:?}")))?;
    cursor.skip_spaces();
    let mut timestamp_ms = None;
    if !cursor.rest().is_empty() && !cursor.rest().starts_with('#') {
        let ts_text = cursor.take_while(|c| c != ' ' && c != '\t');
        timestamp_ms = Some(match format {
            Format::Text => ts_text
                .parse::<i64>()
                .map_err(|_| cursor.error(format!("invalid timestamp {ts_text:?}")))?,
            Format::OpenMetrics => {
                let seconds = parse_float(ts_text)
                    .filter(|s| s.is_finite())
                    .ok_or_else(|| cursor.error(format!("invalid timestamp {ts_text:?}")))?;
                (seconds * 1000.0).round() as i64
            }
        });
        cursor.skip_spaces();
    }
    // Anything left must be an OpenMetrics exemplar.
    if !cursor.rest().is_empty() && !cursor.rest().starts_with('#') {
        return Err(cursor.error(format!("unexpected {:?} after sample", cursor.rest())));
    }
    Ok(ParsedSample {
        labels,
        value,
        timestamp_ms,
    })
}

fn parse_label_value(cursor: &mut Cursor<'_>) -> Result<String> {
    let mut value = String::new();
    let mut chars = cursor.rest().char_indices();
    while let Some((offset, c)) = chars.next() {
        match c {
            '"' => {
                cursor.pos += offset + 1;
                return Ok(value);
            }
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => break,
            },
            other => value.push(other),
        }
    }
    Err(cursor.error("unterminated label value"))
}

/// Go's `strconv.ParseFloat` spellings: decimals, exponents, `NaN`, `[+-]Inf`.
fn parse_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ if text
            .bytes()
            .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E') =>
        {
            None
        }
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let body = "# HELP http_requests_total Total.\n# TYPE http_requests_total counter\n\
            http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
            http_requests_total{method=\"post\",code=\"400\",} 3\n\
            msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n\
            metric_without_labels 12.47\nrpc{q=\"0.5\"} NaN\nneg -Inf\n";
        let samples = parse(body, Format::Text).unwrap();
        assert_eq!(samples.len(), 6);
        assert_eq!(samples[0].timestamp_ms, Some(1395066363000));
        assert_eq!(samples[1].labels[2], ("code".into(), "400".into()));
        assert_eq!(samples[2].labels[1].1, "C:\\DIR\\FILE.TXT");
        assert_eq!(samples[2].labels[2].1, "Cannot find file:\n\"FILE.TXT\"");
        assert!(samples[4].value.is_nan());
        assert_eq!(samples[5].value, f64::NEG_INFINITY);
    }

    #[test]
    fn openmetrics_seconds_and_exemplars() {
        let body = "# TYPE foo counter\nfoo_total 17.0 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67\n# EOF\nignored 1\n";
        let samples = parse(body, Format::OpenMetrics).unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].timestamp_ms, Some(1520879607789));
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("ok 1\nbad{a=\"x} 1\n", Format::Text).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(parse("m 1 2 3\n", Format::Text).is_err());
        assert!(parse("m abc\n", Format::Text).is_err());
    }
}
