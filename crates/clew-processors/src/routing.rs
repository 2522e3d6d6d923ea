//! The `routing` connector: sends spans to pipelines by tenant, resource attribute, span attribute
//! or an attribute that came from baggage.
//!
//! ## Configuration
//!
//! ```yaml
//! routing:
//!   default_pipelines: [traces/default]   # unmatched spans; empty (default): they are dropped
//!   granularity: trace                     # span | trace (default) | resource
//!   match_once: true                       # first matching route wins (default); false: every match
//!   baggage_prefix: ""                     # prepended to `baggage:` condition keys (default "")
//!   table:
//!     - name: eu                           # optional, the metrics label (default "table[i]")
//!       condition: {tenant: {regex: "eu-.*"}}
//!       pipelines: [traces/eu]
//!     - condition: {resource_attribute: {key: deployment.environment.name, equals: dev}}
//!       pipelines: [traces/dev]            # e.g. a pipeline that keeps 1 % and drops the rest
//! ```
//!
//! Conditions are described in [`crate::condition`]. `table` must not be empty, every route needs
//! at least one pipeline, and every pipeline name must be one the caller passes to
//! [`RoutingConnector::new`]. For config checking before the pipelines exist,
//! [`RoutingConfig::validate`] checks everything but the names, and
//! [`RoutingConfig::pipelines_referenced_with_keys`] lists the names with their keys
//! ([`RoutingConfig::pipelines_referenced`]: just the names). Errors name the key:
//! `table[1].condition.tenant.regex`, `table[0].pipelines[1]`.
//!
//! ## Granularity
//!
//! * `span`: every span is routed on its own; a trace may be split across pipelines.
//! * `trace` (the default, unlike the Collector's `resource`): all spans of one trace **within a
//!   batch** follow the route of the trace's first span in that batch, so a trace reaches its
//!   pipelines whole when its spans arrive together (one SDK export usually carries a whole
//!   local trace). Spans of the same trace arriving in other batches are routed again, on their
//!   own first span: with conditions on tenant, resource attributes or attributes every span of a
//!   trace carries (baggage copied by the SDK), the answer is the same; with per-span conditions
//!   a trace can be split. Clew's default is `trace` because tail sampling and per-trace exporters
//!   behind a route want whole traces.
//! * `resource`: each resource (service instance) is routed on tenant and resource attributes;
//!   `span_attribute` and `baggage` conditions are then a start-up error naming the key.
//!
//! ## Delivery
//!
//! The batch is split into one batch per destination pipeline (tenant and request metadata kept;
//! resources and scopes copied as needed, a span routed to several pipelines is copied), and all
//! are handed on concurrently. The connector answers `Ok` only when every pipeline did; otherwise
//! it returns the first error in pipeline order, so the client retries the whole request — and
//! pipelines that had succeeded receive those spans again (duplicates on retry; the store's
//! compaction dedupes identical spans, exporters may not).
//!
//! ## Metrics
//!
//! `clew_routing_spans_total{connector, route}`: spans routed per route (`route` is the route's
//! `name`, `default`, or `unrouted` for spans dropped because nothing matched and there is no
//! default). With `match_once: false` a span counts once per matching route.

use std::collections::HashMap;
use std::sync::Arc;

use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::{SinkError, SpanBatch, SpanSink};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::condition::{Condition, ConditionConfig, ConfigError, MatchContext};

/// How spans are grouped for routing; see the module documentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Span,
    #[default]
    Trace,
    Resource,
}

/// One route of the table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The metrics label; default `table[i]`.
    #[serde(default)]
    pub name: Option<String>,
    pub condition: ConditionConfig,
    pub pipelines: Vec<String>,
}

/// The connector's configuration; see the module documentation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    #[serde(default)]
    pub default_pipelines: Vec<String>,
    #[serde(default)]
    pub granularity: Granularity,
    #[serde(default = "yes")]
    pub match_once: bool,
    #[serde(default)]
    pub baggage_prefix: String,
    pub table: Vec<RouteConfig>,
}

fn yes() -> bool {
    true
}

impl RoutingConfig {
    /// Checks everything but the pipeline names (which [`RoutingConnector::new`] resolves):
    /// conditions, regexes, operators, non-empty table and routes, granularity constraints.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen: Vec<String> = Vec::new();
        let mut resolve = |n: &String, _: &str| -> Result<usize, ConfigError> {
            Ok(match seen.iter().position(|p| p == n) {
                Some(i) => i,
                None => {
                    seen.push(n.clone());
                    seen.len() - 1
                }
            })
        };
        compile(self, &mut resolve).map(|_| ())
    }

    /// Every pipeline reference with its key: `(default_pipelines[0], name)`,
    /// `(table[1].pipelines[0], name)`, in configuration order (a name may appear several times).
    pub fn pipelines_referenced_with_keys(&self) -> Vec<(String, String)> {
        let defaults = self
            .default_pipelines
            .iter()
            .enumerate()
            .map(|(j, n)| (format!("default_pipelines[{j}]"), n.clone()));
        let routes = self.table.iter().enumerate().flat_map(|(i, r)| {
            r.pipelines
                .iter()
                .enumerate()
                .map(move |(j, n)| (format!("table[{i}].pipelines[{j}]"), n.clone()))
        });
        defaults.chain(routes).collect()
    }

    /// Every pipeline name the configuration mentions (defaults first), each once, in order of
    /// first appearance.
    pub fn pipelines_referenced(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for name in self
            .default_pipelines
            .iter()
            .chain(self.table.iter().flat_map(|r| r.pipelines.iter()))
        {
            if !out.contains(name) {
                out.push(name.clone());
            }
        }
        out
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    connector: String,
    route: String,
}

/// The connector's metrics; register once, share between connectors.
#[derive(Clone, Default)]
pub struct RoutingMetrics {
    spans: Family<RouteLabels, Counter>,
}

impl RoutingMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "clew_routing_spans",
            "Spans routed by the routing connector, per route (default: no route matched; unrouted: dropped, no default)",
            self.spans.clone(),
        );
    }

    /// Spans counted for `route` of `connector` so far.
    pub fn spans(&self, connector: &str, route: &str) -> u64 {
        self.spans
            .get_or_create(&RouteLabels {
                connector: connector.into(),
                route: route.into(),
            })
            .get()
    }
}

struct Route {
    name: String,
    condition: Condition,
    /// Indexes into `RoutingConnector::pipelines`.
    pipelines: Vec<usize>,
}

/// The routing connector: a [`SpanSink`] that hands each span to the pipelines of its route.
pub struct RoutingConnector {
    routes: Vec<Route>,
    default: Vec<usize>,
    granularity: Granularity,
    match_once: bool,
    /// `(name, sink)`, in the order first referenced.
    pipelines: Vec<(String, Arc<dyn SpanSink>)>,
    name: String,
    metrics: RoutingMetrics,
    /// Metric counters, resolved once: one per route, then default, then unrouted.
    counters: Vec<Counter>,
}

impl std::fmt::Debug for RoutingConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingConnector")
            .field("name", &self.name)
            .field(
                "routes",
                &self.routes.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .field("pipelines", &self.pipeline_names())
            .field("granularity", &self.granularity)
            .field("match_once", &self.match_once)
            .finish_non_exhaustive()
    }
}

/// Label of the default route in metrics.
pub const DEFAULT_ROUTE: &str = "default";
/// Label of spans dropped because no route matched and there is no default.
pub const UNROUTED: &str = "unrouted";

impl RoutingConnector {
    /// Builds the connector `name` (its `connector` metrics label, e.g. `routing/region`) from
    /// `cfg` and the pipelines (by name) it may send to. Errors name keys relative to the
    /// connector's configuration (`table[1].condition.tenant.regex`, `table[0].pipelines[1]`).
    pub fn new(
        name: impl Into<String>,
        cfg: RoutingConfig,
        sinks: HashMap<String, Arc<dyn SpanSink>>,
    ) -> Result<Self, ConfigError> {
        let mut pipelines: Vec<(String, Arc<dyn SpanSink>)> = Vec::new();
        let mut resolve = |n: &String, key: &str| -> Result<usize, ConfigError> {
            if let Some(i) = pipelines.iter().position(|(p, _)| p == n) {
                return Ok(i);
            }
            let sink = sinks.get(n).ok_or_else(|| {
                let mut known: Vec<&String> = sinks.keys().collect();
                known.sort();
                ConfigError::new(key, format!("unknown pipeline {n:?} (known: {known:?})"))
            })?;
            pipelines.push((n.clone(), sink.clone()));
            Ok(pipelines.len() - 1)
        };
        let (default, routes) = compile(&cfg, &mut resolve)?;
        if default.is_empty() {
            tracing::info!("routing: no default_pipelines; spans matching no route are dropped");
        }
        let mut me = Self {
            routes,
            default,
            granularity: cfg.granularity,
            match_once: cfg.match_once,
            pipelines,
            name: name.into(),
            metrics: RoutingMetrics::default(),
            counters: Vec::new(),
        };
        me.resolve_counters();
        Ok(me)
    }

    /// Counts into `metrics` (default: unregistered metrics of its own).
    pub fn with_metrics(mut self, metrics: RoutingMetrics) -> Self {
        self.metrics = metrics;
        self.resolve_counters();
        self
    }

    fn resolve_counters(&mut self) {
        let names = self
            .routes
            .iter()
            .map(|r| r.name.as_str())
            .chain([DEFAULT_ROUTE, UNROUTED]);
        self.counters = names
            .map(|route| {
                self.metrics
                    .spans
                    .get_or_create(&RouteLabels {
                        connector: self.name.clone(),
                        route: route.to_string(),
                    })
                    .clone()
            })
            .collect();
    }

    /// The pipeline names the connector sends to.
    pub fn pipeline_names(&self) -> Vec<&str> {
        self.pipelines.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The routes (as indexes into `self.routes`) matching `cx`, in table order; at most one with
    /// `match_once`.
    fn decide(&self, cx: &MatchContext<'_>) -> Vec<u16> {
        let mut out = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            if r.condition.matches(cx) {
                out.push(u16::try_from(i).unwrap_or(u16::MAX));
                if self.match_once {
                    break;
                }
            }
        }
        out
    }
}

/// Resolves pipeline names to indexes (each once), naming `key[j]` in errors.
type Resolve<'a> = dyn FnMut(&String, &str) -> Result<usize, ConfigError> + 'a;

fn resolve_all(
    names: &[String],
    key: &str,
    resolve: &mut Resolve<'_>,
) -> Result<Vec<usize>, ConfigError> {
    let mut out = Vec::with_capacity(names.len());
    for (j, n) in names.iter().enumerate() {
        let idx = resolve(n, &format!("{key}[{j}]"))?;
        if !out.contains(&idx) {
            out.push(idx);
        }
    }
    Ok(out)
}

/// Checks and compiles `cfg`: the default pipelines and the routes.
fn compile(
    cfg: &RoutingConfig,
    resolve: &mut Resolve<'_>,
) -> Result<(Vec<usize>, Vec<Route>), ConfigError> {
    let default = resolve_all(&cfg.default_pipelines, "default_pipelines", resolve)?;
    if cfg.table.is_empty() {
        return Err(ConfigError::new(
            "table",
            "no routes (fix: at least one {condition, pipelines})",
        ));
    }
    if cfg.table.len() > usize::from(u16::MAX) {
        return Err(ConfigError::new(
            "table",
            format!("{} routes: at most {}", cfg.table.len(), u16::MAX),
        ));
    }
    let mut routes = Vec::with_capacity(cfg.table.len());
    for (i, r) in cfg.table.iter().enumerate() {
        let path = format!("table[{i}]");
        if r.pipelines.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.pipelines"),
                "empty: a route must name at least one pipeline",
            ));
        }
        let condition = Condition::compile(
            &r.condition,
            &format!("{path}.condition"),
            &cfg.baggage_prefix,
        )?;
        if cfg.granularity == Granularity::Resource {
            if let Some(p) = condition.span_matcher_path() {
                return Err(ConfigError::new(
                    format!("{path}.condition.{p}"),
                    "needs a span: use granularity span or trace, or a resource_attribute",
                ));
            }
        }
        let pipes = resolve_all(&r.pipelines, &format!("{path}.pipelines"), resolve)?;
        let name = r.name.clone().unwrap_or_else(|| path.clone());
        if name == DEFAULT_ROUTE || name == UNROUTED {
            return Err(ConfigError::new(
                format!("{path}.name"),
                format!("{name:?} is reserved for the metrics of unmatched spans"),
            ));
        }
        routes.push(Route {
            name,
            condition,
            pipelines: pipes,
        });
    }
    Ok((default, routes))
}

/// Route decisions, interned: many spans share few decisions.
#[derive(Default)]
struct Decisions {
    ids: HashMap<Vec<u16>, u32>,
    list: Vec<Vec<u16>>,
}

impl Decisions {
    fn intern(&mut self, d: Vec<u16>) -> u32 {
        if let Some(id) = self.ids.get(&d) {
            return *id;
        }
        let id = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        self.list.push(d.clone());
        self.ids.insert(d, id);
        id
    }
}

#[async_trait::async_trait]
impl SpanSink for RoutingConnector {
    async fn consume(&self, batch: SpanBatch) -> Result<(), SinkError> {
        if batch.span_count() == 0 {
            return Ok(());
        }
        let tenant = batch.tenant.as_str();
        let mut decisions = Decisions::default();
        // One decision id per span, in batch order (resource, scope, span).
        let mut per_span: Vec<u32> = Vec::with_capacity(batch.span_count());
        let mut by_trace: HashMap<&[u8], u32> = HashMap::new();
        for rs in &batch.resource_spans {
            let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            let spans = rs.scope_spans.iter().flat_map(|ss| ss.spans.iter());
            match self.granularity {
                Granularity::Resource => {
                    let cx = MatchContext {
                        tenant,
                        resource,
                        span: None,
                    };
                    let id = decisions.intern(self.decide(&cx));
                    per_span.extend(spans.map(|_| id));
                }
                Granularity::Span => {
                    for s in spans {
                        let cx = MatchContext {
                            tenant,
                            resource,
                            span: Some(&s.attributes),
                        };
                        per_span.push(decisions.intern(self.decide(&cx)));
                    }
                }
                Granularity::Trace => {
                    for s in spans {
                        let id = match by_trace.get(s.trace_id.as_slice()) {
                            Some(id) => *id,
                            None => {
                                let cx = MatchContext {
                                    tenant,
                                    resource,
                                    span: Some(&s.attributes),
                                };
                                let id = decisions.intern(self.decide(&cx));
                                by_trace.insert(s.trace_id.as_slice(), id);
                                id
                            }
                        };
                        per_span.push(id);
                    }
                }
            }
        }
        drop(by_trace);

        // Metrics, and for each decision the pipelines it sends to.
        let n_routes = self.routes.len();
        let mut per_decision_count = vec![0u64; decisions.list.len()];
        for id in &per_span {
            if let Some(c) = per_decision_count.get_mut(*id as usize) {
                *c += 1;
            }
        }
        let mut targets: Vec<Vec<bool>> = Vec::with_capacity(decisions.list.len());
        for (d, count) in decisions.list.iter().zip(&per_decision_count) {
            let mut t = vec![false; self.pipelines.len()];
            if d.is_empty() {
                let counter = if self.default.is_empty() {
                    n_routes + 1
                } else {
                    n_routes
                };
                if let Some(c) = self.counters.get(counter) {
                    c.inc_by(*count);
                }
                for p in &self.default {
                    t[*p] = true;
                }
            } else {
                for r in d {
                    let r = *r as usize;
                    if let Some(c) = self.counters.get(r) {
                        c.inc_by(*count);
                    }
                    if let Some(route) = self.routes.get(r) {
                        for p in &route.pipelines {
                            t[*p] = true;
                        }
                    }
                }
            }
            targets.push(t);
        }

        let destinations: Vec<usize> = (0..self.pipelines.len())
            .filter(|p| targets.iter().any(|t| t[*p]))
            .collect();
        let mut outgoing: Vec<(usize, SpanBatch)> = Vec::with_capacity(destinations.len());
        if targets.len() == 1 {
            // Every span has the same destinations: the batch goes as it is.
            let mut rest = Some(batch);
            for (i, p) in destinations.iter().enumerate() {
                let b = if i + 1 == destinations.len() {
                    rest.take()
                } else {
                    rest.clone()
                };
                if let Some(b) = b {
                    outgoing.push((*p, b));
                }
            }
        } else {
            for p in &destinations {
                outgoing.push((*p, select(&batch, &per_span, |id| targets[id as usize][*p])));
            }
        }

        let sends = outgoing.into_iter().map(|(p, b)| {
            let (name, sink) = &self.pipelines[p];
            async move { (name, sink.consume(b).await) }
        });
        let results = futures::future::join_all(sends).await;
        let mut first = None;
        for (name, r) in results {
            if let Err(e) = r {
                tracing::debug!(connector = %self.name, pipeline = %name, error = %e, "routing: pipeline refused a batch");
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A copy of `batch` with the spans whose decision passes `keep`, keeping the resource / scope
/// structure (empty scopes and resources are left out).
fn select(batch: &SpanBatch, per_span: &[u32], keep: impl Fn(u32) -> bool) -> SpanBatch {
    let mut i = 0usize;
    let mut resource_spans = Vec::new();
    for rs in &batch.resource_spans {
        let mut scopes = Vec::new();
        for ss in &rs.scope_spans {
            let mut spans: Vec<Span> = Vec::new();
            for s in &ss.spans {
                if per_span.get(i).is_some_and(|id| keep(*id)) {
                    spans.push(s.clone());
                }
                i += 1;
            }
            if !spans.is_empty() {
                scopes.push(ScopeSpans {
                    scope: ss.scope.clone(),
                    spans,
                    schema_url: ss.schema_url.clone(),
                });
            }
        }
        if !scopes.is_empty() {
            resource_spans.push(ResourceSpans {
                resource: rs.resource.clone(),
                scope_spans: scopes,
                schema_url: rs.schema_url.clone(),
            });
        }
    }
    SpanBatch::new(batch.tenant.clone(), resource_spans).with_metadata(batch.metadata.clone())
}
