//! The pipeline graph of `clew.yaml`, in the OpenTelemetry Collector's shape: named receivers,
//! processors, exporters and connectors, wired by `service.pipelines` (`traces` and `traces/NAME`,
//! each `receivers → processors → exporters`). A connector (`routing`) is an exporter of the
//! pipelines that feed it and a receiver of the pipelines it routes to.
//!
//! This module only reads and checks the configuration (unknown or unused components, references,
//! cycles — every error names the key and the fix); `pipelines.rs` builds it.

use crate::config::ProcessorConfig;
use anyhow::bail;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// Receivers that take traffic from the network (the rest of a pipeline's receivers are connectors).
/// (`kafka` reads a topic rather than listening, but it is wired the same way.)
pub const NETWORK_RECEIVERS: &[&str] = &["otlp", "zipkin", "kafka"];
pub const EXPORTER_TYPES: &[&str] = &["clew_store", "otlp", "otlphttp", "kafka", "debug"];
pub const CONNECTOR_TYPES: &[&str] = &["routing"];
/// The local store: the default exporter of a pipeline that names none.
pub const STORE_EXPORTER: &str = "clew_store";

/// `service.pipelines.<name>` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSpec {
    /// Default (pipeline `traces` only): every enabled network receiver.
    pub receivers: Option<Vec<String>>,
    /// Processor names from `processors:`, in the order they run.
    pub processors: Vec<String>,
    /// Default: `[clew_store]`.
    pub exporters: Option<Vec<String>>,
}

/// A configured exporter.
#[derive(Debug, Clone)]
pub enum ExporterConfig {
    ClewStore,
    Otlp(Box<clew_export::OtlpExporterConfig>),
    OtlpHttp(Box<clew_export::OtlpExporterConfig>),
    Debug(clew_export::DebugConfig),
    Kafka(Box<clew_kafka::KafkaExporterConfig>),
}

/// A configured connector.
#[derive(Debug, Clone)]
pub enum ConnectorConfig {
    Routing(clew_processors::routing::RoutingConfig),
}

/// One checked pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub name: String,
    pub receivers: Vec<String>,
    pub processors: Vec<(String, ProcessorConfig)>,
    pub exporters: Vec<String>,
}

/// The checked graph.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// In an order where every pipeline comes after the pipelines a connector of it feeds (build
    /// order: downstream first).
    pub pipelines: Vec<PipelineConfig>,
    pub exporters: BTreeMap<String, ExporterConfig>,
    pub connectors: BTreeMap<String, ConnectorConfig>,
}

impl Graph {
    /// Pipelines that list `receiver` (a network receiver or a connector).
    pub fn pipelines_fed_by(&self, receiver: &str) -> Vec<&PipelineConfig> {
        self.pipelines
            .iter()
            .filter(|p| p.receivers.iter().any(|r| r == receiver))
            .collect()
    }
}

fn type_of(name: &str) -> &str {
    name.split('/').next().unwrap_or_default()
}

/// Parses `exporters:` by type.
pub fn parse_exporters(
    map: &serde_yaml::Mapping,
) -> anyhow::Result<BTreeMap<String, ExporterConfig>> {
    let mut out = BTreeMap::new();
    for (name, value) in map {
        let Some(name) = name.as_str() else {
            bail!("key `exporters`: exporter names must be strings (fix: e.g. `otlp/eu:`)");
        };
        let key = format!("exporters.{name}");
        check_name(&key, name)?;
        let cfg = match type_of(name) {
            "clew_store" => {
                if value.as_mapping().is_some_and(|m| !m.is_empty()) {
                    bail!("key `{key}`: the local store takes no settings here (fix: configure it under `storage:`, write `{name}: {{}}`)");
                }
                ExporterConfig::ClewStore
            }
            "otlp" => ExporterConfig::Otlp(Box::new(section(&key, value)?)),
            "otlphttp" => ExporterConfig::OtlpHttp(Box::new(section(&key, value)?)),
            "debug" => ExporterConfig::Debug(section(&key, value)?),
            "kafka" => {
                let c: clew_kafka::KafkaExporterConfig = section(&key, value)?;
                c.validate()
                    .map_err(|e| anyhow::anyhow!("key `{key}.{}`: {}", e.key, e.message))?;
                ExporterConfig::Kafka(Box::new(c))
            }
            other => bail!(
                "key `{key}`: unknown exporter type {other:?} (fix: one of {}; the type is the part before `/`)",
                EXPORTER_TYPES.join(", ")
            ),
        };
        out.insert(name.to_string(), cfg);
    }
    out.entry(STORE_EXPORTER.to_string())
        .or_insert(ExporterConfig::ClewStore);
    Ok(out)
}

/// Parses `connectors:` by type.
pub fn parse_connectors(
    map: &serde_yaml::Mapping,
) -> anyhow::Result<BTreeMap<String, ConnectorConfig>> {
    let mut out = BTreeMap::new();
    for (name, value) in map {
        let Some(name) = name.as_str() else {
            bail!(
                "key `connectors`: connector names must be strings (fix: e.g. `routing/region:`)"
            );
        };
        let key = format!("connectors.{name}");
        check_name(&key, name)?;
        let cfg = match type_of(name) {
            "routing" => {
                let c: clew_processors::routing::RoutingConfig = section(&key, value)?;
                c.validate()
                    .map_err(|e| anyhow::anyhow!("key `{key}.{}`: {}", e.key, e.message))?;
                ConnectorConfig::Routing(c)
            }
            other => bail!(
                "key `{key}`: unknown connector type {other:?} (fix: one of {})",
                CONNECTOR_TYPES.join(", ")
            ),
        };
        out.insert(name.to_string(), cfg);
    }
    Ok(out)
}

fn check_name(key: &str, name: &str) -> anyhow::Result<()> {
    if name.split('/').nth(1).is_some_and(str::is_empty) || name.is_empty() {
        bail!(
            "key `{key}`: empty name after `/` (fix: e.g. `{}/eu`)",
            type_of(name)
        );
    }
    Ok(())
}

/// A named component's section (`processors.X`, `exporters.X`, `connectors.X`) as its typed
/// config; an empty section is `{}`; errors name the key path inside it and the fix.
pub fn section<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &serde_yaml::Value,
) -> anyhow::Result<T> {
    let value = match value {
        serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
        v => v.clone(),
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let full = if path == "." || path.is_empty() {
            key.to_string()
        } else {
            format!("{key}.{path}")
        };
        let hint = if inner.contains("unknown field") {
            " (fix: correct the spelling to one of the keys listed)"
        } else if inner.contains("missing field") {
            " (fix: add the missing key)"
        } else if inner.contains("invalid type") {
            " (fix: give a value of the type named)"
        } else {
            ""
        };
        anyhow::anyhow!("key `{full}`: {inner}{hint}")
    })
}

/// Checks `service.pipelines` against the defined components and returns the graph in build
/// order. `network_receivers` are the enabled ones (`otlp`, `zipkin`); `processors` the parsed
/// `processors:`. Problems that do not stop start-up go to `warnings`.
pub fn check(
    specs: &BTreeMap<String, PipelineSpec>,
    network_receivers: &[&str],
    processors: &[(String, ProcessorConfig)],
    exporters: BTreeMap<String, ExporterConfig>,
    connectors: BTreeMap<String, ConnectorConfig>,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Graph> {
    let default_specs;
    let specs = if specs.is_empty() {
        default_specs = BTreeMap::from([("traces".to_string(), PipelineSpec::default())]);
        &default_specs
    } else {
        specs
    };
    let mut pipelines = Vec::new();
    for (name, spec) in specs {
        let key = format!("service.pipelines.{name}");
        if type_of(name) != "traces" {
            bail!("key `{key}`: Clew runs traces pipelines only (fix: name it `traces` or `traces/NAME`)");
        }
        check_name(&key, name)?;
        let receivers = match &spec.receivers {
            Some(r) => r.clone(),
            None if name == "traces" => network_receivers.iter().map(|s| s.to_string()).collect(),
            None => bail!("key `{key}.receivers`: missing (fix: list where its spans come from, e.g. `[otlp]`, or `[routing]` for a routing connector's pipeline)"),
        };
        if receivers.is_empty() {
            bail!("key `{key}.receivers`: empty, so nothing would ever enter this pipeline (fix: list a receiver or a connector)");
        }
        for (i, r) in receivers.iter().enumerate() {
            let rkey = format!("{key}.receivers[{i}]");
            if receivers[..i].contains(r) {
                bail!("key `{rkey}`: `{r}` is listed twice (fix: list each receiver once)");
            }
            // `kafka/NAME` receivers are network receivers when defined.
            if NETWORK_RECEIVERS.contains(&r.as_str()) || network_receivers.contains(&r.as_str()) {
                if !network_receivers.contains(&r.as_str()) {
                    bail!("key `{rkey}`: receiver `{r}` is turned off under `receivers:` (fix: configure it there, or remove it from this pipeline)");
                }
            } else if !connectors.contains_key(r) {
                bail!(
                    "key `{rkey}`: `{r}` is neither a receiver nor a defined connector (fix: one of {}{})",
                    network_receivers.join(", "),
                    list_suffix(connectors.keys())
                );
            }
        }
        let mut procs = Vec::new();
        for (i, p) in spec.processors.iter().enumerate() {
            let pkey = format!("{key}.processors[{i}]");
            if spec.processors[..i].contains(p) {
                bail!(
                    "key `{pkey}`: processor `{p}` is listed twice (fix: list each processor once)"
                );
            }
            match processors.iter().find(|(n, _)| n == p) {
                Some((n, c)) => procs.push((n.clone(), c.clone())),
                None => bail!(
                    "key `{pkey}`: processor `{p}` is not defined (fix: define it under `processors:`{})",
                    list_suffix(processors.iter().map(|(n, _)| n))
                ),
            }
        }
        let exps = spec
            .exporters
            .clone()
            .unwrap_or_else(|| vec![STORE_EXPORTER.to_string()]);
        if exps.is_empty() {
            bail!("key `{key}.exporters`: empty, so its spans would go nowhere (fix: e.g. `[clew_store]`)");
        }
        for (i, e) in exps.iter().enumerate() {
            let ekey = format!("{key}.exporters[{i}]");
            if exps[..i].contains(e) {
                bail!("key `{ekey}`: `{e}` is listed twice (fix: list each exporter once)");
            }
            if !exporters.contains_key(e) && !connectors.contains_key(e) {
                bail!(
                    "key `{ekey}`: exporter `{e}` is not defined (fix: define it under `exporters:` or `connectors:`{})",
                    list_suffix(exporters.keys().chain(connectors.keys()))
                );
            }
        }
        pipelines.push(PipelineConfig {
            name: name.clone(),
            receivers,
            processors: procs,
            exporters: exps,
        });
    }

    // Connectors: used on both sides, and (routing) naming pipelines that take it as a receiver.
    for (name, c) in &connectors {
        let key = format!("connectors.{name}");
        let feeds = pipelines.iter().any(|p| p.exporters.contains(name));
        let fed: BTreeSet<&str> = pipelines
            .iter()
            .filter(|p| p.receivers.contains(name))
            .map(|p| p.name.as_str())
            .collect();
        if !feeds && fed.is_empty() {
            warnings.push(format!("key `{key}`: defined but used by no pipeline, so it does nothing (fix: use it or remove it)"));
            continue;
        }
        if !feeds {
            bail!("key `{key}`: no pipeline exports to it, so the pipelines it feeds get nothing (fix: add `{name}` to a pipeline's `exporters`)");
        }
        if fed.is_empty() {
            bail!("key `{key}`: no pipeline takes it as a receiver, so what it routes is lost (fix: add `{name}` to the `receivers` of the pipelines it routes to)");
        }
        match c {
            ConnectorConfig::Routing(r) => {
                for (rkey, target) in r.pipelines_referenced_with_keys() {
                    if !fed.contains(target.as_str()) {
                        bail!(
                            "key `{key}.{rkey}`: pipeline `{target}` {} (fix: one of {})",
                            if specs.contains_key(&target) {
                                format!("does not list `{name}` in its receivers")
                            } else {
                                "is not defined".to_string()
                            },
                            fed.iter().copied().collect::<Vec<_>>().join(", ")
                        );
                    }
                }
            }
        }
    }

    // Unused components.
    for (n, _) in processors {
        if !pipelines
            .iter()
            .any(|p| p.processors.iter().any(|(m, _)| m == n))
        {
            warnings.push(format!("key `processors.{n}`: defined but not used in any pipeline (service.pipelines.*.processors), so it does nothing (fix: add it there or remove it)"));
        }
    }
    for n in exporters.keys() {
        if n != STORE_EXPORTER && !pipelines.iter().any(|p| p.exporters.contains(n)) {
            warnings.push(format!("key `exporters.{n}`: defined but not used in any pipeline, so it does nothing (fix: add it to a pipeline's `exporters` or remove it)"));
        }
    }
    for r in network_receivers {
        if !pipelines.iter().any(|p| p.receivers.iter().any(|x| x == r)) {
            warnings.push(format!("receiver `{r}` is in no pipeline, so it is not started (fix: add it to a pipeline's `receivers`, or turn it off under `receivers:`)"));
        }
    }

    let order = build_order(&pipelines, &connectors)?;
    let pipelines = order.into_iter().map(|i| pipelines[i].clone()).collect();
    Ok(Graph {
        pipelines,
        exporters,
        connectors,
    })
}

fn list_suffix<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        String::new()
    } else {
        format!(", or use one of {}", v.join(", "))
    }
}

/// Pipelines ordered downstream first; a cycle through connectors is an error naming it.
fn build_order(
    pipelines: &[PipelineConfig],
    connectors: &BTreeMap<String, ConnectorConfig>,
) -> anyhow::Result<Vec<usize>> {
    // Edge p → q when p exports to a connector that q receives from.
    let next = |p: &PipelineConfig| -> Vec<(usize, String)> {
        p.exporters
            .iter()
            .filter(|e| connectors.contains_key(*e))
            .flat_map(|c| {
                pipelines
                    .iter()
                    .enumerate()
                    .filter(move |(_, q)| q.receivers.contains(c))
                    .map(move |(j, _)| (j, c.clone()))
            })
            .collect()
    };
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; pipelines.len()];
    let mut order = Vec::new();
    fn visit(
        i: usize,
        pipelines: &[PipelineConfig],
        next: &dyn Fn(&PipelineConfig) -> Vec<(usize, String)>,
        marks: &mut [Mark],
        path: &mut Vec<String>,
        order: &mut Vec<usize>,
    ) -> anyhow::Result<()> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Active => {
                path.push(pipelines[i].name.clone());
                bail!("key `service.pipelines`: the pipelines form a cycle through connectors: {} (fix: a connector's pipelines must not lead back to it)", path.join(" → "));
            }
            Mark::New => {}
        }
        marks[i] = Mark::Active;
        path.push(pipelines[i].name.clone());
        for (j, via) in next(&pipelines[i]) {
            path.push(via);
            visit(j, pipelines, next, marks, path, order)?;
            path.pop();
        }
        path.pop();
        marks[i] = Mark::Done;
        order.push(i);
        Ok(())
    }
    for i in 0..pipelines.len() {
        let mut path = Vec::new();
        visit(i, pipelines, &next, &mut marks, &mut path, &mut order)?;
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn err(yaml: &str) -> String {
        format!("{:#}", Config::parse(yaml, "c.yaml").unwrap_err())
    }

    #[test]
    fn default_graph_is_one_pipeline_into_the_store() {
        let c = Config::parse("", "c.yaml").unwrap();
        assert_eq!(c.graph.pipelines.len(), 1);
        let p = &c.graph.pipelines[0];
        assert_eq!(p.name, "traces");
        assert_eq!(p.receivers, ["otlp", "zipkin"]);
        assert_eq!(p.exporters, ["clew_store"]);
    }

    #[test]
    fn routing_graph_builds_downstream_first() {
        let c = Config::parse(
            "connectors:\n  routing:\n    default_pipelines: [traces/b]\n    table: [{condition: {tenant: {equals: x}}, pipelines: [traces/b]}]\n\
             service:\n  pipelines:\n    traces:\n      exporters: [routing]\n    traces/b:\n      receivers: [routing]\n",
            "c.yaml",
        )
        .unwrap();
        let names: Vec<&str> = c.graph.pipelines.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["traces/b", "traces"]);
    }

    #[test]
    fn graph_errors_name_the_key_and_the_fix() {
        let pipe = |body: &str| format!("service:\n  pipelines:\n{body}");
        let cases = [
            (pipe("    traces:\n      exporters: [otlp/nope]\n"), "key `service.pipelines.traces.exporters[0]`: exporter `otlp/nope` is not defined"),
            (pipe("    metrics:\n      receivers: [otlp]\n"), "key `service.pipelines.metrics`: Clew runs traces pipelines only"),
            (pipe("    traces/x:\n      exporters: [clew_store]\n"), "key `service.pipelines.traces/x.receivers`: missing"),
            (pipe("    traces:\n      receivers: [jaeger]\n"), "key `service.pipelines.traces.receivers[0]`: `jaeger` is neither a receiver nor a defined connector"),
            (pipe("    traces:\n      receivers: [kafka]\n"), "key `service.pipelines.traces.receivers[0]`: receiver `kafka` is turned off under `receivers:` (fix: configure it there"),
            ("receivers:\n  kafka: {brokers: [nohost]}\n".to_string(), "key `receivers.kafka.brokers[0]`: \"nohost\" is not HOST:PORT (fix:"),
            ("exporters:\n  kafka: {producer: {required_acks: 2}}\n".to_string(), "key `exporters.kafka.producer.required_acks`"),
            ("exporters:\n  smtp: {}\n".to_string(), "key `exporters.smtp`: unknown exporter type"),
            ("exporters:\n  otlp/x: {endpointt: a}\n".to_string(), "key `exporters.otlp/x.endpointt`: unknown field `endpointt`"),
            (
                format!("connectors:\n  routing: {{default_pipelines: [traces/b], table: [{{condition: {{tenant: {{equals: x}}}}, pipelines: [traces/b]}}]}}\n{}", pipe("    traces:\n      exporters: [clew_store]\n    traces/b:\n      receivers: [routing]\n")),
                "key `connectors.routing`: no pipeline exports to it",
            ),
            (
                format!("connectors:\n  routing: {{default_pipelines: [traces/c], table: [{{condition: {{tenant: {{equals: x}}}}, pipelines: [traces/b]}}]}}\n{}", pipe("    traces:\n      exporters: [routing]\n    traces/b:\n      receivers: [routing]\n")),
                "pipeline `traces/c` is not defined",
            ),
            (
                format!("connectors:\n  routing: {{default_pipelines: [traces], table: [{{condition: {{tenant: {{equals: x}}}}, pipelines: [traces]}}]}}\n{}", pipe("    traces:\n      receivers: [otlp, routing]\n      exporters: [routing]\n")),
                "the pipelines form a cycle through connectors: traces → routing → traces",
            ),
        ];
        for (yaml, want) in cases {
            let e = err(&yaml);
            assert!(e.contains(want), "{yaml}\n→ {e}\nwanted: {want}");
            assert!(e.contains("fix") || e.contains("unknown field"), "{e}");
        }
    }

    #[test]
    fn unused_components_are_warnings() {
        let c = Config::parse(
            "exporters:\n  debug: {}\nprocessors:\n  attributes/x: {actions: [{key: a, action: delete}]}\n",
            "c.yaml",
        )
        .unwrap();
        assert!(
            c.warnings.iter().any(|w| w.contains("exporters.debug")),
            "{:?}",
            c.warnings
        );
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("processors.attributes/x")),
            "{:?}",
            c.warnings
        );
    }
}
