//! Window analysis: many traces in, aggregated findings out — orphaned spans, split traces,
//! context lost between services or inside one, clock skew.

use crate::analysis::{analyze_with_facts, is_entry_kind, is_exit_kind, Facts, TraceOptions};
use crate::model::{
    self, instance_key, own_names, peer_names, KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER,
    KIND_SERVER,
};
use clew_model::{attrs, FlatSpan};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    OrphanSpans,
    MultipleRoots,
    ContextLostBetweenServices,
    ContextLostInService,
    ClockSkew,
}

impl FindingKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            FindingKind::OrphanSpans => "orphan_spans",
            FindingKind::MultipleRoots => "multiple_roots",
            FindingKind::ContextLostBetweenServices => "context_lost_between_services",
            FindingKind::ContextLostInService => "context_lost_in_service",
            FindingKind::ClockSkew => "clock_skew",
        }
    }

    /// What to do about it, in one paragraph (shown by the UI and `clew doctor`).
    pub fn remedy(&self) -> &'static str {
        match self {
            FindingKind::OrphanSpans => "The parent span of these spans never reached Clew. Check that the calling service is instrumented and exports to Clew, that its exporter does not drop spans (queue full, process killed before flush: call the SDK's shutdown/force_flush), and that a sampler upstream did not drop the parent while this service kept the child (use parent-based sampling).",
            FindingKind::MultipleRoots => "A span without a parent appeared inside an existing trace: a service reused the trace id but lost the parent span id (a hand-written propagator, or a context copied without its span). Propagate the whole traceparent header, or start a linked new trace on purpose.",
            FindingKind::ContextLostBetweenServices => "The caller sent the request without trace context, or the callee did not read it. In the caller, make sure the HTTP/gRPC/messaging client is instrumented (or inject the W3C traceparent header by hand); in the callee, make sure the server instrumentation extracts it, and that proxies and gateways in between forward traceparent, tracestate and baggage.",
            FindingKind::ContextLostInService => "Work started inside a request ran without the request's context: a thread pool, a detached task, a timer or a callback. Capture the context where the work is scheduled and attach it where it runs (Python: contextvars.copy_context() or opentelemetry.context.attach; Node: AsyncLocalStorage / context.bind; Java: Context.taskWrapping; Rust: FutureExt::with_context).",
            FindingKind::ClockSkew => "A child span starts before its parent or ends after it by more than the tolerance: the hosts' clocks disagree. Run NTP/chrony on every host; the UI shifts such subtrees for display, but durations across hosts stay approximate until the clocks agree.",
        }
    }

    /// The section of the doctor guide about this kind.
    pub fn guide(&self) -> &'static str {
        match self {
            FindingKind::OrphanSpans => "docs/doctor.md#orphan-spans",
            FindingKind::MultipleRoots => "docs/doctor.md#multiple-roots",
            FindingKind::ContextLostBetweenServices => {
                "docs/doctor.md#context-lost-between-services"
            }
            FindingKind::ContextLostInService => "docs/doctor.md#context-lost-in-service",
            FindingKind::ClockSkew => "docs/doctor.md#clock-skew",
        }
    }
}

/// One aggregated problem. Which services are set depends on the kind:
/// * `orphan_spans`: `to_service` = the service of the orphans (its caller is unknown);
/// * `multiple_roots`: `to_service` = the service of the extra roots;
/// * `context_lost_between_services`: `from_service` (CLIENT / PRODUCER side) → `to_service`,
///   `operation` = the client span's name; `via` = the uninstrumented address in between when the
///   new trace started one hop further (see `uninstrumented_hops`);
/// * `context_lost_in_service`: both = the service, `operation` = the span during which the new
///   trace started (`new_root_operation` names the new trace's root);
/// * `clock_skew`: `from_service` = the parent's service, `to_service` = the skewed span's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub from_service: Option<String>,
    pub to_service: Option<String>,
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_root_operation: Option<String>,
    /// The address of an uninstrumented hop the context was lost at (`host:port`), when the
    /// caller's request reached an instrumented service only through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    pub count: u64,
    /// Traces showing the problem (for context losses: the trace that lost the context).
    pub example_trace_ids: Vec<String>,
    /// The span to look at in each example trace, same order: the orphan, the extra root, the
    /// skewed span, the exit span that lost the context, or the span a lost task started in.
    #[serde(default)]
    pub example_span_ids: Vec<String>,
    /// For context losses: the traces that were started without it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub example_new_trace_ids: Vec<String>,
    /// Occurrences per time bucket of the window, oldest first (see `WindowReport`).
    #[serde(default)]
    pub trend: Vec<u64>,
    /// What to do about this kind of problem.
    #[serde(default)]
    pub remedy: String,
    /// The guide section about it (a path in Clew's docs).
    #[serde(default)]
    pub guide: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowReport {
    pub findings: Vec<Finding>,
    /// Traces judged (older than the grace period).
    pub traces_examined: usize,
    /// Traces left out because a span of theirs ended within the grace period.
    #[serde(default)]
    pub traces_too_recent: usize,
    /// About how many traces the store holds in the judged window (`traces_examined` when
    /// unknown): the denominator of `coverage`.
    #[serde(default)]
    pub traces_in_window: u64,
    /// `traces_examined / traces_in_window`, 0..=1 (1 when the window is empty).
    #[serde(default)]
    pub coverage: f64,
    /// The judged window: its end is at most `now - grace`.
    #[serde(default)]
    pub window_start_unix_nano: u64,
    #[serde(default)]
    pub window_end_unix_nano: u64,
    /// Width of each finding's `trend` bucket; bucket 0 starts at `window_start_unix_nano`.
    #[serde(default)]
    pub trend_bucket_nanos: u64,
}

impl WindowReport {
    /// Sets the window's estimated trace count and the coverage derived from it.
    pub fn set_traces_in_window(&mut self, estimate: u64) {
        let seen = (self.traces_examined + self.traces_too_recent) as u64;
        self.traces_in_window = estimate.max(self.traces_examined as u64).max(seen);
        self.coverage = if self.traces_in_window == 0 {
            1.0
        } else {
            self.traces_examined as f64 / self.traces_in_window as f64
        };
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowOptions {
    /// Current time; traces with a span ending after `now - grace` are not judged (their parent
    /// spans may still be on the way).
    pub now_unix_nano: u64,
    pub grace_nanos: u64,
    pub trace: TraceOptions,
    /// Slack around a client span's window when matching a root span of the called service.
    pub match_slack_nanos: u64,
    /// How long after a PRODUCER span a consumer's new root may start and still be matched.
    pub messaging_max_lag_nanos: u64,
    pub max_examples: usize,
    /// The window the traces were taken from (for the per-finding trends); `None`: from the
    /// oldest judged span to `now - grace`.
    pub window: Option<(u64, u64)>,
    /// How many buckets each finding's `trend` has.
    pub trend_buckets: usize,
}

impl WindowOptions {
    pub fn new(now_unix_nano: u64) -> Self {
        Self {
            now_unix_nano,
            grace_nanos: 30_000_000_000,
            trace: TraceOptions::default(),
            match_slack_nanos: 5_000_000,
            messaging_max_lag_nanos: 60_000_000_000,
            max_examples: 5,
            window: None,
            trend_buckets: 12,
        }
    }

    /// The latest time a judged trace may end at.
    pub fn horizon(&self) -> u64 {
        self.now_unix_nano.saturating_sub(self.grace_nanos)
    }
}

/// Where occurrences fall in time: `buckets` equal slices of `[start, end]`.
#[derive(Clone, Copy)]
struct Trend {
    start: u64,
    width: u64,
    buckets: usize,
}

impl Trend {
    fn bucket(&self, t: u64) -> usize {
        let i = t.saturating_sub(self.start) / self.width.max(1);
        (i as usize).min(self.buckets.saturating_sub(1))
    }
}

#[derive(Default)]
struct Agg {
    count: u64,
    examples: Vec<String>,
    /// The span to look at in each example trace (same order as `examples`).
    example_spans: Vec<String>,
    new_examples: Vec<String>,
    trend: Vec<u64>,
}

/// One occurrence: where it is shown (trace and span) and when it happened.
struct Seen<'a> {
    trace: &'a str,
    span: &'a FlatSpan,
    new_trace: Option<&'a str>,
}

fn seen<'a>(trace: &'a str, span: &'a FlatSpan, new_trace: Option<&'a str>) -> Seen<'a> {
    Seen {
        trace,
        span,
        new_trace,
    }
}

impl Agg {
    fn add(&mut self, seen: Seen, trend: &Trend, max: usize) {
        let Seen {
            trace,
            span,
            new_trace,
        } = seen;
        self.count += 1;
        if self.trend.is_empty() {
            self.trend = vec![0; trend.buckets];
        }
        if let Some(b) = self
            .trend
            .get_mut(trend.bucket(span.span.start_time_unix_nano))
        {
            *b += 1;
        }
        if self.examples.len() < max && !self.examples.iter().any(|t| t == trace) {
            self.examples.push(trace.to_string());
            self.example_spans.push(
                model::span_id(&span.span.span_id)
                    .map(|id| model::hex8(&id))
                    .unwrap_or_default(),
            );
        }
        if let Some(t) = new_trace {
            if self.new_examples.len() < max && !self.new_examples.iter().any(|x| x == t) {
                self.new_examples.push(t.to_string());
            }
        }
    }
}

/// (kind, from service, to service, operation, new root operation, via).
type Key = (
    FindingKind,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The key of a finding about one span's own service and operation (no peer).
fn span_key(kind: FindingKind, s: &FlatSpan) -> Key {
    (
        kind,
        None,
        Some(s.service_name().to_string()),
        Some(s.span.name.clone()),
        None,
        None,
    )
}

struct Judged<'a> {
    spans: &'a [FlatSpan],
    facts: Facts,
    id: String,
}

fn occurrences(n: u64) -> String {
    if n == 1 {
        "1 occurrence".into()
    } else {
        format!("{n} occurrences")
    }
}

/// Occurrences needed before an uninstrumented hop is reported: one coincidence in time is not
/// evidence, the same pairing seen again is.
const MIN_HOP_EVIDENCE: u64 = 2;

/// How much later than the call a new root at an uninstrumented hop may end and still count as
/// made on its behalf. A server span ends when its handler returns, after the response is on the
/// wire, so it can end after its caller's caller: an instrumented FastAPI service's SERVER spans
/// were seen ending ~10 ms after the client call on a loaded 2-core machine. A root that outlives
/// the call by more than this was not answering it.
const HOP_LATE_END_NANOS: u64 = 50_000_000;

/// The address a CLIENT span called, as `host:port` (or the bare host), for naming a hop.
fn hop_address(peers: &[String]) -> Option<&str> {
    peers
        .iter()
        .filter(|p| !p.starts_with("svc:") && !p.starts_with("dest:"))
        .max_by_key(|p| p.contains(':'))
        .map(String::as_str)
}

/// Context lost one hop further than the caller can see: a CLIENT span called an address that no
/// instrumented server answers on (no SERVER span in the window claims it), and during that call
/// a new trace started at a SERVER span of another service — the uninstrumented app in between
/// made the call without forwarding the context (a legacy service, a gateway that strips headers).
///
/// Nothing names the new root's caller, so only time pairs them, and the guards against
/// coincidence are strict: the root starts inside the client's window (with the matching slack)
/// and ends at most [`HOP_LATE_END_NANOS`] after it, it is the only unused root there, the client is the only unmatched call whose
/// window holds it, and the same (caller, operation, hop, callee) pairing is seen at least
/// [`MIN_HOP_EVIDENCE`] times. Busy windows where calls overlap produce no finding rather than a
/// wrong one.
fn uninstrumented_hops(
    judged: &[Judged],
    entry_roots: &[(u64, usize, usize)],
    unmatched_exits: &[(usize, usize)],
    used: &mut HashSet<(usize, usize)>,
    opts: &WindowOptions,
    agg: &mut BTreeMap<Key, Agg>,
    trend: &Trend,
) {
    if unmatched_exits.is_empty() || entry_roots.is_empty() {
        return;
    }
    // Addresses instrumented servers were called on.
    let mut instrumented: HashSet<String> = HashSet::new();
    for j in judged {
        for s in j.spans.iter().filter(|s| s.span.kind == KIND_SERVER) {
            instrumented.extend(own_names(s).into_iter().filter(|n| !n.starts_with("svc:")));
        }
    }
    let slack = opts.match_slack_nanos;
    let window = |ti: usize, ci: usize| {
        let c = &judged[ti].spans[ci].span;
        // No slack after the call's end: back-to-back calls would each hold the next one's root.
        (
            c.start_time_unix_nano.saturating_sub(slack),
            c.end_time_unix_nano,
        )
    };
    // Candidate calls: their address is not an instrumented server's.
    let calls: Vec<(usize, usize, String)> = unmatched_exits
        .iter()
        .filter_map(|&(ti, ci)| {
            let peers = peer_names(&judged[ti].spans[ci]);
            if peers
                .iter()
                .any(|p| !p.starts_with("svc:") && instrumented.contains(p))
            {
                return None;
            }
            hop_address(&peers).map(|a| (ti, ci, a.to_string()))
        })
        .collect();
    let inside = |(lo, hi): (u64, u64), rti: usize, ri: usize| {
        let r = &judged[rti].spans[ri].span;
        (lo..=hi).contains(&r.start_time_unix_nano)
            && r.end_time_unix_nano <= hi.saturating_add(HOP_LATE_END_NANOS)
    };
    // Each call's single candidate root (or none when there are several).
    let mut pairs: Vec<(usize, usize, usize, usize, &str)> = Vec::new();
    for (ti, ci, addr) in &calls {
        let (ti, ci) = (*ti, *ci);
        let (lo, hi) = window(ti, ci);
        let c_inst = instance_key(&judged[ti].spans[ci]);
        let first = entry_roots.partition_point(|x| x.0 < lo);
        let mut found = None;
        let mut n = 0;
        for &(rs, rti, ri) in entry_roots[first..].iter().take(10_000) {
            if rs > hi {
                break;
            }
            let r = &judged[rti].spans[ri];
            if rti == ti
                || used.contains(&(rti, ri))
                || r.span.kind != KIND_SERVER
                || instance_key(r) == c_inst
                || !inside((lo, hi), rti, ri)
            {
                continue;
            }
            n += 1;
            found = Some((rti, ri));
        }
        if let (1, Some((rti, ri))) = (n, found) {
            pairs.push((ti, ci, rti, ri, addr));
        }
    }
    // The root must be explained by that call alone.
    let mut evidence: BTreeMap<Key, Vec<(usize, usize, usize, usize)>> = BTreeMap::new();
    for &(ti, ci, rti, ri, addr) in &pairs {
        let holders = calls
            .iter()
            .filter(|(t, c, _)| *t != rti && inside(window(*t, *c), rti, ri))
            .take(2)
            .count();
        if holders != 1 {
            continue;
        }
        let (c, r) = (&judged[ti].spans[ci], &judged[rti].spans[ri]);
        evidence
            .entry((
                FindingKind::ContextLostBetweenServices,
                Some(c.service_name().to_string()),
                Some(r.service_name().to_string()),
                Some(c.span.name.clone()),
                None,
                Some(addr.to_string()),
            ))
            .or_default()
            .push((ti, ci, rti, ri));
    }
    for (key, seen_pairs) in evidence {
        if (seen_pairs.len() as u64) < MIN_HOP_EVIDENCE {
            continue;
        }
        let a = agg.entry(key).or_default();
        for (ti, ci, rti, ri) in seen_pairs {
            used.insert((rti, ri));
            a.add(
                seen(&judged[ti].id, &judged[ti].spans[ci], Some(&judged[rti].id)),
                trend,
                opts.max_examples,
            );
        }
    }
}

/// Analyzes many traces (each a slice of its spans) and aggregates what is broken.
pub fn analyze_window(traces: &[Vec<FlatSpan>], opts: &WindowOptions) -> WindowReport {
    let horizon = opts.horizon();
    let mut too_recent = 0;
    let mut judged: Vec<Judged> = Vec::new();
    for t in traces {
        if t.is_empty() {
            continue;
        }
        let last_end = t
            .iter()
            .map(|s| s.span.end_time_unix_nano.max(s.span.start_time_unix_nano))
            .max()
            .unwrap_or(0);
        if last_end > horizon {
            too_recent += 1;
            continue;
        }
        let (_, facts) = analyze_with_facts(t, &opts.trace);
        let id = t
            .iter()
            .find_map(|s| model::trace_id(&s.span.trace_id))
            .map(|id| model::trace_id_text(&id))
            .unwrap_or_default();
        judged.push(Judged {
            spans: t,
            facts,
            id,
        });
    }
    let max = opts.max_examples;
    let (window_start, window_end) = opts.window.unwrap_or_else(|| {
        let oldest = judged
            .iter()
            .flat_map(|j| j.spans.iter().map(|s| s.span.start_time_unix_nano))
            .min()
            .unwrap_or(horizon);
        (oldest.min(horizon), horizon)
    });
    let buckets = opts.trend_buckets.max(1);
    let trend = Trend {
        start: window_start,
        width: (window_end.saturating_sub(window_start) / buckets as u64).max(1),
        buckets,
    };
    let mut agg: BTreeMap<Key, Agg> = BTreeMap::new();

    // Orphans, extra roots, skew.
    for j in &judged {
        for &o in &j.facts.orphans {
            agg.entry(span_key(FindingKind::OrphanSpans, &j.spans[o]))
                .or_default()
                .add(seen(&j.id, &j.spans[o], None), &trend, max);
        }
        if j.facts.roots.len() > 1 {
            let mut roots = j.facts.roots.clone();
            roots.sort_by_key(|&r| (j.spans[r].span.start_time_unix_nano, r));
            for &r in &roots[1..] {
                agg.entry(span_key(FindingKind::MultipleRoots, &j.spans[r]))
                    .or_default()
                    .add(seen(&j.id, &j.spans[r], None), &trend, max);
            }
        }
        for &(p, c) in &j.facts.skew {
            let (ps, cs) = (&j.spans[p], &j.spans[c]);
            agg.entry((
                FindingKind::ClockSkew,
                Some(ps.service_name().to_string()),
                Some(cs.service_name().to_string()),
                Some(cs.span.name.clone()),
                None,
                None,
            ))
            .or_default()
            .add(seen(&j.id, cs, None), &trend, max);
        }
    }

    // Candidate new roots: parentless spans of judged traces.
    // (start, trace index, span index)
    let mut entry_roots: Vec<(u64, usize, usize)> = Vec::new();
    let mut other_roots: Vec<(u64, usize, usize)> = Vec::new();
    for (ti, j) in judged.iter().enumerate() {
        for &r in &j.facts.roots {
            let s = &j.spans[r];
            if !s.span.links.is_empty() {
                // A new trace linked to others is deliberate (batch consumers, fan-in jobs).
                continue;
            }
            if is_entry_kind(s.span.kind) {
                entry_roots.push((s.span.start_time_unix_nano, ti, r));
            } else {
                other_roots.push((s.span.start_time_unix_nano, ti, r));
            }
        }
    }
    entry_roots.sort_unstable();

    // Context lost between services: an exit span without a remote child, and a root entry span
    // of the called service starting inside its window, matched by address.
    let mut used: HashSet<(usize, usize)> = HashSet::new();
    // CLIENT spans without a remote child and without a new root at the address they called.
    let mut unmatched_exits: Vec<(usize, usize)> = Vec::new();
    let mut own_cache: HashMap<(usize, usize), Vec<String>> = HashMap::new();
    for (ti, j) in judged.iter().enumerate() {
        for (ci, c) in j.spans.iter().enumerate() {
            let kind = c.span.kind;
            if !is_exit_kind(kind) {
                continue;
            }
            let a = &c.span.attributes;
            if kind == KIND_CLIENT
                && (attrs::get_str(a, "db.system").is_some()
                    || attrs::get_str(a, "db.system.name").is_some())
            {
                continue; // databases are not instrumented: no server side is expected
            }
            let has_remote_child = j.facts.children[ci].iter().any(|&ch| {
                let k = j.spans[ch].span.kind;
                is_entry_kind(k) || j.spans[ch].service_name() != c.service_name()
            });
            if has_remote_child {
                continue;
            }
            let peers = peer_names(c);
            if peers.is_empty() {
                continue;
            }
            let (cs, ce) = (c.span.start_time_unix_nano, c.span.end_time_unix_nano);
            let lo = cs.saturating_sub(opts.match_slack_nanos);
            let hi = if kind == KIND_PRODUCER {
                ce.saturating_add(opts.messaging_max_lag_nanos)
            } else {
                ce.saturating_add(opts.match_slack_nanos)
            };
            let want = if kind == KIND_PRODUCER {
                KIND_CONSUMER
            } else {
                KIND_SERVER
            };
            let first = entry_roots.partition_point(|x| x.0 < lo);
            let c_inst = instance_key(c);
            let mut best: Option<(usize, usize)> = None;
            // Bounded: a client window holding more than this many entry roots is not examined
            // further (the match is by earliest start, so the first ones matter most).
            for &(rs, rti, ri) in entry_roots[first..].iter().take(10_000) {
                if rs > hi {
                    break;
                }
                if rti == ti || used.contains(&(rti, ri)) {
                    continue;
                }
                let r = &judged[rti].spans[ri];
                if r.span.kind != want || instance_key(r) == c_inst {
                    continue;
                }
                let names = own_cache.entry((rti, ri)).or_insert_with(|| own_names(r));
                if peers.iter().any(|p| names.contains(p)) {
                    best = Some((rti, ri));
                    break; // the earliest matching start
                }
            }
            if let Some((rti, ri)) = best {
                used.insert((rti, ri));
                let r = &judged[rti].spans[ri];
                agg.entry((
                    FindingKind::ContextLostBetweenServices,
                    Some(c.service_name().to_string()),
                    Some(r.service_name().to_string()),
                    Some(c.span.name.clone()),
                    None,
                    None,
                ))
                .or_default()
                .add(seen(&j.id, c, Some(&judged[rti].id)), &trend, max);
            } else if kind == KIND_CLIENT {
                unmatched_exits.push((ti, ci));
            }
        }
    }

    uninstrumented_hops(
        &judged,
        &entry_roots,
        &unmatched_exits,
        &mut used,
        opts,
        &mut agg,
        &trend,
    );

    // Context lost inside a service: a root that is not an entry span (CLIENT, PRODUCER,
    // INTERNAL) starting inside a span of another trace on the same service instance.
    if !other_roots.is_empty() {
        // Containers from traces that began at an entry span (a request, a message) are
        // preferred; traces that themselves began without context (a cron job, or another lost
        // task) are a fall-back, so that a lost task is attributed to the request it came from.
        let mut entry_rooted = vec![false; judged.len()];
        for (ti, j) in judged.iter().enumerate() {
            entry_rooted[ti] = j
                .facts
                .roots
                .iter()
                .any(|&r| is_entry_kind(j.spans[r].span.kind));
        }
        let mut by_instance: HashMap<String, Vec<(u64, u64, usize, usize)>> = HashMap::new();
        for (ti, j) in judged.iter().enumerate() {
            for (si, s) in j.spans.iter().enumerate() {
                by_instance.entry(instance_key(s)).or_default().push((
                    s.span.start_time_unix_nano,
                    s.span.end_time_unix_nano,
                    ti,
                    si,
                ));
            }
        }
        for v in by_instance.values_mut() {
            v.sort_unstable();
        }
        for &(rs, rti, ri) in &other_roots {
            let r = &judged[rti].spans[ri];
            let Some(cands) = by_instance.get(&instance_key(r)) else {
                continue;
            };
            let upto = cands.partition_point(|x| x.0 <= rs);
            let mut fallback = None;
            let mut container = None;
            for c in cands[..upto].iter().rev().take(10_000) {
                let &(_, e, ti, _) = c;
                if ti == rti || e < rs {
                    continue;
                }
                if entry_rooted[ti] {
                    container = Some(c);
                    break;
                }
                if fallback.is_none() {
                    fallback = Some(c);
                }
            }
            let container = container.or(fallback);
            if let Some(&(_, _, pti, psi)) = container {
                let p = &judged[pti].spans[psi];
                agg.entry((
                    FindingKind::ContextLostInService,
                    Some(p.service_name().to_string()),
                    Some(r.service_name().to_string()),
                    Some(p.span.name.clone()),
                    Some(r.span.name.clone()),
                    None,
                ))
                .or_default()
                .add(seen(&judged[pti].id, p, Some(&judged[rti].id)), &trend, max);
            }
        }
    }

    let mut findings: Vec<Finding> = agg
        .into_iter()
        .map(|((kind, from, to, op, new_root, via), a)| {
            let f = from.as_deref().unwrap_or("?");
            let t = to.as_deref().unwrap_or("?");
            let o = op.as_deref().unwrap_or("?");
            let n = occurrences(a.count);
            let message = match kind {
                FindingKind::OrphanSpans => {
                    format!("orphaned spans in {t} on {o}: parent span never arrived, {n}")
                }
                FindingKind::MultipleRoots => format!(
                    "trace split: {t} on {o} starts a second root in an existing trace, {n}"
                ),
                FindingKind::ContextLostBetweenServices => match &via {
                    Some(v) => format!(
                        "context lost from {f} to {t} on {o} at the uninstrumented hop {v} in between: {n}"
                    ),
                    None => format!("context lost from {f} to {t} on {o}: {n}"),
                },
                FindingKind::ContextLostInService => format!(
                    "context lost inside {f} on {o}: new trace '{}' started while it ran, {n}",
                    new_root.as_deref().unwrap_or("?")
                ),
                FindingKind::ClockSkew => {
                    format!("clock skew between {f} and {t} on {o}: {n}")
                }
            };
            Finding {
                kind,
                from_service: from,
                to_service: to,
                operation: op,
                new_root_operation: new_root,
                via,
                count: a.count,
                example_trace_ids: a.examples,
                example_span_ids: a.example_spans,
                example_new_trace_ids: a.new_examples,
                trend: a.trend,
                remedy: kind.remedy().to_string(),
                guide: kind.guide().to_string(),
                message,
            }
        })
        .collect();
    findings.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
    let mut report = WindowReport {
        findings,
        traces_examined: judged.len(),
        traces_too_recent: too_recent,
        traces_in_window: 0,
        coverage: 0.0,
        window_start_unix_nano: window_start,
        window_end_unix_nano: window_end,
        trend_bucket_nanos: trend.width,
    };
    report.set_traces_in_window(0);
    report
}
