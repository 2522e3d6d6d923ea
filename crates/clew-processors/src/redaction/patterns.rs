//! Built-in value patterns, their cheap prechecks and their validators (Luhn for cards, the
//! ISO 13616 mod-97 checksum for IBANs, `Ipv6Addr` parsing, digit counts for phones).
//!
//! Every string value is scanned once into a [`Scan`] (byte-class counts, see [`super::scan`]);
//! a built-in's matcher only runs when its precheck — a necessary condition of a match: counts,
//! then the pattern's trigger (`eyJ` twice, `bearer` before a blank, a digit chain long enough
//! for a card, …) — passes. A regex match is then confirmed by the validator, so a 16-digit order
//! number that fails the Luhn check, or a version string like `1.2.3.4.5`, is left alone.

use super::scan::{
    aws_trigger, bearer_trigger, gcp_trigger, github_trigger, ipv6_trigger, jwt_trigger,
    next_digit, slack_trigger, stripe_trigger, url_trigger, Scan,
};
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
    /// Checked after the counts ([`candidates`]) allow a match: the pattern's trigger string
    /// or digit shape. Together they are a necessary condition of a validated match.
    pub trigger: Option<Trigger>,
}

/// The second half of a built-in's precheck, over the value's [`Scan`] and the value itself.
pub(crate) type Trigger = fn(&Scan, &str) -> bool;

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
        trigger: Some(|_, v| v.contains("PRIVATE KEY")),
    },
    Builtin {
        name: "url_password",
        regex: r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:(?P<redact>[^/\s@]+)@",
        validator: Validator::None,
        finder: None,
        trigger: Some(|_, v| url_trigger(v)),
    },
    Builtin {
        name: "jwt",
        regex: r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        validator: Validator::None,
        finder: None,
        trigger: Some(|_, v| jwt_trigger(v)),
    },
    Builtin {
        name: "bearer_token",
        regex: r"(?i:bearer)[ \t]+(?P<redact>[A-Za-z0-9._~+/=-]{8,})",
        validator: Validator::None,
        finder: None,
        trigger: Some(|_, v| bearer_trigger(v)),
    },
    Builtin {
        name: "aws_access_key",
        regex: r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?-u:\b)",
        validator: Validator::None,
        finder: None,
        trigger: Some(|_, v| aws_trigger(v)),
    },
    Builtin {
        name: "gcp_api_key",
        regex: r"AIza[0-9A-Za-z_-]{35}",
        validator: Validator::None,
        finder: None,
        trigger: Some(|_, v| gcp_trigger(v)),
    },
    Builtin {
        name: "github_token",
        regex: r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})",
        validator: Validator::None,
        finder: None,
        trigger: Some(|_, v| github_trigger(v)),
    },
    Builtin {
        name: "slack_token",
        regex: r"xox[abposr]-[A-Za-z0-9-]{10,}",
        validator: Validator::None,
        finder: None,
        trigger: Some(|_, v| slack_trigger(v)),
    },
    Builtin {
        name: "stripe_key",
        regex: r"(?-u:\b)(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",
        validator: Validator::None,
        finder: None,
        trigger: Some(|_, v| stripe_trigger(v)),
    },
    Builtin {
        name: "email",
        regex: r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        validator: Validator::None,
        finder: None,
        trigger: None,
    },
    Builtin {
        name: "credit_card",
        regex: r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)",
        validator: Validator::Luhn,
        finder: Some(find_cards),
        trigger: Some(|s, v| s.runs(v).card >= 13),
    },
    Builtin {
        name: "iban",
        regex: r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?-u:\b)",
        validator: Validator::Iban,
        finder: None,
        trigger: Some(|s, v| s.runs(v).iban_start && max_iban_run(v) >= 15),
    },
    Builtin {
        name: "ipv6",
        regex: r"(?i:(?:[0-9a-f]{1,4}:|:)(?:[0-9a-f]{0,4}:){1,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9a-f]{1,4})?)",
        validator: Validator::Ipv6,
        finder: None,
        trigger: Some(|_, v| ipv6_trigger(v)),
    },
    Builtin {
        name: "ipv4",
        regex: r"(?-u:\b)(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?-u:\b)",
        validator: Validator::Ipv4,
        finder: Some(find_ipv4),
        trigger: Some(|s, v| s.runs(v).dotted >= 4),
    },
    Builtin {
        name: "phone",
        regex: r"\+[1-9][0-9]{0,3}(?:[ .-]?\(?[0-9]{1,4}\)?){2,6}|(?:\([2-9][0-9]{2}\) ?|(?-u:\b)[2-9][0-9]{2}[ .-])[0-9]{3}[ .-][0-9]{4}(?-u:\b)",
        validator: Validator::Phone,
        finder: None,
        trigger: Some(|s, v| s.plus >= 1 || s.runs(v).nanp),
    },
];

const _: () = assert!(
    BUILTINS.len() == 15,
    "`candidates` lists one condition per built-in"
);

/// Bit `i` set: the counts allow a match of `BUILTINS[i]` (the first half of its precheck,
/// written out inline so that a value costs one call, not one per built-in). Every condition
/// is a minimum the pattern's shortest validated match needs.
pub(crate) fn candidates(s: &Scan) -> u32 {
    // `&` rather than `&&`: plain comparisons, no branch per built-in.
    let bit = |i: u32, ok: bool| u32::from(ok) << i;
    // private_key: `BEGIN` + `PRIVATE KEY` = 15 capitals, five dashes on each side.
    bit(0, (s.dashes >= 10) & (s.upper >= 15))
        // url_password: `://`, the `:` before the password, the `@`.
        | bit(1, (s.at >= 1) & (s.colons >= 2))
        // jwt: `eyJ` + 5, `.`, `eyJ` + 5, `.` = 18 bytes.
        | bit(2, (s.cap_j >= 2) & (s.dots >= 2) & (s.len >= 18))
        // bearer_token: `bearer`, a blank, 8 token characters.
        | bit(3, (s.letter_b >= 1) & (s.blanks >= 1) & (s.len >= 15))
        // aws_access_key: 20 characters; `A3T` + digits has only two capitals.
        | bit(4, (s.cap_a >= 1) & (s.upper >= 2) & (s.len >= 20))
        // gcp_api_key: `AIza` + 35.
        | bit(5, (s.cap_a >= 1) & (s.len >= 39))
        // github_token: `github_pat_` + 22 = 33 (`ghp_` + 36 = 40).
        | bit(6, (s.underscores >= 1) & (s.len >= 33))
        // slack_token: `xoxb-` + 10.
        | bit(7, (s.dashes >= 1) & (s.small_x >= 2) & (s.len >= 15))
        // stripe_key: `sk_live_` + 16.
        | bit(8, (s.underscores >= 2) & (s.len >= 24))
        // email: `a@b.cc`.
        | bit(9, (s.at >= 1) & (s.dots >= 1) & (s.len >= 6))
        // credit_card: 13 digits.
        | bit(10, s.digits >= 13)
        // iban: 15 to 34 capitals and digits, two of each at the start.
        | bit(11, (s.upper >= 2) & (s.digits >= 2) & (s.upper + s.digits >= 15))
        // ipv6: two colons.
        | bit(12, s.colons >= 2)
        // ipv4: four octets.
        | bit(13, (s.dots >= 3) & (s.digits >= 4))
        // phone: 7 digits after a `+`, or 10 (North American).
        | bit(14, (s.digits >= 7) & ((s.plus >= 1) | (s.digits >= 10)))
}

#[cfg(test)]
impl Builtin {
    /// The whole precheck of `BUILTINS[index]`: counts, then the trigger.
    pub fn precheck(&self, index: usize, scan: &Scan, v: &str) -> bool {
        candidates(scan) & (1 << index) != 0 && self.trigger.is_none_or(|t| t(scan, v))
    }
}

/// Names of the built-ins, for error messages.
pub(crate) fn builtin_names() -> Vec<&'static str> {
    BUILTINS.iter().map(|b| b.name).collect()
}

fn word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A run of 10 digits split by separators (` .-()`) into at least three groups:
/// `415-555-2671`, `(415) 555 2671` — what the North-American alternative of `phone` needs.
/// (The precheck reads the same answer from [`super::scan::DigitRuns`]; this is the reference.)
#[cfg(test)]
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
    let mut i = next_digit(b, 0);
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
        i = next_digit(b, i);
        if i >= b.len() {
            break;
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
        let (i, b) = BUILTINS
            .iter()
            .enumerate()
            .find(|(_, b)| b.name == name)
            .expect("builtin");
        if !b.precheck(i, &Scan::of(v), v) {
            return vec![];
        }
        let m = builtin(name);
        let mut out = vec![];
        m.for_each_match(v, |r| out.push(v[r].to_string()));
        out
    }

    /// A small deterministic generator (xorshift64*): no dependency, reproducible failures.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[self.below(xs.len())]
        }
    }

    /// Whole PII values, pieces of them, and look-alikes.
    const FRAGMENTS: &[&str] = &[
        "jane.doe@example.com",
        "a@b.cc",
        "@",
        "x@y",
        ".com",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5555555555554444",
        "378282246310005",
        "4222222222222",
        "4111 1111 1111 1112",
        "1700000000008",
        "41 11",
        "4",
        "-",
        " ",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "GB82",
        "DE89",
        "AB12CDEF",
        "+1 415 555 2671",
        "+44 20 7946 0958",
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "555",
        "(",
        ")",
        "+",
        "2024-01-15 10:00",
        "192.168.1.20",
        "10.0.0.1",
        "8.8.8.8",
        "256.1.1.1",
        "1.2.3.4.5",
        "Chrome/120.0.0.0",
        ".",
        "2001:db8::8a2e:370:7334",
        "::1",
        "::ffff:192.0.2.1",
        "fe80::",
        ":",
        "::",
        "std::fmt",
        "12:30:45",
        "00:1a:2b:3c:4d:5e",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "eyJ",
        "eyJabcde",
        "Bearer ",
        "bearer\t",
        "BEARER  ",
        "abc.def-123",
        "XYZabc123==",
        "AKIAIOSFODNN7EXAMPLE",
        "ASIA",
        "A3T",
        "A3TX0123456789ABCDEF",
        "A3T01234567890123456",
        "AKIA",
        "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
        "AIza",
        "ghp_0123456789abcdefghijABCDEFGHIJ012345",
        "github_pat_0123456789abcdefghijkl",
        "gh",
        "_",
        "xoxb-1234567890-abc",
        "xox",
        "sk_live_0123456789abcdefXYZ",
        "pk_test_",
        "_live_",
        "postgres://app:s3cr3t@db:5432/x",
        "://",
        "https://example.com/a@b",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
        "PRIVATE KEY",
        "-----",
        "é",
        "ü",
        "😀",
        "ß",
        "４１１１",
        "Ａ",
        "\u{a0}",
        "\t",
        "\n",
        "x",
        "J",
        "A",
        "0",
    ];

    fn generated(g: &mut Gen) -> String {
        let mut v = String::new();
        for _ in 0..1 + g.below(6) {
            match g.below(4) {
                0 => {
                    // garbage from the bytes the patterns care about
                    const ALPHA: &[u8] = b"0123456789 .-:@+()_/AJKSxXeyabcdfghiIzZ\t";
                    for _ in 0..g.below(24) {
                        v.push(char::from(ALPHA[g.below(ALPHA.len())]));
                    }
                }
                _ => v.push_str(g.pick(FRAGMENTS)),
            }
        }
        // Sometimes cut it (a truncated value), on a character boundary.
        if g.below(4) == 0 && !v.is_empty() {
            let mut at = g.below(v.len());
            while !v.is_char_boundary(at) {
                at -= 1;
            }
            v.truncate(at);
        }
        v
    }

    #[test]
    fn prechecks_never_hide_a_match() {
        let matchers: Vec<(&Builtin, Matcher)> =
            BUILTINS.iter().map(|b| (b, builtin(b.name))).collect();
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let mut found = vec![0usize; BUILTINS.len()];
        for _ in 0..6000 {
            let v = generated(&mut g);
            let scan = Scan::of(&v);
            assert_eq!(
                scan.runs(&v).nanp,
                nanp_shaped(&v),
                "digit runs disagree with nanp_shaped on {v:?}"
            );
            for (i, (b, m)) in matchers.iter().enumerate() {
                let mut any = false;
                m.for_each_match(&v, |_| any = true);
                if any {
                    found[i] += 1;
                    assert!(
                        b.precheck(i, &scan, &v),
                        "{}'s precheck rejects {v:?}, which it matches",
                        b.name
                    );
                }
            }
        }
        // The generator must actually exercise every pattern, or the test proves nothing.
        for (b, n) in BUILTINS.iter().zip(&found) {
            assert!(*n >= 20, "{} matched only {n} generated values", b.name);
        }
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
