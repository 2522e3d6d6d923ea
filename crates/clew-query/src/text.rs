//! Plain-text rendering of a trace for the CLI: an indented parent → child tree ordered by start
//! time, one span per line with service, name, duration, offset from the trace start and error
//! message. Robust against broken traces: missing parents, duplicate span ids and parent cycles
//! all still render every span exactly once, and deep traces do not recurse.

use crate::jaeger_json::span_id_text;
use clew_model::otlp::trace::status::StatusCode;
use clew_model::FlatSpan;
use std::collections::HashMap;
use std::fmt::Write as _;

/// Formats nanoseconds compactly with three significant digits: `850ns`, `12.3µs`, `12.3ms`,
/// `1.23s`; from one minute on, Go-style `2m3s` / `1h2m3s` rounded to the second.
pub fn format_duration_nanos(nanos: u64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    // Rounding can carry into the next unit (999.96µs → "1000µs"), hence the check on the text.
    let in_unit = |scale: f64, limit: f64, unit: &str| -> Option<String> {
        let text = three_significant(nanos as f64 / scale);
        let value = text.parse::<f64>().ok()?;
        (value < limit).then(|| format!("{text}{unit}"))
    };
    let small = [
        (1_000_000, 1e3, "µs"),
        (1_000_000_000, 1e6, "ms"),
        (60_000_000_000, 1e9, "s"),
    ];
    for (below, scale, unit) in small {
        if nanos < below {
            let limit = if unit == "s" { 60.0 } else { 1000.0 };
            if let Some(text) = in_unit(scale, limit, unit) {
                return text;
            }
        }
    }
    let total_secs = nanos / 1_000_000_000 + u64::from(nanos % 1_000_000_000 >= 500_000_000);
    let (h, m, s) = (total_secs / 3600, (total_secs / 60) % 60, total_secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

fn three_significant(v: f64) -> String {
    let decimals = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn is_set(id: &[u8]) -> bool {
    id.iter().any(|b| *b != 0)
}

/// Renders a trace as an indented tree. Spans whose parent is not in the trace become extra roots
/// marked `(parent <id> missing)`.
pub fn render_trace_tree(spans: &[FlatSpan]) -> String {
    let mut out = String::new();
    if spans.is_empty() {
        return out;
    }
    let trace_start = spans
        .iter()
        .map(|s| s.span.start_time_unix_nano)
        .min()
        .unwrap_or(0);

    // Sorting indices once by (start, name) gives children and roots in start order.
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by(|&a, &b| {
        let (sa, sb) = (&spans[a].span, &spans[b].span);
        sa.start_time_unix_nano
            .cmp(&sb.start_time_unix_nano)
            .then_with(|| sa.name.cmp(&sb.name))
    });

    let present: std::collections::HashSet<&[u8]> =
        spans.iter().map(|s| s.span.span_id.as_slice()).collect();
    let mut children: HashMap<&[u8], Vec<usize>> = HashMap::new();
    let mut roots: Vec<(usize, Option<String>)> = Vec::new();
    for &i in &order {
        let s = &spans[i].span;
        // A span naming itself as parent would otherwise only be reachable from itself.
        if !is_set(&s.parent_span_id) || s.parent_span_id == s.span_id {
            roots.push((i, None));
        } else if present.contains(s.parent_span_id.as_slice()) {
            children
                .entry(s.parent_span_id.as_slice())
                .or_default()
                .push(i);
        } else {
            roots.push((
                i,
                Some(format!(
                    "(parent {} missing)",
                    span_id_text(&s.parent_span_id)
                )),
            ));
        }
    }
    // Proper roots before orphans, each group in start order.
    roots.sort_by_key(|(_, note)| note.is_some());

    let mut visited = vec![false; spans.len()];
    let mut stack: Vec<(usize, usize, Option<String>)> = Vec::new();
    let mut render_from =
        |root: usize, note: Option<String>, visited: &mut Vec<bool>, out: &mut String| {
            stack.push((root, 0, note));
            while let Some((i, depth, note)) = stack.pop() {
                if visited[i] {
                    continue;
                }
                visited[i] = true;
                write_line(out, &spans[i], depth, trace_start, note.as_deref());
                if let Some(kids) = children.get(spans[i].span.span_id.as_slice()) {
                    // Reversed so the earliest child is popped first.
                    for &k in kids.iter().rev() {
                        if !visited[k] {
                            stack.push((k, depth + 1, None));
                        }
                    }
                }
            }
        };
    for (i, note) in roots {
        render_from(i, note, &mut visited, &mut out);
    }
    // Whatever is left sits in a parent cycle: show it rather than drop it.
    for &i in &order {
        if !visited[i] {
            render_from(
                i,
                Some("(parent cycle)".to_string()),
                &mut visited,
                &mut out,
            );
        }
    }
    out
}

fn write_line(out: &mut String, fs: &FlatSpan, depth: usize, trace_start: u64, note: Option<&str>) {
    let s = &fs.span;
    let offset = s.start_time_unix_nano.saturating_sub(trace_start);
    let _ = write!(
        out,
        "{:indent$}{} {}  {}  +{}",
        "",
        fs.service_name(),
        s.name,
        format_duration_nanos(fs.duration_nanos()),
        format_duration_nanos(offset),
        indent = depth * 2
    );
    if let Some(status) = &s.status {
        if status.code == StatusCode::Error as i32 {
            if status.message.is_empty() {
                out.push_str("  ERROR");
            } else {
                let _ = write!(out, "  ERROR: {}", status.message);
            }
        }
    }
    if let Some(note) = note {
        let _ = write!(out, "  {note}");
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use clew_model::attrs::kv_str;
    use clew_model::otlp::common::InstrumentationScope;
    use clew_model::otlp::resource::Resource;
    use clew_model::otlp::trace::{Span, Status};
    use std::sync::Arc;

    #[test]
    fn durations() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (999, "999ns"),
            (1_000, "1µs"),
            (1_500, "1.5µs"),
            (12_345, "12.3µs"),
            (999_960, "1ms"),
            (12_300_000, "12.3ms"),
            (123_456_789, "123ms"),
            (2_000_000_000, "2s"),
            (1_234_000_000, "1.23s"),
            (59_000_000_000, "59s"),
            (59_990_000_000, "1m0s"),
            (125_000_000_000, "2m5s"),
            (3_723_000_000_000, "1h2m3s"),
            (u64::MAX, "5124095h34m34s"),
        ];
        for (n, want) in cases {
            assert_eq!(format_duration_nanos(n), want, "{n}");
        }
    }

    fn fs(svc: &str, name: &str, id: u8, parent: u8, start_ms: u64, dur_ms: u64) -> FlatSpan {
        FlatSpan {
            resource: Arc::new(Resource {
                attributes: vec![kv_str("service.name", svc)],
                ..Default::default()
            }),
            resource_schema_url: Arc::from(""),
            scope: Arc::new(InstrumentationScope::default()),
            scope_schema_url: Arc::from(""),
            span: Span {
                trace_id: vec![1; 16],
                span_id: vec![id; 8],
                parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
                name: name.into(),
                start_time_unix_nano: 1_000_000_000_000 + start_ms * 1_000_000,
                end_time_unix_nano: 1_000_000_000_000 + (start_ms + dur_ms) * 1_000_000,
                ..Default::default()
            },
        }
    }

    #[test]
    fn tree_with_children_errors_and_orphans() {
        let mut failing = fs("payment", "charge", 4, 1, 30, 5);
        failing.span.status = Some(Status {
            code: 2,
            message: "card declined".into(),
        });
        let spans = vec![
            fs("cart", "Cart.Get", 3, 1, 20, 2),
            failing,
            fs("frontend", "GET /checkout", 1, 0, 0, 100),
            fs("cart", "redis GET", 5, 3, 21, 1),
            fs("mail", "send", 6, 9, 50, 3),
            fs("cart", "Cart.Validate", 2, 1, 10, 1),
        ];
        let text = render_trace_tree(&spans);
        let expected = "\
frontend GET /checkout  100ms  +0s
  cart Cart.Validate  1ms  +10ms
  cart Cart.Get  2ms  +20ms
    cart redis GET  1ms  +21ms
  payment charge  5ms  +30ms  ERROR: card declined
mail send  3ms  +50ms  (parent 0909090909090909 missing)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn cycles_self_parents_and_empty() {
        assert_eq!(render_trace_tree(&[]), "");
        let mut err = fs("a", "self", 1, 1, 0, 1);
        err.span.status = Some(Status {
            code: 2,
            message: String::new(),
        });
        let spans = vec![err, fs("a", "x", 2, 3, 1, 1), fs("a", "y", 3, 2, 2, 1)];
        let text = render_trace_tree(&spans);
        assert_eq!(
            text,
            "a self  1ms  +0s  ERROR\na x  1ms  +1ms  (parent cycle)\n  a y  1ms  +2ms\n"
        );
    }

    #[test]
    fn deep_chain_does_not_overflow() {
        let spans: Vec<FlatSpan> = (0..20_000u32)
            .map(|i| {
                let mut s = fs("svc", "op", 0, 0, 0, 1);
                s.span.span_id = (u64::from(i) + 1).to_be_bytes().to_vec();
                s.span.parent_span_id = if i == 0 {
                    vec![]
                } else {
                    u64::from(i).to_be_bytes().to_vec()
                };
                s
            })
            .collect();
        let text = render_trace_tree(&spans);
        assert_eq!(text.lines().count(), 20_000);
    }
}
