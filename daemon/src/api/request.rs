//! Reading request members the way AWS validates them, shared by the Kinesis and Firehose
//! operations: a member of the wrong JSON type is a `SerializationException`; a missing or
//! out-of-range one is a constraint violation collected in [`Violations`].

use super::error::{ApiError, Violations};
use base64::Engine as _;
use serde_json::Value;

/// The request body: a JSON object (an empty body counts as `{}`), else a
/// `SerializationException`.
pub fn body(body: &[u8]) -> Result<Value, ApiError> {
    let req: Value = if body.is_empty() {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::serialization(format!("Invalid JSON: {e}")))?
    };
    if !req.is_object() {
        return Err(ApiError::serialization(
            "Request body must be a JSON object",
        ));
    }
    Ok(req)
}

/// A string member, if present.
pub fn opt_str<'a>(req: &'a Value, name: &str) -> Result<Option<&'a str>, ApiError> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::serialization(format!(
            "Value for {name} must be a string"
        ))),
    }
}

/// An integer member, if present.
pub fn opt_int(req: &Value, name: &str) -> Result<Option<i64>, ApiError> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::serialization(format!("Value for {name} must be an integer"))),
        Some(_) => Err(ApiError::serialization(format!(
            "Value for {name} must be an integer"
        ))),
    }
}

/// The `Records` list of a batch put: 1 to `max` objects.
pub fn records<'a>(
    req: &'a Value,
    max: usize,
    v: &mut Violations,
) -> Result<&'a [Value], ApiError> {
    let recs: &[Value] = match req.get("Records") {
        None | Some(Value::Null) => {
            v.null("records");
            &[]
        }
        Some(Value::Array(a)) => {
            if a.is_empty() {
                v.add(
                    "[]",
                    "records",
                    "Member must have length greater than or equal to 1",
                );
            }
            a
        }
        Some(_) => return Err(ApiError::serialization("Value for Records must be a list")),
    };
    if recs.len() > max {
        v.add(
            &format!("[{} records]", recs.len()),
            "records",
            &format!("Member must have length less than or equal to {max}"),
        );
    }
    if recs.iter().any(|r| !r.is_object()) {
        return Err(ApiError::serialization("Each record must be an object"));
    }
    Ok(recs)
}

/// The base64 `Data` member of a record, at most `max` bytes once decoded.
pub fn data(
    rec: &Value,
    field: &str,
    max: u64,
    v: &mut Violations,
) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(d) = opt_str(rec, "Data")? else {
        v.null(field);
        return Ok(None);
    };
    let b = base64::engine::general_purpose::STANDARD
        .decode(d)
        .map_err(|_| ApiError::serialization("Unable to decode Data: invalid base64"))?;
    if b.len() as u64 > max {
        v.add(
            &format!("java.nio.HeapByteBuffer[pos=0 lim={0} cap={0}]", b.len()),
            field,
            &format!("Member must have length less than or equal to {max}"),
        );
    }
    Ok(Some(b))
}
