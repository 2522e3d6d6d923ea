//! Signing keys, JWKS documents and JWTs for tests, benchmarks and examples (an OIDC provider in a
//! few lines, on aws-lc-rs). The server never uses this module.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents,
    ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

enum Inner {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A private key that signs JWTs, with its public JWK.
pub struct SigningKey {
    pub kid: String,
    inner: Inner,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// RSA 2048, RS256.
    pub fn rs256(kid: &str) -> Self {
        let kp =
            RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA key generation");
        Self {
            kid: kid.into(),
            inner: Inner::Rsa(kp),
        }
    }

    /// P-256, ES256.
    pub fn es256(kid: &str) -> Self {
        let kp =
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key generation");
        Self {
            kid: kid.into(),
            inner: Inner::Ec(kp),
        }
    }

    /// Ed25519, EdDSA.
    pub fn ed25519(kid: &str) -> Self {
        let kp = Ed25519KeyPair::generate().expect("Ed25519 key generation");
        Self {
            kid: kid.into(),
            inner: Inner::Ed(kp),
        }
    }

    /// The JWS `alg` this key signs with.
    pub fn alg(&self) -> &'static str {
        match self.inner {
            Inner::Rsa(_) => "RS256",
            Inner::Ec(_) => "ES256",
            Inner::Ed(_) => "EdDSA",
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        match &self.inner {
            Inner::Rsa(kp) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(kp.public_key());
                json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                       "n": b64(&c.n), "e": b64(&c.e)})
            }
            Inner::Ec(kp) => {
                let p = kp.public_key().as_ref();
                json!({"kty": "EC", "use": "sig", "alg": "ES256", "kid": self.kid, "crv": "P-256",
                       "x": b64(&p[1..33]), "y": b64(&p[33..65])})
            }
            Inner::Ed(kp) => {
                json!({"kty": "OKP", "use": "sig", "alg": "EdDSA", "kid": self.kid, "crv": "Ed25519",
                       "x": b64(kp.public_key().as_ref())})
            }
        }
    }

    /// A compact JWS of `claims` with this key's `alg` and `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }

    /// A compact JWS with a header of your own (e.g. another `kid`).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match &self.inner {
            Inner::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .expect("RSA signing");
                sig
            }
            Inner::Ec(kp) => kp
                .sign(&rng, input.as_bytes())
                .expect("EC signing")
                .as_ref()
                .to_vec(),
            Inner::Ed(kp) => kp.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    }
}

/// `{"keys": [...]}` of these keys' public halves.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Claims with `iss`, `aud`, `sub`, `tenants`, `iat` and `exp` = now + `expires_in` seconds
/// (negative: already expired).
pub fn claims(issuer: &str, audience: &str, sub: &str, tenants: &[&str], expires_in: i64) -> Value {
    let now = now();
    json!({"iss": issuer, "aud": audience, "sub": sub, "tenants": tenants,
           "iat": now, "exp": now + expires_in})
}
