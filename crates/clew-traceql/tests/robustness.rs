//! Mutated queries: the parser never panics, errors stay inside the input, whatever parses prints
//! canonically and parses back to the same tree, and evaluating and planning it do not panic.
//! Deterministic (a fixed xorshift seed), so a failure reproduces; the cargo-fuzz target in
//! `fuzz/` runs the same checks open-ended.

mod common;

use clew_traceql::{parse, plan, Compiled};

const SEEDS: &[&str] = &[
    "{ span.http.status_code >= 200 && span.http.status_code < 300 } | count() > 2",
    "{ resource.service.name = \"cart\" } >> { status = error } ~ { kind = client }",
    "({ .a = 1 } | count() > 1) && { name =~ \"GET.*\" } !<< { } || { false }",
    "{ duration > 1h30m && traceDuration < 1.5s } | by(resource.service.name) | avg(duration) > 10ms",
    "{ span.\"http status\" != nil || !(statusMessage = `x\\y`) } | select(span.a, status) | coalesce()",
    "{ trace:rootService = \"a\" && span:kind = server } !> { rootName = nil } | sum(span.b) >= 1e3",
    "{ .x = -5 } < { .y = 0.25 } << { .z = true } | min(span.q) != -1.5 | max(duration) <= 7ns",
];

const PIECES: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "|",
    "||",
    "&&",
    "!",
    "=",
    "!=",
    ">",
    ">>",
    "<",
    "<<",
    "~",
    "!~",
    "=~",
    "\"",
    "`",
    "\\",
    ".",
    "span.",
    "resource.",
    "span:",
    "trace:",
    "nil",
    "error",
    "server",
    "1",
    "-",
    "1.5",
    "e",
    "ms",
    "µs",
    "1h",
    "count()",
    "by(",
    "select(",
    ",",
    " ",
    "\n",
    "é",
    "name",
    "duration",
    "true",
    "9223372036854775808",
    "1e400",
    "(((",
    ")))",
    "[",
    "*",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[test]
fn mutated_queries_never_panic_and_round_trip() {
    let trace = common::trace();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut parsed, mut failed) = (0, 0);
    for round in 0..20_000 {
        let mut q = SEEDS[round % SEEDS.len()].to_string();
        for _ in 0..1 + rng.below(2) {
            let at = char_boundary(&q, rng.below(q.len() + 1));
            match rng.below(3) {
                0 => q.insert_str(at, PIECES[rng.below(PIECES.len())]),
                1 => {
                    let end = char_boundary(&q, (at + 1 + rng.below(6)).min(q.len()));
                    q.replace_range(at..end.max(at), "");
                }
                _ => {
                    let end = char_boundary(&q, (at + rng.below(4)).min(q.len()));
                    q.replace_range(at..end.max(at), PIECES[rng.below(PIECES.len())]);
                }
            }
        }
        match parse(&q) {
            Ok(ast) => {
                parsed += 1;
                let printed = ast.to_string();
                let again =
                    parse(&printed).unwrap_or_else(|e| panic!("{q:?} printed as {printed:?}: {e}"));
                assert_eq!(again, ast, "{q:?} printed as {printed:?}");
                assert_eq!(again.to_string(), printed);
                let _ = plan::plan(&ast);
                let c = Compiled::new(ast).expect("parsed regexes compile");
                let _ = c.evaluate(&trace);
                assert!(c.evaluate(&[]).is_empty());
            }
            Err(e) => {
                failed += 1;
                assert!(e.offset <= q.len(), "{q:?}: {e}");
                assert!(e.line >= 1 && e.column >= 1);
                assert!(e.to_string().starts_with("parse error at "));
            }
        }
    }
    // Both sides are exercised.
    assert!(
        parsed > 1_000 && failed > 1_000,
        "parsed {parsed}, failed {failed}"
    );
}
