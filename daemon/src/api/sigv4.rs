//! AWS Signature Version 4 verification for the data API, active when
//! `[[api.credentials]]` are configured. Errors are the ones AWS returns:
//! `MissingAuthenticationTokenException`, `IncompleteSignatureException`,
//! `UnrecognizedClientException`, `InvalidSignatureException`.

use super::error::ApiError;
use crate::sigv4::{hex, signing_mac};
use axum::http::HeaderMap;
use hmac::Mac;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Largest clock difference accepted between the client and us, as AWS (15 minutes).
const MAX_SKEW_SECS: i64 = 15 * 60;

/// Checks request signatures against the configured secrets.
pub struct Verifier {
    secrets: HashMap<String, String>,
}

/// Seconds since the epoch of `YYYYMMDDTHHMMSSZ`.
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    if !b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit) {
        return None;
    }
    let t = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", s).ok()?;
    Some(
        t.to_zoned(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp()
            .as_second(),
    )
}

fn incomplete(msg: &str) -> ApiError {
    ApiError::new("IncompleteSignatureException", msg.to_string())
}

impl Verifier {
    /// A verifier for these (access key id, secret) pairs.
    pub fn new(creds: impl IntoIterator<Item = (String, String)>) -> Self {
        Verifier {
            secrets: creds.into_iter().collect(),
        }
    }

    /// Verifies the request's `Authorization` header at Unix time `now`.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(), ApiError> {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    "MissingAuthenticationTokenException",
                    "Missing Authentication Token",
                )
            })?;
        let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
            incomplete("Authorization header requires 'AWS4-HMAC-SHA256' signing")
        })?;
        let mut credential = None;
        let mut signed = None;
        let mut signature = None;
        for part in rest.split(',') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("Credential=") {
                credential = Some(v);
            } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
                signed = Some(v);
            } else if let Some(v) = part.strip_prefix("Signature=") {
                signature = Some(v);
            }
        }
        let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature)
        else {
            return Err(incomplete(
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.",
            ));
        };
        let scope: Vec<&str> = credential.split('/').collect();
        if scope.len() != 5 || scope[4] != "aws4_request" {
            return Err(incomplete(
                "Credential should be scoped to a valid region, service and 'aws4_request'.",
            ));
        }
        let (akid, date, region, service) = (scope[0], scope[1], scope[2], scope[3]);
        let secret = self.secrets.get(akid).ok_or_else(|| {
            ApiError::new(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        })?;
        let amz_date = headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."))?;
        let t = parse_amz_date(amz_date).ok_or_else(|| incomplete("Invalid X-Amz-Date"))?;
        if (now - t).abs() > MAX_SKEW_SECS {
            return Err(ApiError::new(
                "InvalidSignatureException",
                format!("Signature expired: {amz_date} is now earlier or later than the server time by more than 15 minutes."),
            ));
        }
        if !amz_date.starts_with(date) {
            return Err(ApiError::new("InvalidSignatureException", "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP"));
        }
        // The signature must cover what decides the request: the host it was meant for,
        // the operation (`X-Amz-Target`) and the date, or a captured signature could be
        // replayed elsewhere or for another operation.
        let signed_names: Vec<&str> = signed.split(';').collect();
        if !signed_names.contains(&"host") {
            return Err(incomplete(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        for (header, shown) in [
            ("x-amz-target", "X-Amz-Target"),
            ("x-amz-date", "X-Amz-Date"),
        ] {
            if headers.contains_key(header) && !signed_names.contains(&header) {
                return Err(incomplete(&format!(
                    "'{shown}' must be a 'SignedHeader' in the AWS Authorization."
                )));
            }
        }
        let mut canonical_headers = String::new();
        for name in &signed_names {
            let values: Vec<String> = headers
                .get_all(*name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            if values.is_empty() {
                return Err(ApiError::new(
                    "InvalidSignatureException",
                    format!("Signed header {name} is missing"),
                ));
            }
            canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
        }
        // The payload hash is always the body's: a client's `x-amz-content-sha256` must
        // agree with it, and an unsigned payload is not accepted for these JSON APIs.
        let payload_hash = hex(&Sha256::digest(body));
        if let Some(claimed) = headers.get("x-amz-content-sha256") {
            let claimed = claimed.to_str().unwrap_or("");
            if claimed == "UNSIGNED-PAYLOAD" || claimed.starts_with("STREAMING-") {
                return Err(ApiError::new(
                    "InvalidSignatureException",
                    format!("x-amz-content-sha256 {claimed} is not supported for this API; sign the payload."),
                ));
            }
            if !claimed.eq_ignore_ascii_case(&payload_hash) {
                return Err(ApiError::new(
                    "InvalidSignatureException",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ));
            }
        }
        let mut q: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
        q.sort_unstable();
        let canonical = format!(
            "{method}\n{path}\n{}\n{canonical_headers}\n{signed}\n{payload_hash}",
            q.join("&")
        );
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        // Constant-time comparison (the `hmac` crate's `verify_slice`).
        let provided = unhex(signature).unwrap_or_default();
        if signing_mac(secret, date, region, service, &to_sign)
            .verify_slice(&provided)
            .is_err()
        {
            return Err(ApiError::new(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
            ));
        }
        Ok(())
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigv4::sign;

    /// The headers of a signed Kinesis ListStreams request, as `sign` signs them.
    fn json_headers(host: &str, date: &str, auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", host.parse().unwrap());
        h.insert(
            "content-type",
            "application/x-amz-json-1.1".parse().unwrap(),
        );
        h.insert("x-amz-date", date.parse().unwrap());
        h.insert(
            "x-amz-target",
            "Kinesis_20131202.ListStreams".parse().unwrap(),
        );
        h.insert("authorization", auth.parse().unwrap());
        h
    }

    #[test]
    fn what_we_sign_we_verify() {
        let (date, auth) = sign(
            "127.0.0.1:4567",
            "Kinesis_20131202.ListStreams",
            b"{}",
            "AK",
            "sec",
            None,
            "eu-west-1",
            1_795_632_475,
        );
        assert_eq!(date, "20261125T184755Z");
        let h = json_headers("127.0.0.1:4567", &date, &auth);
        let v = Verifier::new([("AK".to_string(), "sec".to_string())]);
        v.verify("POST", "/", "", &h, b"{}", 1_795_632_475).unwrap();
    }

    /// Temporary credentials: the session token is signed, as botocore 1.43 signs it
    /// (its `Authorization` for this very request, computed once with `SigV4Auth`).
    #[test]
    fn a_session_token_is_signed_as_botocore_signs_it() {
        let (date, auth) = sign(
            "127.0.0.1:4567",
            "Kinesis_20131202.ListStreams",
            b"{}",
            "AK",
            "sec",
            Some("tok/en+="),
            "eu-west-1",
            1_796_162_198,
        );
        assert_eq!(date, "20261201T215638Z");
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AK/20261201/eu-west-1/kinesis/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature=ab4b0b56b4bdd290f584e5a45f393ca361b4493a24e7abce9f4b355b601598a2"
        );
        let mut h = json_headers("127.0.0.1:4567", &date, &auth);
        h.insert("x-amz-security-token", "tok/en+=".parse().unwrap());
        let v = Verifier::new([("AK".to_string(), "sec".to_string())]);
        v.verify("POST", "/", "", &h, b"{}", 1_796_162_198).unwrap();
        h.insert("x-amz-security-token", "other".parse().unwrap());
        let e = v
            .verify("POST", "/", "", &h, b"{}", 1_796_162_198)
            .unwrap_err();
        assert_eq!(e.kind, "InvalidSignatureException");
    }

    #[test]
    fn parses_amz_dates() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20261125T184755Z"), Some(1_795_632_475));
        assert_eq!(parse_amz_date("2026-11-25"), None);
    }

    /// The worked example of AWS's SigV4 documentation (GET with a query string, IAM).
    #[test]
    fn matches_the_aws_documentation_example() {
        let v = Verifier::new([(
            "AKIDEXAMPLE".to_string(),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string(),
        )]);
        let mut h = HeaderMap::new();
        h.insert("host", "iam.amazonaws.com".parse().unwrap());
        h.insert(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        h.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        h.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
                .parse()
                .unwrap(),
        );
        let now = parse_amz_date("20150830T123600Z").unwrap();
        v.verify(
            "GET",
            "/",
            "Action=ListUsers&Version=2010-05-08",
            &h,
            b"",
            now,
        )
        .unwrap();
        let e = v
            .verify(
                "GET",
                "/",
                "Action=ListUsers&Version=2010-05-09",
                &h,
                b"",
                now,
            )
            .unwrap_err();
        assert_eq!(e.kind, "InvalidSignatureException");
        let e = v
            .verify(
                "GET",
                "/",
                "Action=ListUsers&Version=2010-05-08",
                &h,
                b"",
                now + 3600,
            )
            .unwrap_err();
        assert!(e.message.starts_with("Signature expired"));
    }

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn suite_headers(signed: &str, sig: &str, extra: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", "example.amazonaws.com".parse().unwrap());
        h.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        for (k, v) in extra {
            let name = axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
            h.insert(name, v.parse().unwrap());
        }
        h.insert(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature={sig}")
                .parse()
                .unwrap(),
        );
        h
    }

    fn suite_verify(method: &str, query: &str, h: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
        let v = Verifier::new([("AKIDEXAMPLE".to_string(), SECRET.to_string())]);
        v.verify(
            method,
            "/",
            query,
            h,
            body,
            parse_amz_date("20150830T123600Z").unwrap(),
        )
    }

    /// Vectors of AWS's published SigV4 test suite (aws-sig-v4-test-suite).
    #[test]
    fn passes_the_aws_sigv4_test_suite_vectors() {
        let get = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        suite_verify("GET", "", &suite_headers("host;x-amz-date", get, &[]), b"").unwrap();
        // get-vanilla-query-order-key-case
        let q = "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500";
        suite_verify(
            "GET",
            "Param2=value2&Param1=value1",
            &suite_headers("host;x-amz-date", q, &[]),
            b"",
        )
        .unwrap();
        // post-vanilla
        let post = "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b";
        suite_verify(
            "POST",
            "",
            &suite_headers("host;x-amz-date", post, &[]),
            b"",
        )
        .unwrap();
        // post-x-www-form-urlencoded: the body is hashed into the signature.
        let form = "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a";
        let h = suite_headers(
            "content-type;host;x-amz-date",
            form,
            &[("content-type", "application/x-www-form-urlencoded")],
        );
        suite_verify("POST", "", &h, b"Param1=value1").unwrap();
        let e = suite_verify("POST", "", &h, b"Param1=value2").unwrap_err();
        assert_eq!(e.kind, "InvalidSignatureException");
        // A wrong method, or an upper-case signature of the right bytes, is another matter:
        // the first fails, the second is the same signature.
        assert!(
            suite_verify("PUT", "", &suite_headers("host;x-amz-date", post, &[]), b"").is_err()
        );
        suite_verify(
            "POST",
            "",
            &suite_headers("host;x-amz-date", &post.to_uppercase(), &[]),
            b"",
        )
        .unwrap();
    }

    #[test]
    fn the_payload_hash_is_always_checked_against_the_body() {
        let form = "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a";
        let body_hash = hex(&Sha256::digest(b"Param1=value1"));
        let ct = ("content-type", "application/x-www-form-urlencoded");
        // A correct claim is fine (it is not among the signed headers here).
        let h = suite_headers(
            "content-type;host;x-amz-date",
            form,
            &[ct, ("x-amz-content-sha256", &body_hash)],
        );
        suite_verify("POST", "", &h, b"Param1=value1").unwrap();
        // A replay with another body keeps the old claim: refused.
        let e = suite_verify("POST", "", &h, b"Param1=evil").unwrap_err();
        assert!(e.message.contains("x-amz-content-sha256"), "{}", e.message);
        for claim in ["UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"] {
            let h = suite_headers(
                "content-type;host;x-amz-date",
                form,
                &[ct, ("x-amz-content-sha256", claim)],
            );
            let e = suite_verify("POST", "", &h, b"Param1=value1").unwrap_err();
            assert_eq!(e.kind, "InvalidSignatureException");
        }
    }

    #[test]
    fn host_target_and_date_must_be_signed() {
        let (date, auth) = sign(
            "h:1",
            "Kinesis_20131202.ListStreams",
            b"{}",
            "AK",
            "sec",
            None,
            "eu-west-1",
            1_795_632_475,
        );
        let v = Verifier::new([("AK".to_string(), "sec".to_string())]);
        let headers = |auth: &str| json_headers("h:1", &date, auth);
        v.verify("POST", "/", "", &headers(&auth), b"{}", 1_795_632_475)
            .unwrap();
        for (from, to) in [
            (
                "content-type;host;x-amz-date;x-amz-target",
                "content-type;x-amz-date;x-amz-target",
            ),
            (
                "content-type;host;x-amz-date;x-amz-target",
                "content-type;host;x-amz-date",
            ),
            (
                "content-type;host;x-amz-date;x-amz-target",
                "content-type;host;x-amz-target",
            ),
        ] {
            let e = v
                .verify(
                    "POST",
                    "/",
                    "",
                    &headers(&auth.replace(from, to)),
                    b"{}",
                    1_795_632_475,
                )
                .unwrap_err();
            assert_eq!(
                e.kind, "IncompleteSignatureException",
                "{to}: {}",
                e.message
            );
        }
        // Another operation under the same signature fails.
        let mut h = headers(&auth);
        h.insert(
            "x-amz-target",
            "Kinesis_20131202.DeleteStream".parse().unwrap(),
        );
        assert!(v.verify("POST", "/", "", &h, b"{}", 1_795_632_475).is_err());
    }
}
