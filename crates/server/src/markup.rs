//! Python's `markupsafe` semantics for `+` chains that mix `|safe` strings with plain ones.
//! In jinja2, `x|safe` is a `Markup` string, and adding a plain string to a `Markup` (on either
//! side) HTML-escapes the plain one: `"Use '"|safe + name` prints `Use &#39;` + escaped name,
//! even with autoescaping off, as chat templates run. minijinja's `+` has no such hook, so
//! `emulate` rewrites the template source: in an output expression that is a pure `+` chain
//! with a `|safe` operand, every other operand goes through `markup_escape`. Anything it cannot
//! read as such a chain is left as written.

use std::borrow::Cow;

/// The filter name the rewrite calls; `Template` registers `escape` under it.
pub const FILTER: &str = "__everett_markup_escape";

/// What markupsafe's `escape` does to a plain string.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            c => out.push(c),
        }
    }
    out
}

/// `src` with every `{{ a|safe + b + ... }}` rewritten so the plain operands are escaped.
pub fn emulate(src: &str) -> Cow<'_, str> {
    if !src.contains("safe") {
        return Cow::Borrowed(src);
    }
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    let mut changed = false;
    while let Some(open) = rest.find("{{") {
        let body_at = open + 2;
        let Some(len) = expression_len(&rest[body_at..]) else {
            break;
        };
        out.push_str(&rest[..body_at]);
        let expr = &rest[body_at..body_at + len];
        match rewrite(expr) {
            Some(new) => {
                out.push_str(&new);
                changed = true;
            }
            None => out.push_str(expr),
        }
        rest = &rest[body_at + len..];
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(src)
    }
}

/// Length of the expression text before its closing `}}` (quotes respected).
fn expression_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut quote = None;
    let mut i = 0;
    while i < b.len() {
        match (quote, b[i]) {
            (Some(_), b'\\') => i += 1,
            (Some(q), c) if c == q => quote = None,
            (None, b'\'' | b'"') => quote = Some(b[i]),
            (None, b'}') if b.get(i + 1) == Some(&b'}') => {
                // `-}}` / `+}}` whitespace control belongs to the delimiter.
                return Some(if i > 0 && matches!(b[i - 1], b'-' | b'+') {
                    i - 1
                } else {
                    i
                });
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The rewritten expression, or `None` when it is not a `+` chain with a `|safe` operand.
fn rewrite(expr: &str) -> Option<String> {
    // Whitespace control on the opening delimiter stays in front.
    let (lead, body) = match expr.as_bytes().first() {
        Some(b'-' | b'+') => expr.split_at(1),
        _ => ("", expr),
    };
    let operands = split_plus(body)?;
    let is_safe = |op: &str| {
        op.trim_end()
            .strip_suffix("safe")
            .is_some_and(|r| r.trim_end().ends_with('|'))
    };
    if operands.len() < 2 || !operands.iter().any(|op| is_safe(op)) {
        return None;
    }
    let parts: Vec<String> = operands
        .iter()
        .map(|op| {
            if is_safe(op) {
                op.to_string()
            } else {
                format!(" ({})|{FILTER} ", op.trim())
            }
        })
        .collect();
    Some(format!("{lead}{}", parts.join("+")))
}

/// The operands of a top-level `+` chain, or `None` if the expression has another top-level
/// operator of `+`'s precedence or lower (`-`, `~`, comparisons, `and`/`or`/`not`, `if`), whose
/// grouping a plain split would get wrong.
fn split_plus(expr: &str) -> Option<Vec<&str>> {
    let b = expr.as_bytes();
    let (mut quote, mut depth, mut start) = (None, 0i32, 0);
    let mut ops = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(_) if c == b'\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'\'' | b'"' => quote = Some(c),
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                b'+' if depth == 0 => {
                    ops.push(&expr[start..i]);
                    start = i + 1;
                }
                b'-' | b'~' | b'=' | b'<' | b'>' | b'!' | b'*' | b'/' | b'%' if depth == 0 => {
                    return None
                }
                _ if depth == 0 && keyword_at(b, i) => return None,
                _ => {}
            },
        }
        i += 1;
    }
    ops.push(&expr[start..]);
    Some(ops)
}

/// Whether a low-precedence keyword (`if`, `else`, `and`, `or`, `not`, `in`, `is`) starts at `i`.
fn keyword_at(b: &[u8], i: usize) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    if i > 0 && word(b[i - 1]) {
        return false;
    }
    let end = (i..b.len()).find(|&j| !word(b[j])).unwrap_or(b.len());
    matches!(
        &b[i..end],
        b"if" | b"else" | b"and" | b"or" | b"not" | b"in" | b"is"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_operands_of_a_safe_chain_are_escaped() {
        let src = r#"{{ "a '"|safe + name + "'\n"|safe + t | tojson() -}}x{{ a + b }}"#;
        let want = r#"{{ "a '"|safe + (name)|__everett_markup_escape + "'\n"|safe + (t | tojson())|__everett_markup_escape -}}x{{ a + b }}"#;
        assert_eq!(emulate(src), want);
    }

    #[test]
    fn chains_with_other_operators_are_left_alone() {
        for src in [
            "{{ x|safe + y if c else z }}",
            "{{ x|safe + y - 1 }}",
            "{{ x|safe ~ y }}",
            "{{ 'a+b'|safe }}",
        ] {
            assert_eq!(emulate(src), src);
        }
    }

    #[test]
    fn escape_is_markupsafes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&#34;x&#34;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
