//! The errors and small types every layer shares: why a configuration failed, why an event
//! was refused, why a delivery attempt failed, and how a source waits for room.
//!
//! A leaf module: it depends on nothing else in the crate, so that the model, the delivery
//! code and the runtime can all use these without depending on each other.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A boxed future, as object-safe traits ([`crate::watcher::Sender`], the object-safe face of
/// an executor) return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Any error, boxed: what a [`crate::watcher::SenderFactory`] may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a configuration is not valid or stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    message: String,
}

/// What kind of [`ConfigError`] it is, which decides what the supervisor does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The configuration is wrong: it stays `Error` until its value changes.
    Invalid,
    /// It failed while running (a connection dropped, …): it is restarted with backoff.
    Failed,
}

impl ConfigError {
    /// The configuration is wrong; it will not run until it changes.
    pub fn invalid(message: impl Into<String>) -> ConfigError {
        ConfigError {
            kind: ConfigErrorKind::Invalid,
            message: message.into(),
        }
    }

    /// It failed while running; the supervisor restarts it with backoff.
    pub fn failed(message: impl Into<String>) -> ConfigError {
        ConfigError {
            kind: ConfigErrorKind::Failed,
            message: message.into(),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// What was wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<serde_json::Error> for ConfigError {
    fn from(e: serde_json::Error) -> ConfigError {
        ConfigError::failed(format!("cannot encode the event: {e}"))
    }
}

impl From<DispatchError> for ConfigError {
    fn from(e: DispatchError) -> ConfigError {
        match e {
            DispatchError::Invalid(m) => ConfigError::failed(format!("event refused: {m}")),
            other => ConfigError::failed(other.to_string()),
        }
    }
}

/// Why an event was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// Every slot is taken: push back on the source and try again later.
    #[error("the gateway is full; retry in {}s", retry_after.as_secs().max(1))]
    Full {
        /// A fair wait before retrying.
        retry_after: Duration,
    },
    /// The durable outbox cannot write to its disk: the event is not accepted (retrying later
    /// may work once the disk is repaired or has room).
    #[error("the gateway cannot store the event: {0}; retry later")]
    Disk(String),
    /// The event cannot become a valid CloudEvent.
    #[error("invalid event: {0}")]
    Invalid(String),
    /// The configuration or the gateway is stopping.
    #[error("the configuration or the gateway is stopping; retry")]
    Stopped,
    /// The configuration's `rateLimit` has no room before the caller's wait ends.
    #[error("the configuration's rate limit is reached; retry in {}s", retry_after.as_secs().max(1))]
    Limited {
        /// When the limit lets the next event through.
        retry_after: Duration,
    },
}

impl DispatchError {
    /// How long a caller that was refused should wait before trying again, when trying again
    /// can help (`None` for an invalid event).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DispatchError::Full { retry_after } | DispatchError::Limited { retry_after } => {
                Some((*retry_after).max(Duration::from_secs(1)))
            }
            DispatchError::Disk(_) | DispatchError::Stopped => Some(Duration::from_secs(1)),
            DispatchError::Invalid(_) => None,
        }
    }
}

/// How a source waits for room when the gateway is full.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Admission<'a> {
    /// Wait for room (until this token, if any, is cancelled).
    Wait(Option<&'a CancellationToken>),
    /// Fail at once with [`DispatchError::Full`].
    NoWait,
    /// Wait for room until this instant, then fail with [`DispatchError::Full`]: how HTTP
    /// callers are held briefly rather than refused at the first full queue.
    Until(tokio::time::Instant),
}

/// Why one delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError {
    /// True for connection errors, timeouts, 408, 429 and 5xx.
    pub retryable: bool,
    /// What happened.
    pub reason: String,
}

impl DeliveryError {
    /// A failure worth another attempt.
    pub fn retryable(reason: impl Into<String>) -> DeliveryError {
        DeliveryError {
            retryable: true,
            reason: reason.into(),
        }
    }

    /// A failure that another attempt would repeat (a 400, a bad URL).
    pub fn permanent(reason: impl Into<String>) -> DeliveryError {
        DeliveryError {
            retryable: false,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for DeliveryError {}
