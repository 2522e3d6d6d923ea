//! Any input: the parser returns a value or a positioned error, never panics; whatever parses
//! prints canonically and parses back to the same tree; and compiling and evaluating it over an
//! empty trace does not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match clew_traceql::parse(src) {
        Ok(q) => {
            let printed = q.to_string();
            let again = clew_traceql::parse(&printed)
                .unwrap_or_else(|e| panic!("{src:?} printed as {printed:?}: {e}"));
            assert_eq!(again, q, "{src:?} printed as {printed:?}");
            assert_eq!(again.to_string(), printed);
            if let Ok(c) = clew_traceql::Compiled::new(q) {
                assert!(c.evaluate(&[]).is_empty());
                let _ = clew_traceql::plan::plan(&c.query);
            }
        }
        Err(e) => {
            assert!(e.offset <= src.len());
            assert!(e.line >= 1 && e.column >= 1);
        }
    }
});
