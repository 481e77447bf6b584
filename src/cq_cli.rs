//! `vigil cq`: continuous queries on a running server. `create`, `list` and `drop` call
//! `/api/v1/continuous`; `tail` follows the websocket `/api/v1/subscribe` as `vigil
//! alerts tail` follows the alert stream.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;

use crate::server_reason;

/// How `vigil cq tail` prints the stream.
#[derive(Debug, Clone, Copy)]
pub enum TailOutput {
    /// The raw JSON messages, one per line.
    Json,
    /// One line per snapshot row or change; progress messages only if asked for.
    Text { progress: bool },
}

/// `vigil cq create`: `POST /api/v1/continuous`, then the result's columns.
pub async fn create(
    url: &str,
    name: &str,
    sql: Option<&str>,
    promql: Option<&str>,
    horizon: Option<Duration>,
    step: Option<Duration>,
    persist: Option<(String, Duration)>,
) -> anyhow::Result<()> {
    let (language, query) = match (sql, promql) {
        (Some(query), None) => ("sql", query),
        (None, Some(query)) => ("promql", query),
        _ => bail!("give the query as exactly one of --sql or --promql"),
    };
    let mut definition = json!({"name": name, "language": language, "query": query});
    if let Some(horizon) = horizon {
        let ms = i64::try_from(horizon.as_millis()).context("--horizon is too long")?;
        definition["horizon_ms"] = json!(ms);
    }
    if let Some(step) = step {
        let ms = i64::try_from(step.as_millis()).context("--step is too long")?;
        definition["step_ms"] = json!(ms);
    }
    if let Some((column, close_after)) = persist {
        let ms = i64::try_from(close_after.as_millis()).context("--close-after is too long")?;
        definition["persist"] = json!({"window_column": column, "close_after_ms": ms});
    }
    let request = reqwest::Client::new()
        .post(endpoint(url, None)?)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&definition)?);
    let body = call(request, url, "create").await?;
    println!("created {name}");
    println!("columns: {}", columns(&body["data"]["columns"]));
    Ok(())
}

/// `vigil cq list`: `GET /api/v1/continuous` as a table (or the raw `data` JSON).
pub async fn list(url: &str, raw: bool) -> anyhow::Result<()> {
    let request = reqwest::Client::new().get(endpoint(url, None)?);
    let body = call(request, url, "list").await?;
    if raw {
        println!("{}", body["data"]);
        return Ok(());
    }
    let queries = body["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if queries.is_empty() {
        println!("(no continuous queries)");
    } else {
        print_table(queries);
    }
    Ok(())
}

/// `vigil cq drop`: `DELETE /api/v1/continuous/{name}`.
pub async fn drop_query(url: &str, name: &str) -> anyhow::Result<()> {
    let request = reqwest::Client::new().delete(endpoint(url, Some(name))?);
    call(request, url, "drop").await?;
    println!("dropped {name}");
    Ok(())
}

/// `{url}/api/v1/continuous`, or `…/continuous/{name}` with the name as one path
/// segment (escaped).
fn endpoint(url: &str, name: Option<&str>) -> anyhow::Result<reqwest::Url> {
    let base = format!("{}/api/v1/continuous", url.trim_end_matches('/'));
    let mut endpoint =
        reqwest::Url::parse(&base).with_context(|| format!("invalid --url {url:?}"))?;
    if let Some(name) = name {
        endpoint
            .path_segments_mut()
            .map_err(|()| anyhow!("invalid --url {url:?}: not a base URL"))?
            .push(name);
    }
    Ok(endpoint)
}

/// Sends a request and returns its JSON envelope, or fails with the server's reason.
async fn call(request: reqwest::RequestBuilder, url: &str, what: &str) -> anyhow::Result<Value> {
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach vigil at {url}"))?;
    let status = response.status();
    let bytes = response.bytes().await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(body) if status.is_success() && body["status"] == "success" => Ok(body),
        _ => bail!("{what} failed {}", server_reason(status.as_u16(), &bytes)),
    }
}

/// A JSON array of column names as `a, b, c`.
fn columns(value: &Value) -> String {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|column| {
            column
                .as_str()
                .map_or_else(|| column.to_string(), str::to_string)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

const HEADER: [&str; 8] = [
    "NAME",
    "STATUS",
    "ROWS",
    "STATE_ROWS",
    "MEMORY",
    "SEQ",
    "WATERMARK",
    "QUERY",
];

/// The queries as an aligned table; a stopped query's reason on an indented line below.
fn print_table(queries: &[Value]) {
    let rows: Vec<[String; 8]> = queries.iter().map(table_row).collect();
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    println!("{}", aligned(&HEADER.map(str::to_string), &widths));
    for (row, query) in rows.iter().zip(queries) {
        println!("{}", aligned(row, &widths));
        if query["status"] == "stopped" {
            println!("    stopped: {}", text(&query["reason"]));
        }
    }
}

/// One row padded to the widths; the last column (the query) is not padded.
fn aligned(row: &[String; 8], widths: &[usize; 8]) -> String {
    let mut line = String::new();
    for (cell, &width) in row[..7].iter().zip(widths) {
        line.push_str(&format!("{cell:<width$}  "));
    }
    line.push_str(&row[7]);
    line
}

fn table_row(query: &Value) -> [String; 8] {
    [
        text(&query["name"]),
        text(&query["status"]),
        text(&query["rows"]),
        text(&query["state_rows"]),
        query["memory_bytes"]
            .as_u64()
            .map_or_else(|| text(&query["memory_bytes"]), human_bytes),
        text(&query["seq"]),
        match query["watermark_ms"].as_i64() {
            Some(ms) if ms > 0 => rfc3339(ms),
            _ => "-".to_string(),
        },
        // One line per query: newlines and tabs of a multi-line query become spaces.
        text(&query["query"]).replace(['\r', '\n', '\t'], " "),
    ]
}

/// A JSON value as a table cell: strings unquoted, `-` for null or missing.
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A byte count with a binary unit: `512B`, `1.2MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // 1023.96KiB would print as 1024.0KiB: move up a unit before rounding does.
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// Event-time milliseconds as RFC 3339 (UTC, milliseconds); the number if out of range.
fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// A message's `time` as RFC 3339, or as sent if it is not a number of milliseconds.
fn event_time(value: &Value) -> String {
    value.as_i64().map_or_else(|| value.to_string(), rfc3339)
}

/// A websocket to `path` on the server at `url` (http → ws), with `params` as the query
/// string; a refusal reports the server's reason.
pub fn open_stream(
    url: &str,
    path: &str,
    params: &[(&str, String)],
) -> anyhow::Result<tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>>
{
    let mut ws_url = format!(
        "{}{path}",
        url.trim_end_matches('/')
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1),
    );
    if !params.is_empty() {
        ws_url.push('?');
        ws_url.push_str(&serde_urlencoded::to_string(params)?);
    }
    match tungstenite::connect(&ws_url) {
        Ok((socket, _)) => Ok(socket),
        // The server refused (an unknown name, a bad parameter …): say why.
        Err(tungstenite::Error::Http(response)) => bail!(
            "cannot follow {ws_url}: {}",
            server_reason(
                response.status().as_u16(),
                response.body().as_deref().unwrap_or_default()
            )
        ),
        Err(err) => Err(err).with_context(|| format!("cannot connect to {ws_url}")),
    }
}

/// `vigil cq tail`: reads `/api/v1/subscribe?name=…` until the server closes it.
/// What `vigil cq tail` follows.
pub enum TailSource<'a> {
    /// A continuous query by name, from a snapshot or after a batch.
    Named(&'a str, Option<u64>),
    /// An inline SQL query, running for as long as the command does.
    Inline(&'a str),
}

pub fn tail(url: &str, source: TailSource<'_>, output: TailOutput) -> anyhow::Result<()> {
    let params = match source {
        TailSource::Named(name, from_seq) => {
            let mut params = vec![("name", name.to_string())];
            if let Some(seq) = from_seq {
                params.push(("from_seq", seq.to_string()));
            }
            params
        }
        TailSource::Inline(sql) => vec![("query", sql.to_string())],
    };
    let mut socket = open_stream(url, "/api/v1/subscribe", &params)?;
    let mut out = std::io::stdout().lock();
    loop {
        match socket.read() {
            Ok(tungstenite::Message::Text(text)) => {
                let written = print_message(&mut out, &text, output)
                    .and_then(|()| out.flush().map_err(anyhow::Error::from));
                if let Err(err) = written {
                    // The reader went away (`| head`): stop quietly, as `tail -f` does.
                    let gone = err
                        .downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe);
                    return if gone { Ok(()) } else { Err(err) };
                }
            }
            Ok(tungstenite::Message::Close(frame)) => return closed(frame),
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(())
            }
            Err(err) => bail!("stream failed: {err}"),
        }
    }
}

/// The end of the stream: a normal close (e.g. "dropped") exits 0 with its reason on
/// stderr; any other (1008 "slow consumer" …) is an error.
fn closed(frame: Option<CloseFrame>) -> anyhow::Result<()> {
    let Some(frame) = frame else {
        return Ok(());
    };
    let reason = frame.reason.as_str();
    match frame.code {
        CloseCode::Normal | CloseCode::Away => {
            if !reason.is_empty() {
                eprintln!("stream closed by the server: {reason}");
            }
            Ok(())
        }
        code => bail!(
            "stream closed by the server ({}): {reason}",
            u16::from(code)
        ),
    }
}

/// Prints one subscription message as `output` asks.
fn print_message(out: &mut impl Write, text: &str, output: TailOutput) -> anyhow::Result<()> {
    let TailOutput::Text { progress } = output else {
        writeln!(out, "{text}")?;
        return Ok(());
    };
    let message: Value =
        serde_json::from_str(text).with_context(|| format!("invalid message {text:?}"))?;
    let seq = &message["seq"];
    let time = event_time(&message["time"]);
    match message["type"].as_str() {
        Some("snapshot") => {
            let rows = message["rows"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            let resync = if message["resync"] == true {
                " resync"
            } else {
                ""
            };
            writeln!(
                out,
                "snapshot seq={seq} time={time} rows={}{resync}",
                rows.len()
            )?;
            for row in rows {
                writeln!(out, "  {row}")?;
            }
        }
        Some("changes") => {
            for change in message["changes"].as_array().into_iter().flatten() {
                let diff = change["diff"]
                    .as_i64()
                    .map_or_else(|| change["diff"].to_string(), |diff| format!("{diff:+}"));
                writeln!(out, "seq={seq} time={time} {diff} {}", change["row"])?;
            }
        }
        Some("progress") if progress => writeln!(out, "progress seq={seq} time={time}")?,
        Some("stopped") => writeln!(
            out,
            "stopped seq={seq} time={time}: {}",
            message["reason"].as_str().unwrap_or("no reason given")
        )?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1024), "1.0KiB");
        assert_eq!(human_bytes(1_258_291), "1.2MiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0MiB");
    }

    #[test]
    fn endpoint_escapes_the_name() -> anyhow::Result<()> {
        let url = endpoint("http://localhost:9190/", Some("a b/c"))?;
        assert_eq!(
            url.as_str(),
            "http://localhost:9190/api/v1/continuous/a%20b%2Fc"
        );
        Ok(())
    }

    #[test]
    fn messages_print_one_line_per_row_or_change() -> anyhow::Result<()> {
        let text = TailOutput::Text { progress: false };
        let mut out = Vec::new();
        print_message(
            &mut out,
            r#"{"type":"snapshot","seq":3,"time":0,"columns":["a"],"rows":[{"a":1}]}"#,
            text,
        )?;
        print_message(
            &mut out,
            r#"{"type":"changes","seq":4,"time":1000,"changes":[{"row":{"a":1},"diff":-1}]}"#,
            text,
        )?;
        print_message(&mut out, r#"{"type":"progress","seq":4,"time":1000}"#, text)?;
        assert_eq!(
            String::from_utf8(out)?,
            "snapshot seq=3 time=1970-01-01T00:00:00.000Z rows=1\n  {\"a\":1}\n\
             seq=4 time=1970-01-01T00:00:01.000Z -1 {\"a\":1}\n"
        );
        Ok(())
    }
}
