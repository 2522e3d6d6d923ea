//! The proxy's YAML configuration (`clew proxy --config FILE`), with the OpenTelemetry
//! Collector's key names where one exists (`endpoint`, `tls.cert_file`, `exporters.otlp`,
//! `sending_queue`, `timeout`). Unknown keys are errors; every error names the file, the key and
//! the fix. See `docs/proxy.md` for the reference.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clew_export::OtlpExporterConfig;
use clew_security::tls::{TlsClientSettings, TlsServerSettings};
use serde::{Deserialize, Deserializer};

use crate::route::RouteTemplate;

/// Limits on lists in the file: a config past them is a mistake, not a deployment.
pub const MAX_ROUTES: usize = 1024;
pub const MAX_DESTINATIONS: usize = 256;
pub const MAX_EGRESS_ROUTES: usize = 64;
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A configuration problem: the file, the key path and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: key `{key}`: {message}")]
pub struct ConfigError {
    pub origin: String,
    pub key: String,
    /// What is wrong, ending with `(fix: …)`.
    pub message: String,
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration ({e}) (fix: write e.g. \"5s\", \"500ms\" or \"2m\")"
        ))
    })
}

fn de_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{s:?} is not a listen address (fix: write IP:PORT, e.g. \"127.0.0.1:8080\")"
        ))
    })
}

/// A context header format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// W3C `traceparent` + `tracestate` (and W3C `baggage`).
    Tracecontext,
    /// B3 single header `b3`.
    B3,
    /// B3 multi headers `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`, …
    B3multi,
    /// Jaeger `uber-trace-id` (+ `uberctx-*` baggage).
    Jaeger,
    /// `X-Request-ID` / `X-Correlation-ID` (see `request_id_headers`): a trace id derived from it.
    RequestId,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Tracecontext => "tracecontext",
            Format::B3 => "b3",
            Format::B3multi => "b3multi",
            Format::Jaeger => "jaeger",
            Format::RequestId => "request_id",
        }
    }
}

/// How the ingress forwards context to the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardFormat {
    /// The formats that came in (a new trace: W3C), now naming the proxy's SERVER span as parent.
    Keep,
    Tracecontext,
    B3,
    B3multi,
    Jaeger,
    /// No context header at all (only `X-Request-ID`, when `forward.request_id` is on).
    None,
}

/// `service:` — who the spans are recorded for (the legacy app).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `service.name` of the spans (the app's name).
    pub name: String,
    /// More resource attributes (`deployment.environment.name`, `service.version`, …).
    #[serde(default)]
    pub resource: std::collections::BTreeMap<String, String>,
}

/// `upstream:` — where a listener forwards to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://host:port` or `https://host:port` (a path prefix is not supported).
    pub endpoint: String,
    /// `http1` (default) or `http2` (h2c on `http://`, ALPN on `https://`).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Client TLS for an `https://` endpoint (the Collector's `configtls` client keys).
    #[serde(default)]
    pub tls: TlsClientSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    Http2,
}

/// `timeouts:` of a listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP (+TLS) connect to the upstream; past it → 502.
    #[serde(deserialize_with = "de_duration")]
    pub connect: Duration,
    /// From sending the request to the upstream's response headers; past it → 504.
    #[serde(deserialize_with = "de_duration")]
    pub response_header: Duration,
    /// Idle pooled upstream connections are closed after this.
    #[serde(deserialize_with = "de_duration")]
    pub idle: Duration,
    /// A client must send its request headers within this (HTTP/1).
    #[serde(deserialize_with = "de_duration")]
    pub request_header: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            response_header: Duration::from_secs(60),
            idle: Duration::from_secs(90),
            request_header: Duration::from_secs(30),
        }
    }
}

/// `ingress.forward:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    pub format: ForwardFormat,
    /// Set the first `request_id_headers` header to the trace id when the request had none.
    pub request_id: bool,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            format: ForwardFormat::Keep,
            request_id: true,
        }
    }
}

/// `ingress:` — the reverse proxy in front of the app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    #[serde(deserialize_with = "de_endpoint")]
    pub endpoint: SocketAddr,
    /// Server TLS (`cert_file`, `key_file`, `client_ca_file`, …).
    #[serde(default)]
    pub tls: Option<TlsServerSettings>,
    pub upstream: UpstreamConfig,
    /// Which incoming formats are read, first valid one wins.
    #[serde(default = "default_extract")]
    pub extract: Vec<Format>,
    #[serde(default)]
    pub forward: ForwardConfig,
    /// Route templates for `http.route`: `/users/{id}`, `/static/*` (first match wins).
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub timeouts: Timeouts,
}

fn default_extract() -> Vec<Format> {
    vec![
        Format::Tracecontext,
        Format::B3,
        Format::B3multi,
        Format::Jaeger,
        Format::RequestId,
    ]
}

fn default_request_id_headers() -> Vec<String> {
    vec!["X-Request-ID".into(), "X-Correlation-ID".into()]
}

/// Baggage allowed to a destination (`clew_propagation::policy::DestinationRule`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaggageRuleConfig {
    /// Keys sent as they are (exact or `prefix*`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Keys sent only as HMAC pseudonyms (dropped without `egress.baggage_hmac_key_file`).
    #[serde(default)]
    pub pseudonymize: Vec<String>,
    #[serde(default)]
    pub max_members: Option<usize>,
    #[serde(default)]
    pub max_bytes: Option<usize>,
}

/// `egress.destinations[]` (and `egress.default_destination`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Host patterns: exact or `*.suffix` (ignored in `default_destination`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The format the destination understands.
    #[serde(default = "default_dest_format")]
    pub format: Format,
    /// `false`: a trust boundary (`egress.untrusted_action` applies: no baggage, or nothing).
    #[serde(default = "yes")]
    pub trusted: bool,
    #[serde(default)]
    pub baggage: BaggageRuleConfig,
}

fn yes() -> bool {
    true
}

fn default_dest_format() -> Format {
    Format::Tracecontext
}

impl Default for DestinationConfig {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            format: Format::Tracecontext,
            trusted: true,
            baggage: BaggageRuleConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UntrustedAction {
    #[default]
    StripBaggage,
    StripAll,
}

/// `egress.routes[]`: a listener that forwards everything to one upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRoute {
    #[serde(deserialize_with = "de_endpoint")]
    pub endpoint: SocketAddr,
    pub upstream: UpstreamConfig,
}

/// `egress.forward_proxy:`: an HTTP proxy (`HTTP_PROXY=http://…`) for absolute-form requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardProxyConfig {
    #[serde(deserialize_with = "de_endpoint")]
    pub endpoint: SocketAddr,
    /// Client TLS for `https://` absolute-form targets (rare: most clients use CONNECT, which is
    /// refused because context cannot be injected into a tunnel).
    #[serde(default)]
    pub tls: TlsClientSettings,
}

/// `egress:` — the app's outgoing calls.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    #[serde(default)]
    pub forward_proxy: Option<ForwardProxyConfig>,
    #[serde(default)]
    pub routes: Vec<EgressRoute>,
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
    #[serde(default)]
    pub default_destination: DestinationConfig,
    #[serde(default)]
    pub untrusted_action: UntrustedAction,
    /// A file holding the HMAC secret for `baggage.pseudonymize` keys.
    #[serde(default)]
    pub baggage_hmac_key_file: Option<std::path::PathBuf>,
    /// Tie an outgoing call without a request id to the only incoming request in flight.
    #[serde(default = "yes")]
    pub single_in_flight: bool,
    #[serde(default)]
    pub timeouts: Timeouts,
}

/// `sampling:` — head sampling of traces the proxy starts (incoming sampled flags are kept).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Fraction of new traces recorded, 0.0–1.0 (decided on the trace id: consistent).
    pub ratio: f64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self { ratio: 1.0 }
    }
}

/// `batch:` — spans are exported in batches (the Collector's `batch` processor keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    pub send_batch_size: usize,
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Spans waiting for export at most; more are dropped (counted, logged), never blocking traffic.
    pub max_queue_spans: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            send_batch_size: 512,
            timeout: Duration::from_secs(1),
            max_queue_spans: 65_536,
        }
    }
}

/// `exporters:` — exactly one of `otlp` (gRPC) or `otlphttp`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportersConfig {
    #[serde(default)]
    pub otlp: Option<OtlpExporterConfig>,
    #[serde(default)]
    pub otlphttp: Option<OtlpExporterConfig>,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    pub service: ServiceConfig,
    #[serde(default)]
    pub ingress: Option<IngressConfig>,
    #[serde(default)]
    pub egress: EgressConfig,
    /// Request-id headers, read in this order (`X-Request-ID`, `X-Correlation-ID`).
    #[serde(default = "default_request_id_headers")]
    pub request_id_headers: Vec<String>,
    #[serde(default)]
    pub sampling: SamplingConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    pub exporters: ExportersConfig,
    /// How long shutdown waits for requests in flight before closing them.
    #[serde(default = "default_shutdown", deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
    /// Directory for the exporter's durable sending queue, when `sending_queue.enabled: true`.
    #[serde(default)]
    pub data_dir: Option<std::path::PathBuf>,
}

fn default_shutdown() -> Duration {
    Duration::from_secs(10)
}

impl ProxyConfig {
    /// Reads and checks `path`; relative TLS paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let err = |message: String| ConfigError {
            origin: origin.clone(),
            key: "(file)".into(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| {
            err(format!(
                "cannot read: {e} (fix: pass an existing YAML file)"
            ))
        })?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(err(format!(
                "{} bytes is more than a config file may hold ({MAX_CONFIG_BYTES}) (fix: point at the proxy's YAML file)",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(format!(
                "cannot read: {e} (fix: save the file as UTF-8 YAML)"
            ))
        })?;
        let mut cfg = Self::parse(&text, &origin)?;
        if let Some(base) = path.parent() {
            cfg.resolve_paths(base);
        }
        Ok(cfg)
    }

    /// Parses and checks YAML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| ConfigError {
            origin: origin.into(),
            key: "(file)".into(),
            message: format!("not valid YAML: {e} (fix: check indentation and quoting)"),
        })?;
        default_no_sending_queue(&mut value);
        let cfg: ProxyConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            let hint = if inner.contains("unknown field") {
                " (fix: correct the spelling to one of the keys listed; see docs/proxy.md)"
            } else if inner.contains("unknown variant") {
                " (fix: use one of the values listed)"
            } else if inner.contains("missing field") {
                " (fix: add the key; see docs/proxy.md)"
            } else {
                ""
            };
            ConfigError {
                origin: origin.into(),
                key,
                message: format!("{inner}{hint}"),
            }
        })?;
        cfg.validate().map_err(|(key, message)| ConfigError {
            origin: origin.into(),
            key,
            message,
        })?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        if let Some(i) = &mut self.ingress {
            if let Some(t) = &mut i.tls {
                t.resolve_paths(base);
            }
            i.upstream.tls.resolve_paths(base);
        }
        for r in &mut self.egress.routes {
            r.upstream.tls.resolve_paths(base);
        }
        if let Some(f) = &mut self.egress.forward_proxy {
            f.tls.resolve_paths(base);
        }
        if let Some(p) = &mut self.egress.baggage_hmac_key_file {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(p) = &mut self.data_dir {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for e in [&mut self.exporters.otlp, &mut self.exporters.otlphttp]
            .into_iter()
            .flatten()
        {
            e.tls.resolve_paths(base);
        }
    }

    /// The exporter: (`otlp` or `otlphttp`, its config).
    pub fn exporter(&self) -> (&'static str, &OtlpExporterConfig) {
        match (&self.exporters.otlp, &self.exporters.otlphttp) {
            (Some(c), _) => ("otlp", c),
            (None, Some(c)) => ("otlphttp", c),
            // validate() refuses a config without either.
            (None, None) => unreachable!("validated: one exporter"),
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if self.service.name.trim().is_empty() {
            return Err((
                "service.name".into(),
                "is empty (fix: name the app the spans are recorded for, e.g. `billing`)".into(),
            ));
        }
        match (&self.exporters.otlp, &self.exporters.otlphttp) {
            (None, None) => return Err((
                "exporters".into(),
                "no exporter (fix: add `otlp: {endpoint: 127.0.0.1:4317, tls: {insecure: true}}`)"
                    .into(),
            )),
            (Some(_), Some(_)) => {
                return Err((
                    "exporters".into(),
                    "both `otlp` and `otlphttp` (fix: keep one)".into(),
                ))
            }
            _ => {}
        }
        let (kind, exp) = self.exporter();
        if exp.endpoint.trim().is_empty() {
            return Err((
                format!("exporters.{kind}.endpoint"),
                "is empty (fix: e.g. `127.0.0.1:4317`)".into(),
            ));
        }
        if exp.sending_queue.enabled
            && exp.sending_queue.storage.directory.is_none()
            && self.data_dir.is_none()
        {
            return Err((
                format!("exporters.{kind}.sending_queue"),
                "a durable queue needs a directory (fix: set `data_dir:` or `sending_queue.storage.directory`, or `sending_queue.enabled: false`)".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.sampling.ratio) || self.sampling.ratio.is_nan() {
            return Err((
                "sampling.ratio".into(),
                format!(
                    "{} is not a fraction (fix: a number from 0.0 to 1.0)",
                    self.sampling.ratio
                ),
            ));
        }
        if self.batch.send_batch_size == 0 || self.batch.send_batch_size > 65_536 {
            return Err((
                "batch.send_batch_size".into(),
                "must be 1–65536 (fix: e.g. 512)".into(),
            ));
        }
        if self.batch.timeout.is_zero() {
            return Err((
                "batch.timeout".into(),
                "must be above 0 (fix: e.g. 1s)".into(),
            ));
        }
        if self.batch.max_queue_spans < self.batch.send_batch_size {
            return Err((
                "batch.max_queue_spans".into(),
                "is below send_batch_size (fix: raise it, e.g. 65536)".into(),
            ));
        }
        if self.request_id_headers.is_empty() || self.request_id_headers.len() > 8 {
            return Err((
                "request_id_headers".into(),
                "must name 1–8 headers (fix: e.g. [X-Request-ID, X-Correlation-ID])".into(),
            ));
        }
        for (i, h) in self.request_id_headers.iter().enumerate() {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return Err((
                    format!("request_id_headers[{i}]"),
                    format!("{h:?} is not a header name (fix: e.g. X-Request-ID)"),
                ));
            }
        }
        if self.ingress.is_none()
            && self.egress.forward_proxy.is_none()
            && self.egress.routes.is_empty()
        {
            return Err((
                "ingress".into(),
                "no listener configured (fix: add `ingress:` or `egress.forward_proxy` / `egress.routes`)".into(),
            ));
        }
        let mut endpoints: Vec<(String, SocketAddr)> = Vec::new();
        if let Some(i) = &self.ingress {
            endpoints.push(("ingress.endpoint".into(), i.endpoint));
            check_upstream(&i.upstream, "ingress.upstream")?;
            check_timeouts(&i.timeouts, "ingress.timeouts")?;
            if i.extract.is_empty() {
                return Err((
                    "ingress.extract".into(),
                    "is empty (fix: list formats, e.g. [tracecontext, b3, jaeger, request_id])"
                        .into(),
                ));
            }
            let set: BTreeSet<_> = i.extract.iter().collect();
            if set.len() != i.extract.len() {
                return Err((
                    "ingress.extract".into(),
                    "names a format twice (fix: list each once, in order of precedence)".into(),
                ));
            }
            if let Some(t) = &i.tls {
                if t.cert_file.is_none() || t.key_file.is_none() {
                    return Err((
                        "ingress.tls".into(),
                        "needs both cert_file and key_file (fix: add the missing one)".into(),
                    ));
                }
            }
            if i.routes.len() > MAX_ROUTES {
                return Err((
                    "ingress.routes".into(),
                    format!("more than {MAX_ROUTES} templates (fix: use `*` suffixes)"),
                ));
            }
            for (n, r) in i.routes.iter().enumerate() {
                RouteTemplate::parse(r).map_err(|e| (format!("ingress.routes[{n}]"), e))?;
            }
        }
        let e = &self.egress;
        if let Some(f) = &e.forward_proxy {
            endpoints.push(("egress.forward_proxy.endpoint".into(), f.endpoint));
        }
        if e.routes.len() > MAX_EGRESS_ROUTES {
            return Err((
                "egress.routes".into(),
                format!("more than {MAX_EGRESS_ROUTES} (fix: use egress.forward_proxy)"),
            ));
        }
        for (n, r) in e.routes.iter().enumerate() {
            endpoints.push((format!("egress.routes[{n}].endpoint"), r.endpoint));
            check_upstream(&r.upstream, &format!("egress.routes[{n}].upstream"))?;
        }
        check_timeouts(&e.timeouts, "egress.timeouts")?;
        if e.destinations.len() > MAX_DESTINATIONS {
            return Err((
                "egress.destinations".into(),
                format!("more than {MAX_DESTINATIONS} (fix: use `*.domain` patterns)"),
            ));
        }
        for (n, d) in e.destinations.iter().enumerate() {
            if d.hosts.is_empty() {
                return Err((
                    format!("egress.destinations[{n}].hosts"),
                    "is empty (fix: list host names or `*.domain` patterns)".into(),
                ));
            }
            check_dest(d, &format!("egress.destinations[{n}]"))?;
        }
        check_dest(&e.default_destination, "egress.default_destination")?;
        for (i, (k, a)) in endpoints.iter().enumerate() {
            if let Some((other, _)) = endpoints[..i].iter().find(|(_, b)| b == a) {
                return Err((
                    k.clone(),
                    format!("{a} is also `{other}` (fix: give each listener its own port)"),
                ));
            }
        }
        Ok(())
    }
}

/// Without a `sending_queue` key the proxy exports straight from memory (its batches are
/// small and recent); a durable queue is opt-in here, unlike `clew serve`'s exporters.
fn default_no_sending_queue(v: &mut serde_yaml::Value) {
    let Some(exps) = v.get_mut("exporters").and_then(|e| e.as_mapping_mut()) else {
        return;
    };
    for (_, e) in exps.iter_mut() {
        if let Some(m) = e.as_mapping_mut() {
            let key = serde_yaml::Value::String("sending_queue".into());
            if !m.contains_key(&key) {
                let mut q = serde_yaml::Mapping::new();
                q.insert("enabled".into(), false.into());
                m.insert(key, serde_yaml::Value::Mapping(q));
            }
        }
    }
}

fn check_timeouts(t: &Timeouts, key: &str) -> Result<(), (String, String)> {
    for (k, d) in [
        ("connect", t.connect),
        ("response_header", t.response_header),
        ("request_header", t.request_header),
        ("idle", t.idle),
    ] {
        if d.is_zero() {
            return Err((
                format!("{key}.{k}"),
                "must be above 0 (fix: e.g. 5s)".into(),
            ));
        }
    }
    Ok(())
}

fn check_dest(d: &DestinationConfig, key: &str) -> Result<(), (String, String)> {
    if d.format == Format::RequestId {
        return Err((
            format!("{key}.format"),
            "request_id carries no parent span (fix: tracecontext, b3, b3multi or jaeger)".into(),
        ));
    }
    if d.baggage.max_members == Some(0) || d.baggage.max_bytes == Some(0) {
        return Err((
            format!("{key}.baggage"),
            "a limit of 0 (fix: remove the limit, or list no keys in `allow` to send none)".into(),
        ));
    }
    Ok(())
}

/// Parsed `upstream.endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub https: bool,
    pub authority: http::uri::Authority,
}

impl UpstreamUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s.trim().parse().map_err(|e| {
            format!("{s:?} is not a URL ({e}) (fix: write e.g. \"http://127.0.0.1:8081\")")
        })?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "{s:?} needs http:// or https:// (fix: write e.g. \"http://127.0.0.1:8081\")"
                ))
            }
        };
        let Some(authority) = uri.authority().cloned() else {
            return Err(format!(
                "{s:?} has no host (fix: write e.g. \"http://127.0.0.1:8081\")"
            ));
        };
        if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
            return Err(format!(
                "{s:?} has a path (fix: the proxy forwards the request's own path; write only scheme://host:port)"
            ));
        }
        Ok(Self { https, authority })
    }
}

fn check_upstream(u: &UpstreamConfig, key: &str) -> Result<(), (String, String)> {
    let url = UpstreamUrl::parse(&u.endpoint).map_err(|e| (format!("{key}.endpoint"), e))?;
    if !url.https && u.tls.is_set() {
        return Err((
            format!("{key}.tls"),
            "TLS settings on an http:// endpoint (fix: use https:// or remove `tls`)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "service: {name: legacy}\ningress: {endpoint: 127.0.0.1:8080, upstream: {endpoint: http://127.0.0.1:8081}}\nexporters: {otlp: {endpoint: 127.0.0.1:4317, tls: {insecure: true}}}\n";

    fn err(text: &str) -> ConfigError {
        ProxyConfig::parse(text, "p.yaml").expect_err("must be refused")
    }

    #[test]
    fn minimal_config_has_defaults() {
        let c = ProxyConfig::parse(MIN, "p.yaml").unwrap();
        let i = c.ingress.as_ref().unwrap();
        assert_eq!(i.extract.len(), 5);
        assert_eq!(i.forward.format, ForwardFormat::Keep);
        assert!(
            !c.exporter().1.sending_queue.enabled,
            "no queue unless asked"
        );
        assert_eq!(c.request_id_headers[0], "X-Request-ID");
    }

    #[test]
    fn unknown_key_names_file_key_and_fix() {
        let e = err(&MIN.replace("upstream:", "upstraem:"));
        let s = e.to_string();
        assert!(s.starts_with("p.yaml: key `ingress"), "{s}");
        assert!(s.contains("upstraem") && s.contains("fix:"), "{s}");
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "{{{{",
            "- a list",
            "\u{0}\u{1}",
            "service: 3",
            "service: {name: ''}\nexporters: {otlp: {endpoint: x}}",
        ] {
            let s = err(bad).to_string();
            assert!(s.starts_with("p.yaml: key `"), "{bad:?}: {s}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (MIN.replace("http://127.0.0.1:8081", "ftp://x"), "ingress.upstream.endpoint"),
            (MIN.replace("http://127.0.0.1:8081", "http://x:1/app"), "ingress.upstream.endpoint"),
            (MIN.replace("127.0.0.1:8080", "localhost"), "ingress.endpoint"),
            (format!("{MIN}sampling: {{ratio: 1.5}}\n"), "sampling.ratio"),
            (format!("{MIN}batch: {{send_batch_size: 0}}\n"), "batch.send_batch_size"),
            (format!("{MIN}batch: {{timeout: soon}}\n"), "batch.timeout"),
            (format!("{MIN}request_id_headers: [\"bad header\"]\n"), "request_id_headers[0]"),
            (
                MIN.replace("8081}", "8081}, routes: [\"users/{id}\"]"),
                "ingress.routes[0]",
            ),
            (
                MIN.replace("8081}", "8081}, extract: [b3, b3]"),
                "ingress.extract",
            ),
            (
                format!("{MIN}egress: {{routes: [{{endpoint: 127.0.0.1:8080, upstream: {{endpoint: http://127.0.0.1:9}}}}]}}\n"),
                "egress.routes[0].endpoint",
            ),
            (
                format!("{MIN}egress: {{destinations: [{{hosts: [], format: b3}}]}}\n"),
                "egress.destinations[0].hosts",
            ),
            (
                format!("{MIN}egress: {{default_destination: {{format: request_id}}}}\n"),
                "egress.default_destination.format",
            ),
            (
                MIN.replace("tls: {insecure: true}", "sending_queue: {enabled: true}"),
                "exporters.otlp.sending_queue",
            ),
            (
                MIN.replace("8081}", "8081, tls: {insecure_skip_verify: true}}"),
                "ingress.upstream.tls",
            ),
        ];
        for (text, key) in cases {
            let e = err(&text);
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.message.contains("fix"), "{e}");
        }
    }

    #[test]
    fn limits_on_lists() {
        let routes: Vec<String> = (0..=MAX_ROUTES).map(|i| format!("\"/r{i}\"")).collect();
        let text = MIN.replace("8081}", &format!("8081}}, routes: [{}]", routes.join(",")));
        assert_eq!(err(&text).key, "ingress.routes");
    }

    #[test]
    fn load_names_the_file_and_refuses_huge_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let e = ProxyConfig::load(&missing).unwrap_err();
        assert!(e.to_string().contains("nope.yaml"), "{e}");
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; (MAX_CONFIG_BYTES + 1) as usize]).unwrap();
        assert!(ProxyConfig::load(&big)
            .unwrap_err()
            .message
            .contains("more than"));
    }
}
