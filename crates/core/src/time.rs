//! Timestamps: microseconds since the Unix epoch, shown as RFC 3339 UTC.

use chrono::{DateTime, SecondsFormat, Utc};
use std::fmt;

/// A point in time with microsecond precision, stored as an integer in every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(Utc::now().timestamp_micros())
    }

    /// From microseconds since the epoch, as stored.
    pub fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// This time moved `d` later.
    pub fn plus(self, d: std::time::Duration) -> Self {
        Self(self.0.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)))
    }

    /// Microseconds since the epoch, for storage.
    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// Reads an RFC 3339 time with any offset (`2026-12-31T17:00:00Z`, `...+01:00`).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text.trim()).ok().map(|t| Self(t.timestamp_micros()))
    }

    /// RFC 3339 in UTC with microseconds, e.g. `2025-06-01T12:00:00.123456Z`.
    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_micros(self.0).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Micros, true)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_utc_microseconds() {
        assert_eq!(Timestamp::from_micros(1_748_779_200_123_456).to_rfc3339(), "2025-06-01T12:00:00.123456Z");
    }
}
