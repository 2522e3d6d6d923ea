//! Trace and span identifiers: fixed-size byte arrays with lowercase-hex text forms.

use std::fmt;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IdError {
    #[error("{kind} must be {expected} bytes, got {got}")]
    WrongLength {
        kind: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{kind} must not be all zeros")]
    AllZero { kind: &'static str },
    #[error("{kind} is not valid hex: {text:?}")]
    BadHex { kind: &'static str, text: String },
}

macro_rules! id_type {
    ($name:ident, $len:expr, $kind:expr) => {
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub const LEN: usize = $len;

            /// Parses wire bytes: exact length and not all zero.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
                let arr: [u8; $len] = bytes.try_into().map_err(|_| IdError::WrongLength {
                    kind: $kind,
                    expected: $len,
                    got: bytes.len(),
                })?;
                if arr == [0u8; $len] {
                    return Err(IdError::AllZero { kind: $kind });
                }
                Ok(Self(arr))
            }

            /// Parses hex text. Shorter text is left-padded with zeros (Jaeger and Zipkin emit
            /// 64-bit trace ids and ids without leading zeros).
            pub fn from_hex(text: &str) -> Result<Self, IdError> {
                let bad = || IdError::BadHex {
                    kind: $kind,
                    text: text.chars().take(64).collect(),
                };
                if text.is_empty()
                    || text.len() > $len * 2
                    || !text.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(bad());
                }
                let padded = format!("{:0>width$}", text, width = $len * 2);
                let mut out = [0u8; $len];
                hex::decode_to_slice(padded.as_bytes(), &mut out).map_err(|_| bad())?;
                if out == [0u8; $len] {
                    return Err(IdError::AllZero { kind: $kind });
                }
                Ok(Self(out))
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }
    };
}

id_type!(TraceId, 16, "trace id");
id_type!(SpanId, 8, "span id");

impl TraceId {
    /// The low 64 bits, used by Jaeger's 64-bit id form and for hashing.
    pub fn low_u64(&self) -> u64 {
        u64::from_be_bytes(self.0[8..16].try_into().expect("8 bytes"))
    }
    pub fn high_u64(&self) -> u64 {
        u64::from_be_bytes(self.0[0..8].try_into().expect("8 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_reject_bad() {
        let t = TraceId::from_bytes(&[1; 16]).unwrap();
        assert_eq!(t.to_hex(), "01".repeat(16));
        assert_eq!(TraceId::from_hex(&t.to_hex()).unwrap(), t);
        assert!(matches!(
            TraceId::from_bytes(&[0; 16]),
            Err(IdError::AllZero { .. })
        ));
        assert!(matches!(
            TraceId::from_bytes(&[1; 15]),
            Err(IdError::WrongLength { got: 15, .. })
        ));
        assert!(matches!(
            SpanId::from_bytes(&[]),
            Err(IdError::WrongLength { got: 0, .. })
        ));
    }

    #[test]
    fn hex_is_left_padded_and_validated() {
        let t = TraceId::from_hex("abc").unwrap();
        assert_eq!(t.to_hex(), format!("{:0>32}", "abc"));
        assert!(TraceId::from_hex("").is_err());
        assert!(TraceId::from_hex("xyz").is_err());
        assert!(TraceId::from_hex(&"a".repeat(33)).is_err());
        assert!(SpanId::from_hex("0000").is_err());
    }
}
