//! # `redaction` — removes and masks PII and secrets in spans
//!
//! Follows the OpenTelemetry Collector's `redaction` processor (same keys, same order of checks,
//! same summary attributes) and adds built-in value patterns with validators, per-pattern actions,
//! keyed hashing with rotatable keys, SQL literal normalization and span names.
//!
//! ## Example
//!
//! ```yaml
//! processors:
//!   redaction/pii:
//!     allow_all_keys: true            # keep every key; only values are checked
//!     ignored_keys: [http.route]      # never touched
//!     blocked_key_patterns: ['(?i)password|secret|token|authorization|api[_.-]?key']
//!     patterns: [email, credit_card, iban, phone, ipv4, ipv6, jwt, bearer_token,
//!                aws_access_key, gcp_api_key, github_token, slack_token, stripe_key,
//!                private_key, url_password]
//!     custom_patterns:
//!       - {name: customer_id, regex: 'CUST-[0-9]{8}', action: hash}
//!     hash_key_file: /etc/clew/redaction.key
//!     sql: true                       # literals in db.statement / db.query.text → ?
//!     summary: info
//! ```
//!
//! ## Keys (all optional)
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `allow_all_keys` | `false` | Collector semantics: with `false`, only `allowed_keys` (plus `ignored_keys` and the `redaction.*` summary keys) survive — **on resources too**, so `service.name` goes unless listed. Set `true` to check values only. |
//! | `allowed_keys` | `[]` | Keys kept when `allow_all_keys: false` (exact names). |
//! | `ignored_keys` | `[]` | Keys never touched by any rule (exact names); counted in `redaction.ignored.count`. |
//! | `blocked_key_patterns` | `[]` | Regexes (unanchored) on the key: the **whole value** of a matching key gets `blocked_key_action`, whatever its type (non-strings are rendered as text, then replaced by a string). Also applies to keys inside map values. |
//! | `blocked_key_action` | `action` | `mask`, `hash`, `drop` or `truncate` for `blocked_key_patterns`. |
//! | `blocked_values` | `[]` | Regexes (unanchored) on string values: every match is replaced according to `action` (Collector: `****`). |
//! | `allowed_values` | `[]` | Regexes: a string value matching one is left alone by every value rule and by `blocked_key_patterns`; listed in `redaction.allowed.*`. |
//! | `action` | `mask` | Default action of `blocked_values`, `blocked_key_patterns`, `patterns` and `custom_patterns` entries without their own. |
//! | `truncate_keep` | `4` | Characters `truncate` keeps (then `****`; a match no longer than that becomes `****`). |
//! | `hash_function` | `none` | Collector key. `hmac_sha256`: `mask` produces the keyed hash instead of `****`. The Collector's unkeyed `md5`/`sha1`/`sha3` are refused (reversible for low-entropy PII). |
//! | `patterns` | `[]` | Built-in value patterns, by name or as `{name, action, keep}`: `email`, `credit_card` (13–19 digits, spaces/dashes allowed, network first digit, **Luhn**-checked), `iban` (ISO 13616 **mod-97**-checked, compact or in groups of 4), `phone` (`+` international with 7–15 digits, or North-American `(415) 555-2671` / `415-555-2671`), `ipv4` (four octets without leading zeros; not inside `1.2.3.4.5` and not a product version like `Chrome/120.0.0.0`), `ipv6` (validated by parsing; not `std::fmt`, times or MACs), `jwt`, `bearer_token` (the token after `Bearer `, ≥ 8 chars), `aws_access_key` (`AKIA…`/`ASIA…`), `gcp_api_key` (`AIza…`), `github_token` (`ghp_…`, `github_pat_…`), `slack_token` (`xox?-…`), `stripe_key` (`sk_live_…`), `private_key` (PEM blocks), `url_password` (the password in `scheme://user:pass@host`). They run in that fixed order (specific first), whatever the listed order. Unknown names are start-up errors listing the known ones. |
//! | `custom_patterns` | `[]` | `[{name, regex, action, keep}]`: `name` is the metrics label (unique); with a capture group named `redact` only that group is replaced (`'password=(?P<redact>[^&]+)'`). Runs before the built-ins, after `blocked_values`. |
//! | `hash_key_file` / `hash_key_env` | — | The HMAC key (≥ 16 bytes; trailing whitespace trimmed) from a file or an environment variable; its id is `hash_key_id` (default `k1`). |
//! | `hash_keys` | `[]` | Key versions for rotation: `[{id, file}` or `{id, env}]`, the **first is current** (used for new hashes); the others are loaded so [`Redaction::pseudonyms`] can compute old forms for searches. Not together with `hash_key_file`/`hash_key_env`. |
//! | `span_names` | `false` | Also apply the value rules (`blocked_values`, `custom_patterns`, `patterns`) to span names; `drop` turns a name into `****`. |
//! | `sql` | `false` | Replace SQL literals with `?` in `sql_keys` (see [`sql`]): strings, numbers, hex, negative numbers, dollar-quoted strings, `IN (1,2,3)` → `IN (?)`; identifiers, keywords, placeholders and comments stay. Value rules still run on the result. |
//! | `sql_keys` | `[db.statement, db.query.text]` | Keys `sql` applies to. |
//! | `scope` | `[span, resource, event, link]` | Which attribute lists are processed. |
//! | `summary` | `info` | `debug`: counts and key lists; `info`: counts; `silent`: nothing. |
//!
//! A configuration needing a key (`action: hash`, or `mask` with `hash_function: hmac_sha256`)
//! without one is a start-up error, as is any regex that does not compile; errors name the key
//! relative to the processor (`custom_patterns[2].regex: invalid regex … (fix: …)`).
//!
//! ## Actions
//!
//! * `mask` — the match (for key rules: the whole value) becomes `****`;
//! * `hash` — `hmac:<key id>:<16 hex>`: the first 64 bits of HMAC-SHA256 over the matched text
//!   only (not the key), so the same e-mail hashes the same under `user.email` and `enduser.id`
//!   and stays joinable; a new key id gives new values, visibly prefixed;
//! * `drop` — the attribute is removed (counted as redacted, like an unlisted key);
//! * `truncate` — the first `keep` characters, then `****`.
//!
//! ## Order of checks per attribute (the Collector's)
//!
//! 1. key in `ignored_keys` → untouched;
//! 2. `allow_all_keys: false` and key not allowed → removed;
//! 3. string value matches `allowed_values` → untouched;
//! 4. key matches `blocked_key_patterns` → key action on the whole value;
//! 5. `sql` for `sql_keys`;
//! 6. `blocked_values`, `custom_patterns`, built-in `patterns`, each replacing its matches.
//!
//! ## Value types
//!
//! Value rules look at strings. Inside arrays and maps (kvlists) every string leaf is checked the
//! same way (and map keys against `blocked_key_patterns`); a `drop` anywhere inside removes the
//! whole top-level attribute; values nested deeper than 16 levels are replaced by `****` (fail
//! closed). Integers, doubles, booleans and bytes are never changed by value rules (a card number
//! sent as an int is not found); key rules (`blocked_key_patterns`, the allow list) apply to every
//! type. Nothing panics on any value shape.
//!
//! ## Summary attributes (as the Collector writes them)
//!
//! On each processed attribute list (span, resource, event, link): `redaction.redacted.keys`
//! (debug) / `redaction.redacted.count` — removed keys; `redaction.masked.keys` /
//! `redaction.masked.count` — changed values; `redaction.allowed.keys` / `redaction.allowed.count`
//! — values exempted by `allowed_values`; `redaction.ignored.count`. Key lists are sorted and
//! comma-joined, zero counts are not written, and a second redaction processor adds to the
//! first's. Span-name changes are not in the summary (they show in the metrics).
//!
//! ## Metrics
//!
//! `clew_redaction_values_total{processor, pattern, action}` — values (and span names) changed or
//! dropped per rule; `pattern` is a built-in's name, a custom pattern's `name`, `blocked_values`,
//! `blocked_key_patterns` or `sql`. `clew_redaction_dropped_attributes_total{processor, reason}`
//! — `reason` is `not_allowed` or `drop_action`.
//!
//! ## Cost
//!
//! One pass per string value builds byte-class counts ([`patterns`]); a built-in's regex only
//! runs when the counts allow a match (`credit_card` and `ipv4` use hand-written scanners, no
//! regex); `blocked_values`/`custom_patterns` are prechecked with one
//! `RegexSet`; nothing is allocated for a value no rule matches. See `benches/redaction.rs`.

pub mod config;
pub mod patterns;
mod processor;
pub mod sql;

pub use config::{
    Action, ConfigError, CustomPattern, HashFunction, HashKeySource, PatternRef, PatternSpec,
    RedactionConfig, ScopeKind, Summary, DEFAULT_SQL_KEYS,
};
pub use patterns::{card_ok, iban_ok, luhn_valid};
pub use processor::{
    HashKey, Redaction, RedactionMetrics, ALLOWED_COUNT, ALLOWED_KEYS, HASH_PREFIX, IGNORED_COUNT,
    MASK, MASKED_COUNT, MASKED_KEYS, MAX_DEPTH, MIN_KEY_BYTES, REDACTED_COUNT, REDACTED_KEYS,
};
