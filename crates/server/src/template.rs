//! Chat templates as Hugging Face's `apply_chat_template` runs them: Jinja with trimmed and
//! left-stripped blocks, loop controls, Python's string and dict methods, `raise_exception`,
//! `strftime_now`, and a `tojson` that writes what Python's `json.dumps` writes (`", "` and
//! `": "` separators, non-ASCII kept, `indent`). Variables: `messages`, `tools`,
//! `add_generation_prompt`, `bos_token`, `eos_token` and whatever else the caller passes; maps
//! keep the order they were written in. Checked against Python's `jinja2` on llama.cpp's ~70
//! real templates (`tools/templates/`). `|safe` strings escape what is added to them, as
//! markupsafe's do (`markup`).

use crate::markup;
use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State};
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// A compiled chat template.
pub struct Template {
    env: Environment<'static>,
}

/// Seconds since the Unix epoch that `strftime_now` reads: the real clock unless fixed.
pub type Clock = fn() -> i64;

fn system_clock() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Template {
    /// Compiles `src`; a syntax error names the construct and where it is.
    pub fn new(src: String) -> Result<Self, String> {
        Self::with_clock(src, system_clock)
    }

    /// `new` with `strftime_now` reading `clock` (tests fix it).
    pub fn with_clock(src: String, clock: Clock) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", move |fmt: String| strftime(&fmt, clock()));
        env.add_filter("tojson", tojson);
        env.add_filter("length", length);
        // Python's `map` returns a generator: lazy, and refused by tojson (templates write
        // `| list` where they need a list).
        env.add_filter("map", |st: &State, v: Value, args: Rest<Value>| {
            minijinja::filters::map(st, v, args).map(generator)
        });
        env.add_filter("count", length);
        env.add_filter("string", |v: Value| -> Value {
            match v.kind() {
                ValueKind::Seq | ValueKind::Map => {
                    let mut s = String::new();
                    repr(&v, &mut s);
                    Value::from(s)
                }
                ValueKind::String => v,
                _ => Value::from(v.to_string()),
            }
        });
        env.set_formatter(|out, state, value| match value.kind() {
            // Python prints lists and dicts with their repr.
            ValueKind::Seq | ValueKind::Map => {
                let mut s = String::new();
                repr(value, &mut s);
                out.write_str(&s).map_err(Error::from)
            }
            _ => minijinja::escape_formatter(out, state, value),
        });
        env.add_filter(markup::FILTER, |v: Value| match v.as_str() {
            Some(s) => Value::from(markup::escape(s)),
            None => v,
        });
        let src = markup::emulate(&src).into_owned();
        env.add_template_owned("chat", src)
            .map_err(|e| format!("the chat template does not compile: {e:#}"))?;
        Ok(Self { env })
    }

    /// Renders with `vars` (a map of the template's variables).
    pub fn render(&self, vars: Value) -> Result<String, String> {
        self.env
            .get_template("chat")
            .and_then(|t| t.render(vars))
            .map_err(|e| format!("the chat template failed: {e}"))
    }
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=sort_keys)`.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    dump(&value, indent, sort_keys.unwrap_or(false), 0, &mut out)?;
    Ok(Value::from(out))
}

/// A lazily iterated sequence, as a Python generator is.
fn generator(items: Vec<Value>) -> Value {
    Value::make_iterable(move || items.clone().into_iter())
}

/// Jinja2's `length`: an undefined value has length 0.
fn length(value: Value) -> Result<usize, Error> {
    if value.is_undefined() {
        return Ok(0);
    }
    value.len().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot calculate length of value of type {}", value.kind()),
        )
    })
}

/// Python's `repr` of a value (lists, dicts, strings in single quotes, True/False/None).
fn repr(v: &Value, out: &mut String) {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::Number => match i64::try_from(v.clone()) {
            Ok(i) => write!(out, "{i}").unwrap(),
            Err(_) => out.push_str(&python_float(f64::try_from(v.clone()).unwrap_or(f64::NAN))),
        },
        ValueKind::String => {
            let s = v.as_str().unwrap_or_default();
            let q = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            out.push(q);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == q => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                        write!(out, "\\x{:02x}", c as u32).unwrap()
                    }
                    c => out.push(c),
                }
            }
            out.push(q);
        }
        ValueKind::Map => {
            out.push('{');
            for (i, k) in v.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr(&k, out);
                out.push_str(": ");
                repr(&v.get_item(&k).unwrap_or_default(), out);
            }
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in v.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr(&item, out);
            }
            out.push(']');
        }
        _ => out.push_str(&v.to_string()),
    }
}

fn dump(
    v: &Value,
    indent: Option<usize>,
    sort: bool,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Ok(i) = i64::try_from(v.clone()) {
                write!(out, "{i}").unwrap();
            } else {
                let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                out.push_str(&python_float(f));
            }
        }
        ValueKind::String | ValueKind::Bytes => quote(v.as_str().unwrap_or_default(), out),
        ValueKind::Iterable => {
            // A lazy sequence (e.g. `map`'s result) is a generator in Python, which
            // json.dumps refuses.
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: a generator is not JSON serializable (add `| list`)",
            ));
        }
        ValueKind::Seq => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                dump(item, indent, sort, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if sort {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                match k.as_str() {
                    Some(s) => quote(s, out),
                    None => quote(&k.to_string(), out),
                }
                out.push_str(": ");
                dump(&v.get_item(k)?, indent, sort, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        _ => quote(&v.to_string(), out),
    }
    Ok(())
}

/// A float as Python's `repr` writes it (`1.0`, `0.5`, `1e-07`).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let s = format!("{f:?}");
    if let Some((m, e)) = s.split_once('e') {
        let e: i32 = e.parse().unwrap_or(0);
        return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    s
}

/// A JSON string as Python writes it with `ensure_ascii=False`.
fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `strftime(fmt)` for the UTC time `secs`, with the codes templates use.
fn strftime(fmt: &str, secs: i64) -> Result<String, Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let (hh, mm, ss) = (rem / 3600, rem / 60 % 60, rem % 60);
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => write!(out, "{y}"),
            Some('y') => write!(out, "{:02}", y.rem_euclid(100)),
            Some('m') => write!(out, "{m:02}"),
            Some('d') => write!(out, "{d:02}"),
            Some('e') => write!(out, "{d:>2}"),
            Some('B') => write!(out, "{}", MONTHS[m as usize - 1]),
            Some('b') | Some('h') => write!(out, "{}", &MONTHS[m as usize - 1][..3]),
            Some('A') => write!(out, "{}", DAYS[weekday]),
            Some('a') => write!(out, "{}", &DAYS[weekday][..3]),
            Some('H') => write!(out, "{hh:02}"),
            Some('I') => write!(out, "{:02}", (hh + 11) % 12 + 1),
            Some('p') => write!(out, "{}", if hh < 12 { "AM" } else { "PM" }),
            Some('M') => write!(out, "{mm:02}"),
            Some('S') => write!(out, "{ss:02}"),
            Some('%') => write!(out, "%"),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported format code %{}",
                        other.unwrap_or(' ')
                    ),
                ))
            }
        }
        .unwrap();
    }
    Ok(out)
}

/// (year, month, day) of the day `days` after 1970-01-01 (proleptic Gregorian).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tojson_writes_what_python_writes() {
        let t = Template::new(
            "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ 'é\"' | tojson }}".into(),
        )
        .unwrap();
        let x: Value = serde_json::from_str(r#"{"b": [1, 2.5, null], "a": {}}"#).unwrap();
        let out = t.render(minijinja::context! { x }).unwrap();
        assert_eq!(
            out,
            "{\"b\": [1, 2.5, null], \"a\": {}}|{\n  \"b\": [\n    1,\n    2.5,\n    null\n  ],\n  \"a\": {}\n}|\"é\\\"\""
        );
    }

    #[test]
    fn strftime_reads_the_clock() {
        // 2026-01-15 09:30:00 UTC, a Thursday.
        let secs = 1_768_469_400;
        assert_eq!(civil(secs / 86_400), (2026, 1, 15));
        assert_eq!(
            strftime("%d %b %Y, %A %H:%M", secs).unwrap(),
            "15 Jan 2026, Thursday 09:30"
        );
        assert!(strftime("%Q", secs).is_err());
    }
}
