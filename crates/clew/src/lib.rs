//! The parts of the `clew` binary that other targets need as a library: the `clew.yaml` loader
//! ([`config`]) and the pipeline graph it checks ([`graph`]). They live here, not in `main.rs`, so
//! the config fuzz target (`crates/clew/fuzz`) can call [`config::Config::parse`] — the same code
//! `clew serve --config` runs — without a copy. Everything else stays in the binary.
//!
//! Keep these two modules self-contained: they may use each other and other crates, but nothing
//! from `main.rs`'s modules (the library does not have them).

pub mod config;
pub mod graph;
pub mod target;
