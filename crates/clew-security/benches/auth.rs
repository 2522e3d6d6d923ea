//! The cost of authentication per request: what the tenant gate adds in front of every handler.
//!
//! `cargo bench -p clew-security --bench auth`
//!
//! * `gate/off`: auth off — the gate's pass-through (baseline).
//! * `bearer/lookup`: SHA-256 of the token and a hash-map lookup among 1,000 tokens.
//! * `gate/bearer`: the whole gate with bearer tokens: parse `Authorization`, look up, choose the
//!   tenant from `X-Scope-OrgID`, rewrite the header, insert the identity.
//! * `jwt/{RS256,ES256,EdDSA}`: JWT verification against a JWKS (signature, iss, aud, exp, tenant
//!   claim), and `gate/oidc-ES256` with the gate around it.

use clew_security::auth::testkit::{claims, jwks, SigningKey};
use clew_security::auth::{
    generate_token, hash_token, token_file_line, AuthConfig, Authenticator, BearerTokens,
    TenantGateLayer,
};
use clew_security::TenantScope;
use criterion::{criterion_group, criterion_main, Criterion};
use futures::executor::block_on;
use std::sync::Arc;
use std::time::Duration;

fn request(token: Option<&str>) -> http::request::Parts {
    let mut b = http::Request::builder()
        .uri("/api/traces?service=checkout")
        .header("x-scope-orgid", "team-7");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(()).unwrap().into_parts().0
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();

    // 1,000 tokens, one per tenant.
    let tokens: Vec<String> = (0..1000).map(|_| generate_token()).collect();
    let file = dir.path().join("tokens.yaml");
    let text: String = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let scope =
                TenantScope::Only(vec![clew_model::Tenant::new(&format!("team-{i}")).unwrap()]);
            token_file_line(&format!("t{i}"), &hash_token(t), &scope) + "\n"
        })
        .collect();
    std::fs::write(&file, text).unwrap();
    let bearer = BearerTokens::open(&file, Duration::from_secs(3600)).unwrap();
    let token = tokens[7].clone();

    let off = TenantGateLayer::new("bench", None, "X-Scope-OrgID").unwrap();
    c.bench_function("gate/off", |b| {
        b.iter(|| {
            let mut p = request(Some(&token));
            block_on(off.admit(&mut p)).unwrap()
        })
    });
    c.bench_function("bearer/lookup", |b| {
        b.iter(|| bearer.lookup(std::hint::black_box(&token)).unwrap())
    });
    let bearer: Arc<dyn Authenticator> = Arc::new(bearer);
    let gate = TenantGateLayer::new("bench", Some(bearer), "X-Scope-OrgID").unwrap();
    c.bench_function("gate/bearer", |b| {
        b.iter(|| {
            let mut p = request(Some(&token));
            block_on(gate.admit(&mut p)).unwrap()
        })
    });

    // JWTs, one key of each kind in one JWKS.
    let keys = [
        SigningKey::rs256("rsa"),
        SigningKey::es256("ec"),
        SigningKey::ed25519("ed"),
    ];
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(
        &jwks_path,
        jwks(&keys.iter().collect::<Vec<_>>()).to_string(),
    )
    .unwrap();
    let cfg: AuthConfig = serde_yaml::from_str(&format!(
        "oidc: {{issuer: https://idp.example, audience: clew, jwks_file: {}, tenant_claim: tenants}}",
        jwks_path.display()
    ))
    .unwrap();
    let oidc = cfg.build().unwrap();
    for k in &keys {
        let jwt = k.sign(&claims(
            "https://idp.example",
            "clew",
            "alice",
            &["team-7"],
            3600,
        ));
        let mut group = c.benchmark_group("jwt");
        group.bench_function(k.alg(), |b| {
            b.iter(|| {
                let p = request(Some(&jwt));
                let req = clew_security::auth::AuthRequest::new(&p.headers);
                block_on(oidc.authenticate(&req)).unwrap()
            })
        });
        group.finish();
    }
    let jwt = keys[1].sign(&claims(
        "https://idp.example",
        "clew",
        "alice",
        &["team-7"],
        3600,
    ));
    let gate = TenantGateLayer::new("bench", Some(oidc), "X-Scope-OrgID").unwrap();
    c.bench_function("gate/oidc-ES256", |b| {
        b.iter(|| {
            let mut p = request(Some(&jwt));
            block_on(gate.admit(&mut p)).unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
