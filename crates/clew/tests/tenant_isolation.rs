//! Tenant isolation with authentication on, against the real `clew` binary.
//!
//! Two tenants' data is written through authenticated OTLP/HTTP and OTLP/gRPC (and Zipkin); then
//! every read and write endpoint in [`ROUTES`] is called under every identity in the columns:
//!
//! | server | columns |
//! |---|---|
//! | bearer tokens (`examples/config/auth-tokens.yaml`) | own tenant (A), own tenant (B, naming itself in the header), other tenant via header, no credentials, bad token |
//! | OIDC (`examples/config/auth-oidc.yaml`, JWKS generated here) | own tenant (valid JWT), expired JWT |
//! | TLS + `mtls` auth (certificates generated here) | own tenant (client certificate), other tenant via header, no client certificate, certificate from the wrong CA |
//!
//! Every response is checked for its exact status (HTTP, or the gRPC code) and for never
//! containing a marker planted only in the other tenant's service names, span names and
//! attributes. A new endpoint is one line in [`ROUTES`].

use clew_model::otlp::collector::trace_service_client::TraceServiceClient;
use clew_model::otlp::collector::ExportTraceServiceRequest;
use clew_model::otlp::common::{any_value::Value, AnyValue, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use clew_model::otlp::Message;
use clew_security::auth::testkit::{claims, jwks, SigningKey};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;
use common::certs::{Ca, Leaf};
use common::{clew, ok, Server};

// ---------------------------------------------------------------------------------------------
// The routes: every read and write endpoint. `{svc}`, `{trace}` are the caller's own service and
// trace; `{other_trace}` the other tenant's trace id; `{start}`/`{end}` RFC 3339 and
// `{end_ms}` epoch milliseconds around the data.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Query,
    /// Tempo's HTTP API (`tempo.endpoint`).
    Tempo,
    OtlpHttp,
    Zipkin,
    Sampling,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    None,
    OtlpProtobuf,
    ZipkinJson,
    GrpcExport,
}

struct Route {
    name: &'static str,
    port: Port,
    path: &'static str,
    body: Body,
    /// Status for the caller's own tenant (gRPC: 0 = OK).
    own: u16,
    /// The response for the own tenant must show the caller's own marker (not vacuously empty).
    shows_own: bool,
    /// Carries every tenant's data: only for identities allowed every tenant (403 otherwise).
    all_tenants: bool,
}

const fn read(name: &'static str, path: &'static str, own: u16, shows_own: bool) -> Route {
    Route {
        name,
        port: Port::Query,
        path,
        body: Body::None,
        own,
        shows_own,
        all_tenants: false,
    }
}

/// A read on the Tempo port.
const fn tempo(name: &'static str, path: &'static str, own: u16, shows_own: bool) -> Route {
    Route {
        port: Port::Tempo,
        ..read(name, path, own, shows_own)
    }
}

const ROUTES: &[Route] = &[
    // Jaeger query API.
    read("Jaeger services", "/api/services", 200, true),
    read("Jaeger operations of a service", "/api/services/{svc}/operations", 200, true),
    read("Jaeger operations", "/api/operations?service={svc}", 200, true),
    read("Jaeger search", "/api/traces?service={svc}&lookback=1h&limit=20", 200, true),
    read("Jaeger search, other tenant's service", "/api/traces?service={other_svc}&lookback=1h", 200, false),
    read("Jaeger trace", "/api/traces/{trace}", 200, true),
    read("Jaeger trace, other tenant's id", "/api/traces/{other_trace}", 404, false),
    read("Jaeger dependencies", "/api/dependencies?endTs={end_ms}&lookback=3600000", 200, true),
    // api_v3.
    read("api_v3 services", "/api/v3/services", 200, true),
    read("api_v3 operations", "/api/v3/operations?service={svc}", 200, true),
    read(
        "api_v3 search",
        "/api/v3/traces?query.service_name={svc}&query.start_time_min={start}&query.start_time_max={end}",
        200,
        true,
    ),
    read("api_v3 trace", "/api/v3/traces/{trace}", 200, true),
    read("api_v3 trace, other tenant's id", "/api/v3/traces/{other_trace}", 404, false),
    // Doctor API.
    read("doctor findings", "/api/doctor/findings?since=1h", 200, false),
    read("doctor trace", "/api/doctor/traces/{trace}", 200, true),
    read("doctor trace, other tenant's id", "/api/doctor/traces/{other_trace}", 404, false),
    read("doctor service graph", "/api/doctor/service-graph", 200, true),
    // UI JSON.
    read("UI trace", "/api/ui/traces/{trace}", 200, true),
    read("UI trace, other tenant's id", "/api/ui/traces/{other_trace}", 404, false),
    // SPM (Monitor page).
    read("SPM services", "/api/metrics/services", 200, true),
    read("SPM calls", "/api/metrics/calls?service={svc}", 200, true),
    read("SPM errors", "/api/metrics/errors?service={svc}", 200, true),
    read("SPM latencies", "/api/metrics/latencies?service={svc}&quantile=0.95", 200, true),
    read("SPM minstep", "/api/metrics/minstep", 200, false),
    // Administration (GETs here; erase/holds writes across tenants are in tests/admin.rs).
    read("admin retention", "/api/admin/retention", 200, false),
    read("admin holds", "/api/admin/holds", 200, false),
    // Tempo HTTP API, on its own port and under `/tempo` on the query port. `q` is
    // `{resource.service.name="{svc}"}`, `tags` is `service.name={svc}`.
    tempo("Tempo trace v1 (:3200)", "/api/traces/{trace}", 200, true),
    tempo("Tempo trace v1, other tenant's id (:3200)", "/api/traces/{other_trace}", 404, false),
    tempo("Tempo trace v2 (:3200)", "/api/v2/traces/{trace}", 200, true),
    tempo("Tempo trace v2, other tenant's id (:3200)", "/api/v2/traces/{other_trace}", 404, false),
    tempo("Tempo TraceQL search (:3200)", "/api/search?q=%7Bresource.service.name%3D%22{svc}%22%7D&limit=20&spss=3", 200, true),
    tempo("Tempo TraceQL search, other tenant's service (:3200)", "/api/search?q=%7Bresource.service.name%3D%22{other_svc}%22%7D", 200, false),
    tempo("Tempo tag search (:3200)", "/api/search?tags=service.name%3D{svc}", 200, true),
    tempo("Tempo search, all traces (:3200)", "/api/search?q=%7B%7D", 200, true),
    tempo("Tempo tags v1 (:3200)", "/api/search/tags", 200, false),
    tempo("Tempo tags v2 (:3200)", "/api/v2/search/tags?scope=none", 200, false),
    tempo("Tempo tag values v1 (:3200)", "/api/search/tag/marker/values", 200, true),
    tempo("Tempo tag values v2 (:3200)", "/api/v2/search/tag/resource.service.name/values", 200, true),
    tempo("Tempo tag values v2, span names (:3200)", "/api/v2/search/tag/name/values", 200, true),
    read("Tempo trace v1 (/tempo)", "/tempo/api/traces/{trace}", 200, true),
    read("Tempo trace v1, other tenant's id (/tempo)", "/tempo/api/traces/{other_trace}", 404, false),
    read("Tempo trace v2 (/tempo)", "/tempo/api/v2/traces/{trace}", 200, true),
    read("Tempo trace v2, other tenant's id (/tempo)", "/tempo/api/v2/traces/{other_trace}", 404, false),
    read("Tempo TraceQL search (/tempo)", "/tempo/api/search?q=%7Bresource.service.name%3D%22{svc}%22%7D&limit=20&spss=3", 200, true),
    read("Tempo search, all traces (/tempo)", "/tempo/api/search?q=%7B%7D", 200, true),
    read("Tempo tags v1 (/tempo)", "/tempo/api/search/tags", 200, false),
    read("Tempo tags v2 (/tempo)", "/tempo/api/v2/search/tags?scope=none", 200, false),
    read("Tempo tag values v1 (/tempo)", "/tempo/api/search/tag/marker/values", 200, true),
    read("Tempo tag values v2 (/tempo)", "/tempo/api/v2/search/tag/resource.service.name/values", 200, true),
    // Remote sampling, on the query port and its own port.
    read("remote sampling (query port)", "/api/sampling?service={svc}", 200, false),
    Route {
        name: "remote sampling (:5778)",
        port: Port::Sampling,
        path: "/sampling?service={svc}",
        body: Body::None,
        own: 200,
        shows_own: false,
        all_tenants: false,
    },
    // Prometheus metrics: labels of every tenant.
    Route {
        name: "Prometheus /metrics",
        port: Port::Query,
        path: "/metrics",
        body: Body::None,
        own: 200,
        shows_own: false,
        all_tenants: true,
    },
    // Writes.
    Route {
        name: "OTLP/HTTP export",
        port: Port::OtlpHttp,
        path: "/v1/traces",
        body: Body::OtlpProtobuf,
        own: 200,
        shows_own: false,
        all_tenants: false,
    },
    Route {
        name: "Zipkin v2 spans",
        port: Port::Zipkin,
        path: "/api/v2/spans",
        body: Body::ZipkinJson,
        own: 202,
        shows_own: false,
        all_tenants: false,
    },
    Route {
        name: "OTLP/gRPC Export",
        port: Port::Grpc,
        path: "",
        body: Body::GrpcExport,
        own: 0,
        shows_own: false,
        all_tenants: false,
    },
];

/// Paths that stay open with auth on (no tenant data): readiness, the UI's pages and assets.
const OPEN: &[&str] = &[
    "/ready",
    "/",
    "/search",
    "/trace/0123456789abcdef0123456789abcdef",
    "/compare",
    "/graph",
    "/doctor",
    "/monitor",
    "/static/js/main.js",
];

// ---------------------------------------------------------------------------------------------
// Tenants and their data.

struct Tenant {
    name: &'static str,
    /// Planted in every service name, span name and attribute value of this tenant's data.
    marker: &'static str,
    trace: [u8; 16],
}

const A: Tenant = Tenant {
    name: "team-a",
    marker: "alpha-qx7",
    trace: [0xa1; 16],
};
const B: Tenant = Tenant {
    name: "team-b",
    marker: "bravo-zq9",
    trace: [0xb2; 16],
};

impl Tenant {
    fn svc(&self) -> String {
        format!("{}-frontend", self.marker)
    }
    fn trace_hex(&self) -> String {
        hex::encode(self.trace)
    }
    fn other(&self) -> &'static Tenant {
        if self.name == A.name {
            &B
        } else {
            &A
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(v.into())),
    })
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: s(v),
        ..Default::default()
    }
}

/// A two-service trace (frontend → api, client and server spans) marked with the tenant's marker;
/// `salt` varies the span ids so repeated writes add spans.
fn otlp(t: &Tenant, salt: u8) -> ExportTraceServiceRequest {
    let now = now_ns() - 5_000_000_000;
    let span = |id: u8, parent: Option<u8>, name: String, kind: i32, start: u64, end: u64| Span {
        trace_id: t.trace.to_vec(),
        span_id: vec![id, salt, 1, 2, 3, 4, 5, 6],
        parent_span_id: parent
            .map(|p| vec![p, salt, 1, 2, 3, 4, 5, 6])
            .unwrap_or_default(),
        name,
        kind,
        start_time_unix_nano: now + start,
        end_time_unix_nano: now + end,
        attributes: vec![kv("marker", &format!("{}-attr", t.marker))],
        ..Default::default()
    };
    let rs = |service: String, spans: Vec<Span>| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", &service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    };
    let m = t.marker;
    ExportTraceServiceRequest {
        resource_spans: vec![
            rs(
                t.svc(),
                vec![
                    span(1, None, format!("GET /{m}"), 2, 0, 50_000_000),
                    span(
                        2,
                        Some(1),
                        format!("call {m}-api"),
                        3,
                        5_000_000,
                        40_000_000,
                    ),
                ],
            ),
            rs(
                format!("{m}-api"),
                vec![span(
                    3,
                    Some(2),
                    format!("serve {m}"),
                    2,
                    10_000_000,
                    35_000_000,
                )],
            ),
        ],
    }
}

fn zipkin(t: &Tenant, salt: u8) -> String {
    let ts = now_ns() / 1000 - 4_000_000;
    serde_json::json!([{
        "traceId": t.trace_hex(),
        "id": format!("{:02x}{salt:02x}000000000009", t.trace[0]),
        "parentId": format!("01{salt:02x}010203040506"),
        "name": format!("zipkin {}", t.marker),
        "timestamp": ts,
        "duration": 1000,
        "kind": "SERVER",
        "localEndpoint": {"serviceName": format!("{}-zipkin", t.marker)},
        "tags": {"marker": format!("{}-attr", t.marker)},
    }])
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// Certificates (mTLS server).

// ---------------------------------------------------------------------------------------------
// Calling an endpoint under an identity.

#[derive(Clone)]
enum Cred {
    None,
    Bearer(String),
    Cert(Leaf),
}

/// One server under test.
struct Target {
    server: Server,
    /// `Some(ca pem)`: every listener speaks TLS (https, gRPC over TLS).
    tls_ca: Option<String>,
}

/// What came back: an HTTP status (gRPC: the code), headers and body; or no response at all.
#[derive(Debug)]
enum Outcome {
    Http {
        status: u16,
        www_authenticate: Option<String>,
        body: String,
    },
    Grpc {
        code: i32,
        message: String,
    },
    /// The connection was refused before any response (TLS handshake).
    Refused(String),
}

impl Target {
    fn base(&self, port: Port) -> String {
        let url = match port {
            Port::Query => &self.server.query,
            Port::Tempo => &self.server.tempo,
            Port::OtlpHttp => &self.server.http,
            Port::Zipkin => &self.server.zipkin,
            Port::Sampling => &self.server.sampling,
            Port::Grpc => &self.server.grpc,
        };
        match self.tls_ca {
            Some(_) => url.replacen("http://", "https://", 1),
            None => url.clone(),
        }
    }

    fn http_client(&self, cred: &Cred) -> reqwest::Client {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(ca) = &self.tls_ca {
            b = b.tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()]);
        }
        if let Cred::Cert(c) = cred {
            b = b.identity(
                reqwest::Identity::from_pem(format!("{}{}", c.cert, c.key).as_bytes()).unwrap(),
            );
        }
        b.build().unwrap()
    }

    async fn call(
        &self,
        route: &Route,
        path: &str,
        cred: &Cred,
        tenant_header: Option<&str>,
        writer: &Tenant,
        salt: u8,
    ) -> Outcome {
        if route.body == Body::GrpcExport {
            return self.grpc_export(cred, tenant_header, writer, salt).await;
        }
        let client = self.http_client(cred);
        let url = format!("{}{path}", self.base(route.port));
        let mut req = match route.body {
            Body::None => client.get(&url),
            Body::OtlpProtobuf => client
                .post(&url)
                .header("content-type", "application/x-protobuf")
                .body(otlp(writer, salt).encode_to_vec()),
            Body::ZipkinJson => client
                .post(&url)
                .header("content-type", "application/json")
                .body(zipkin(writer, salt)),
            Body::GrpcExport => unreachable!(),
        };
        if let Cred::Bearer(t) = cred {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(t) = tenant_header {
            req = req.header("x-scope-orgid", t);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let www_authenticate = r
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap_or("").to_string());
                let body = r.text().await.unwrap_or_default();
                Outcome::Http {
                    status,
                    www_authenticate,
                    body,
                }
            }
            Err(e) => Outcome::Refused(format!("{e:?}")),
        }
    }

    async fn grpc_export(
        &self,
        cred: &Cred,
        tenant_header: Option<&str>,
        writer: &Tenant,
        salt: u8,
    ) -> Outcome {
        let mut ep = tonic::transport::Endpoint::from_shared(self.base(Port::Grpc))
            .unwrap()
            .timeout(Duration::from_secs(10));
        if let Some(ca) = &self.tls_ca {
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .domain_name("localhost");
            if let Cred::Cert(c) = cred {
                tls = tls.identity(tonic::transport::Identity::from_pem(&c.cert, &c.key));
            }
            ep = ep.tls_config(tls).unwrap();
        }
        let channel = match ep.connect().await {
            Ok(c) => c,
            Err(e) => return Outcome::Refused(format!("{e:?}")),
        };
        let mut client = TraceServiceClient::new(channel);
        let mut req = tonic::Request::new(otlp(writer, salt));
        if let Cred::Bearer(t) = cred {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        if let Some(t) = tenant_header {
            req.metadata_mut()
                .insert("x-scope-orgid", t.parse().unwrap());
        }
        match client.export(req).await {
            Ok(_) => Outcome::Grpc {
                code: 0,
                message: String::new(),
            },
            // A refused handshake surfaces as a transport error (a status with a source) on the
            // first call; statuses the server sent have none.
            Err(st) if std::error::Error::source(&st).is_some() => {
                Outcome::Refused(format!("{st:?}"))
            }
            Err(st) => Outcome::Grpc {
                code: st.code() as i32,
                message: st.message().to_string(),
            },
        }
    }
}

fn fill(path: &str, own: &Tenant) -> String {
    let now = SystemTime::now();
    let rfc = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
    path.replace("{svc}", &own.svc())
        .replace("{other_svc}", &own.other().svc())
        .replace("{trace}", &own.trace_hex())
        .replace("{other_trace}", &own.other().trace_hex())
        .replace("{start}", &rfc(now - Duration::from_secs(3600)))
        .replace("{end}", &rfc(now + Duration::from_secs(60)))
        .replace(
            "{end_ms}",
            &(now.duration_since(UNIX_EPOCH).unwrap().as_millis() + 60_000).to_string(),
        )
}

// ---------------------------------------------------------------------------------------------
// Columns.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The route's own-tenant status (403 for all-tenant routes).
    Own,
    /// 401 / UNAUTHENTICATED; `invalid_token`: the challenge carries `error="invalid_token"`.
    Unauthenticated { invalid_token: bool },
    /// 403 / PERMISSION_DENIED.
    Forbidden,
    /// No response: the TLS handshake refuses the client.
    Refused,
}

struct Column {
    name: &'static str,
    cred: Cred,
    header: Option<&'static str>,
    /// Whose identity this is (placeholders, markers): it must never see `as_tenant.other()`.
    as_tenant: &'static Tenant,
    expect: Expect,
}

struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }
}

/// Runs every route under every column; returns the number of cells.
async fn run_matrix(
    target: &Target,
    columns: &[Column],
    failures: &mut Failures,
    salt: &mut u8,
) -> usize {
    let mut cells = 0;
    for col in columns {
        for route in ROUTES {
            cells += 1;
            *salt = salt.wrapping_add(1);
            let path = fill(route.path, col.as_tenant);
            let out = target
                .call(route, &path, &col.cred, col.header, col.as_tenant, *salt)
                .await;
            let cell = format!("[{} × {}] {}", col.name, route.name, path);
            let other = col.as_tenant.other().marker;
            match (&out, col.expect) {
                (Outcome::Refused(_), Expect::Refused) => {}
                (Outcome::Refused(e), _) => {
                    failures.check(false, || format!("{cell}: no response: {e}"))
                }
                (_, Expect::Refused) => failures.check(false, || {
                    format!("{cell}: expected a refused handshake, got {out:?}")
                }),
                (Outcome::Grpc { code, message }, expect) => {
                    let want = match expect {
                        Expect::Own if route.all_tenants => 7,
                        Expect::Own => route.own as i32,
                        Expect::Unauthenticated { .. } => 16,
                        Expect::Forbidden => 7,
                        Expect::Refused => unreachable!(),
                    };
                    failures.check(*code == want, || {
                        format!("{cell}: gRPC code {code} ({message}), expected {want}")
                    });
                    failures.check(!message.contains(other), || {
                        format!("{cell}: the message names the other tenant's data: {message}")
                    });
                }
                (
                    Outcome::Http {
                        status,
                        www_authenticate,
                        body,
                    },
                    expect,
                ) => {
                    let want = match expect {
                        Expect::Own if route.all_tenants => 403,
                        Expect::Own => route.own,
                        Expect::Unauthenticated { .. } => 401,
                        Expect::Forbidden => 403,
                        Expect::Refused => unreachable!(),
                    };
                    failures.check(*status == want, || {
                        format!(
                            "{cell}: HTTP {status}, expected {want}: {}",
                            &body[..body.len().min(300)]
                        )
                    });
                    // The one check that matters most: never another tenant's data.
                    failures.check(!body.contains(other), || {
                        format!(
                            "{cell}: the response contains the other tenant's marker {other:?}: {}",
                            &body[..body.len().min(500)]
                        )
                    });
                    if let Expect::Unauthenticated { invalid_token } = expect {
                        let c = www_authenticate.clone().unwrap_or_default();
                        failures.check(c.starts_with("Bearer realm=\"clew\""), || {
                            format!("{cell}: WWW-Authenticate {c:?}")
                        });
                        failures.check(c.contains("error=\"invalid_token\"") == invalid_token, || {
                            format!("{cell}: WWW-Authenticate {c:?} (invalid_token expected: {invalid_token})")
                        });
                    }
                    if want >= 400 {
                        failures.check(body.contains("\"error\"") || route.own >= 400, || {
                            format!("{cell}: refusal without a JSON error: {body}")
                        });
                    }
                    if expect == Expect::Own && route.shows_own && *status == 200 {
                        let mine = col.as_tenant.marker;
                        failures.check(body.contains(mine), || {
                            format!(
                                "{cell}: the own tenant's data ({mine}) is missing: {}",
                                &body[..body.len().min(300)]
                            )
                        });
                    }
                }
            }
        }
    }
    cells
}

fn standard_columns(a: Cred, b: Cred, bad: Cred) -> Vec<Column> {
    vec![
        Column {
            name: "own tenant (A)",
            cred: a.clone(),
            header: None,
            as_tenant: &A,
            expect: Expect::Own,
        },
        Column {
            name: "own tenant (B, header names it)",
            cred: b,
            header: Some(B.name),
            as_tenant: &B,
            expect: Expect::Own,
        },
        Column {
            name: "other tenant via header",
            cred: a,
            header: Some(B.name),
            as_tenant: &A,
            expect: Expect::Forbidden,
        },
        Column {
            name: "no credentials",
            cred: Cred::None,
            header: Some(A.name),
            as_tenant: &A,
            expect: Expect::Unauthenticated {
                invalid_token: false,
            },
        },
        Column {
            name: "bad token",
            cred: bad,
            header: None,
            as_tenant: &A,
            expect: Expect::Unauthenticated {
                invalid_token: true,
            },
        },
    ]
}

/// Writes both tenants' data (A over OTLP/HTTP, B over OTLP/gRPC, both over Zipkin), each with
/// its own credentials and no tenant header, and waits until each tenant can read it back.
async fn seed(target: &Target, a: &Cred, b: &Cred) {
    let route = |body| ROUTES.iter().find(|r| r.body == body).unwrap();
    for (t, cred, body, salt) in [
        (&A, a, Body::OtlpProtobuf, 200u8),
        (&B, b, Body::GrpcExport, 201),
        (&A, a, Body::ZipkinJson, 202),
        (&B, b, Body::ZipkinJson, 203),
    ] {
        let r = route(body);
        let out = target.call(r, r.path, cred, None, t, salt).await;
        assert!(
            matches!(
                out,
                Outcome::Http {
                    status: 200 | 202,
                    ..
                } | Outcome::Grpc { code: 0, .. }
            ),
            "seeding {} via {}: {out:?}",
            t.name,
            r.name
        );
    }
    for (t, cred) in [(&A, a), (&B, b)] {
        let r = &ROUTES[5]; // Jaeger trace
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = target.call(r, &fill(r.path, t), cred, None, t, 0).await;
            if let Outcome::Http {
                status: 200, body, ..
            } = &out
            {
                if body.contains(t.marker) && body.contains("zipkin") {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}'s trace not readable: {out:?}",
                t.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `config` with a `tempo:` section whose `auth` is `auth` (YAML flow), for configs (the examples)
/// that do not configure the Tempo listener: it must be gated like every other.
/// The shipped auth examples must protect the Tempo port like the query port: users copy them.
fn assert_has_tempo_auth(config: &str) {
    let tempo = config
        .split("\ntempo:")
        .nth(1)
        .expect("the example config has a `tempo:` section");
    let section: String = tempo
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        section.contains("auth:"),
        "the example's `tempo:` section has no `auth:`"
    );
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config")
}

fn report(failures: Failures, what: &str, cells: usize) {
    eprintln!("{what}: {cells} cells, {} failures", failures.0.len());
    assert!(
        failures.0.is_empty(),
        "{what}: {} of {cells} cells failed:\n{}",
        failures.0.len(),
        failures.0.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------

/// Bearer tokens on every listener, from the example config (demo tokens).
#[tokio::test]
async fn matrix_bearer_tokens() {
    let dir = tempfile::tempdir().unwrap();
    // The example config as shipped (the Tempo listener behind the same tokens), the token file
    // by absolute path since the copy lives elsewhere.
    let tokens = examples().join("auth/tokens.yaml");
    let example = std::fs::read_to_string(examples().join("auth-tokens.yaml")).unwrap();
    assert!(example.contains("file: auth/tokens.yaml"));
    assert_has_tempo_auth(&example);
    let config = dir.path().join("clew.yaml");
    std::fs::write(
        &config,
        example.replace(
            "file: auth/tokens.yaml",
            &format!("file: {}", tokens.display()),
        ),
    )
    .unwrap();
    let target = Target {
        server: Server::start_with(&dir.path().join("data"), Some(&config)),
        tls_ca: None,
    };
    let a = Cred::Bearer("demo-team-a-token".into());
    let b = Cred::Bearer("demo-team-b-token".into());
    seed(&target, &a, &b).await;
    let mut failures = Failures(Vec::new());
    let mut salt = 0;
    let cells = run_matrix(
        &target,
        &standard_columns(
            a.clone(),
            b.clone(),
            Cred::Bearer("clew_not-a-valid-token".into()),
        ),
        &mut failures,
        &mut salt,
    )
    .await;

    // Open paths need no credentials.
    let c = reqwest::Client::new();
    for p in OPEN {
        let r = c
            .get(format!("{}{p}", target.server.query))
            .send()
            .await
            .unwrap();
        failures.check(r.status() == 200, || {
            format!("open path {p}: {}", r.status())
        });
    }
    // The Tempo port's liveness and version probes (Grafana's "Save & test") are open too; its
    // data is not.
    for p in ["/ready", "/api/echo", "/api/status/buildinfo"] {
        let r = c
            .get(format!("{}{p}", target.server.tempo))
            .send()
            .await
            .unwrap();
        failures.check(r.status() == 200, || {
            format!("open Tempo path {p}: {}", r.status())
        });
    }
    // /metrics: a token for every tenant, or the scrape token; the tenant tokens got 403 above.
    for tok in ["demo-ops-token", "demo-scrape-token"] {
        let r = c
            .get(format!("{}/metrics", target.server.query))
            .bearer_auth(tok)
            .send()
            .await
            .unwrap();
        failures.check(r.status() == 200, || {
            format!("/metrics with {tok}: {}", r.status())
        });
    }
    // An identity for every tenant chooses with the header.
    let r = c
        .get(format!("{}/api/services", target.server.query))
        .bearer_auth("demo-ops-token")
        .header("x-scope-orgid", B.name)
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    failures.check(body.contains(B.marker) && !body.contains(A.marker), || {
        format!("ops token as team-b: {body}")
    });

    // Nothing the refused writes carried landed anywhere: B still sees only B.
    for path in ["/api/services", "/api/traces?service={svc}&lookback=1h"] {
        let r = c
            .get(format!("{}{}", target.server.query, fill(path, &B)))
            .bearer_auth("demo-team-b-token")
            .send()
            .await
            .unwrap();
        let body = r.text().await.unwrap();
        failures.check(!body.contains(A.marker), || {
            format!("team-b's {path} after the matrix: {body}")
        });
    }
    report(failures, "bearer tokens", cells);
}

/// OIDC on every listener (the example config with a JWKS generated here): a valid JWT sees its
/// own tenant; an expired one gets 401 `invalid_token` everywhere.
#[tokio::test]
async fn matrix_oidc_expired_jwt() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::es256("test-key");
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(&[&key]).to_string()).unwrap();
    let example = std::fs::read_to_string(examples().join("auth-oidc.yaml")).unwrap();
    assert!(example.contains("jwks_file: auth/jwks.json"));
    let config = dir.path().join("clew.yaml");
    assert_has_tempo_auth(&example);
    std::fs::write(
        &config,
        example.replace(
            "jwks_file: auth/jwks.json",
            &format!("jwks_file: {}", jwks_path.display()),
        ),
    )
    .unwrap();
    let target = Target {
        server: Server::start_with(&dir.path().join("data"), Some(&config)),
        tls_ca: None,
    };
    let jwt = |tenant: &str, expires_in: i64| {
        Cred::Bearer(key.sign(&claims(
            "https://idp.example.com",
            "clew",
            "someone",
            &[tenant],
            expires_in,
        )))
    };
    seed(&target, &jwt(A.name, 600), &jwt(B.name, 600)).await;
    let mut failures = Failures(Vec::new());
    let mut salt = 50;
    let columns = vec![
        Column {
            name: "own tenant (valid JWT)",
            cred: jwt(A.name, 600),
            header: None,
            as_tenant: &A,
            expect: Expect::Own,
        },
        Column {
            name: "other tenant via header (valid JWT)",
            cred: jwt(A.name, 600),
            header: Some(B.name),
            as_tenant: &A,
            expect: Expect::Forbidden,
        },
        Column {
            name: "expired JWT",
            cred: jwt(A.name, -120),
            header: None,
            as_tenant: &A,
            expect: Expect::Unauthenticated {
                invalid_token: true,
            },
        },
    ];
    let cells = run_matrix(&target, &columns, &mut failures, &mut salt).await;
    report(failures, "oidc", cells);
}

/// TLS with required client certificates and `mtls` auth on every listener: a certificate maps
/// to its tenant; no certificate or one from another CA never gets a response.
#[tokio::test]
async fn matrix_mtls_wrong_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("isolation test CA");
    let server_cert = ca.server();
    let w = |name: &str, body: &str| {
        std::fs::write(dir.path().join(name), body).unwrap();
    };
    w("server.pem", &server_cert.cert);
    w("server-key.pem", &server_cert.key);
    w("ca.pem", &ca.pem);
    let tls = "{cert_file: server.pem, key_file: server-key.pem, client_ca_file: ca.pem}";
    let auth = "{mtls: {rules: [{dns: \"*.team-a.test\", tenants: [team-a]}, {dns: \"*.team-b.test\", tenants: [team-b]}]}}";
    w(
        "clew.yaml",
        &format!(
            "receivers:
  otlp:
    protocols:
      grpc: {{tls: {tls}, auth: {auth}}}
      http: {{tls: {tls}, auth: {auth}}}
  zipkin: {{endpoint: 127.0.0.1:9411, tls: {tls}, auth: {auth}}}
query: {{tls: {tls}, auth: {auth}}}
tempo: {{tls: {tls}, auth: {auth}}}
extensions:
  jaeger_remote_sampling:
    http: {{endpoint: 127.0.0.1:5778, tls: {tls}, auth: {auth}}}
"
        ),
    );
    let target = Target {
        server: Server::start_with(
            &dir.path().join("data"),
            Some(&dir.path().join("clew.yaml")),
        ),
        tls_ca: Some(ca.pem.clone()),
    };
    let a = Cred::Cert(ca.leaf("ingest", &["client.team-a.test"], true, false));
    let b = Cred::Cert(ca.leaf("ingest", &["client.team-b.test"], true, false));
    let foreign = Ca::new("another CA");
    let wrong_ca = Cred::Cert(foreign.leaf("ingest", &["client.team-a.test"], true, false));
    seed(&target, &a, &b).await;
    let mut failures = Failures(Vec::new());
    let mut salt = 100;
    let columns = vec![
        Column {
            name: "own tenant (client certificate)",
            cred: a.clone(),
            header: None,
            as_tenant: &A,
            expect: Expect::Own,
        },
        Column {
            name: "own tenant (B's certificate)",
            cred: b,
            header: Some(B.name),
            as_tenant: &B,
            expect: Expect::Own,
        },
        Column {
            name: "other tenant via header (certificate)",
            cred: a,
            header: Some(B.name),
            as_tenant: &A,
            expect: Expect::Forbidden,
        },
        Column {
            name: "no client certificate",
            cred: Cred::None,
            header: Some(A.name),
            as_tenant: &A,
            expect: Expect::Refused,
        },
        Column {
            name: "wrong CA",
            cred: wrong_ca,
            header: None,
            as_tenant: &A,
            expect: Expect::Refused,
        },
    ];
    let cells = run_matrix(&target, &columns, &mut failures, &mut salt).await;
    report(failures, "mtls", cells);
}

/// A token removed from the tokens file is refused after the next reload; `clew token new`
/// prints a token and the line that makes it work.
#[tokio::test]
async fn issue_and_revoke_a_token_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    let out = ok(
        &clew(&["token", "new", "--tenant", "team-r"]),
        "clew token new",
    );
    let mut lines = out.lines();
    let token = lines.next().unwrap().to_string();
    let line = lines.next().unwrap().to_string();
    assert!(
        line.starts_with("- {name: ") && !line.contains(&token),
        "{line}"
    );
    let hashed = ok(&clew(&["token", "hash", &token]), "clew token hash");
    assert!(line.contains(hashed.trim()), "{line} / {hashed}");
    std::fs::write(&tokens, format!("{line}\n")).unwrap();
    let config = dir.path().join("clew.yaml");
    std::fs::write(
        &config,
        "query:\n  auth:\n    bearer_tokens: {file: tokens.yaml, reload_interval: 200ms}\n",
    )
    .unwrap();
    let server = Server::start_with(&dir.path().join("data"), Some(&config));
    let c = reqwest::Client::new();
    let status = |tok: String| {
        let c = c.clone();
        let url = format!("{}/api/services", server.query);
        async move {
            c.get(url)
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(token.clone()).await, 200);
    // Revoke: remove the line.
    std::fs::write(&tokens, "# revoked\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(token.clone()).await != 401 {
        assert!(Instant::now() < deadline, "revoked token still accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A broken `auth` stops start-up and `clew config check` with the file, the key and the fix.
#[test]
fn broken_auth_settings_name_the_file_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "query:\n  auth: {bearer_tokens: {file: missing.yaml}}\n",
            "key `query.auth.bearer_tokens.file`",
        ),
        (
            "receivers:\n  zipkin: {endpoint: 127.0.0.1:9411, auth: {}}\n",
            "key `receivers.zipkin.auth`",
        ),
        (
            "query:\n  auth: {oidc: {issuer: i, audience: a, tenant_claim: t, jwks_url: ftp://x}}\n",
            "key `query.auth.oidc.jwks_url`",
        ),
        (
            "query:\n  auth: {proxy_header: {users: {a: [t]}, trusted_proxies: [nowhere]}}\n",
            "key `query.auth.proxy_header.trusted_proxies[0]`",
        ),
        (
            "query:\n  auth: {mtls: {rules: [{dns: a.svc, tenants: [a]}]}}\n",
            "key `query.auth.mtls`",
        ),
    ];
    for (yaml, want) in cases {
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, yaml).unwrap();
        let o = clew(&["config", "check", p.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{yaml}");
        assert!(
            err.contains("c.yaml") && err.contains(want) && err.contains("fix:"),
            "{yaml}: {err}"
        );
    }
}

/// `proxy_header`: the user header is believed only from `trusted_proxies`. The test client is
/// 127.0.0.1: trusted on the query port, not on the OTLP/HTTP port (trusted: 10.9.9.9 only).
#[tokio::test]
async fn proxy_header_is_trusted_only_from_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("clew.yaml");
    std::fs::write(
        &config,
        "receivers:
  otlp:
    protocols:
      http:
        auth: {proxy_header: {users: {alice: [team-a]}, trusted_proxies: [10.9.9.9]}}
query:
  auth:
    proxy_header:
      header: X-Forwarded-User
      tenants_header: X-Forwarded-Tenants
      users: {alice: [team-a]}
      trusted_proxies: [127.0.0.1/32]
",
    )
    .unwrap();
    let server = Server::start_with(&dir.path().join("data"), Some(&config));
    let c = reqwest::Client::new();
    let get = |headers: Vec<(&'static str, &'static str)>| {
        let mut r = c.get(format!("{}/api/services", server.query));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get(vec![("x-forwarded-user", "alice")]).await, 200);
    assert_eq!(
        get(vec![
            ("x-forwarded-user", "alice"),
            ("x-scope-orgid", "team-b")
        ])
        .await,
        403
    );
    assert_eq!(
        get(vec![
            ("x-forwarded-user", "bob"),
            ("x-forwarded-tenants", "team-b")
        ])
        .await,
        200
    );
    assert_eq!(get(vec![("x-forwarded-user", "mallory")]).await, 403);
    assert_eq!(get(vec![]).await, 401);
    // From an address that is not a trusted proxy: refused, whatever the headers say.
    let r = c
        .post(format!("{}/v1/traces", server.http))
        .header("x-forwarded-user", "alice")
        .header("content-type", "application/x-protobuf")
        .body(otlp(&A, 1).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
