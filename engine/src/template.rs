//! Alert label and annotation templates: the subset of Go's `text/template` that
//! Prometheus rule files use.
//!
//! Supported: text with `{{ … }}` actions (`{{-`/`-}}` trim whitespace); the data
//! `$labels.name`, `$value`, `$externalLabels.name`, `.Labels.name`, `.Value`,
//! `.ExternalLabels.name`; string and number literals; pipelines (`$value | humanize`);
//! calls with arguments (`printf "%.2f" $value`); `if`/`else`/`end` on a pipeline's
//! truth; and the functions `humanize`, `humanize1024`, `humanizePercentage`,
//! `humanizeDuration`, `printf`, `title`, `toUpper`, `toLower`, `reReplaceAll`,
//! `match`, `eq`, `ne`, `gt`, `lt`, `ge`, `le`, `not`, `and`, `or`. Anything else is a
//! template error at check time, as Prometheus reports a template it cannot parse.

use std::collections::BTreeMap;

use vigil_storage::LabelSet;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("template: {name}: {message}")]
pub struct TemplateError {
    pub name: String,
    pub message: String,
}

/// What a template can see.
pub struct TemplateData<'a> {
    pub labels: &'a LabelSet,
    pub value: f64,
    pub external_labels: &'a BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Vec<Command>),
    If {
        condition: Vec<Command>,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

/// An `{{if}}` being parsed: its condition, the nodes before it, and its `then`
/// branch once `{{else}}` is seen.
type OpenIf = (Vec<Command>, Vec<Node>, Option<Vec<Node>>);

/// One command of a pipeline: a function (or operand) and its arguments.
type Command = Vec<Token>;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Field(Vec<String>),
    Variable(String, Vec<String>),
    Str(String),
    Number(f64),
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Num(f64),
    Bool(bool),
    Map(BTreeMap<String, String>),
    Empty,
}

impl Val {
    fn truthy(&self) -> bool {
        match self {
            Val::Str(s) => !s.is_empty(),
            Val::Num(n) => *n != 0.0,
            Val::Bool(b) => *b,
            Val::Map(m) => !m.is_empty(),
            Val::Empty => false,
        }
    }

    fn render(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Num(n) => go_float(*n),
            Val::Bool(b) => b.to_string(),
            Val::Map(m) => format!(
                "map[{}]",
                m.iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Val::Empty => "<no value>".into(),
        }
    }

    fn number(&self) -> Result<f64, String> {
        match self {
            Val::Num(n) => Ok(*n),
            Val::Str(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("can't convert {s:?} to float")),
            other => Err(format!("can't convert {} to float", other.render())),
        }
    }
}

/// Go's `%v` for a float64: shortest representation, exponent for large/small values.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        let text = format!("{f:e}");
        // Rust prints 1e21 as "1e21"; Go as "1e+21".
        return match text.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => {
                let exp = format!("{:02}", exp.parse::<i32>().unwrap_or(0));
                format!("{mantissa}e+{exp}")
            }
            Some((mantissa, exp)) => {
                let digits = exp.trim_start_matches('-');
                format!("{mantissa}e-{digits:0>2}")
            }
            None => text,
        };
    }
    format!("{f}")
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    name: String,
    nodes: Vec<Node>,
}

impl Template {
    /// Parses `text`; `name` appears in error messages (`__alert_<name>`).
    pub fn parse(name: &str, text: &str) -> Result<Template, TemplateError> {
        let line_of = |rest: &str| text[..text.len() - rest.len()].matches('\n').count() + 1;
        let err_at = |line: usize, message: String| TemplateError {
            name: format!("{name}:{line}"),
            message,
        };
        let mut stack: Vec<OpenIf> = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        let mut rest = text;
        let mut pending_trim = false;
        while !rest.is_empty() {
            let Some(open) = rest.find("{{") else {
                let mut chunk = rest.to_string();
                if pending_trim {
                    chunk = chunk.trim_start().to_string();
                }
                nodes.push(Node::Text(chunk));
                break;
            };
            let mut chunk = rest[..open].to_string();
            if pending_trim {
                chunk = chunk.trim_start().to_string();
            }
            let after = &rest[open + 2..];
            let trim_left = after.starts_with("- ") || after.starts_with("-\t");
            if trim_left {
                chunk = chunk.trim_end().to_string();
            }
            if !chunk.is_empty() {
                nodes.push(Node::Text(chunk));
            }
            let line = line_of(rest);
            let err = |message: String| err_at(line, message);
            let close = after
                .find("}}")
                .ok_or_else(|| err("unclosed action".into()))?;
            let mut inner = &after[..close];
            if trim_left {
                inner = &inner[1..];
            }
            pending_trim = inner.ends_with(" -") || inner.ends_with("\t-");
            if pending_trim {
                inner = &inner[..inner.len() - 1];
            }
            rest = &after[close + 2..];
            let inner = inner.trim();
            if inner.starts_with("/*") {
                continue;
            }
            let (keyword, tail) = inner.split_once(char::is_whitespace).unwrap_or((inner, ""));
            match keyword {
                "if" => {
                    let condition = parse_pipeline(tail).map_err(err)?;
                    stack.push((condition, std::mem::take(&mut nodes), None));
                }
                "else" => {
                    let top = stack
                        .last_mut()
                        .ok_or_else(|| err("unexpected {{else}}".into()))?;
                    if top.2.is_some() {
                        return Err(err("unexpected {{else}}".into()));
                    }
                    top.2 = Some(std::mem::take(&mut nodes));
                }
                "end" => {
                    let (condition, outer, then) = stack
                        .pop()
                        .ok_or_else(|| err("unexpected {{end}}".into()))?;
                    let body = std::mem::replace(&mut nodes, outer);
                    let (then, otherwise) = match then {
                        Some(then) => (then, body),
                        None => (body, Vec::new()),
                    };
                    nodes.push(Node::If {
                        condition,
                        then,
                        otherwise,
                    });
                }
                "range" | "with" | "define" | "template" | "block" => {
                    return Err(err(format!("{{{{{keyword}}}}} is not supported by vigil")));
                }
                _ => nodes.push(Node::Action(parse_pipeline(inner).map_err(err)?)),
            }
        }
        if !stack.is_empty() {
            return Err(err_at(line_of(rest), "unexpected EOF".into()));
        }
        Ok(Template {
            name: name.to_string(),
            nodes,
        })
    }

    pub fn render(&self, data: &TemplateData<'_>) -> Result<String, TemplateError> {
        let mut out = String::new();
        render_nodes(&self.nodes, data, &mut out).map_err(|message| TemplateError {
            name: self.name.clone(),
            message,
        })?;
        Ok(out)
    }
}

/// Parses and renders in one go (alert labels and annotations).
pub fn expand(name: &str, text: &str, data: &TemplateData<'_>) -> Result<String, TemplateError> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    Template::parse(name, text)?.render(data)
}

fn render_nodes(nodes: &[Node], data: &TemplateData<'_>, out: &mut String) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Action(pipeline) => out.push_str(&run_pipeline(pipeline, data)?.render()),
            Node::If {
                condition,
                then,
                otherwise,
            } => {
                if run_pipeline(condition, data)?.truthy() {
                    render_nodes(then, data, out)?;
                } else {
                    render_nodes(otherwise, data, out)?;
                }
            }
        }
    }
    Ok(())
}

fn parse_pipeline(text: &str) -> Result<Vec<Command>, String> {
    let tokens = tokenize(text)?;
    let mut commands = vec![Vec::new()];
    for token in tokens {
        match token {
            None => commands.push(Vec::new()),
            Some(token) => commands
                .last_mut()
                .ok_or_else(|| "empty pipeline".to_string())?
                .push(token),
        }
    }
    if commands.iter().any(Vec::is_empty) {
        return Err("missing value for command".into());
    }
    for command in &commands {
        if let Some(Token::Ident(name)) = command.first() {
            if !KNOWN_FUNCTIONS.contains(&name.as_str()) && name != "true" && name != "false" {
                return Err(format!("function {name:?} not defined"));
            }
        }
        for token in command {
            if let Token::Variable(name, _) = token {
                // Prometheus defines exactly these before the template text.
                if !["labels", "externalLabels", "externalURL", "value", ""]
                    .contains(&name.as_str())
                {
                    return Err(format!("undefined variable \"${name}\""));
                }
            }
        }
    }
    Ok(commands)
}

const KNOWN_FUNCTIONS: &[&str] = &[
    "humanize",
    "humanize1024",
    "humanizePercentage",
    "humanizeDuration",
    "printf",
    "title",
    "toUpper",
    "toLower",
    "reReplaceAll",
    "match",
    "eq",
    "ne",
    "gt",
    "lt",
    "ge",
    "le",
    "not",
    "and",
    "or",
];

/// Tokens of an action; `None` is a pipe.
fn tokenize(text: &str) -> Result<Vec<Option<Token>>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '|' {
            tokens.push(None);
            i += 1;
        } else if c == '"' || c == '`' {
            let mut value = String::new();
            i += 1;
            loop {
                let Some(&ch) = chars.get(i) else {
                    return Err("unterminated quoted string".into());
                };
                i += 1;
                if ch == c {
                    break;
                }
                if ch == '\\' && c == '"' {
                    let escaped = chars
                        .get(i)
                        .ok_or_else(|| "unterminated quoted string".to_string())?;
                    i += 1;
                    value.push(match escaped {
                        'n' => '\n',
                        't' => '\t',
                        other => *other,
                    });
                } else {
                    value.push(ch);
                }
            }
            tokens.push(Some(Token::Str(value)));
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '|' {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            tokens.push(Some(word_token(&word)?));
        }
    }
    Ok(tokens)
}

fn word_token(word: &str) -> Result<Token, String> {
    if let Some(rest) = word.strip_prefix('$') {
        let mut parts = rest.split('.');
        let var = parts.next().unwrap_or("").to_string();
        return Ok(Token::Variable(var, parts.map(str::to_string).collect()));
    }
    if word == "." {
        return Ok(Token::Field(Vec::new()));
    }
    if let Some(rest) = word.strip_prefix('.') {
        return Ok(Token::Field(rest.split('.').map(str::to_string).collect()));
    }
    if let Ok(number) = word.parse::<f64>() {
        return Ok(Token::Number(number));
    }
    if word == "true" || word == "false" {
        return Ok(Token::Ident(word.to_string()));
    }
    if word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(Token::Ident(word.to_string()));
    }
    Err(format!("unexpected {word:?} in command"))
}

fn labels_map(labels: &LabelSet) -> BTreeMap<String, String> {
    labels
        .labels()
        .iter()
        .map(|label| (label.name.clone(), label.value.clone()))
        .collect()
}

fn lookup(root: Val, path: &[String]) -> Val {
    let mut current = root;
    for key in path {
        current = match current {
            // Prometheus executes templates with `missingkey=zero`: a label the alert
            // lacks is the empty string, not `<no value>`.
            Val::Map(map) => Val::Str(map.get(key).cloned().unwrap_or_default()),
            _ => Val::Empty,
        };
    }
    current
}

fn operand(token: &Token, data: &TemplateData<'_>) -> Result<Val, String> {
    match token {
        Token::Str(s) => Ok(Val::Str(s.clone())),
        Token::Number(n) => Ok(Val::Num(*n)),
        Token::Ident(word) if word == "true" => Ok(Val::Bool(true)),
        Token::Ident(word) if word == "false" => Ok(Val::Bool(false)),
        Token::Variable(name, path) => {
            let root = match name.as_str() {
                "labels" => Val::Map(labels_map(data.labels)),
                "value" => Val::Num(data.value),
                "externalLabels" => Val::Map(data.external_labels.clone()),
                "externalURL" => Val::Str(String::new()),
                "" => Val::Map(BTreeMap::new()),
                other => return Err(format!("undefined variable \"${other}\"")),
            };
            Ok(lookup(root, path))
        }
        Token::Field(path) => {
            let Some((first, rest)) = path.split_first() else {
                return Ok(Val::Empty);
            };
            let root = match first.as_str() {
                "Labels" => Val::Map(labels_map(data.labels)),
                "Value" => Val::Num(data.value),
                "ExternalLabels" => Val::Map(data.external_labels.clone()),
                other => return Err(format!("can't evaluate field {other}")),
            };
            Ok(lookup(root, rest))
        }
        Token::Ident(name) => call(name, Vec::new()),
    }
}

fn run_pipeline(pipeline: &[Command], data: &TemplateData<'_>) -> Result<Val, String> {
    let mut previous: Option<Val> = None;
    for command in pipeline {
        let value = match &command[0] {
            Token::Ident(name) if name != "true" && name != "false" => {
                let mut args = command[1..]
                    .iter()
                    .map(|token| operand(token, data))
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(previous) = previous.take() {
                    args.push(previous);
                }
                call(name, args)?
            }
            token => {
                if command.len() > 1 || previous.is_some() {
                    return Err("can't give argument to non-function".into());
                }
                operand(token, data)?
            }
        };
        previous = Some(value);
    }
    Ok(previous.unwrap_or(Val::Empty))
}

fn one_arg(name: &str, args: &[Val]) -> Result<Val, String> {
    match args {
        [one] => Ok(one.clone()),
        _ => Err(format!(
            "wrong number of args for {name}: want 1 got {}",
            args.len()
        )),
    }
}

fn call(name: &str, args: Vec<Val>) -> Result<Val, String> {
    let compare = |args: &[Val]| -> Result<std::cmp::Ordering, String> {
        match args {
            [Val::Num(a), b] => Ok(a
                .partial_cmp(&b.number()?)
                .unwrap_or(std::cmp::Ordering::Equal)),
            [a, b] => Ok(a.render().cmp(&b.render())),
            _ => Err(format!("wrong number of args for {name}")),
        }
    };
    Ok(match name {
        "humanize" => Val::Str(humanize(one_arg(name, &args)?.number()?, 1000.0)),
        "humanize1024" => Val::Str(humanize(one_arg(name, &args)?.number()?, 1024.0)),
        "humanizePercentage" => Val::Str(format!(
            "{}%",
            go_g(one_arg(name, &args)?.number()? * 100.0, 4)
        )),
        "humanizeDuration" => Val::Str(humanize_duration(one_arg(name, &args)?.number()?)),
        "title" => Val::Str(title(&one_arg(name, &args)?.render())),
        "toUpper" => Val::Str(one_arg(name, &args)?.render().to_uppercase()),
        "toLower" => Val::Str(one_arg(name, &args)?.render().to_lowercase()),
        "printf" => {
            let (format, rest) = args
                .split_first()
                .ok_or_else(|| "wrong number of args for printf".to_string())?;
            Val::Str(printf(&format.render(), rest))
        }
        "reReplaceAll" => match args.as_slice() {
            [pattern, replacement, text] => {
                let re = regex::Regex::new(&pattern.render()).map_err(|e| e.to_string())?;
                // Go's and Rust's regex replacements share `$1`/`${name}` syntax.
                let replacement = replacement.render();
                Val::Str(
                    re.replace_all(&text.render(), replacement.as_str())
                        .into_owned(),
                )
            }
            _ => return Err("wrong number of args for reReplaceAll".into()),
        },
        "match" => match args.as_slice() {
            [pattern, text] => {
                let re = regex::Regex::new(&pattern.render()).map_err(|e| e.to_string())?;
                Val::Bool(re.is_match(&text.render()))
            }
            _ => return Err("wrong number of args for match".into()),
        },
        "eq" => Val::Bool(compare(&args)? == std::cmp::Ordering::Equal),
        "ne" => Val::Bool(compare(&args)? != std::cmp::Ordering::Equal),
        "gt" => Val::Bool(compare(&args)? == std::cmp::Ordering::Greater),
        "lt" => Val::Bool(compare(&args)? == std::cmp::Ordering::Less),
        "ge" => Val::Bool(compare(&args)? != std::cmp::Ordering::Less),
        "le" => Val::Bool(compare(&args)? != std::cmp::Ordering::Greater),
        "not" => Val::Bool(!one_arg(name, &args)?.truthy()),
        "and" => args
            .iter()
            .find(|v| !v.truthy())
            .or(args.last())
            .cloned()
            .unwrap_or(Val::Empty),
        "or" => args
            .iter()
            .find(|v| v.truthy())
            .or(args.last())
            .cloned()
            .unwrap_or(Val::Empty),
        other => return Err(format!("function {other:?} not defined")),
    })
}

/// The largest width or precision `printf` honours.
const MAX_PRINTF_PAD: usize = 4096;

/// Go's `%.*g`: `precision` significant digits, trailing zeros removed.
fn go_g(value: f64, precision: usize) -> String {
    if value.is_nan() || value.is_infinite() {
        return go_float(value);
    }
    if value == 0.0 {
        return "0".into();
    }
    let exponent = value.abs().log10().floor() as i32;
    if exponent < -4 || exponent >= precision as i32 {
        let text = format!("{:.*e}", precision.saturating_sub(1), value);
        let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
        let mantissa = trim_zeros(mantissa);
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let decimals = (precision as i32 - 1 - exponent).max(0) as usize;
    trim_zeros(&format!("{value:.decimals$}")).to_string()
}

fn trim_zeros(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// Prometheus' `humanize`: SI prefixes (k, M, G … or m, u, n … for small values).
fn humanize(value: f64, base: f64) -> String {
    if value == 0.0 || value.is_nan() || value.is_infinite() {
        return go_g(value, 4);
    }
    if value.abs() >= 1.0 {
        let prefixes = if base == 1024.0 {
            ["", "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"]
        } else {
            ["", "k", "M", "G", "T", "P", "E", "Z", "Y"]
        };
        let mut v = value;
        let mut idx = 0;
        while v.abs() >= base && idx < prefixes.len() - 1 {
            v /= base;
            idx += 1;
        }
        return format!("{}{}", go_g(v, 4), prefixes[idx]);
    }
    if base == 1024.0 {
        return go_g(value, 4);
    }
    let prefixes = ["", "m", "u", "n", "p", "f", "a", "z", "y"];
    let mut v = value;
    let mut idx = 0;
    while v.abs() < 1.0 && idx < prefixes.len() - 1 {
        v *= 1000.0;
        idx += 1;
    }
    format!("{}{}", go_g(v, 4), prefixes[idx])
}

/// Prometheus' `humanizeDuration`: `1d 2h 3m 4s`, or `ms`/`us`/`ns` below a second.
fn humanize_duration(seconds: f64) -> String {
    if seconds.is_nan() || seconds.is_infinite() {
        return go_g(seconds, 4);
    }
    if seconds.abs() < 1.0 && seconds != 0.0 {
        let prefixes = ["", "m", "u", "n", "p", "f", "a", "z", "y"];
        let mut v = seconds;
        let mut idx = 0;
        while v.abs() < 1.0 && idx < prefixes.len() - 1 {
            v *= 1000.0;
            idx += 1;
        }
        return format!("{}{}s", go_g(v, 4), prefixes[idx]);
    }
    let sign = if seconds < 0.0 { "-" } else { "" };
    let total = seconds.abs();
    let whole = total.floor() as u64;
    let (days, hours, minutes, secs) = (
        whole / 86_400,
        whole / 3600 % 24,
        whole / 60 % 60,
        whole % 60,
    );
    let fraction = total - whole as f64;
    let secs_text = if fraction > 0.0 {
        go_g(secs as f64 + fraction, 4)
    } else {
        secs.to_string()
    };
    if days > 0 {
        format!("{sign}{days}d {hours}h {minutes}m {secs_text}s")
    } else if hours > 0 {
        format!("{sign}{hours}h {minutes}m {secs_text}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m {secs_text}s")
    } else {
        format!("{sign}{secs_text}s")
    }
}

fn title(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut start = true;
    for c in text.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    out
}

/// `printf` with Go verbs `%s %v %d %f %.Nf %g %e %q %%`.
fn printf(format: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&next) = chars.peek() {
            if next.is_ascii_digit() || next == '.' || next == '-' || next == '+' {
                spec.push(next);
                chars.next();
            } else {
                break;
            }
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.next() else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        // Widths and precisions are capped: a template may not ask for megabytes of
        // padding (Rust's formatter refuses more than 65535 anyway).
        let precision = spec
            .split_once('.')
            .and_then(|(_, p)| p.parse::<usize>().ok())
            .map(|p| p.min(MAX_PRINTF_PAD));
        let text = match verb {
            'd' => match arg.number() {
                Ok(n) => format!("{}", n as i64),
                Err(_) => format!("%!d({})", arg.render()),
            },
            'f' | 'F' => match arg.number() {
                Ok(n) => format!("{:.*}", precision.unwrap_or(6), n),
                Err(_) => format!("%!f({})", arg.render()),
            },
            'e' => match arg.number() {
                Ok(n) => format!("{:.*e}", precision.unwrap_or(6), n),
                Err(_) => format!("%!e({})", arg.render()),
            },
            'g' => match arg.number() {
                Ok(n) => precision.map_or_else(|| go_float(n), |p| go_g(n, p.max(1))),
                Err(_) => format!("%!g({})", arg.render()),
            },
            'q' => format!("{:?}", arg.render()),
            _ => arg.render(),
        };
        let width = spec
            .split('.')
            .next()
            .and_then(|w| w.trim_start_matches(['-', '+']).parse::<usize>().ok())
            .map(|w| w.min(MAX_PRINTF_PAD));
        match width {
            Some(width) if spec.starts_with('-') => out.push_str(&format!("{text:<width$}")),
            Some(width) => out.push_str(&format!("{text:>width$}")),
            None => out.push_str(&text),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str, value: f64) -> String {
        let labels =
            LabelSet::from_pairs([("instance", "db-1:9100"), ("job", "node")]).expect("labels");
        let external = BTreeMap::from([("cluster".to_string(), "prod".to_string())]);
        expand(
            "__alert_Test",
            text,
            &TemplateData {
                labels: &labels,
                value,
                external_labels: &external,
            },
        )
        .expect("renders")
    }

    #[test]
    fn printf_widths_are_capped() {
        // Found by fuzzing: a width over 65535 made Rust's formatter panic.
        assert_eq!(render(r#"{{printf "%-95808f" $value}}"#, 1.0).len(), 4096);
        assert_eq!(render(r#"{{printf "%.99999f" $value}}"#, 1.0).len(), 4098);
    }

    #[test]
    fn renders_prometheus_templates() {
        assert_eq!(
            render("{{ $labels.instance }} of {{ .Labels.job }} down", 0.0),
            "db-1:9100 of node down"
        );
        assert_eq!(render("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(render("{{ humanize 0.0012 }}", 0.0), "1.2m");
        assert_eq!(
            render("{{ $value | humanizePercentage }}", 0.8567),
            "85.67%"
        );
        assert_eq!(render("{{ humanizeDuration 90061 }}", 0.0), "1d 1h 1m 1s");
        assert_eq!(render("{{ printf \"%.2f\" $value }}", 1.23456), "1.23");
        assert_eq!(
            render("{{ $externalLabels.cluster | toUpper }}", 0.0),
            "PROD"
        );
        assert_eq!(render("{{ $value }}", 0.5), "0.5");
        assert_eq!(
            render("{{ if gt $value 80.0 }}high{{ else }}ok{{ end }}", 90.0),
            "high"
        );
        assert_eq!(render("{{- \"x\" -}}  y", 0.0), "xy");
        assert!(Template::parse("t", "{{ $labels.x ").is_err());
        assert!(Template::parse("t", "{{ nosuchfn 1 }}").is_err());
        assert!(Template::parse("t", "{{ if 1 }}").is_err());
    }
}
