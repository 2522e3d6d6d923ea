//! The one pass over a string value that every built-in pattern's precheck reads, and the
//! trigger checks that run only when that pass allows them.
//!
//! Why this shape: almost no attribute value (routes, user agents, host names, SQL) holds PII,
//! so the processor's cost is what it spends proving that nothing matches. [`Scan::of`] counts
//! byte classes without a branch per byte (one table load and one add into packed 8-bit lanes);
//! each built-in then needs a few comparisons of those counts, and only a value that passes them
//! is searched for the pattern's trigger (`eyJ` twice, `://`, `bearer` before a blank, `AKIA`, a
//! `gh?_` / `_live_` around an underscore, …) with `memchr` over the few candidate positions the
//! counts announced. Only then does the exact matcher (regex or scanner) and its validator run.
//!
//! Every precheck is a *necessary* condition of its pattern's validated match: skipping never
//! loses a match. `patterns::tests::prechecks_never_hide_a_match` checks this against the regexes
//! on generated text (garbage, fragments of every pattern, multi-byte characters).

use aho_corasick::AhoCorasick;
use memchr::{memchr2_iter, memchr_iter};
use regex_syntax::hir::literal::Extractor;
use std::cell::OnceCell;

// Lanes of the packed counter: one byte each, so a block of at most 255 bytes cannot overflow.
const L_DIGIT: u32 = 0;
const L_UPPER: u32 = 1;
const L_COLON: u32 = 2;
const L_DOT: u32 = 3;
const L_DASH: u32 = 4;
const L_AT: u32 = 5;
const L_BLANK: u32 = 6;
const L_PLUS: u32 = 7;
const L_UNDERSCORE: u32 = 8;
const L_CAP_A: u32 = 9;
const L_CAP_J: u32 = 10;
const L_SMALL_X: u32 = 11;
const L_LETTER_B: u32 = 12;
const LANES: usize = 13;
const BLOCK: usize = 255;

const fn lane(l: u32) -> u128 {
    1u128 << (8 * l)
}

/// What each byte adds to the packed counter (`A` and `J` count as upper case too).
const PACK: [u128; 256] = {
    let mut t = [0u128; 256];
    let mut i = b'0';
    while i <= b'9' {
        t[i as usize] = lane(L_DIGIT);
        i += 1;
    }
    let mut i = b'A';
    while i <= b'Z' {
        t[i as usize] = lane(L_UPPER);
        i += 1;
    }
    t[b':' as usize] = lane(L_COLON);
    t[b'.' as usize] = lane(L_DOT);
    t[b'-' as usize] = lane(L_DASH);
    t[b'@' as usize] = lane(L_AT);
    t[b' ' as usize] = lane(L_BLANK);
    t[b'\t' as usize] = lane(L_BLANK);
    t[b'+' as usize] = lane(L_PLUS);
    t[b'_' as usize] = lane(L_UNDERSCORE);
    t[b'A' as usize] = lane(L_UPPER) | lane(L_CAP_A);
    t[b'J' as usize] = lane(L_UPPER) | lane(L_CAP_J);
    t[b'x' as usize] = lane(L_SMALL_X);
    t[b'b' as usize] = lane(L_LETTER_B);
    t[b'B' as usize] = lane(L_UPPER) | lane(L_LETTER_B);
    t
};

/// Byte-class counts of one value (ASCII classes; bytes of multi-byte characters count as
/// nothing, which is right: every built-in pattern is ASCII), and the digit-run shapes, computed
/// on first use.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scan {
    pub len: usize,
    pub digits: usize,
    pub upper: usize,
    pub colons: usize,
    pub dots: usize,
    pub dashes: usize,
    pub at: usize,
    /// Spaces and tabs.
    pub blanks: usize,
    pub plus: usize,
    pub underscores: usize,
    pub cap_a: usize,
    pub cap_j: usize,
    pub small_x: usize,
    /// `b` or `B` (`bearer`).
    pub letter_b: usize,
    runs: OnceCell<DigitRuns>,
}

/// The shapes the digit patterns need, from one walk over the value's digit runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DigitRuns {
    /// Most digits in a chain of runs joined by single spaces or dashes (`credit_card`).
    pub card: usize,
    /// Most runs in a chain joined by single dots (`ipv4` needs 4).
    pub dotted: usize,
    /// What [`crate::redaction::patterns::nanp_shaped`] says: 10 digits in 3 groups split by
    /// ` .-()` (the North-American `phone`).
    pub nanp: bool,
    /// A run of at least two digits right after two capitals (an IBAN's country and check digits).
    pub iban_start: bool,
}

fn nanp_sep(c: u8) -> bool {
    matches!(c, b' ' | b'.' | b'-' | b'(' | b')')
}

/// Whether any byte of `w` is an ASCII digit (no carries between lanes: every lane stays below
/// 256 in each step; "Bit Twiddling Hacks", `hasbetween(x, '0' - 1, '9' + 1)`).
fn has_digit(w: u64) -> bool {
    const L: u64 = 0x0101_0101_0101_0101;
    let low7 = w & (L * 127);
    ((L * (127 + u64::from(b'9') + 1)).wrapping_sub(low7)
        & !w
        & (low7 + L * (127 - (u64::from(b'0') - 1)))
        & (L * 128))
        != 0
}

/// The first digit at or after `i` (or `b.len()`), eight bytes at a time.
pub(crate) fn next_digit(b: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = b.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        if has_digit(u64::from_le_bytes(w)) {
            break;
        }
        i += 8;
    }
    while i < b.len() && !b[i].is_ascii_digit() {
        i += 1;
    }
    i
}

impl DigitRuns {
    /// Walks from digit run to digit run: the bytes between runs are skipped eight at a time,
    /// after a look at the few that can join two runs.
    pub fn of(v: &str) -> DigitRuns {
        let b = v.as_bytes();
        let n = b.len();
        let mut r = DigitRuns::default();
        // Chains ending at the previous run.
        let (mut card, mut dotted) = (0usize, 0usize);
        // `nanp_shaped`'s state: digits and groups since the last reset.
        let (mut nd, mut ng) = (0usize, 0usize);
        let mut i = next_digit(b, 0);
        while i < n {
            let start = i;
            while i < n && b[i].is_ascii_digit() {
                i += 1;
            }
            let len = i - start;
            r.card = r.card.max(card + len);
            r.dotted = r.dotted.max(dotted + 1);
            // As `nanp_shaped` walks byte by byte: a run opens a group.
            ng += 1;
            nd += len;
            r.nanp |= nd >= 10 && ng >= 3;
            r.iban_start |= len >= 2
                && start >= 2
                && b[start - 1].is_ascii_uppercase()
                && b[start - 2].is_ascii_uppercase();
            // The gap after this run: what joins it to the next one.
            let gap = i;
            let (mut all_sep, mut paren) = (true, false);
            while i < n && !b[i].is_ascii_digit() {
                if !nanp_sep(b[i]) {
                    all_sep = false;
                    break;
                }
                paren |= b[i] == b'(';
                i += 1;
            }
            if !all_sep {
                i = next_digit(b, i);
            }
            if i >= n {
                break;
            }
            let single = i == gap + 1;
            card = if single && matches!(b[gap], b' ' | b'-') {
                card + len
            } else {
                0
            };
            dotted = if single && b[gap] == b'.' {
                dotted + 1
            } else {
                0
            };
            // `nanp_shaped`: a '(' or any other non-separator resets the count.
            if !all_sep || paren {
                nd = 0;
                ng = 0;
            }
        }
        r
    }
}

impl Scan {
    /// The digit-run shapes of `v` (the value this scan was made from), computed once.
    pub fn runs(&self, v: &str) -> &DigitRuns {
        self.runs.get_or_init(|| DigitRuns::of(v))
    }

    pub fn of(v: &str) -> Scan {
        let mut n = [0usize; LANES];
        for block in v.as_bytes().chunks(BLOCK) {
            let mut acc = 0u128;
            for &b in block {
                acc += PACK[usize::from(b)];
            }
            for (l, count) in n.iter_mut().enumerate() {
                *count += ((acc >> (8 * l)) & 0xff) as usize;
            }
        }
        Scan {
            len: v.len(),
            digits: n[L_DIGIT as usize],
            upper: n[L_UPPER as usize],
            colons: n[L_COLON as usize],
            dots: n[L_DOT as usize],
            dashes: n[L_DASH as usize],
            at: n[L_AT as usize],
            blanks: n[L_BLANK as usize],
            plus: n[L_PLUS as usize],
            underscores: n[L_UNDERSCORE as usize],
            cap_a: n[L_CAP_A as usize],
            cap_j: n[L_CAP_J as usize],
            small_x: n[L_SMALL_X as usize],
            letter_b: n[L_LETTER_B as usize],
            runs: OnceCell::new(),
        }
    }

    /// The counts only (for comparisons in tests).
    #[cfg(test)]
    fn counts(&self) -> [usize; 14] {
        [
            self.len,
            self.digits,
            self.upper,
            self.colons,
            self.dots,
            self.dashes,
            self.at,
            self.blanks,
            self.plus,
            self.underscores,
            self.cap_a,
            self.cap_j,
            self.small_x,
            self.letter_b,
        ]
    }
}

/// `needle` starts at some position of `first` (the needle's first byte) in `b`.
fn starts_at_any(b: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    memchr_iter(first, b).any(|p| b[p..].starts_with(needle))
}

/// `jwt`: a header and a payload both start with `eyJ` (`{"` in base64url).
pub(crate) fn jwt_trigger(v: &str) -> bool {
    let b = v.as_bytes();
    // Search from the `J`s: the counts already said there are at least two.
    memchr_iter(b'J', b)
        .filter(|&p| p >= 2 && &b[p - 2..p] == b"ey")
        .nth(1)
        .is_some()
}

/// `url_password`: a `://`.
pub(crate) fn url_trigger(v: &str) -> bool {
    starts_at_any(v.as_bytes(), b"://")
}

/// `bearer_token`: `bearer` (any case) right before a space or tab, as the regex requires.
/// Searched from the `b`s, which are rarer than blanks.
pub(crate) fn bearer_trigger(v: &str) -> bool {
    let b = v.as_bytes();
    memchr2_iter(b'b', b'B', b).any(|p| {
        b.get(p..p + 6)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"bearer"))
            && matches!(b.get(p + 6), Some(b' ' | b'\t'))
    })
}

/// `aws_access_key`: one of the key-id prefixes `AKIA`, `ASIA`, `ABIA`, `ACCA`, `A3T?`.
pub(crate) fn aws_trigger(v: &str) -> bool {
    let b = v.as_bytes();
    memchr_iter(b'A', b).any(|p| {
        let r = &b[p..];
        r.starts_with(b"AKIA")
            || r.starts_with(b"ASIA")
            || r.starts_with(b"ABIA")
            || r.starts_with(b"ACCA")
            || (r.starts_with(b"A3T")
                && r.get(3)
                    .is_some_and(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
    })
}

/// `gcp_api_key`: `AIza`.
pub(crate) fn gcp_trigger(v: &str) -> bool {
    starts_at_any(v.as_bytes(), b"AIza")
}

/// `github_token`: an underscore after `gh[pousr]` or `github` (`github_pat_`).
pub(crate) fn github_trigger(v: &str) -> bool {
    let b = v.as_bytes();
    memchr_iter(b'_', b).any(|p| {
        (p >= 3
            && &b[p - 3..p - 1] == b"gh"
            && matches!(b[p - 1], b'p' | b'o' | b'u' | b's' | b'r'))
            || (p >= 6 && &b[p - 6..p] == b"github")
    })
}

/// `slack_token`: `xox[abposr]-`.
pub(crate) fn slack_trigger(v: &str) -> bool {
    let b = v.as_bytes();
    memchr_iter(b'x', b).any(|p| {
        b[p..].starts_with(b"xox")
            && b.get(p + 3)
                .is_some_and(|c| matches!(c, b'a' | b'b' | b'p' | b'o' | b's' | b'r'))
            && b.get(p + 4) == Some(&b'-')
    })
}

/// `stripe_key`: `sk_`/`rk_`/`pk_` followed by `live_` or `test_`.
pub(crate) fn stripe_trigger(v: &str) -> bool {
    let b = v.as_bytes();
    memchr_iter(b'_', b).any(|p| {
        p >= 2
            && matches!(&b[p - 2..p], b"sk" | b"rk" | b"pk")
            && (b[p + 1..].starts_with(b"live_") || b[p + 1..].starts_with(b"test_"))
    })
}

/// `ipv6`: a run of `[0-9A-Fa-f:.]` holding two colons and a hex digit — every `ipv6` regex
/// match lies inside such a run, and the validator wants a hex digit. Skips `std::fmt` and
/// `orders::handlers` (no hex digit next to the colons) without running the regex.
pub(crate) fn ipv6_trigger(v: &str) -> bool {
    let (mut colons, mut hex) = (0u32, false);
    for &c in v.as_bytes() {
        if c == b':' {
            colons += 1;
        } else if c.is_ascii_hexdigit() {
            hex = true;
        } else if c != b'.' {
            colons = 0;
            hex = false;
            continue;
        }
        if colons >= 2 && hex {
            return true;
        }
    }
    false
}

/// A necessary condition for any of several user regexes to match: one of their prefix
/// literals occurs in the text (every match starts with one). One Aho-Corasick pass instead of a
/// regex search per value: most values hold none of a `CUST-[0-9]{8}`'s `CUST-`.
pub(crate) struct LiteralPrefilter {
    /// The shortest literal: a shorter text cannot hold any.
    min_len: usize,
    find: LiteralFinder,
}

/// One literal (the usual case: one custom pattern) is a SIMD substring search; Aho-Corasick's
/// per-call set-up cost more than the search on short attribute values.
enum LiteralFinder {
    One(Box<memchr::memmem::Finder<'static>>),
    Many(AhoCorasick),
}

/// Literals shorter than this, or more of them, give no prefilter (they would hit too often, and
/// the regex engine's own prefilter does as well).
const PREFILTER_MIN_LEN: usize = 2;
const PREFILTER_MAX_LITERALS: usize = 64;
/// Literals are cut to this many bytes (then deduplicated).
const PREFILTER_KEEP_BYTES: usize = 4;

impl LiteralPrefilter {
    /// `None` when some regex may start with anything (an unbounded or too large literal set,
    /// a short literal, or the empty string): then the regex engine decides alone.
    pub fn build(res: &[String]) -> Option<Self> {
        let mut literals: Vec<&[u8]> = Vec::new();
        let mut seqs = Vec::with_capacity(res.len());
        for re in res {
            // The same syntax defaults as `regex::Regex::new` (Unicode, UTF-8, no flags).
            let hir = regex_syntax::ParserBuilder::new().build().parse(re).ok()?;
            let mut seq = Extractor::new().extract(&hir);
            // `CUST-[0-9]{8}` lists `CUST-00` … `CUST-99`; their first bytes are still a prefix
            // of every match, and one `CUST` is cheaper to look for than a hundred literals.
            seq.keep_first_bytes(PREFILTER_KEEP_BYTES);
            seq.dedup();
            seqs.push(seq);
        }
        for seq in &seqs {
            for lit in seq.literals()? {
                if lit.as_bytes().len() < PREFILTER_MIN_LEN {
                    return None;
                }
                literals.push(lit.as_bytes());
            }
        }
        if literals.is_empty() || literals.len() > PREFILTER_MAX_LITERALS {
            return None;
        }
        literals.sort_unstable();
        literals.dedup();
        let min_len = literals.iter().map(|l| l.len()).min()?;
        let find = match literals.as_slice() {
            [one] => LiteralFinder::One(Box::new(memchr::memmem::Finder::new(one).into_owned())),
            many => LiteralFinder::Many(AhoCorasick::new(many).ok()?),
        };
        Some(Self { min_len, find })
    }

    /// `false`: no regex of the set can match `s`.
    pub fn may_match(&self, s: &str) -> bool {
        if s.len() < self.min_len {
            return false;
        }
        match &self.find {
            LiteralFinder::One(f) => f.find(s.as_bytes()).is_some(),
            LiteralFinder::Many(ac) => ac.is_match(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefilter(res: &[&str]) -> Option<LiteralPrefilter> {
        LiteralPrefilter::build(&res.iter().map(|r| r.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn literal_prefilter_only_when_every_match_starts_with_a_literal() {
        let p = prefilter(&["CUST-[0-9]{8}", "(?i)order-[a-z]+"]).expect("literal prefixes");
        assert!(p.may_match("x CUST-1"));
        assert!(
            p.may_match("ORDER-"),
            "case-insensitive prefixes are all listed"
        );
        assert!(p.may_match("üOrDeR-ü"));
        assert!(!p.may_match("cust-12345678 ordr"));
        // Literals are cut to 4 bytes: a look-alike passes, the regex then says no.
        assert!(p.may_match("CUSTOMER"));
        assert!(!p.may_match(""));
        // Anything may start a match: no prefilter.
        assert!(prefilter(&["[0-9]+-x"]).is_none(), "too many or too short");
        assert!(prefilter(&["a*"]).is_none(), "matches the empty string");
        assert!(prefilter(&[".*secret"]).is_none());
        assert!(
            prefilter(&["CUST-[0-9]{8}", "x|yz"]).is_none(),
            "one short literal"
        );
        assert!(prefilter(&["(unclosed"]).is_none());
        // Look-arounds count as empty: `\bkey=` still needs `key=`.
        assert!(prefilter(&[r"\bkey=(?P<redact>\w+)"])
            .expect("literal")
            .may_match("a key=1"));
    }

    /// Against the regexes themselves: whenever one matches, the prefilter must say "maybe".
    #[test]
    fn literal_prefilter_never_hides_a_match() {
        let res = [
            "CUST-[0-9]{8}",
            "(?i)pass(word)?=",
            r"\bsk_[a-z]+",
            "token: ?[A-Za-z]{4}",
            "(?:ab|cd)e",
        ];
        let p = prefilter(&res).expect("prefilter");
        let set = regex::RegexSet::new(res).expect("compiles");
        let parts = [
            "CUST-",
            "12345678",
            "cust-",
            "PASS",
            "Password=",
            "=",
            "sk_",
            "live",
            " ",
            "token:",
            "token: ",
            "abcd",
            "Abcd",
            "e",
            "ab",
            "cde",
            "ü",
            "😀",
            "_",
            "x",
        ];
        let mut seed = 0x853c_49e6_748f_ea9b_u64;
        let mut matched = 0;
        for _ in 0..20_000 {
            let mut v = String::new();
            for _ in 0..(seed % 6) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                v.push_str(parts[(seed % parts.len() as u64) as usize]);
            }
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            if set.is_match(&v) {
                matched += 1;
                assert!(p.may_match(&v), "prefilter hides a match in {v:?}");
            }
        }
        assert!(
            matched > 1000,
            "the generator must produce matches ({matched})"
        );
    }

    #[test]
    fn swar_digit_test_matches_the_byte_test() {
        for d in 0u8..=255 {
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = d;
                assert_eq!(
                    has_digit(u64::from_le_bytes(w)),
                    d.is_ascii_digit(),
                    "byte {d} at {pos}"
                );
                let mut f = [0xffu8; 8];
                f[pos] = d;
                assert_eq!(has_digit(u64::from_le_bytes(f)), d.is_ascii_digit());
            }
        }
        let b = "ab:cdefghijklmnopqrstuvwxyz 7 é😀9".as_bytes();
        assert_eq!(next_digit(b, 0), 28);
        assert_eq!(next_digit(b, 29), b.len() - 1);
        assert_eq!(next_digit(b, b.len()), b.len());
        assert_eq!(next_digit(b"no digits at all here", 3), 21);
    }

    #[test]
    fn digit_runs() {
        let r = DigitRuns::of("card 4111 1111 1111 1111, ip 10.0.0.1, tel (415) 555-2671");
        assert_eq!((r.card, r.dotted, r.nanp), (16, 4, true));
        let r = DigitRuns::of("Chrome/120.0.0.0 Safari/537.36 x 12--34 5  6");
        assert_eq!(
            (r.card, r.dotted, r.nanp, r.iban_start),
            (3, 4, false, false)
        );
        assert!(DigitRuns::of("to GB82 WEST").iban_start);
        assert!(!DigitRuns::of("to GB8 WEST").iban_start);
        assert_eq!(DigitRuns::of(""), DigitRuns::default());
        assert_eq!(DigitRuns::of("no digits"), DigitRuns::default());
    }

    /// The counts, the slow way.
    fn naive(v: &str) -> Scan {
        let b = v.as_bytes();
        let count = |f: &dyn Fn(u8) -> bool| b.iter().filter(|c| f(**c)).count();
        Scan {
            len: b.len(),
            digits: count(&|c| c.is_ascii_digit()),
            upper: count(&|c| c.is_ascii_uppercase()),
            colons: count(&|c| c == b':'),
            dots: count(&|c| c == b'.'),
            dashes: count(&|c| c == b'-'),
            at: count(&|c| c == b'@'),
            blanks: count(&|c| c == b' ' || c == b'\t'),
            plus: count(&|c| c == b'+'),
            underscores: count(&|c| c == b'_'),
            cap_a: count(&|c| c == b'A'),
            cap_j: count(&|c| c == b'J'),
            small_x: count(&|c| c == b'x'),
            letter_b: count(&|c| c == b'b' || c == b'B'),
            runs: OnceCell::new(),
        }
    }

    #[test]
    fn counts_match_naive_counts() {
        let long_digits = "7".repeat(1000); // crosses several 255-byte blocks in one lane
        let every_byte: String = (0u8..128).map(char::from).collect();
        for v in [
            "",
            "GET",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0.0.0",
            "jane.doe@example.com AKIA JJ xx __ ++ --  \t ::",
            "ünïcödé 😀 ４１１１ — ＡＫＩＡ",
            &long_digits,
            &every_byte,
            &format!("{}{}", "A".repeat(255), "J".repeat(256)),
        ] {
            assert_eq!(Scan::of(v).counts(), naive(v).counts(), "{v:?}");
        }
    }

    #[test]
    fn triggers() {
        assert!(jwt_trigger("x eyJhbGc.eyJzdWI.sig"));
        assert!(!jwt_trigger("eyJ only once"));
        assert!(!jwt_trigger("J eyj.eyJ"));
        assert!(url_trigger("postgres://u:p@h"));
        assert!(!url_trigger("a:/b:/ :"));
        assert!(bearer_trigger("Authorization: BeArEr\tabc"));
        assert!(!bearer_trigger("bearer"), "no blank after it");
        assert!(!bearer_trigger("  bearerx y"));
        assert!(aws_trigger("key=AKIAIOSFODNN7EXAMPLE"));
        assert!(aws_trigger("A3TX"));
        assert!(!aws_trigger("A3T-"));
        assert!(!aws_trigger("AppleWebKit AKI"));
        assert!(gcp_trigger("k=AIzaSy"));
        assert!(!gcp_trigger("AIz"));
        assert!(github_trigger("ghp_abc"));
        assert!(github_trigger("github_pat_x"));
        assert!(!github_trigger("gha_x _gh"));
        assert!(slack_trigger("xoxb-1"));
        assert!(!slack_trigger("xoxz-1 xoxb"));
        assert!(stripe_trigger("sk_live_0"));
        assert!(stripe_trigger("pk_test_"));
        assert!(!stripe_trigger("_live_ sk_prod_"));
        assert!(ipv6_trigger("[::1]:8080"));
        assert!(ipv6_trigger("fe80::1%eth0"));
        assert!(!ipv6_trigger("orders::handlers::get_order"));
        assert!(!ipv6_trigger("os::path::join"));
        // `d::f` could be an address: the regex and the parser decide.
        assert!(ipv6_trigger("std::fmt::Display"));
    }

    #[test]
    fn triggers_never_panic_on_edges() {
        // Needles cut at the end of the value, multi-byte text around the candidate bytes.
        for v in [
            "",
            "e",
            "ey",
            "eyJ",
            "J",
            ":",
            ":/",
            "b",
            " ",
            "\t",
            "A",
            "AK",
            "A3",
            "A3T",
            "_",
            "g_",
            "gh_",
            "_l",
            "x",
            "xo",
            "xox",
            "xoxb",
            "é_é",
            "ü:ü",
            "😀J😀",
            "ß AKI",
            "1",
            "1 ",
            " 1",
            "(1",
            "1.",
            "AB12",
            "A12",
            "१२३४",
            "٣.٤.٥.٦",
        ] {
            let _ = (
                jwt_trigger(v),
                url_trigger(v),
                bearer_trigger(v),
                aws_trigger(v),
                gcp_trigger(v),
                github_trigger(v),
                slack_trigger(v),
                stripe_trigger(v),
                ipv6_trigger(v),
                Scan::of(v),
                DigitRuns::of(v),
            );
        }
    }
}
