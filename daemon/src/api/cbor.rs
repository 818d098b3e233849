//! The CBOR wire form of the AWS JSON protocol (`application/x-amz-cbor-1.1`), which the
//! AWS Java SDK, the KPL and the KCL speak to Kinesis by default. A CBOR request is turned
//! into the JSON form the operations read, and the answer (errors too) back into CBOR:
//! the same operations and validation either way. What differs is only how two member
//! types travel: blobs are CBOR byte strings (base64 text in JSON), timestamps are integer
//! milliseconds since the epoch (seconds, possibly fractional, in JSON; a CBOR epoch tag 1
//! carries seconds too).

use ciborium::value::Value as Cbor;
use serde_json::Value as Json;

/// The media type.
pub const MEDIA_TYPE: &str = "application/x-amz-cbor-1.1";

/// Members that are blobs in the requests and answers sluice serves.
fn is_blob(key: &str) -> bool {
    key == "Data"
}

/// Members that are timestamps.
fn is_timestamp(key: &str) -> bool {
    key == "Timestamp" || key.ends_with("Timestamp")
}

/// A CBOR request body as the JSON the operations read; `None` when it is not CBOR (or
/// not a map at the top), which the caller answers as a body it cannot parse.
pub fn request_to_json(body: &[u8]) -> Option<Vec<u8>> {
    let v: Cbor = ciborium::de::from_reader(body).ok()?;
    if !v.is_map() {
        return None;
    }
    serde_json::to_vec(&to_json(&v, None)?).ok()
}

fn to_json(v: &Cbor, key: Option<&str>) -> Option<Json> {
    use base64::Engine as _;
    Some(match v {
        Cbor::Null => Json::Null,
        Cbor::Bool(b) => Json::Bool(*b),
        Cbor::Text(s) => Json::String(s.clone()),
        Cbor::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Cbor::Integer(i) => {
            let i = i128::from(*i);
            match key {
                // Milliseconds on the CBOR wire, seconds in the JSON form.
                Some(k) if is_timestamp(k) => serde_json::json!(i as f64 / 1000.0),
                _ => match i64::try_from(i) {
                    Ok(n) => Json::from(n),
                    Err(_) => serde_json::json!(i as f64),
                },
            }
        }
        Cbor::Float(f) => serde_json::json!(f),
        // Tag 1: seconds since the epoch (integer or float), already the JSON unit.
        Cbor::Tag(1, inner) => match inner.as_ref() {
            Cbor::Integer(i) => serde_json::json!(i128::from(*i) as f64),
            Cbor::Float(f) => serde_json::json!(f),
            _ => return None,
        },
        Cbor::Tag(_, inner) => to_json(inner, key)?,
        Cbor::Array(a) => Json::Array(a.iter().map(|x| to_json(x, key)).collect::<Option<_>>()?),
        Cbor::Map(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                let k = k.as_text()?;
                out.insert(k.to_string(), to_json(x, Some(k))?);
            }
            Json::Object(out)
        }
        _ => return None,
    })
}

/// An answer's JSON text as the CBOR body of the answer (an empty map when the text is
/// not JSON, which cannot happen for answers sluice builds).
pub fn response_from_json(text: &str) -> Vec<u8> {
    let v: Json = serde_json::from_str(text).unwrap_or(Json::Object(Default::default()));
    let mut out = Vec::new();
    let _ = ciborium::ser::into_writer(&from_json(&v, None), &mut out);
    out
}

fn from_json(v: &Json, key: Option<&str>) -> Cbor {
    use base64::Engine as _;
    match v {
        Json::Null => Cbor::Null,
        Json::Bool(b) => Cbor::Bool(*b),
        Json::String(s) => match key {
            Some(k) if is_blob(k) => match base64::engine::general_purpose::STANDARD.decode(s) {
                Ok(b) => Cbor::Bytes(b),
                Err(_) => Cbor::Text(s.clone()),
            },
            _ => Cbor::Text(s.clone()),
        },
        Json::Number(n) => match key {
            Some(k) if is_timestamp(k) => {
                Cbor::Integer(((n.as_f64().unwrap_or(0.0) * 1000.0).round() as i64).into())
            }
            _ => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Cbor::Integer(i.into()),
                (None, Some(u)) => Cbor::Integer(u.into()),
                _ => Cbor::Float(n.as_f64().unwrap_or(0.0)),
            },
        },
        Json::Array(a) => Cbor::Array(a.iter().map(|x| from_json(x, key)).collect()),
        Json::Object(m) => Cbor::Map(
            m.iter()
                .map(|(k, x)| (Cbor::Text(k.clone()), from_json(x, Some(k))))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor(v: &Cbor) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).unwrap();
        out
    }

    #[test]
    fn blobs_and_timestamps_cross_in_their_cbor_forms() {
        let req = Cbor::Map(vec![
            (Cbor::Text("StreamName".into()), Cbor::Text("s".into())),
            (Cbor::Text("Data".into()), Cbor::Bytes(b"hi".to_vec())),
            (
                Cbor::Text("Timestamp".into()),
                Cbor::Integer(1_500i64.into()),
            ),
            (Cbor::Text("Limit".into()), Cbor::Integer(7i64.into())),
        ]);
        let json: Json = serde_json::from_slice(&request_to_json(&cbor(&req)).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"StreamName": "s", "Data": "aGk=", "Timestamp": 1.5, "Limit": 7})
        );
        let out = response_from_json(
            r#"{"Records":[{"Data":"aGk=","ApproximateArrivalTimestamp":1.25,"SequenceNumber":"49"}],"MillisBehindLatest":0}"#,
        );
        let v: Cbor = ciborium::de::from_reader(&out[..]).unwrap();
        let records = v
            .as_map()
            .unwrap()
            .iter()
            .find(|(k, _)| k.as_text() == Some("Records"))
            .map(|(_, v)| v.clone())
            .unwrap();
        let rec = &records.as_array().unwrap()[0];
        let get = |k: &str| {
            rec.as_map()
                .unwrap()
                .iter()
                .find(|(x, _)| x.as_text() == Some(k))
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get("Data"), Cbor::Bytes(b"hi".to_vec()));
        assert_eq!(
            get("ApproximateArrivalTimestamp"),
            Cbor::Integer(1250i64.into())
        );
        assert_eq!(get("SequenceNumber"), Cbor::Text("49".into()));
        // An epoch tag 1 carries seconds, as in JSON.
        let tagged = Cbor::Map(vec![(
            Cbor::Text("Timestamp".into()),
            Cbor::Tag(1, Box::new(Cbor::Float(2.5))),
        )]);
        let json: Json = serde_json::from_slice(&request_to_json(&cbor(&tagged)).unwrap()).unwrap();
        assert_eq!(json, serde_json::json!({"Timestamp": 2.5}));
        assert!(request_to_json(b"\xff\x00").is_none());
        assert!(request_to_json(&cbor(&Cbor::Array(vec![]))).is_none());
    }
}
