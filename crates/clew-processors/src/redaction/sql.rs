//! SQL literal normalization for `db.statement` / `db.query.text`: a small tokenizer replaces
//! every literal with `?` and keeps the statement's shape.
//!
//! * string literals `'…'` (doubled `''` and backslash escapes; `E'…'`, `N'…'`, `X'…'`, `B'…'`
//!   prefixes belong to the literal), an unterminated string runs to the end (fail closed);
//! * numbers: integers, decimals, exponents, `0x…` hex, and a unary minus (`= -5` → `= ?`);
//! * PostgreSQL dollar quoting `$$…$$` / `$tag$…$tag$`;
//! * `IN (1, 2, 3)` collapses to `IN (?)`;
//! * kept verbatim: keywords and identifiers (also `"quoted"`, `` `quoted` ``, `t1`, `col_2`),
//!   placeholders (`?`, `$1`, `:name`, `@p1`), `TRUE`/`FALSE`/`NULL`, and comments (`-- …`,
//!   `/* … */`): quotes inside comments do not start strings. Value patterns still run over the
//!   result, so an e-mail address in a comment is masked by the `email` pattern if enabled.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    Lit,
    Space,
    Comment,
    Punct,
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    kind: Kind,
    start: usize,
    end: usize,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

const UNARY_AFTER: &[&str] = &[
    "select", "where", "and", "or", "not", "in", "values", "set", "then", "else", "when",
    "between", "like", "is", "return", "limit", "offset", "by", "on", "case", "as", "having",
];

/// Replaces literals with `?`. Borrows when the statement has none.
pub fn normalize(sql: &str) -> Cow<'_, str> {
    // No digit, quote or `$`: no literal is possible, skip the tokenizer.
    if !sql
        .bytes()
        .any(|b| b.is_ascii_digit() || b == b'\'' || b == b'$')
    {
        return Cow::Borrowed(sql);
    }
    let toks = tokenize(sql);
    if !toks.iter().any(|t| t.kind == Kind::Lit) {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let text = |t: &Tok| sql.get(t.start..t.end).unwrap_or("");
    let mut k = 0;
    let mut prev_sig: Option<usize> = None;
    while k < toks.len() {
        let t = toks[k];
        if t.kind == Kind::Punct && text(&t) == "(" {
            let after_in = prev_sig
                .map(|p| toks[p].kind == Kind::Word && text(&toks[p]).eq_ignore_ascii_case("in"))
                .unwrap_or(false);
            if after_in {
                if let Some(close) = in_list_end(sql, &toks, k + 1) {
                    out.push_str("(?)");
                    prev_sig = Some(close);
                    k = close + 1;
                    continue;
                }
            }
        }
        match t.kind {
            Kind::Lit => out.push('?'),
            _ => out.push_str(text(&t)),
        }
        if !matches!(t.kind, Kind::Space | Kind::Comment) {
            prev_sig = Some(k);
        }
        k += 1;
    }
    Cow::Owned(out)
}

/// Index of the `)` closing an IN list that holds only literals/placeholders, commas and space.
fn in_list_end(sql: &str, toks: &[Tok], from: usize) -> Option<usize> {
    let mut lits = 0;
    for (j, t) in toks.iter().enumerate().skip(from) {
        let s = sql.get(t.start..t.end).unwrap_or("");
        match t.kind {
            Kind::Lit => lits += 1,
            Kind::Space => {}
            Kind::Punct if s == "," || s == "?" => {}
            Kind::Punct if s == ")" => return (lits > 0).then_some(j),
            _ => return None,
        }
    }
    None
}

fn tokenize(sql: &str) -> Vec<Tok> {
    let b = sql.as_bytes();
    let n = b.len();
    let mut toks: Vec<Tok> = Vec::with_capacity(n / 3 + 4);
    let mut i = 0;
    let push = |toks: &mut Vec<Tok>, kind, start, end| toks.push(Tok { kind, start, end });
    while i < n {
        let c = b[i];
        let start = i;
        match c {
            b'\'' => {
                // A one-letter prefix glued to the quote (E'', N'', X'', B'') is part of the literal.
                let mut lit_start = start;
                if let Some(last) = toks.last() {
                    if last.kind == Kind::Word
                        && last.end == start
                        && last.end - last.start == 1
                        && matches!(
                            b[last.start].to_ascii_lowercase(),
                            b'e' | b'n' | b'x' | b'b'
                        )
                    {
                        lit_start = last.start;
                        toks.pop();
                    }
                }
                i = skip_quoted(b, i + 1, b'\'', true);
                push(&mut toks, Kind::Lit, lit_start, i);
            }
            b'"' | b'`' => {
                i = skip_quoted(b, i + 1, c, false);
                push(&mut toks, Kind::Word, start, i);
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < n && b[i] != b'\n' {
                    i += 1;
                }
                push(&mut toks, Kind::Comment, start, i);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < n && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(n);
                push(&mut toks, Kind::Comment, start, i);
            }
            b'$' => {
                // `$1` placeholder, `$tag$…$tag$` / `$$…$$` dollar-quoted string, else punctuation.
                if b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                    while i < n && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    push(&mut toks, Kind::Word, start, i);
                } else if let Some(end) = dollar_quote_end(sql, i) {
                    i = end;
                    push(&mut toks, Kind::Lit, start, i);
                } else {
                    i += 1;
                    push(&mut toks, Kind::Punct, start, i);
                }
            }
            b'0'..=b'9' => {
                i = skip_number(b, i);
                push(&mut toks, Kind::Lit, start, i);
            }
            b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = skip_number(b, i);
                push(&mut toks, Kind::Lit, start, i);
            }
            b'-' | b'+'
                if (b.get(i + 1).is_some_and(u8::is_ascii_digit)
                    || (b.get(i + 1) == Some(&b'.')
                        && b.get(i + 2).is_some_and(u8::is_ascii_digit)))
                    && unary_position(sql, &toks) =>
            {
                i = skip_number(b, i + 1);
                push(&mut toks, Kind::Lit, start, i);
            }
            c if c.is_ascii_whitespace() => {
                while i < n && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                push(&mut toks, Kind::Space, start, i);
            }
            c if is_ident(c) => {
                while i < n && is_ident(b[i]) {
                    i += 1;
                }
                push(&mut toks, Kind::Word, start, i);
            }
            _ => {
                i += 1;
                push(&mut toks, Kind::Punct, start, i);
            }
        }
    }
    toks
}

/// Whether a `-`/`+` here is a sign: after nothing, an operator or `(`/`,`, or a keyword.
fn unary_position(sql: &str, toks: &[Tok]) -> bool {
    let Some(prev) = toks
        .iter()
        .rev()
        .find(|t| !matches!(t.kind, Kind::Space | Kind::Comment))
    else {
        return true;
    };
    let s = sql.get(prev.start..prev.end).unwrap_or("");
    match prev.kind {
        Kind::Punct => s != ")" && s != "]" && s != "?",
        Kind::Word => UNARY_AFTER.iter().any(|k| s.eq_ignore_ascii_case(k)),
        Kind::Lit => false,
        Kind::Space | Kind::Comment => true,
    }
}

/// End of a quoted run starting after the opening quote: doubled quotes escape, and (for
/// strings) so does a backslash. Unterminated: the end of input.
fn skip_quoted(b: &[u8], mut i: usize, q: u8, backslash: bool) -> usize {
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

fn skip_number(b: &[u8], mut i: usize) -> usize {
    let n = b.len();
    if b[i..].len() > 2
        && b[i] == b'0'
        && matches!(b[i + 1], b'x' | b'X')
        && b[i + 2].is_ascii_hexdigit()
    {
        i += 2;
        while i < n && b[i].is_ascii_hexdigit() {
            i += 1;
        }
        return i;
    }
    while i < n && b[i].is_ascii_digit() {
        i += 1;
    }
    if i < n && b[i] == b'.' {
        i += 1;
        while i < n && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    if i < n && matches!(b[i], b'e' | b'E') {
        let mut j = i + 1;
        if j < n && matches!(b[j], b'+' | b'-') {
            j += 1;
        }
        if j < n && b[j].is_ascii_digit() {
            i = j;
            while i < n && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    i
}

/// `$tag$ … $tag$` starting at `i` (the first `$`): the end of the closing delimiter.
fn dollar_quote_end(sql: &str, i: usize) -> Option<usize> {
    let b = sql.as_bytes();
    let mut j = i + 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
        j += 1;
    }
    if b.get(j) != Some(&b'$') || (j > i + 1 && b[i + 1].is_ascii_digit()) {
        return None;
    }
    let delim = sql.get(i..=j)?;
    let body = j + 1;
    match sql.get(body..)?.find(delim) {
        Some(p) => Some(body + p + delim.len()),
        None => Some(b.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    fn n(s: &str) -> String {
        normalize(s).into_owned()
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(
            n("SELECT * FROM u WHERE name = 'O''Brien'"),
            "SELECT * FROM u WHERE name = ?"
        );
        assert_eq!(n(r"SELECT 'it\'s' , 'x'"), "SELECT ? , ?");
        assert_eq!(n("SELECT E'a\\nb', N'ü', X'FF'"), "SELECT ?, ?, ?");
        assert_eq!(n("SELECT 'unterminated secret"), "SELECT ?");
        assert_eq!(n("SELECT 'ünï' || 'x'"), "SELECT ? || ?");
    }

    #[test]
    fn numbers() {
        assert_eq!(
            n("SELECT 1, 2.5, .5, 1e10, 1.5E-3, 0xFF"),
            "SELECT ?, ?, ?, ?, ?, ?"
        );
        assert_eq!(
            n("UPDATE t SET a = -5 WHERE b > -1.5"),
            "UPDATE t SET a = ? WHERE b > ?"
        );
        assert_eq!(n("SELECT a -1 FROM t"), "SELECT a -? FROM t");
        assert_eq!(n("SELECT (a)-1"), "SELECT (a)-?");
        assert_eq!(
            n("SELECT t1.col_2 FROM t1 LIMIT 10"),
            "SELECT t1.col_2 FROM t1 LIMIT ?"
        );
    }

    #[test]
    fn in_lists() {
        assert_eq!(
            n("SELECT * FROM t WHERE id IN (1, 2, 3)"),
            "SELECT * FROM t WHERE id IN (?)"
        );
        assert_eq!(
            n("WHERE id in ('a','b') AND x NOT IN (-1)"),
            "WHERE id in (?) AND x NOT IN (?)"
        );
        assert_eq!(
            n("WHERE id IN (SELECT id FROM u WHERE k = 1)"),
            "WHERE id IN (SELECT id FROM u WHERE k = ?)"
        );
        assert_eq!(
            n("INSERT INTO t VALUES (1, 'a'), (2, 'b')"),
            "INSERT INTO t VALUES (?, ?), (?, ?)"
        );
    }

    #[test]
    fn comments_identifiers_placeholders() {
        assert_eq!(
            n("SELECT \"Weird 'col'\", `x1` FROM t -- it's 'a' comment\nWHERE a = 1 /* don't 42 */"),
            "SELECT \"Weird 'col'\", `x1` FROM t -- it's 'a' comment\nWHERE a = ? /* don't 42 */"
        );
        assert_eq!(
            n("SELECT * FROM t WHERE a = $1 AND b = ? AND c = :name AND d = @p1"),
            "SELECT * FROM t WHERE a = $1 AND b = ? AND c = :name AND d = @p1"
        );
        assert!(matches!(
            normalize("SELECT a FROM t WHERE b IS NULL AND c = TRUE"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn dollar_quoting() {
        assert_eq!(
            n("SELECT $$secret 'x'$$, $tag$a$$b$tag$ FROM t"),
            "SELECT ?, ? FROM t"
        );
        assert_eq!(n("SELECT $$never closed"), "SELECT ?");
    }

    #[test]
    fn odd_input_never_panics() {
        for s in [
            "", "'", "\"", "-", "--", "/*", "$", "$a", "0x", "1e", "1e+", ".", "-.", "é'", "IN (",
            "IN (1", "\\", "'\\",
        ] {
            let _ = normalize(s);
        }
    }
}
