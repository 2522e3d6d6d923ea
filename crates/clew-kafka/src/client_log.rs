//! librdkafka's logs and global errors, rate-limited into `tracing`. A broker that is down makes
//! librdkafka report the same connection failure several times a second for as long as it stays
//! down; Clew logs the first at `warn`, then at most one line per [`INTERVAL`] saying how many
//! were left out. librdkafka's debug and info lines go to `debug`.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one warning line per component this often.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// The client context of Clew's producers and consumers.
pub struct ClientLog {
    /// `exporters.kafka`, `receivers.kafka`: named in every line.
    component: String,
    /// When the last warning was written, and how many were left out since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl ClientLog {
    pub fn new(component: &str) -> Self {
        Self {
            component: component.to_string(),
            state: Mutex::new((None, 0)),
        }
    }

    fn warn(&self, what: std::fmt::Arguments<'_>) {
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        if state.0.is_some_and(|t| now.duration_since(t) < INTERVAL) {
            state.1 += 1;
            return;
        }
        let suppressed = std::mem::take(&mut state.1);
        state.0 = Some(now);
        drop(state);
        tracing::warn!(component = %self.component, suppressed, "Kafka client: {what}");
    }
}

impl ClientContext for ClientLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => self.warn(format_args!("{fac} {message}")),
            _ => tracing::debug!(component = %self.component, "librdkafka: {fac} {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.warn(format_args!("{error}: {reason}"));
    }
}

impl ConsumerContext for ClientLog {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_errors_are_counted_not_logged() {
        let log = ClientLog::new("receivers.kafka");
        for _ in 0..5 {
            log.error(
                KafkaError::Global(rdkafka::types::RDKafkaErrorCode::AllBrokersDown),
                "2/2 brokers are down",
            );
        }
        let state = log.state.lock().unwrap();
        assert!(state.0.is_some());
        assert_eq!(
            state.1, 4,
            "the first is logged, the next four within the interval are counted"
        );
    }
}
