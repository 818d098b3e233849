//! AWS error responses: type, message and HTTP status, with AWS's wording.

use axum::http::StatusCode;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The `__type` (`ValidationException`, ...).
    pub kind: &'static str,
    /// The message.
    pub message: String,
    /// HTTP status (400 for client errors, 500 only for our own failures).
    pub status: StatusCode,
}

impl ApiError {
    /// A 400 with this type.
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            status: StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON body. AWS's Java front end writes `SerializationException` with a capital
    /// `Message`, and none at all for a body it could not parse; every other error has
    /// `message`.
    pub fn body(&self) -> String {
        match (self.kind, self.message.is_empty()) {
            ("SerializationException", true) => serde_json::json!({ "__type": self.kind }),
            ("SerializationException", false) => {
                serde_json::json!({ "__type": self.kind, "Message": self.message })
            }
            // AWS sends UnknownOperationException (and others it has nothing to say about)
            // with the type alone.
            (_, true) => serde_json::json!({ "__type": self.kind }),
            _ => serde_json::json!({ "__type": self.kind, "message": self.message }),
        }
        .to_string()
    }

    /// `UnknownOperationException`.
    pub fn unknown_operation(_target: &str) -> Self {
        Self::new("UnknownOperationException", "")
    }

    /// `SerializationException`.
    pub fn serialization(msg: impl Into<String>) -> Self {
        Self::new("SerializationException", msg)
    }

    /// `ResourceNotFoundException` for a stream.
    pub fn stream_not_found(name: &str, account: &str) -> Self {
        Self::new(
            "ResourceNotFoundException",
            format!("Stream {name} under account {account} not found."),
        )
    }

    /// `InvalidArgumentException`.
    pub fn invalid_argument(msg: impl Into<String>) -> Self {
        Self::new("InvalidArgumentException", msg)
    }

    /// `InternalFailure` (HTTP 500): our own failure, e.g. a disk error.
    pub fn internal(msg: impl Into<String>) -> Self {
        ApiError {
            kind: "InternalFailure",
            message: msg.into(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Collects constraint violations into one `ValidationException`, worded as AWS does:
/// `2 validation errors detected: Value '...' at 'x' failed to satisfy constraint: ...; ...`.
#[derive(Default)]
pub struct Violations(Vec<String>);

impl Violations {
    /// Records a violation of `constraint` by `value` at `field`.
    pub fn add(&mut self, value: &str, field: &str, constraint: &str) {
        self.0.push(format!(
            "Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"
        ));
    }

    /// A violation at `field`, in the form Firehose answers today (the value is not
    /// repeated).
    pub fn add_at(&mut self, field: &str, constraint: &str) {
        self.0.push(format!(
            "Value at '{field}' failed to satisfy constraint: {constraint}"
        ));
    }

    /// A `Limit`-style member outside `1..=max`, worded as AWS words it: the bound it
    /// breaks, not the range.
    pub fn range(&mut self, value: i64, field: &str, max: i64) {
        if value < 1 {
            self.add(
                &value.to_string(),
                field,
                "Member must have value greater than or equal to 1",
            );
        } else if value > max {
            self.add(
                &value.to_string(),
                field,
                &format!("Member must have value less than or equal to {max}"),
            );
        }
    }

    /// A `null` where a value is required.
    pub fn null(&mut self, field: &str) {
        self.0.push(format!(
            "Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ));
    }

    /// Moves `other`'s violations after these (AWS lists members in its shape's order).
    pub fn append(&mut self, other: Violations) {
        self.0.extend(other.0);
    }

    /// Ok if none, else the `ValidationException`: AWS lists at most 10 violations, and
    /// its count says how many it listed.
    pub fn finish(mut self) -> Result<(), ApiError> {
        self.0.truncate(10);
        match self.0.len() {
            0 => Ok(()),
            1 => Err(ApiError::new(
                "ValidationException",
                format!("1 validation error detected: {}", self.0[0]),
            )),
            n => Err(ApiError::new(
                "ValidationException",
                format!("{n} validation errors detected: {}", self.0.join("; ")),
            )),
        }
    }
}
