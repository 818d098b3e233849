//! Reading request bodies the way AWS does, shared by the Kinesis and Firehose
//! operations: a member of the wrong JSON type is a `SerializationException`; a missing or
//! out-of-range one is a constraint violation collected in [`Violations`].

use super::error::{ApiError, Violations};
use serde_json::Value;

/// The request body: a JSON object (an empty body counts as `{}`), else a
/// `SerializationException` without a message, as AWS answers a body it cannot parse.
pub fn body(body: &[u8]) -> Result<Value, ApiError> {
    let req: Value = if body.is_empty() {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice(body).map_err(|_| ApiError::serialization(""))?
    };
    if !req.is_object() {
        return Err(ApiError::serialization(""));
    }
    Ok(req)
}

/// The `SerializationException` AWS's Java front end answers when a member holds a JSON
/// value of another type than its shape (`target`: `an String`, `an Integer`, `a Blob`...;
/// AWS's grammar kept).
pub fn wrong_type(v: &Value, target: &str) -> ApiError {
    ApiError::serialization(match v {
        Value::Bool(_) => format!("class java.lang.Boolean can not be converted to {target}"),
        Value::Number(_) => format!(
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to {target}"
        ),
        Value::String(_) => format!("class java.lang.String can not be converted to {target}"),
        Value::Array(_) => "Start of list found where not expected".to_string(),
        Value::Object(_) => "Start of structure or map found where not expected.".to_string(),
        Value::Null => String::new(),
    })
}

/// The `SerializationException` for a structure member that holds another JSON value than
/// an object (AWS's parser expected the structure or `null`).
pub fn not_a_structure(v: &Value) -> ApiError {
    match v {
        Value::Array(_) => ApiError::serialization("Start of list found where not expected"),
        _ => ApiError::serialization("Expected null"),
    }
}

/// The `SerializationException` for a list member that holds another JSON value than an
/// array.
pub fn not_a_list(v: &Value) -> ApiError {
    match v {
        Value::Object(_) => {
            ApiError::serialization("Start of structure or map found where not expected.")
        }
        _ => ApiError::serialization("Expected list or null"),
    }
}

/// Why AWS's Java base64 decoder refuses `d`, in its words (typo included).
pub fn blob_error(d: &str) -> String {
    if !d.len().is_multiple_of(4) {
        return format!(
            "'{d}' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: {}",
            d.len()
        );
    }
    let body = d.trim_end_matches('=');
    match body
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '+' || *c == '/'))
    {
        Some(c) => format!("'{d}' can not be converted to a Blob: Invalid Base64 character: '{c}'"),
        None => format!(
            "'{d}' can not be converted to a Blob: Invalid last non-pad Base64 character dectected"
        ),
    }
}

/// How AWS prints a list in a validation message: `[a, b]`.
pub fn show_list(items: &[&str]) -> String {
    format!("[{}]", items.join(", "))
}

/// How AWS prints a map in a validation message: `{k=v, k2=v2}`.
pub fn show_map(items: &[(&str, &str)]) -> String {
    let parts: Vec<String> = items.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

/// The `Records` list of a batch put, validated: 1 to `max` entries (the count items of
/// a `ValidationException`, the list printed as AWS's Java front end prints it: `class`
/// names the entry shape, e.g. `com.amazonaws.kinesis.v20131202.PutRecordsRequestEntry`).
pub fn check_records<T>(records: Option<&[T]>, max: usize, class: &str, v: &mut Violations) {
    let recs = match records {
        None => {
            v.null("records");
            return;
        }
        Some(r) => r,
    };
    if recs.is_empty() {
        v.add(
            "[]",
            "records",
            "Member must have length greater than or equal to 1",
        );
    }
    if recs.len() > max {
        // Java's `toString` of each entry (the identity hash as AWS printed it).
        let item = format!("{class}@c965e310");
        let shown = format!("[{}]", vec![item.as_str(); recs.len()].join(", "));
        v.add(
            &shown,
            "records",
            &format!("Member must have length less than or equal to {max}"),
        );
    }
}

/// A record's `Data`, validated: present, at most `max` bytes (handed on, not copied).
pub fn check_data(
    data: Option<super::shapes::Blob>,
    field: &str,
    max: u64,
    v: &mut Violations,
) -> Option<Vec<u8>> {
    let Some(b) = data else {
        v.null(field);
        return None;
    };
    if b.0.len() as u64 > max {
        v.add(
            &format!("java.nio.HeapByteBuffer[pos=0 lim={0} cap={0}]", b.0.len()),
            field,
            &format!("Member must have length less than or equal to {max}"),
        );
    }
    Some(b.0)
}
