use std::fmt;

/// Why a value was not enqueued. The value is handed back: nothing is lost.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError<T> {
    /// The queue was full and its policy refuses new items instead of waiting or dropping
    /// ([`Policy::Reject`](super::Policy::Reject), or [`Sender::try_send`](super::Sender::try_send)
    /// under [`Policy::Block`](super::Policy::Block)). Counted in `perfkit_queue_rejected_total`.
    Full(T),
    /// The receiver is gone or closed the queue; nobody will take the value.
    Closed(T),
    /// No room came up within the time given to
    /// [`Sender::send_timeout`](super::Sender::send_timeout). Counted in
    /// `perfkit_queue_rejected_total`.
    Timeout(T),
}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(v) | SendError::Closed(v) | SendError::Timeout(v) => v,
        }
    }

    /// Whether the queue was full (as opposed to closed).
    pub fn is_full(&self) -> bool {
        matches!(self, SendError::Full(_))
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, SendError::Closed(_))
    }

    /// Whether the time given to wait for room ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SendError::Timeout(_))
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("Full(..)"),
            SendError::Closed(_) => f.write_str("Closed(..)"),
            SendError::Timeout(_) => f.write_str("Timeout(..)"),
        }
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str("queue is full"),
            SendError::Closed(_) => f.write_str("queue is closed"),
            SendError::Timeout(_) => f.write_str("timed out waiting for room in the queue"),
        }
    }
}

impl<T> std::error::Error for SendError<T> {}

/// Why [`Receiver::try_recv`](super::Receiver::try_recv) returned no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing is queued right now; senders still exist.
    #[error("queue is empty")]
    Empty,
    /// Nothing is queued and nothing ever will be: every sender is gone or the queue was
    /// closed.
    #[error("queue is empty and closed")]
    Closed,
}

/// A queue configuration that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The capacity is zero; a bounded queue needs room for at least one item.
    #[error("queue {name:?}: capacity must be at least 1")]
    ZeroCapacity {
        /// The queue's name.
        name: String,
    },
    /// The name is empty.
    #[error("queue name must not be empty")]
    EmptyName,
    /// A warning threshold is not a fraction in (0, 1].
    #[error("queue {name:?}: warning threshold {threshold} is not in (0, 1]")]
    InvalidThreshold {
        /// The queue's name.
        name: String,
        /// The offending threshold.
        threshold: f64,
    },
}

/// A policy name that is not one of `block`, `reject`, `drop_oldest`, `drop_newest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown queue policy {value:?}; expected block, reject, drop_oldest or drop_newest")]
pub struct ParsePolicyError {
    /// The text that was given.
    pub value: String,
}
