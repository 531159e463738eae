//! llama.cpp's GBNF grammars in llguidance's Lark dialect: `name ::= body` rules become
//! `name: body` (`root` is `start`; dashes in names become underscores, names lower case),
//! character classes `[...]` and `.` become regular expressions, string literals and the
//! operators (`|`, `()`, `*`, `+`, `?`, `{m,n}`) stay. A grammar that is already Lark (it has no
//! `::=`, or starts with `%llguidance`) passes unchanged.

/// `src` as a Lark grammar, or what in it cannot be read.
pub fn to_lark(src: &str) -> Result<String, String> {
    let trimmed = src.trim_start();
    if trimmed.starts_with("%llguidance") || !src.contains("::=") {
        return Ok(src.to_string());
    }
    let mut rules: Vec<(String, String)> = Vec::new();
    let mut body = String::new();
    let mut chars = src.chars().peekable();
    // One pass over the text: literals and classes are copied whole, so `#`, `::=` and
    // brackets inside them mean nothing.
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                copy_until(&mut chars, &mut out, '"')?;
                out.push('"');
            }
            '[' => {
                let mut class = String::from("[");
                copy_until(&mut chars, &mut class, ']')?;
                class.push(']');
                out.push('/');
                out.push_str(&class.replace('/', "\\/"));
                out.push('/');
            }
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                out.push(' ');
            }
            '.' => out.push_str("/(?s:.)/"),
            '\n' | '\r' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    // Rules: each `name ::=` starts one; what follows until the next belongs to it.
    let mut rest = out.as_str();
    let mut name: Option<String> = None;
    while let Some(at) = find_rule_start(rest) {
        let (before, after) = rest.split_at(at.0);
        body.push_str(before);
        if let Some(n) = name.take() {
            rules.push((n, std::mem::take(&mut body)));
        } else if !before.trim().is_empty() {
            return Err(format!(
                "GBNF text before the first rule: {:?}",
                before.trim()
            ));
        }
        name = Some(at.1);
        rest = &after[at.2..];
    }
    body.push_str(rest);
    match name {
        Some(n) => rules.push((n, body)),
        None => return Err("no rule (`name ::= ...`) in the GBNF grammar".into()),
    }
    if !rules.iter().any(|r| r.0 == "root") {
        return Err("the GBNF grammar has no `root` rule".into());
    }
    let mut lark = String::new();
    for (n, b) in rules {
        let b = rename_references(b.trim());
        lark.push_str(&format!("{}: {}\n", lark_name(&n), b));
    }
    Ok(lark)
}

/// Copies up to and including the closing `end` (skipping escaped characters) into `out`,
/// leaving the closing character out.
fn copy_until(
    chars: &mut std::iter::Peekable<std::str::Chars>,
    out: &mut String,
    end: char,
) -> Result<(), String> {
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(c);
            if let Some(n) = chars.next() {
                out.push(n);
            }
            continue;
        }
        if c == end {
            return Ok(());
        }
        out.push(c);
    }
    Err(format!(
        "unterminated {} in the GBNF grammar",
        if end == '"' {
            "string"
        } else {
            "character class"
        }
    ))
}

/// The next `name ::=` outside literals: (offset of the name, the name, length through `::=`).
fn find_rule_start(s: &str) -> Option<(usize, String, usize)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut in_lit = false;
    let mut in_rx = false;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\\' if in_lit || in_rx => i += 1,
            b'"' if !in_rx => in_lit = !in_lit,
            b'/' if !in_lit => in_rx = !in_rx,
            _ if !in_lit
                && !in_rx
                && is_name_byte(c)
                && (i == 0 || !is_name_byte(bytes[i - 1])) =>
            {
                let end = (i..bytes.len())
                    .find(|&j| !is_name_byte(bytes[j]))
                    .unwrap_or(bytes.len());
                let after = &s[end..];
                let ws = after.len() - after.trim_start().len();
                if after[ws..].starts_with("::=") {
                    return Some((i, s[i..end].to_string(), end - i + ws + 3));
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

fn lark_name(n: &str) -> String {
    if n == "root" {
        "start".into()
    } else {
        format!("r_{}", n.replace('-', "_").to_ascii_lowercase())
    }
}

/// Rule references in a body (names outside literals and regexes) in their Lark spelling.
fn rename_references(body: &str) -> String {
    let mut out = String::new();
    let mut in_lit = false;
    let mut in_rx = false;
    let mut word = String::new();
    let mut escaped = false;
    for c in body.chars() {
        if !in_lit && !in_rx && (c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push_str(&reference(&word));
            word.clear();
        }
        if escaped {
            escaped = false;
        } else if c == '\\' && (in_lit || in_rx) {
            escaped = true;
        } else if c == '"' && !in_rx {
            in_lit = !in_lit;
        } else if c == '/' && !in_lit {
            in_rx = !in_rx;
        }
        out.push(c);
    }
    if !word.is_empty() {
        out.push_str(&reference(&word));
    }
    out
}

/// A word of a rule body: a reference, or a number of a `{m,n}` repetition.
fn reference(word: &str) -> String {
    if word.chars().all(|c| c.is_ascii_digit()) {
        word.to_string()
    } else {
        lark_name(word)
    }
}

#[cfg(test)]
mod tests {
    use super::to_lark;

    #[test]
    fn rules_classes_and_comments_become_lark() {
        let g = "# answers\nroot ::= answer-word ws\nanswer-word ::= \"yes\" | \"no\" # two\nws ::= [ \\t\\n]*\n";
        let lark = to_lark(g).unwrap();
        assert_eq!(
            lark,
            "start: r_answer_word r_ws\nr_answer_word: \"yes\" | \"no\"\nr_ws: /[ \\t\\n]/*\n"
        );
    }

    #[test]
    fn literals_keep_their_hashes_brackets_and_rule_like_text() {
        let g = "root ::= \"a # [b] c ::= d\" x{2,3}\nx ::= [a-z/]";
        let lark = to_lark(g).unwrap();
        assert!(
            lark.starts_with("start: \"a # [b] c ::= d\" r_x{2,3}\n"),
            "{lark}"
        );
        assert!(lark.contains("r_x: /[a-z\\/]/"), "{lark}");
    }

    #[test]
    fn lark_passes_unchanged_and_broken_gbnf_is_named() {
        assert_eq!(to_lark("start: \"x\"").unwrap(), "start: \"x\"");
        assert!(to_lark("root ::= \"unterminated")
            .unwrap_err()
            .contains("unterminated string"));
        assert!(to_lark("word ::= \"x\"").unwrap_err().contains("no `root`"));
    }
}
