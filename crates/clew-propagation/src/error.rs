//! Typed errors for every parser in the crate. Parsers return these; propagators treat an
//! error as "header absent", as the specifications require.

use thiserror::Error;

/// Why a `traceparent` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TraceparentError {
    /// Fewer than 55 characters (after trimming optional whitespace).
    #[error("traceparent too short: {0} characters, at least 55 required")]
    TooShort(usize),
    /// Version 00 must be exactly 55 characters.
    #[error("traceparent version 00 must be exactly 55 characters, got {0}")]
    WrongLength(usize),
    /// The version is not two lowercase hex digits followed by `-`.
    #[error("traceparent version is not two lowercase hex digits followed by '-'")]
    InvalidVersion,
    /// Version `ff` is forbidden.
    #[error("traceparent version ff is forbidden")]
    ForbiddenVersion,
    /// A field is not lowercase hex of the right length, or a delimiter is missing.
    #[error("traceparent field {0} is malformed")]
    Malformed(&'static str),
    /// A higher version continues after the flags with something other than `-`.
    #[error("traceparent of a future version: flags must be followed by '-' or end")]
    BadFutureSuffix,
    /// The trace id is all zeroes.
    #[error("traceparent trace-id is all zeroes")]
    ZeroTraceId,
    /// The parent id is all zeroes.
    #[error("traceparent parent-id is all zeroes")]
    ZeroParentId,
    /// More than one `traceparent` header was received.
    #[error("{0} traceparent headers received; exactly one is allowed")]
    Multiple(usize),
}

/// Why a `tracestate` value (or a single member) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TraceStateError {
    /// A list member has no `=`.
    #[error("tracestate member without '='")]
    MissingEquals,
    /// The key does not match the Level 2 key grammar.
    #[error("tracestate key {0:?} is invalid")]
    InvalidKey(String),
    /// The value does not match the value grammar.
    #[error("tracestate value for key {0:?} is invalid")]
    InvalidValue(String),
    /// The same key appears twice.
    #[error("tracestate key {0:?} is duplicated")]
    DuplicateKey(String),
    /// More than 32 list members.
    #[error("tracestate has {0} members; at most 32 are allowed")]
    TooManyMembers(usize),
}

/// Why a baggage member was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BaggageError {
    /// The member has no `=` between key and value.
    #[error("baggage member without '='")]
    MissingEquals,
    /// The key is not an RFC 7230 token.
    #[error("baggage key {0:?} is not a token")]
    InvalidKey(String),
    /// The value contains characters outside `baggage-octet`.
    #[error("baggage value for key {0:?} contains invalid characters")]
    InvalidValue(String),
    /// A property is malformed.
    #[error("baggage property {0:?} is invalid")]
    InvalidProperty(String),
    /// Adding the member would exceed the member or byte limit.
    #[error("baggage limit exceeded: {0}")]
    LimitExceeded(&'static str),
}

/// Errors of the B3 and Jaeger parsers, and of id parsing in general.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// An id has the wrong length.
    #[error("{field} has invalid length {len}")]
    Length {
        /// Which field.
        field: &'static str,
        /// The length seen.
        len: usize,
    },
    /// An id contains a non-hex character.
    #[error("{0} is not hex")]
    NotHex(&'static str),
    /// An id is all zeroes.
    #[error("{0} is all zeroes")]
    Zero(&'static str),
    /// The sampling state is unknown.
    #[error("unknown sampling state {0:?}")]
    Sampling(String),
    /// Wrong number of fields.
    #[error("wrong number of fields: {0}")]
    Fields(usize),
    /// Jaeger flags are not a hex number.
    #[error("invalid flags {0:?}")]
    Flags(String),
}
