//! Reading request members the way AWS validates them, shared by the Kinesis and Firehose
//! operations: a member of the wrong JSON type is a `SerializationException`; a missing or
//! out-of-range one is a constraint violation collected in [`Violations`].

use super::error::{ApiError, Violations};
use base64::Engine as _;
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

/// A string member, if present.
pub fn opt_str<'a>(req: &'a Value, name: &str) -> Result<Option<&'a str>, ApiError> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(wrong_type(v, "an String")),
    }
}

/// An integer member, if present (AWS clamps out-of-range numbers; so do we).
pub fn opt_int(req: &Value, name: &str) -> Result<Option<i64>, ApiError> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(match n.as_i64() {
            Some(i) => i.clamp(i64::from(i32::MIN), i64::from(i32::MAX)),
            None if n.as_f64().is_some_and(|f| f > 0.0) => i64::from(i32::MAX),
            None => i64::from(i32::MIN),
        })),
        Some(v) => Err(wrong_type(v, "an Integer")),
    }
}

/// A list of strings, if present.
pub fn opt_str_list<'a>(req: &'a Value, name: &str) -> Result<Option<Vec<&'a str>>, ApiError> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(wrong_type(other, "an String")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ApiError::serialization("Expected list or null")),
    }
}

/// A map of strings to strings, if present, in key order.
pub fn opt_str_map<'a>(
    req: &'a Value,
    name: &str,
) -> Result<Option<Vec<(&'a str, &'a str)>>, ApiError> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => {
            let mut out = m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.as_str(), s.as_str())),
                    other => Err(wrong_type(other, "an String")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.sort_unstable();
            Ok(Some(out))
        }
        Some(_) => Err(ApiError::serialization("Expected map or null")),
    }
}

/// A structure member, if present.
pub fn opt_struct<'a>(req: &'a Value, name: &str) -> Result<Option<&'a Value>, ApiError> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(ApiError::serialization("Expected null")),
    }
}

/// Why AWS's Java base64 decoder refuses `d`, in its words (typo included).
fn blob_error(d: &str) -> String {
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
        Some(_) => return Err(ApiError::serialization("Expected list or null")),
    };
    if recs.len() > max {
        v.add(
            &format!("[{} records]", recs.len()),
            "records",
            &format!("Member must have length less than or equal to {max}"),
        );
    }
    if let Some(bad) = recs.iter().find(|r| !r.is_object()) {
        return Err(match bad {
            Value::Array(_) => ApiError::serialization("Start of list found where not expected"),
            _ => ApiError::serialization("Expected null"),
        });
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
    let d = match rec.get("Data") {
        None | Some(Value::Null) => {
            v.null(field);
            return Ok(None);
        }
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(wrong_type(other, "a Blob")),
    };
    let b = base64::engine::general_purpose::STANDARD
        .decode(d)
        .map_err(|_| ApiError::serialization(blob_error(d)))?;
    if b.len() as u64 > max {
        v.add(
            &format!("java.nio.HeapByteBuffer[pos=0 lim={0} cap={0}]", b.len()),
            field,
            &format!("Member must have length less than or equal to {max}"),
        );
    }
    Ok(Some(b))
}
