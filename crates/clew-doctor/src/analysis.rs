//! Per-trace analysis: tree building, orphans and extra roots, clock skew (detection and a
//! Jaeger-style display adjustment), critical path, self time and per-service contributions.
//!
//! Pure functions over `&[FlatSpan]` of one trace.

use crate::model::{
    self, host_key, is_error, KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER, KIND_SERVER,
};
use clew_model::FlatSpan;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Knobs of the per-trace analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceOptions {
    /// A child may start before / end after its parent by this much before it counts as skew.
    pub skew_tolerance_nanos: u64,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self {
            skew_tolerance_nanos: 1_000_000,
        }
    }
}

/// Everything the doctor says about one trace. Span ids are 16 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceAnalysis {
    pub trace_id: String,
    pub span_count: usize,
    /// From the earliest start to the latest end, after skew adjustment.
    pub duration_nanos: u64,
    /// Spans without a parent; more than one means the trace was split.
    pub roots: Vec<String>,
    /// Spans whose parent is not in the trace.
    pub orphans: Vec<OrphanSpan>,
    /// Human-readable warnings by span id (what Jaeger shows on the span).
    pub warnings: BTreeMap<String, Vec<String>>,
    /// Display shift (nanoseconds, add to start and end) by span id, for spans the clock-skew
    /// adjuster moved. Absent spans are not moved.
    pub skew_adjustments: BTreeMap<String, i64>,
    pub clock_skew: Vec<SkewEvent>,
    /// The critical path of the main root, in time order.
    pub critical_path: Vec<CriticalPathSegment>,
    /// The spans on the critical path, each once, in order of first appearance.
    pub critical_path_span_ids: Vec<String>,
    /// Duration minus the time covered by children, by span id.
    pub self_time_nanos: BTreeMap<String, u64>,
    /// Per-service contribution to latency and errors, sorted by critical-path time, descending.
    pub services: Vec<ServiceContribution>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrphanSpan {
    pub span_id: String,
    pub missing_parent_span_id: String,
    pub service: String,
    pub operation: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkewEvent {
    pub parent_span_id: String,
    pub span_id: String,
    pub parent_service: String,
    pub service: String,
    pub operation: String,
    /// How far (ns) the span started before its parent (0 if it did not).
    pub starts_before_parent_nanos: u64,
    /// How far (ns) the span ended after its parent (0 if it did not).
    pub ends_after_parent_nanos: u64,
    /// The shift applied to the span and its same-host subtree for display.
    pub adjustment_nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CriticalPathSegment {
    pub span_id: String,
    pub service: String,
    pub operation: String,
    /// Adjusted Unix nanoseconds.
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceContribution {
    pub service: String,
    pub spans: usize,
    pub critical_path_nanos: u64,
    pub self_time_nanos: u64,
    pub error_spans: usize,
    /// Error spans none of whose children failed: where errors originate.
    pub error_origins: usize,
}

/// Internal facts the window analysis reuses (indices into the trace's span slice).
#[derive(Debug, Default)]
pub(crate) struct Facts {
    pub roots: Vec<usize>,
    pub orphans: Vec<usize>,
    pub skew: Vec<(usize, usize)>,
    pub children: Vec<Vec<usize>>,
}

struct Node {
    id: Option<[u8; 8]>,
    parent: Option<usize>,
    /// Index of the span's host key (see [`host_key`]) among the trace's distinct keys.
    host: u32,
    start: u64,
    end: u64,
}

const MAX_DEPTH: usize = 512;

fn shift(t: u64, delta: i64) -> u64 {
    t.saturating_add_signed(delta)
}

fn fmt_ms(nanos: u64) -> String {
    format!("{:.3}ms", nanos as f64 / 1e6)
}

/// Analyzes one trace's spans. Spans of other traces in the slice are analyzed as if they were
/// one trace; pass one trace at a time.
pub fn analyze_trace(spans: &[FlatSpan], opts: &TraceOptions) -> TraceAnalysis {
    analyze_with_facts(spans, opts).0
}

pub(crate) fn analyze_with_facts(
    spans: &[FlatSpan],
    opts: &TraceOptions,
) -> (TraceAnalysis, Facts) {
    let n = spans.len();
    let mut warnings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let id_text: Vec<String> = spans
        .iter()
        .map(|s| model::hex_lower(&s.span.span_id))
        .collect();
    let mut warn = |i: usize, w: String| warnings.entry(id_text[i].clone()).or_default().push(w);

    // --- tree --------------------------------------------------------------------------------
    let mut by_id: HashMap<[u8; 8], usize> = HashMap::with_capacity(n);
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    // Host keys, computed once per resource (spans of one resource share its `Arc`) and
    // interned, so spans compare hosts by index.
    let mut host_of_resource: HashMap<*const clew_model::otlp::resource::Resource, u32> =
        HashMap::new();
    let mut host_ids: HashMap<String, u32> = HashMap::new();
    for (i, fs) in spans.iter().enumerate() {
        let id = model::span_id(&fs.span.span_id);
        if let Some(id) = id {
            match by_id.entry(id) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    warn(i, "duplicate span id in trace".into())
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                }
            }
        }
        let start = fs.span.start_time_unix_nano;
        nodes.push(Node {
            id,
            parent: None,
            host: *host_of_resource
                .entry(std::sync::Arc::as_ptr(&fs.resource))
                .or_insert_with(|| {
                    let next = u32::try_from(host_ids.len()).unwrap_or(u32::MAX);
                    *host_ids.entry(host_key(fs)).or_insert(next)
                }),
            start,
            end: fs.span.end_time_unix_nano.max(start),
        });
    }
    let mut facts = Facts {
        children: vec![Vec::new(); n],
        ..Default::default()
    };
    let mut orphans = Vec::new();
    for (i, fs) in spans.iter().enumerate() {
        match model::span_id(&fs.span.parent_span_id) {
            None => facts.roots.push(i),
            Some(pid) => match by_id.get(&pid) {
                Some(&p) if p != i && nodes[i].id.is_some() => {
                    nodes[i].parent = Some(p);
                    facts.children[p].push(i);
                }
                _ => {
                    let pid_text = model::hex8(&pid);
                    warn(
                        i,
                        format!("parent span {pid_text} not in trace (context lost, or the parent span was not exported)"),
                    );
                    orphans.push(OrphanSpan {
                        span_id: id_text[i].clone(),
                        missing_parent_span_id: pid_text,
                        service: fs.service_name().to_string(),
                        operation: fs.span.name.clone(),
                    });
                    facts.orphans.push(i);
                }
            },
        }
    }
    // Traversal order: roots, then orphans, then anything left (parent cycles).
    let mut tops: Vec<usize> = facts.roots.iter().chain(&facts.orphans).copied().collect();
    tops.sort_by_key(|&i| (nodes[i].start, i));
    let mut visited = vec![false; n];
    let mut order = Vec::with_capacity(n); // pre-order
    let mut stack: Vec<usize> = Vec::new();
    let visit =
        |top: usize, visited: &mut Vec<bool>, order: &mut Vec<usize>, stack: &mut Vec<usize>| {
            stack.push(top);
            while let Some(x) = stack.pop() {
                if visited[x] {
                    continue;
                }
                visited[x] = true;
                order.push(x);
                stack.extend(facts.children[x].iter().rev().copied());
            }
        };
    for &t in &tops {
        visit(t, &mut visited, &mut order, &mut stack);
    }
    for i in 0..n {
        if !visited[i] {
            warn(i, "span is part of a parent cycle".into());
            nodes[i].parent = None;
            visit(i, &mut visited, &mut order, &mut stack);
        }
    }

    // --- roots --------------------------------------------------------------------------------
    let mut roots_sorted = facts.roots.clone();
    roots_sorted.sort_by_key(|&i| (nodes[i].start, std::cmp::Reverse(nodes[i].end), i));
    if roots_sorted.len() > 1 {
        let k = roots_sorted.len();
        for &r in &roots_sorted[1..] {
            warn(
                r,
                format!("trace has {k} root spans: this span starts a separate tree (context lost upstream?)"),
            );
        }
    }

    // --- clock skew (pre-order, parents adjusted before children) -----------------------------
    let tol = opts.skew_tolerance_nanos;
    let mut delta = vec![0i64; n];
    // The (host, delta) in effect for each node, inherited down the tree.
    // Index of the node whose host the delta in effect belongs to (Jaeger's `clockSkew.hostKey`).
    let mut skew_host: Vec<usize> = (0..n).collect();
    let mut clock_skew = Vec::new();
    for &i in &order {
        let Some(p) = nodes[i].parent else {
            continue;
        };
        if nodes[i].host == nodes[skew_host[p]].host {
            // Same clock as the parent: same shift.
            delta[i] = delta[p];
            skew_host[i] = skew_host[p];
            continue;
        }
        let (ps, pe) = (
            shift(nodes[p].start, delta[p]),
            shift(nodes[p].end, delta[p]),
        );
        let (cs, ce) = (nodes[i].start, nodes[i].end);
        // Starting before the parent is impossible on one clock. Ending after it is only
        // telling for a synchronous remote call (CLIENT → SERVER): other children may be
        // detached work, and messaging is asynchronous.
        let synchronous_call =
            spans[p].span.kind == KIND_CLIENT && spans[i].span.kind == KIND_SERVER;
        let asynchronous = !synchronous_call;
        let before = ps.saturating_sub(cs);
        // A server span often ends a little after its client span (bookkeeping after the
        // response was sent), so only a call that starts after the client span ended is taken
        // as evidence of skew on that side.
        let starts_after_end = synchronous_call && cs > pe.saturating_add(tol);
        let after = if starts_after_end {
            ce.saturating_sub(pe)
        } else {
            0
        };
        if before <= tol && !starts_after_end {
            continue;
        }
        let (pd, cd) = (pe - ps, ce - cs);
        let d: i64 = if asynchronous || cd > pd {
            if cs < ps {
                (ps - cs) as i64
            } else {
                0
            }
        } else {
            // Jaeger: assume the network latency is split evenly between request and response.
            let target = ps + (pd - cd) / 2;
            target as i64 - cs as i64
        };
        delta[i] = d;
        let parent_service = spans[p].service_name().to_string();
        let mut what = Vec::new();
        if before > tol {
            what.push(format!("starts {} before", fmt_ms(before)));
        }
        if after > tol {
            what.push(format!("ends {} after", fmt_ms(after)));
        }
        warn(
            i,
            format!(
                "clock skew: span {} its parent (on another host, service {parent_service}); shifted by {}{} for display",
                what.join(" and "),
                if d >= 0 { "+" } else { "-" },
                fmt_ms(d.unsigned_abs())
            ),
        );
        clock_skew.push(SkewEvent {
            parent_span_id: id_text[p].clone(),
            span_id: id_text[i].clone(),
            parent_service,
            service: spans[i].service_name().to_string(),
            operation: spans[i].span.name.clone(),
            starts_before_parent_nanos: before,
            ends_after_parent_nanos: after,
            adjustment_nanos: d,
        });
        facts.skew.push((p, i));
    }
    let adj: Vec<(u64, u64)> = nodes
        .iter()
        .zip(&delta)
        .map(|(nd, &d)| (shift(nd.start, d), shift(nd.end, d)))
        .collect();
    let skew_adjustments: BTreeMap<String, i64> = (0..n)
        .filter(|&i| delta[i] != 0)
        .map(|i| (id_text[i].clone(), delta[i]))
        .collect();

    // --- self time ------------------------------------------------------------------------------
    let mut self_time = vec![0u64; n];
    for i in 0..n {
        let (s, e) = adj[i];
        let mut iv: Vec<(u64, u64)> = facts.children[i]
            .iter()
            .map(|&c| (adj[c].0.max(s), adj[c].1.min(e)))
            .filter(|(a, b)| b > a)
            .collect();
        iv.sort_unstable();
        let mut covered = 0u64;
        let mut cur: Option<(u64, u64)> = None;
        for (a, b) in iv {
            match cur {
                Some((ca, cb)) if a <= cb => cur = Some((ca, cb.max(b))),
                Some((ca, cb)) => {
                    covered += cb - ca;
                    cur = Some((a, b));
                }
                None => cur = Some((a, b)),
            }
        }
        if let Some((ca, cb)) = cur {
            covered += cb - ca;
        }
        self_time[i] = (e - s).saturating_sub(covered);
    }

    // --- critical path ----------------------------------------------------------------------------
    let main_root = roots_sorted
        .first()
        .copied()
        .or_else(|| tops.first().copied())
        .or(order.first().copied());
    let mut segs: Vec<(usize, u64, u64)> = Vec::new();
    if let Some(r) = main_root {
        let mut sorted_children: Vec<Vec<usize>> = facts.children.clone();
        for ch in &mut sorted_children {
            ch.sort_by_key(|&c| std::cmp::Reverse((adj[c].1, adj[c].0)));
        }
        critical_walk(r, adj[r].0, adj[r].1, 0, &adj, &sorted_children, &mut segs);
        segs.reverse();
        // Merge adjacent pieces of the same span.
        let mut merged: Vec<(usize, u64, u64)> = Vec::with_capacity(segs.len());
        for s in segs {
            match merged.last_mut() {
                Some(last) if last.0 == s.0 && last.2 == s.1 => last.2 = s.2,
                _ => merged.push(s),
            }
        }
        segs = merged;
    }
    let critical_path: Vec<CriticalPathSegment> = segs
        .iter()
        .map(|&(i, s, e)| CriticalPathSegment {
            span_id: id_text[i].clone(),
            service: spans[i].service_name().to_string(),
            operation: spans[i].span.name.clone(),
            start_unix_nano: s,
            end_unix_nano: e,
        })
        .collect();

    // --- services ---------------------------------------------------------------------------------
    let mut services: BTreeMap<&str, ServiceContribution> = BTreeMap::new();
    for (i, fs) in spans.iter().enumerate() {
        let svc = fs.service_name();
        let c = services.entry(svc).or_insert_with(|| ServiceContribution {
            service: svc.to_string(),
            spans: 0,
            critical_path_nanos: 0,
            self_time_nanos: 0,
            error_spans: 0,
            error_origins: 0,
        });
        c.spans += 1;
        c.self_time_nanos += self_time[i];
        if is_error(fs) {
            c.error_spans += 1;
            if !facts.children[i].iter().any(|&ch| is_error(&spans[ch])) {
                c.error_origins += 1;
            }
        }
    }
    for &(i, s, e) in &segs {
        if let Some(c) = services.get_mut(spans[i].service_name()) {
            c.critical_path_nanos += e - s;
        }
    }
    let mut services: Vec<ServiceContribution> = services.into_values().collect();
    services.sort_by(|a, b| {
        b.critical_path_nanos
            .cmp(&a.critical_path_nanos)
            .then_with(|| a.service.cmp(&b.service))
    });

    let first = adj.iter().map(|x| x.0).min().unwrap_or(0);
    let last = adj.iter().map(|x| x.1).max().unwrap_or(0);
    let trace_id = spans
        .first()
        .and_then(|s| model::trace_id(&s.span.trace_id))
        .map(|t| model::hex_lower(&t))
        .unwrap_or_default();
    let analysis = TraceAnalysis {
        trace_id,
        span_count: n,
        duration_nanos: last.saturating_sub(first),
        roots: roots_sorted.iter().map(|&i| id_text[i].clone()).collect(),
        orphans,
        warnings,
        skew_adjustments,
        clock_skew,
        critical_path_span_ids: {
            let mut seen = std::collections::HashSet::new();
            critical_path
                .iter()
                .filter(|c| seen.insert(c.span_id.clone()))
                .map(|c| c.span_id.clone())
                .collect()
        },
        critical_path,
        self_time_nanos: BTreeMap::new(),
        services,
    };
    // Last use of the id texts: move them into the map instead of cloning.
    let mut analysis = analysis;
    analysis.self_time_nanos = id_text.into_iter().zip(self_time).collect();
    (analysis, facts)
}

/// Critical path of `i` within `[floor, ceil]`, pushed in reverse time order: walk children from
/// the last-finishing one backwards; gaps between them belong to the span itself (Jaeger UI's
/// algorithm). Asynchronous children that start after the span ended are outside the window.
fn critical_walk(
    i: usize,
    floor: u64,
    ceil: u64,
    depth: usize,
    adj: &[(u64, u64)],
    children: &[Vec<usize>],
    out: &mut Vec<(usize, u64, u64)>,
) {
    let start = adj[i].0.max(floor);
    let mut cursor = adj[i].1.min(ceil);
    if cursor <= start {
        return;
    }
    if depth < MAX_DEPTH {
        for &c in &children[i] {
            let (cs, ce) = (adj[c].0.max(start), adj[c].1.min(cursor));
            if ce <= cs {
                continue;
            }
            if cursor > ce {
                out.push((i, ce, cursor));
            }
            critical_walk(c, cs, ce, depth + 1, adj, children, out);
            cursor = cs;
            if cursor <= start {
                break;
            }
        }
    }
    if cursor > start {
        out.push((i, start, cursor));
    }
}

/// Kinds that receive a remote call: a root of this kind is a legitimate entry point.
pub(crate) fn is_entry_kind(kind: i32) -> bool {
    kind == KIND_SERVER || kind == KIND_CONSUMER
}

/// Kinds that make a remote call.
pub(crate) fn is_exit_kind(kind: i32) -> bool {
    kind == KIND_CLIENT || kind == KIND_PRODUCER
}
