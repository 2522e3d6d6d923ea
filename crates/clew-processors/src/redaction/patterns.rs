//! Built-in value patterns, their cheap prechecks and their validators (Luhn for cards, the
//! ISO 13616 mod-97 checksum for IBANs, `Ipv6Addr` parsing, digit counts for phones).
//!
//! Every string value is scanned once into [`Stats`] (a byte-class table walk); a built-in's
//! regex only runs when the stats say it could match (an email needs an `@`, a card 13 digits,
//! a JWT two dots and `eyJ`, …). A regex match is then confirmed by the validator, so a
//! 16-digit order number that fails the Luhn check, or a version string like `1.2.3.4.5`, is
//! left alone.

use regex::Regex;
use std::ops::Range;

/// How a regex match is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validator {
    None,
    Luhn,
    Iban,
    Ipv4,
    Ipv6,
    Phone,
}

/// A built-in pattern.
pub(crate) struct Builtin {
    pub name: &'static str,
    pub regex: &'static str,
    pub validator: Validator,
    /// A hand-written scanner used instead of the regex (same matches, faster).
    pub finder: Option<Finder>,
    pub precheck: fn(&Stats, &str) -> bool,
}

/// Calls the callback with the byte range of every confirmed match.
pub(crate) type Finder = fn(&str, &mut dyn FnMut(Range<usize>));

/// Built-ins in the order they run (most specific first, so a JWT inside a bearer token or a
/// password inside a URL is handled by the more precise rule). `patterns` selects from these.
pub(crate) const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "private_key",
        regex: r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?s:.*?)(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\z)",
        validator: Validator::None,
        finder: None,
        precheck: |s, v| s.dashes >= 10 && v.contains("PRIVATE KEY"),
    },
    Builtin {
        name: "url_password",
        regex: r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:(?P<redact>[^/\s@]+)@",
        validator: Validator::None,
        finder: None,
        precheck: |s, v| s.has(AT) && s.colons >= 2 && v.contains("://"),
    },
    Builtin {
        name: "jwt",
        regex: r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        validator: Validator::None,
        finder: None,
        precheck: |s, v| s.dots >= 2 && v.len() >= 20 && v.contains("eyJ"),
    },
    Builtin {
        name: "bearer_token",
        regex: r"(?i:bearer)[ \t]+(?P<redact>[A-Za-z0-9._~+/=-]{8,})",
        validator: Validator::None,
        finder: None,
        precheck: |s, v| s.has(SPACE) && v.len() >= 8 && contains_ascii_ci(v, b"bearer"),
    },
    Builtin {
        name: "aws_access_key",
        regex: r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?-u:\b)",
        validator: Validator::None,
        finder: None,
        precheck: |s, v| {
            s.upper >= 4
                && s.len >= 20
                && v.as_bytes()
                    .windows(2)
                    .any(|w| w[0] == b'A' && matches!(w[1], b'K' | b'S' | b'B' | b'C' | b'3'))
        },
    },
    Builtin {
        name: "gcp_api_key",
        regex: r"AIza[0-9A-Za-z_-]{35}",
        validator: Validator::None,
        finder: None,
        precheck: |s, v| s.len >= 39 && v.contains("AIza"),
    },
    Builtin {
        name: "github_token",
        regex: r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})",
        validator: Validator::None,
        finder: None,
        precheck: |s, v| s.len >= 40 && s.has(UNDERSCORE) && v.contains("gh"),
    },
    Builtin {
        name: "slack_token",
        regex: r"xox[abposr]-[A-Za-z0-9-]{10,}",
        validator: Validator::None,
        finder: None,
        precheck: |s, v| s.dashes >= 1 && v.contains("xox"),
    },
    Builtin {
        name: "stripe_key",
        regex: r"(?-u:\b)(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",
        validator: Validator::None,
        finder: None,
        precheck: |s, v| s.has(UNDERSCORE) && (v.contains("_live_") || v.contains("_test_")),
    },
    Builtin {
        name: "email",
        regex: r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        validator: Validator::None,
        finder: None,
        precheck: |s, _| s.has(AT) && s.dots >= 1 && s.len >= 6,
    },
    Builtin {
        name: "credit_card",
        regex: r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)",
        validator: Validator::Luhn,
        finder: Some(find_cards),
        precheck: |s, _| s.digits >= 13,
    },
    Builtin {
        name: "iban",
        regex: r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?-u:\b)",
        validator: Validator::Iban,
        finder: None,
        precheck: |s, v| s.upper >= 2 && s.digits >= 4 && s.len >= 15 && max_iban_run(v) >= 15,
    },
    Builtin {
        name: "ipv6",
        regex: r"(?i:(?:[0-9a-f]{1,4}:|:)(?:[0-9a-f]{0,4}:){1,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9a-f]{1,4})?)",
        validator: Validator::Ipv6,
        finder: None,
        precheck: |s, _| s.colons >= 2,
    },
    Builtin {
        name: "ipv4",
        regex: r"(?-u:\b)(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?-u:\b)",
        validator: Validator::Ipv4,
        finder: Some(find_ipv4),
        precheck: |s, _| s.dots >= 3 && s.digits >= 4,
    },
    Builtin {
        name: "phone",
        regex: r"\+[1-9][0-9]{0,3}(?:[ .-]?\(?[0-9]{1,4}\)?){2,6}|(?:\([2-9][0-9]{2}\) ?|(?-u:\b)[2-9][0-9]{2}[ .-])[0-9]{3}[ .-][0-9]{4}(?-u:\b)",
        validator: Validator::Phone,
        finder: None,
        precheck: |s, v| s.digits >= 7 && (s.has(PLUS) || (s.digits >= 10 && nanp_shaped(v))),
    },
];

/// Names of the built-ins, for error messages.
pub(crate) fn builtin_names() -> Vec<&'static str> {
    BUILTINS.iter().map(|b| b.name).collect()
}

pub(crate) const AT: u8 = 1;
pub(crate) const SPACE: u8 = 2;
pub(crate) const PLUS: u8 = 4;
pub(crate) const DASH: u8 = 8;
pub(crate) const DOT: u8 = 16;
pub(crate) const PAREN: u8 = 32;
pub(crate) const UNDERSCORE: u8 = 64;

// Byte classes for the one-pass scan.
const C_DIGIT: u8 = 1;
const C_UPPER: u8 = 2;
const C_COLON: u8 = 3;
const C_DOT: u8 = 4;
const C_DASH: u8 = 5;
const C_AT: u8 = 6;
const C_SPACE: u8 = 7;
const C_PLUS: u8 = 8;
const C_PAREN: u8 = 9;
const C_UNDERSCORE: u8 = 10;

const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = b'0';
    while i <= b'9' {
        t[i as usize] = C_DIGIT;
        i += 1;
    }
    let mut i = b'A';
    while i <= b'Z' {
        t[i as usize] = C_UPPER;
        i += 1;
    }
    t[b':' as usize] = C_COLON;
    t[b'.' as usize] = C_DOT;
    t[b'-' as usize] = C_DASH;
    t[b'@' as usize] = C_AT;
    t[b' ' as usize] = C_SPACE;
    t[b'\t' as usize] = C_SPACE;
    t[b'+' as usize] = C_PLUS;
    t[b'(' as usize] = C_PAREN;
    t[b')' as usize] = C_PAREN;
    t[b'_' as usize] = C_UNDERSCORE;
    t
};

/// What one pass over a value found: enough to skip every built-in that cannot match.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stats {
    pub len: usize,
    pub digits: usize,
    pub upper: usize,
    pub colons: usize,
    pub dots: usize,
    pub dashes: usize,
    pub flags: u8,
}

impl Stats {
    pub fn of(v: &str) -> Stats {
        let mut s = Stats {
            len: v.len(),
            ..Stats::default()
        };
        for &b in v.as_bytes() {
            match CLASS[b as usize] {
                0 => {}
                C_DIGIT => s.digits += 1,
                C_UPPER => s.upper += 1,
                C_COLON => s.colons += 1,
                C_DOT => {
                    s.dots += 1;
                    s.flags |= DOT
                }
                C_DASH => {
                    s.dashes += 1;
                    s.flags |= DASH
                }
                C_AT => s.flags |= AT,
                C_SPACE => s.flags |= SPACE,
                C_PLUS => s.flags |= PLUS,
                C_PAREN => s.flags |= PAREN,
                _ => s.flags |= UNDERSCORE,
            }
        }
        s
    }

    pub fn has(&self, any: u8) -> bool {
        self.flags & any != 0
    }
}

fn contains_ascii_ci(hay: &str, needle: &[u8]) -> bool {
    let (Some(&first), h) = (needle.first(), hay.as_bytes()) else {
        return true;
    };
    let first = first.to_ascii_lowercase();
    let last_start = match h.len().checked_sub(needle.len()) {
        Some(n) => n,
        None => return false,
    };
    (0..=last_start).any(|i| {
        h[i].to_ascii_lowercase() == first && h[i..i + needle.len()].eq_ignore_ascii_case(needle)
    })
}

fn word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A run of 10 digits split by separators (` .-()`) into at least three groups:
/// `415-555-2671`, `(415) 555 2671` — what the North-American alternative of `phone` needs.
pub(crate) fn nanp_shaped(v: &str) -> bool {
    let (mut digits, mut groups, mut in_sep) = (0, 0, false);
    for &b in v.as_bytes() {
        if b.is_ascii_digit() {
            if in_sep || digits == 0 {
                groups += 1;
            }
            in_sep = false;
            digits += 1;
            if digits >= 10 && groups >= 3 {
                return true;
            }
        } else if matches!(b, b' ' | b'.' | b'-' | b'(' | b')') {
            in_sep = true;
            if b == b'(' {
                digits = 0;
                groups = 0;
            }
        } else {
            digits = 0;
            groups = 0;
            in_sep = false;
        }
    }
    false
}

/// Longest run of `[A-Z0-9]` with single spaces (IBAN shaped).
pub(crate) fn max_iban_run(v: &str) -> usize {
    let (mut best, mut cur, mut space) = (0, 0, false);
    for &b in v.as_bytes() {
        if b.is_ascii_uppercase() || b.is_ascii_digit() {
            cur += 1;
            space = false;
            best = best.max(cur);
        } else if b == b' ' && cur > 0 && !space {
            space = true;
        } else {
            cur = 0;
            space = false;
        }
    }
    best
}

/// Card numbers: maximal runs of digits separated by single ` `/`-`, 13–19 digits, on word
/// boundaries, confirmed by [`card_ok`] (what the `credit_card` regex + Luhn validator match).
fn find_cards(v: &str, f: &mut dyn FnMut(Range<usize>)) {
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && word(b[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        let mut digits = 0;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                digits += 1;
                i += 1;
                end = i;
            } else if matches!(b[i], b' ' | b'-') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
            } else {
                break;
            }
        }
        let bounded = end >= b.len() || !word(b[end]);
        if bounded && (13..=19).contains(&digits) && card_ok(&v[start..end]) {
            f(start..end);
        }
        while i < b.len() && word(b[i]) {
            i += 1;
        }
    }
}

/// IPv4 addresses: maximal `[0-9.]` runs of exactly four 0–255 octets without leading zeros
/// (a trailing sentence dot is allowed), not glued to letters, and not a product version such as
/// `Chrome/120.0.0.0`.
fn find_ipv4(v: &str, f: &mut dyn FnMut(Range<usize>)) {
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let mut end = i;
        if b[end - 1] == b'.' {
            end -= 1;
        }
        if start > 0 && (word(b[start - 1]) || b[start - 1] == b'.') {
            continue;
        }
        if i < b.len() && word(b[i]) {
            continue;
        }
        if start > 0 && b[start - 1] == b'/' && product_token(&b[..start - 1]) {
            continue;
        }
        if ipv4_ok(&v[start..end]) {
            f(start..end);
        }
    }
}

/// `Name` just before a `/`: a run of word characters starting the string or after a space.
fn product_token(before: &[u8]) -> bool {
    let tail = before.iter().rev().take_while(|c| word(**c)).count();
    tail > 0
        && before[before.len() - tail].is_ascii_alphabetic()
        && (tail == before.len() || before[before.len() - tail - 1] == b' ')
}

fn ipv4_ok(s: &str) -> bool {
    let mut n = 0;
    for part in s.split('.') {
        n += 1;
        let ok = !part.is_empty()
            && part.len() <= 3
            && (part.len() == 1 || !part.starts_with('0'))
            && part.parse::<u16>().is_ok_and(|x| x <= 255);
        if !ok || n > 4 {
            return false;
        }
    }
    n == 4
}

/// A compiled value rule's matcher: regex, optional `redact` group, validator.
pub(crate) struct Matcher {
    pub regex: Regex,
    pub group: Option<usize>,
    pub validator: Validator,
    pub finder: Option<Finder>,
}

impl Matcher {
    pub fn new(regex: Regex, validator: Validator) -> Self {
        let group = regex.capture_names().position(|n| n == Some("redact"));
        Self {
            regex,
            group,
            validator,
            finder: None,
        }
    }

    pub fn with_finder(mut self, finder: Option<Finder>) -> Self {
        self.finder = finder;
        self
    }

    /// Calls `f` with the byte range to replace for every confirmed match, in order.
    pub fn for_each_match(&self, hay: &str, mut f: impl FnMut(Range<usize>)) {
        if let Some(find) = self.finder {
            return find(hay, &mut f);
        }
        match self.group {
            None => {
                for m in self.regex.find_iter(hay) {
                    if validate(self.validator, hay, m.range()) {
                        f(m.range());
                    }
                }
            }
            Some(g) => {
                for caps in self.regex.captures_iter(hay) {
                    let (Some(whole), Some(part)) = (caps.get(0), caps.get(g)) else {
                        continue;
                    };
                    if validate(self.validator, hay, whole.range()) {
                        f(part.range());
                    }
                }
            }
        }
    }
}

/// Confirms a regex match with the pattern's validator.
pub(crate) fn validate(v: Validator, hay: &str, r: Range<usize>) -> bool {
    let Some(text) = hay.get(r.clone()) else {
        return false;
    };
    match v {
        Validator::None => true,
        Validator::Luhn => card_ok(text),
        Validator::Iban => iban_ok(text),
        Validator::Phone => {
            let d = text.bytes().filter(u8::is_ascii_digit).count();
            (7..=15).contains(&d)
        }
        Validator::Ipv4 => {
            let b = hay.as_bytes();
            // `1.2.3.4.5` (a version) or `v1.2.3.4`: a dot-joined number continues the match.
            let before_ok =
                r.start < 2 || !(b[r.start - 1] == b'.' && b[r.start - 2].is_ascii_alphanumeric());
            let after_ok =
                r.end + 1 >= b.len() || !(b[r.end] == b'.' && b[r.end + 1].is_ascii_digit());
            before_ok && after_ok
        }
        Validator::Ipv6 => {
            let b = hay.as_bytes();
            let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':' || c == b'.';
            if r.start > 0 && word(b[r.start - 1]) {
                return false;
            }
            if r.end < b.len() && (b[r.end].is_ascii_alphanumeric() || b[r.end] == b'_') {
                return false;
            }
            text.bytes().any(|c| c.is_ascii_hexdigit())
                && text.parse::<std::net::Ipv6Addr>().is_ok()
        }
    }
}

/// Luhn checksum over the digits of `s` (separators ignored).
pub fn luhn_valid(s: &str) -> bool {
    let mut sum = 0u32;
    let mut n = 0usize;
    for b in s.bytes().rev() {
        if !b.is_ascii_digit() {
            continue;
        }
        let mut d = u32::from(b - b'0');
        if n % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        n += 1;
    }
    n > 0 && sum.is_multiple_of(10)
}

/// A plausible payment card number: 13–19 digits, a card-network first digit (2–6; 13 digits
/// only for Visa's `4`), and a valid Luhn checksum.
pub fn card_ok(s: &str) -> bool {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    let first = s.bytes().find(u8::is_ascii_digit).unwrap_or(b'0');
    (13..=19).contains(&digits)
        && (b'2'..=b'6').contains(&first)
        && (digits != 13 || first == b'4')
        && luhn_valid(s)
}

/// ISO 13616: 15–34 alphanumerics (spaces ignored), country letters, check digits, and the
/// rearranged number mod 97 == 1.
pub fn iban_ok(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len())
        || !compact[..2].iter().all(u8::is_ascii_uppercase)
        || !compact[2..4].iter().all(u8::is_ascii_digit)
    {
        return false;
    }
    let mut rem = 0u32;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        match b {
            b'0'..=b'9' => rem = (rem * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => rem = (rem * 100 + u32::from(b - b'A' + 10)) % 97,
            _ => return false,
        }
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builtin(name: &str) -> Matcher {
        let b = BUILTINS.iter().find(|b| b.name == name).expect("builtin");
        Matcher::new(Regex::new(b.regex).expect("compiles"), b.validator).with_finder(b.finder)
    }

    /// The text the built-in would replace in `v`, if its precheck passes.
    fn hits(name: &str, v: &str) -> Vec<String> {
        let b = BUILTINS.iter().find(|b| b.name == name).expect("builtin");
        if !(b.precheck)(&Stats::of(v), v) {
            return vec![];
        }
        let m = builtin(name);
        let mut out = vec![];
        m.for_each_match(v, |r| out.push(v[r].to_string()));
        out
    }

    #[test]
    fn all_builtins_compile() {
        for b in BUILTINS {
            Regex::new(b.regex).unwrap_or_else(|e| panic!("{}: {e}", b.name));
        }
    }

    #[test]
    fn luhn_and_cards() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("4111 1111 1111 1111"));
        assert!(!luhn_valid("4111111111111112"));
        assert!(card_ok("5555-5555-5555-4444"));
        assert!(card_ok("378282246310005")); // Amex, 15
        assert!(card_ok("4222222222222")); // Visa, 13
        assert!(!card_ok("1700000000008")); // epoch millis shaped, bad first digit
        assert_eq!(
            hits("credit_card", "card 4111 1111 1111 1111 ok"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            hits("credit_card", "pan=5555555555554444"),
            ["5555555555554444"]
        );
        assert!(
            hits("credit_card", "order 4111111111111112").is_empty(),
            "bad Luhn"
        );
        assert!(
            hits("credit_card", "id 12345678901234567890123").is_empty(),
            "too long"
        );
        assert!(hits("credit_card", "4bf92f3577b34da6a3ce929d0e0e4736").is_empty());
    }

    #[test]
    fn ibans() {
        assert!(iban_ok("DE89370400440532013000"));
        assert!(iban_ok("GB82 WEST 1234 5698 7654 32"));
        assert!(!iban_ok("DE89370400440532013001"), "checksum");
        assert_eq!(
            hits("iban", "to GB82 WEST 1234 5698 7654 32."),
            ["GB82 WEST 1234 5698 7654 32"]
        );
        assert_eq!(
            hits("iban", "iban=DE89370400440532013000"),
            ["DE89370400440532013000"]
        );
        assert!(hits("iban", "DE89370400440532013001").is_empty());
        assert!(hits("iban", "SKU AB12CDEF34567890XYZ").is_empty());
    }

    #[test]
    fn emails() {
        assert_eq!(
            hits("email", "to: Jane.Doe+x@mail.example.co.uk;"),
            ["Jane.Doe+x@mail.example.co.uk"]
        );
        assert!(hits("email", "user@localhost").is_empty());
        assert!(hits("email", "@handle on example.com").is_empty());
        assert!(hits("email", "pkg@1.2.3").is_empty());
    }

    #[test]
    fn phones() {
        assert_eq!(hits("phone", "call +1 415 555 2671"), ["+1 415 555 2671"]);
        assert_eq!(hits("phone", "+44 20 7946 0958"), ["+44 20 7946 0958"]);
        assert_eq!(hits("phone", "(415) 555-2671"), ["(415) 555-2671"]);
        assert_eq!(hits("phone", "tel 415-555-2671."), ["415-555-2671"]);
        assert!(hits("phone", "2024-01-15 10:00").is_empty());
        assert!(hits("phone", "+1 2").is_empty());
        assert!(hits("phone", "123-456-7890").is_empty());
        assert!(hits("phone", "v1.2.3").is_empty());
        assert!(hits("phone", "123e4567-e89b-12d3-a456-426614174000").is_empty());
    }

    #[test]
    fn ips() {
        assert_eq!(hits("ipv4", "from 192.168.1.20:443"), ["192.168.1.20"]);
        assert!(hits("ipv4", "version 1.2.3.4.5").is_empty());
        assert!(hits("ipv4", "256.1.1.1").is_empty());
        assert!(hits("ipv4", "v2.1.0").is_empty());
        assert!(hits("ipv4", "Mozilla/5.0 Chrome/120.0.0.0 Safari/537.36").is_empty());
        assert_eq!(hits("ipv4", "GET /hosts/10.0.0.1"), ["10.0.0.1"]);
        assert_eq!(hits("ipv4", "peer was 8.8.8.8."), ["8.8.8.8"]);
        assert!(hits("ipv4", "01.2.3.4 1.2.3.4x").is_empty());
        assert_eq!(
            hits("ipv6", "peer 2001:db8::8a2e:370:7334 ok"),
            ["2001:db8::8a2e:370:7334"]
        );
        assert_eq!(hits("ipv6", "[::1]:8080"), ["::1"]);
        assert_eq!(hits("ipv6", "::ffff:192.0.2.1"), ["::ffff:192.0.2.1"]);
        assert!(hits("ipv6", "std::fmt::Display").is_empty());
        assert!(hits("ipv6", "at 12:30:45").is_empty());
        assert!(hits("ipv6", "mac 00:1a:2b:3c:4d:5e").is_empty());
    }

    #[test]
    fn tokens() {
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(hits("jwt", &format!("tok {jwt}")), [jwt]);
        assert!(hits("jwt", "eyJ.not.a.jwt").is_empty());
        assert_eq!(
            hits("bearer_token", "Authorization: Bearer abc.def-123"),
            ["abc.def-123"]
        );
        assert_eq!(hits("bearer_token", "bearer\tXYZabc123=="), ["XYZabc123=="]);
        assert!(hits("bearer_token", "the bearer of bad news").is_empty());
        assert_eq!(
            hits("aws_access_key", "key=AKIAIOSFODNN7EXAMPLE"),
            ["AKIAIOSFODNN7EXAMPLE"]
        );
        assert!(hits("aws_access_key", "AKIAIOSFODNN7EXAMPL").is_empty());
        assert_eq!(
            hits("gcp_api_key", "k=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"),
            ["AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"]
        );
        assert_eq!(
            hits("github_token", "ghp_0123456789abcdefghijABCDEFGHIJ012345"),
            ["ghp_0123456789abcdefghijABCDEFGHIJ012345"]
        );
        assert_eq!(
            hits("slack_token", "xoxb-1234567890-abc"),
            ["xoxb-1234567890-abc"]
        );
        assert_eq!(
            hits("stripe_key", "sk_live_0123456789abcdefXYZ"),
            ["sk_live_0123456789abcdefXYZ"]
        );
        assert_eq!(
            hits("url_password", "postgres://app:s3cr3t@db:5432/x"),
            ["s3cr3t"]
        );
        assert!(hits("url_password", "https://example.com/a@b").is_empty());
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----";
        assert_eq!(hits("private_key", &format!("k: {pem} tail")), [pem]);
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    #[test]
    #[ignore]
    fn timing() {
        let vals = [
            "GET",
            "/api/v1/orders/{id}",
            "https://shop.example.com/api/v1/orders/10005?ref=newsletter",
            "shop.example.com",
            "1.1",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "postgresql",
            "SELECT id, total, status FROM orders WHERE customer_id = ? AND status IN (?) LIMIT ?",
            "tokio-runtime-worker",
            "orders::handlers::get_order",
            "src/handlers/orders.rs",
            "ORD-2024-000005",
            "123e4567-e89b-12d3-a456-426614174000",
            "customer",
        ];
        let n = 20000;
        for v in vals {
            let t = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(Stats::of(std::hint::black_box(v)));
            }
            let stats_ns = t.elapsed().as_nanos() / n as u128;
            let st = Stats::of(v);
            let mut line = format!("{:>5}ns stats  {:.40}", stats_ns, v);
            for b in BUILTINS {
                let m =
                    Matcher::new(Regex::new(b.regex).unwrap(), b.validator).with_finder(b.finder);
                let t = std::time::Instant::now();
                let mut pass = false;
                for _ in 0..n {
                    pass = (b.precheck)(&st, std::hint::black_box(v));
                }
                let pre = t.elapsed().as_nanos() / n as u128;
                if pass {
                    let t = std::time::Instant::now();
                    for _ in 0..n {
                        m.for_each_match(std::hint::black_box(v), |r| {
                            std::hint::black_box(r);
                        });
                    }
                    let ns = t.elapsed().as_nanos() / n as u128;
                    line.push_str(&format!(" | {}:{}+{}", b.name, pre, ns));
                } else if pre > 5 {
                    line.push_str(&format!(" | {}:pre{}", b.name, pre));
                }
            }
            println!("{line}");
        }
    }
}
