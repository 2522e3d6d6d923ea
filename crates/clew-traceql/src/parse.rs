//! A hand-written lexer and recursive-descent parser for TraceQL.
//!
//! Errors name the position (line:column, 1-based, columns in characters, and the byte offset),
//! what was expected and what was found. Nesting and size are bounded so that no input can exhaust
//! the stack of the parser, the printer or the evaluator.

use crate::ast::*;
use clew_model::query::AttrScope;
use std::fmt;

/// Deepest nesting of parentheses and `!` accepted.
const MAX_DEPTH: usize = 64;
/// Most syntax nodes (filters, comparisons, operators) in one query.
const MAX_NODES: usize = 1_000;
/// Compiled regular expressions stay small: patterns come from users.
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why a query does not parse, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Byte offset into the query.
    pub offset: usize,
    /// What the parser wanted there, e.g. `a comparison operator (=, !=, …)`.
    pub expected: String,
    /// What it found: the token's text in quotes, or `end of query`.
    pub found: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "parse error at {}:{} (byte {}): expected {}, found {}",
            self.line, self.column, self.offset, self.expected, self.found
        )
    }
}

/// Parses a TraceQL query.
pub fn parse(src: &str) -> Result<Query, ParseError> {
    let tokens = lex(src)?;
    let mut p = Parser {
        src,
        tokens,
        pos: 0,
        depth: 0,
        nodes: 0,
    };
    let q = p.pipeline()?;
    if !matches!(p.peek(), Tok::Eof) {
        return Err(p.error_here(
            "`|`, a spanset operator (&&, ||, >, >>, <, <<, ~) or the end of the query",
        ));
    }
    Ok(q)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Pipe,
    AndAnd,
    OrOr,
    Bang,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    ReMatch,
    ReNot,
    GtGt,
    LtLt,
    Tilde,
    NotGt,
    NotGtGt,
    NotLt,
    NotLtLt,
    Str(String),
    Int(i64),
    Float(f64),
    Duration(i64),
    /// A word, or a scoped word such as `span:name`.
    Ident(String),
    Attr(AttrScope, String),
    Eof,
}

struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

fn error_at(src: &str, offset: usize, expected: &str, found: String) -> ParseError {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before.get(line_start..).unwrap_or("").chars().count() + 1;
    ParseError {
        line,
        column,
        offset,
        expected: expected.to_string(),
        found,
    }
}

fn quote_found(text: &str) -> String {
    let mut t: String = text.chars().take(40).collect();
    if t.len() < text.len() {
        t.push('…');
    }
    format!("{t:?}")
}

fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let mut out = Vec::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    let char_at = |i: usize| src.get(i..).and_then(|s| s.chars().next());
    while let Some(c) = char_at(i) {
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        let start = i;
        let two = src.get(i..i + 2).unwrap_or("");
        let three = src.get(i..i + 3).unwrap_or("");
        let (tok, len) = match c {
            '{' => (Tok::LBrace, 1),
            '}' => (Tok::RBrace, 1),
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            ',' => (Tok::Comma, 1),
            '~' => (Tok::Tilde, 1),
            '|' if two == "||" => (Tok::OrOr, 2),
            '|' => (Tok::Pipe, 1),
            '&' if two == "&&" => (Tok::AndAnd, 2),
            '=' if two == "=~" => (Tok::ReMatch, 2),
            '=' => (Tok::Eq, 1),
            '!' if three == "!>>" => (Tok::NotGtGt, 3),
            '!' if three == "!<<" => (Tok::NotLtLt, 3),
            '!' if two == "!=" => (Tok::Ne, 2),
            '!' if two == "!~" => (Tok::ReNot, 2),
            '!' if two == "!>" => (Tok::NotGt, 2),
            '!' if two == "!<" => (Tok::NotLt, 2),
            '!' => (Tok::Bang, 1),
            '>' if two == ">=" => (Tok::Ge, 2),
            '>' if two == ">>" => (Tok::GtGt, 2),
            '>' => (Tok::Gt, 1),
            '<' if two == "<=" => (Tok::Le, 2),
            '<' if two == "<<" => (Tok::LtLt, 2),
            '<' => (Tok::Lt, 1),
            '"' | '`' => {
                let (s, end) = lex_string(src, i)?;
                (Tok::Str(s), end - i)
            }
            '.' => {
                let (key, end) = lex_attr_key(src, i + 1)?;
                (Tok::Attr(AttrScope::Any, key), end - i)
            }
            c if c.is_ascii_digit()
                || (c == '-' && bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit())) =>
            {
                let (tok, end) = lex_number(src, i)?;
                (tok, end - i)
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut end = i;
                while let Some(c) = char_at(end) {
                    if c.is_alphanumeric() || c == '_' {
                        end += c.len_utf8();
                    } else {
                        break;
                    }
                }
                let word = &src[i..end];
                let next = char_at(end);
                match (word, next) {
                    ("span", Some('.')) | ("resource", Some('.')) => {
                        let scope = if word == "span" {
                            AttrScope::Span
                        } else {
                            AttrScope::Resource
                        };
                        let (key, kend) = lex_attr_key(src, end + 1)?;
                        (Tok::Attr(scope, key), kend - i)
                    }
                    ("span", Some(':')) | ("trace", Some(':')) => {
                        let mut e = end + 1;
                        while let Some(c) = char_at(e) {
                            if c.is_alphanumeric() || c == '_' {
                                e += c.len_utf8();
                            } else {
                                break;
                            }
                        }
                        (Tok::Ident(src[i..e].to_string()), e - i)
                    }
                    ("event" | "link" | "instrumentation", Some('.' | ':')) => {
                        return Err(error_at(
                            src,
                            i,
                            "`span.`, `resource.`, `.`, `span:` or `trace:` (the scope is not supported)",
                            quote_found(word),
                        ));
                    }
                    _ => (Tok::Ident(word.to_string()), end - i),
                }
            }
            other => return Err(error_at(src, i, "a token", quote_found(&other.to_string()))),
        };
        i += len;
        out.push(Token { tok, start, end: i });
    }
    out.push(Token {
        tok: Tok::Eof,
        start: src.len(),
        end: src.len(),
    });
    Ok(out)
}

/// A string literal starting at `start` (`"` with escapes, or a raw backtick string). Returns the
/// value and the byte offset after the closing quote.
fn lex_string(src: &str, start: usize) -> Result<(String, usize), ParseError> {
    let rest = &src[start..];
    let mut chars = rest.char_indices();
    let quote = match chars.next() {
        Some((_, q)) => q,
        None => return Err(error_at(src, start, "a string", "end of query".into())),
    };
    let mut out = String::new();
    while let Some((off, c)) = chars.next() {
        if c == quote {
            return Ok((out, start + off + c.len_utf8()));
        }
        if c == '\\' && quote == '"' {
            let esc = match chars.next() {
                Some((_, e)) => e,
                None => break,
            };
            match esc {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                '\'' => out.push('\''),
                '`' => out.push('`'),
                other => {
                    return Err(error_at(
                        src,
                        start + off,
                        "an escape (\\\", \\\\, \\n, \\r, \\t)",
                        quote_found(&format!("\\{other}")),
                    ))
                }
            }
        } else {
            out.push(c);
        }
    }
    Err(error_at(
        src,
        start,
        &format!("a closing {quote}"),
        "end of query".into(),
    ))
}

/// An attribute name after its scope's `.`: bare characters or a quoted string.
fn lex_attr_key(src: &str, start: usize) -> Result<(String, usize), ParseError> {
    match src.get(start..).and_then(|s| s.chars().next()) {
        Some('"') | Some('`') => lex_string(src, start),
        Some(c) if is_bare_attr_char(c) => {
            let mut end = start;
            while let Some(c) = src.get(end..).and_then(|s| s.chars().next()) {
                if is_bare_attr_char(c) {
                    end += c.len_utf8();
                } else {
                    break;
                }
            }
            Ok((src[start..end].to_string(), end))
        }
        Some(c) => Err(error_at(
            src,
            start,
            "an attribute name",
            quote_found(&c.to_string()),
        )),
        None => Err(error_at(
            src,
            start,
            "an attribute name",
            "end of query".into(),
        )),
    }
}

fn unit_nanos(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => 1.0,
        "us" | "µs" | "μs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    })
}

/// A number: an int, a float, or a duration (`1.5s`, `1h30m`).
fn lex_number(src: &str, start: usize) -> Result<(Tok, usize), ParseError> {
    let bytes = src.as_bytes();
    let mut i = start;
    let negative = bytes.get(i) == Some(&b'-');
    if negative {
        i += 1;
    }
    let mut total_nanos = 0f64;
    let mut is_duration = false;
    loop {
        let num_start = i;
        let mut is_float = false;
        while bytes.get(i).is_some_and(|b| b.is_ascii_digit()) {
            i += 1;
        }
        if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit()) {
            is_float = true;
            i += 1;
            while bytes.get(i).is_some_and(|b| b.is_ascii_digit()) {
                i += 1;
            }
        }
        if matches!(bytes.get(i), Some(b'e') | Some(b'E')) {
            let mut j = i + 1;
            if matches!(bytes.get(j), Some(b'+') | Some(b'-')) {
                j += 1;
            }
            if bytes.get(j).is_some_and(|b| b.is_ascii_digit()) {
                is_float = true;
                i = j;
                while bytes.get(i).is_some_and(|b| b.is_ascii_digit()) {
                    i += 1;
                }
            }
        }
        let digits = &src[num_start..i];
        let unit_start = i;
        while let Some(c) = src.get(i..).and_then(|s| s.chars().next()) {
            if c.is_alphabetic() {
                i += c.len_utf8();
            } else {
                break;
            }
        }
        let unit = &src[unit_start..i];
        if unit.is_empty() {
            if is_duration {
                return Err(error_at(
                    src,
                    unit_start,
                    "a duration unit (ns, us, µs, ms, s, m, h)",
                    quote_found(&src[num_start..i]),
                ));
            }
            let text = &src[start..i];
            if is_float {
                let value: f64 = text
                    .parse()
                    .map_err(|_| error_at(src, start, "a number", quote_found(text)))?;
                if !value.is_finite() {
                    return Err(error_at(src, start, "a finite number", quote_found(text)));
                }
                return Ok((Tok::Float(value), i));
            }
            let value: i64 = text.parse().map_err(|_| {
                error_at(
                    src,
                    start,
                    "an integer between -9223372036854775808 and 9223372036854775807",
                    quote_found(text),
                )
            })?;
            return Ok((Tok::Int(value), i));
        }
        let Some(per_unit) = unit_nanos(unit) else {
            return Err(error_at(
                src,
                unit_start,
                "a duration unit (ns, us, µs, ms, s, m, h)",
                quote_found(unit),
            ));
        };
        let value: f64 = digits
            .parse()
            .map_err(|_| error_at(src, num_start, "a number", quote_found(digits)))?;
        total_nanos += value * per_unit;
        is_duration = true;
        // `1h30m`: another number-unit pair follows directly.
        if !bytes.get(i).is_some_and(|b| b.is_ascii_digit()) {
            break;
        }
    }
    let nanos = total_nanos.round();
    if !nanos.is_finite() || nanos >= i64::MAX as f64 {
        return Err(error_at(
            src,
            start,
            "a duration shorter than 292 years",
            quote_found(&src[start..i]),
        ));
    }
    let nanos = nanos as i64;
    Ok((Tok::Duration(if negative { -nanos } else { nanos }), i))
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    nodes: usize,
}

const CMP_EXPECTED: &str = "a comparison operator (=, !=, >, >=, <, <=, =~, !~)";
const VALUE_EXPECTED: &str =
    "a value (a string, number, duration, true, false, nil, ok, error, unset or a span kind)";

impl<'a> Parser<'a> {
    fn peek(&self) -> &Tok {
        // The token list always ends with Eof and `pos` never passes it.
        self.tokens
            .get(self.pos)
            .map(|t| &t.tok)
            .unwrap_or(&Tok::Eof)
    }

    fn bump(&mut self) {
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
    }

    fn current_start(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map(|t| t.start)
            .unwrap_or(self.src.len())
    }

    fn found(&self) -> String {
        match self.tokens.get(self.pos) {
            Some(t) if t.tok != Tok::Eof => quote_found(self.src.get(t.start..t.end).unwrap_or("")),
            _ => "end of query".into(),
        }
    }

    fn error_here(&self, expected: &str) -> ParseError {
        error_at(self.src, self.current_start(), expected, self.found())
    }

    fn expect(&mut self, tok: Tok, expected: &str) -> Result<(), ParseError> {
        if *self.peek() == tok {
            self.bump();
            Ok(())
        } else {
            Err(self.error_here(expected))
        }
    }

    fn node(&mut self) -> Result<(), ParseError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.error_here(&format!(
                "a shorter query (at most {MAX_NODES} filters, comparisons and operators)"
            )));
        }
        Ok(())
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_here(&format!(
                "less nesting (at most {MAX_DEPTH} levels of parentheses and `!`)"
            )));
        }
        Ok(())
    }

    fn pipeline(&mut self) -> Result<Query, ParseError> {
        let head = self.spanset_or()?;
        let mut stages = Vec::new();
        while *self.peek() == Tok::Pipe {
            self.bump();
            self.node()?;
            stages.push(self.stage()?);
        }
        Ok(Query { head, stages })
    }

    fn spanset_or(&mut self) -> Result<SpansetExpr, ParseError> {
        let mut lhs = self.spanset_and()?;
        while *self.peek() == Tok::OrOr {
            self.bump();
            self.node()?;
            let rhs = self.spanset_and()?;
            lhs = SpansetExpr::Binary {
                op: SpansetOp::Or,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
        Ok(lhs)
    }

    fn spanset_and(&mut self) -> Result<SpansetExpr, ParseError> {
        let mut lhs = self.spanset_structural()?;
        while *self.peek() == Tok::AndAnd {
            self.bump();
            self.node()?;
            let rhs = self.spanset_structural()?;
            lhs = SpansetExpr::Binary {
                op: SpansetOp::And,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
        Ok(lhs)
    }

    fn spanset_structural(&mut self) -> Result<SpansetExpr, ParseError> {
        let mut lhs = self.spanset_primary()?;
        loop {
            let op = match self.peek() {
                Tok::Gt => SpansetOp::Child,
                Tok::GtGt => SpansetOp::Descendant,
                Tok::Lt => SpansetOp::Parent,
                Tok::LtLt => SpansetOp::Ancestor,
                Tok::Tilde => SpansetOp::Sibling,
                Tok::NotGt => SpansetOp::NotChild,
                Tok::NotGtGt => SpansetOp::NotDescendant,
                Tok::NotLt => SpansetOp::NotParent,
                Tok::NotLtLt => SpansetOp::NotAncestor,
                Tok::ReNot => SpansetOp::NotSibling,
                _ => return Ok(lhs),
            };
            self.bump();
            self.node()?;
            let rhs = self.spanset_primary()?;
            lhs = SpansetExpr::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
    }

    fn spanset_primary(&mut self) -> Result<SpansetExpr, ParseError> {
        match self.peek() {
            Tok::LBrace => Ok(SpansetExpr::Filter(self.filter()?)),
            Tok::LParen => {
                self.bump();
                self.enter()?;
                let q = self.pipeline()?;
                self.expect(Tok::RParen, "`)` or `|`")?;
                self.depth -= 1;
                Ok(SpansetExpr::Paren(Box::new(q)))
            }
            _ => Err(self.error_here("a spanset filter `{ … }` or `(`")),
        }
    }

    fn filter(&mut self) -> Result<Option<FieldExpr>, ParseError> {
        self.expect(Tok::LBrace, "`{`")?;
        self.node()?;
        if *self.peek() == Tok::RBrace {
            self.bump();
            return Ok(None);
        }
        let e = self.expr_or()?;
        self.expect(Tok::RBrace, "`}`, `&&` or `||`")?;
        Ok(Some(e))
    }

    fn expr_or(&mut self) -> Result<FieldExpr, ParseError> {
        let mut lhs = self.expr_and()?;
        while *self.peek() == Tok::OrOr {
            self.bump();
            self.node()?;
            let rhs = self.expr_and()?;
            lhs = FieldExpr::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn expr_and(&mut self) -> Result<FieldExpr, ParseError> {
        let mut lhs = self.expr_not()?;
        while *self.peek() == Tok::AndAnd {
            self.bump();
            self.node()?;
            let rhs = self.expr_not()?;
            lhs = FieldExpr::And(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn expr_not(&mut self) -> Result<FieldExpr, ParseError> {
        if *self.peek() == Tok::Bang {
            self.bump();
            self.enter()?;
            self.node()?;
            let e = self.expr_not()?;
            self.depth -= 1;
            return Ok(FieldExpr::Not(Box::new(e)));
        }
        self.expr_primary()
    }

    fn expr_primary(&mut self) -> Result<FieldExpr, ParseError> {
        match self.peek().clone() {
            Tok::LParen => {
                self.bump();
                self.enter()?;
                let e = self.expr_or()?;
                self.expect(Tok::RParen, "`)`, `&&` or `||`")?;
                self.depth -= 1;
                Ok(FieldExpr::Paren(Box::new(e)))
            }
            Tok::Ident(w) if w == "true" || w == "false" => {
                self.bump();
                self.node()?;
                Ok(FieldExpr::Bool(w == "true"))
            }
            _ => {
                self.node()?;
                let field = self.field(
                    "an attribute (span.…, resource.…, .…), an intrinsic (name, status, duration, …), true, false, `!` or `(`",
                )?;
                let op = self.cmp_op()?;
                let value_start = self.current_start();
                let value_found = self.found();
                let value = self.literal()?;
                check_types(&field, op, &value).map_err(|expected| {
                    error_at(self.src, value_start, &expected, value_found.clone())
                })?;
                if let (CmpOp::Regex | CmpOp::NotRegex, Literal::String(p)) = (op, &value) {
                    if let Err(e) = compile_anchored(p) {
                        return Err(error_at(
                            self.src,
                            value_start,
                            &format!("a valid regular expression ({})", one_line(&e.to_string())),
                            value_found,
                        ));
                    }
                }
                Ok(FieldExpr::Compare { field, op, value })
            }
        }
    }

    fn field(&mut self, expected: &str) -> Result<Field, ParseError> {
        match self.peek().clone() {
            Tok::Attr(scope, key) => {
                self.bump();
                Ok(Field::Attribute { scope, key })
            }
            Tok::Ident(w) => match Intrinsic::from_name(&w) {
                Some(i) => {
                    self.bump();
                    Ok(Field::Intrinsic(i))
                }
                None => Err(self.error_here(expected)),
            },
            _ => Err(self.error_here(expected)),
        }
    }

    fn cmp_op(&mut self) -> Result<CmpOp, ParseError> {
        let op = match self.peek() {
            Tok::Eq => CmpOp::Eq,
            Tok::Ne => CmpOp::Ne,
            Tok::Gt => CmpOp::Gt,
            Tok::Ge => CmpOp::Ge,
            Tok::Lt => CmpOp::Lt,
            Tok::Le => CmpOp::Le,
            Tok::ReMatch => CmpOp::Regex,
            Tok::ReNot => CmpOp::NotRegex,
            _ => return Err(self.error_here(CMP_EXPECTED)),
        };
        self.bump();
        Ok(op)
    }

    fn literal(&mut self) -> Result<Literal, ParseError> {
        let lit = match self.peek().clone() {
            Tok::Str(s) => Literal::String(s),
            Tok::Int(i) => Literal::Int(i),
            Tok::Float(f) => Literal::Float(f),
            Tok::Duration(d) => Literal::Duration(d),
            Tok::Ident(w) => match w.as_str() {
                "true" => Literal::Bool(true),
                "false" => Literal::Bool(false),
                "nil" => Literal::Nil,
                "ok" => Literal::Status(StatusLit::Ok),
                "error" => Literal::Status(StatusLit::Error),
                "unset" => Literal::Status(StatusLit::Unset),
                other => match KIND_NAMES.iter().position(|k| *k == other) {
                    Some(k) => Literal::Kind(k as i32),
                    None => return Err(self.error_here(VALUE_EXPECTED)),
                },
            },
            _ => return Err(self.error_here(VALUE_EXPECTED)),
        };
        self.bump();
        Ok(lit)
    }

    fn field_list(&mut self) -> Result<Vec<Field>, ParseError> {
        self.expect(Tok::LParen, "`(`")?;
        let mut fields = Vec::new();
        loop {
            self.node()?;
            fields.push(self.field("an attribute or an intrinsic")?);
            match self.peek() {
                Tok::Comma => self.bump(),
                Tok::RParen => {
                    self.bump();
                    return Ok(fields);
                }
                _ => return Err(self.error_here("`,` or `)`")),
            }
        }
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        const STAGE_EXPECTED: &str = "a pipeline stage ({ … }, count(), avg(…), min(…), max(…), sum(…), by(…), select(…) or coalesce())";
        let word = match self.peek().clone() {
            Tok::LBrace => return Ok(Stage::Filter(self.filter()?)),
            Tok::Ident(w) => w,
            _ => return Err(self.error_here(STAGE_EXPECTED)),
        };
        let func = match word.as_str() {
            "by" | "select" => {
                self.bump();
                let fields = self.field_list()?;
                return Ok(if word == "by" {
                    Stage::By(fields)
                } else {
                    Stage::Select(fields)
                });
            }
            "coalesce" | "count" => {
                self.bump();
                self.expect(Tok::LParen, "`(`")?;
                self.expect(Tok::RParen, "`)`")?;
                if word == "coalesce" {
                    return Ok(Stage::Coalesce);
                }
                Aggregate::Count
            }
            "avg" | "min" | "max" | "sum" => {
                self.bump();
                self.expect(Tok::LParen, "`(`")?;
                let field = self.field("an attribute or an intrinsic")?;
                self.expect(Tok::RParen, "`)`")?;
                match word.as_str() {
                    "avg" => Aggregate::Avg(field),
                    "min" => Aggregate::Min(field),
                    "max" => Aggregate::Max(field),
                    _ => Aggregate::Sum(field),
                }
            }
            _ => return Err(self.error_here(STAGE_EXPECTED)),
        };
        let op = match self.cmp_op()? {
            CmpOp::Regex | CmpOp::NotRegex => {
                // Step back so the error points at the operator.
                self.pos -= 1;
                return Err(self.error_here("a comparison operator (=, !=, >, >=, <, <=)"));
            }
            op => op,
        };
        let value = match self.peek().clone() {
            Tok::Int(i) => Literal::Int(i),
            Tok::Float(f) => Literal::Float(f),
            Tok::Duration(d) if !matches!(func, Aggregate::Count) => Literal::Duration(d),
            _ => {
                return Err(self.error_here(if matches!(func, Aggregate::Count) {
                    "a number"
                } else {
                    "a number or a duration"
                }))
            }
        };
        self.bump();
        Ok(Stage::Aggregate { func, op, value })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Compiles a TraceQL regex: anchored at both ends. The pattern is first compiled on its own so
/// that an unbalanced `)` cannot escape the anchoring group.
pub(crate) fn compile_anchored(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()?;
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// Checks that a literal can be compared with a field with `op`; returns what was expected.
fn check_types(field: &Field, op: CmpOp, value: &Literal) -> Result<(), String> {
    if matches!(value, Literal::Nil) {
        return match op {
            CmpOp::Eq | CmpOp::Ne => Ok(()),
            _ => Err("a value other than nil (nil only compares with = and !=)".into()),
        };
    }
    if matches!(op, CmpOp::Regex | CmpOp::NotRegex) {
        return match value {
            Literal::String(_) => match field {
                Field::Intrinsic(
                    Intrinsic::Name
                    | Intrinsic::StatusMessage
                    | Intrinsic::RootName
                    | Intrinsic::RootServiceName,
                )
                | Field::Attribute { .. } => Ok(()),
                Field::Intrinsic(i) => Err(format!("a field holding text ({i:?} is not text)")),
            },
            _ => Err("a string (a regular expression)".into()),
        };
    }
    let ordering = matches!(op, CmpOp::Gt | CmpOp::Ge | CmpOp::Lt | CmpOp::Le);
    if ordering
        && matches!(
            value,
            Literal::Bool(_) | Literal::Status(_) | Literal::Kind(_)
        )
    {
        return Err("a string, number or duration (ordering operators)".into());
    }
    match field {
        Field::Intrinsic(i) => {
            let ok = match i {
                Intrinsic::Name
                | Intrinsic::StatusMessage
                | Intrinsic::RootName
                | Intrinsic::RootServiceName => matches!(value, Literal::String(_)),
                Intrinsic::Status => matches!(value, Literal::Status(_)),
                Intrinsic::Kind => matches!(value, Literal::Kind(_)),
                Intrinsic::Duration | Intrinsic::TraceDuration => {
                    matches!(value, Literal::Duration(_))
                }
            };
            if ok {
                Ok(())
            } else {
                Err(match i {
                    Intrinsic::Status => "a status (ok, error, unset) or nil".into(),
                    Intrinsic::Kind => {
                        "a span kind (unspecified, internal, server, client, producer, consumer) or nil"
                            .into()
                    }
                    Intrinsic::Duration | Intrinsic::TraceDuration => {
                        "a duration (e.g. 100ms, 1.5s) or nil".into()
                    }
                    _ => "a string or nil".into(),
                })
            }
        }
        Field::Attribute { .. } => match value {
            Literal::Status(_) | Literal::Kind(_) => {
                Err("a string, number, duration, boolean or nil".into())
            }
            _ => Ok(()),
        },
    }
}
