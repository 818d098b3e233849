//! AWS Signature Version 4 signing of Kinesis requests: what the CLI's client (`sluiced
//! put`, `tail`) and the `kinesis` source send; the API verifies with the same key
//! derivation (`api/sigv4.rs`).

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

/// HMAC-SHA256, as SigV4 chains it.
pub type HmacSha256 = hmac::Hmac<Sha256>;

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The final HMAC of the signature, not yet finalized (so it can be verified in constant
/// time or turned into hex).
pub fn signing_mac(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
    to_sign: &str,
) -> HmacSha256 {
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(&key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(to_sign.as_bytes());
    m
}

/// The hex signature of `to_sign`.
pub fn signature(secret: &str, date: &str, region: &str, service: &str, to_sign: &str) -> String {
    hex(&signing_mac(secret, date, region, service, to_sign)
        .finalize()
        .into_bytes())
}

/// Signs a Kinesis JSON request (`POST /`) the way the AWS SDKs do; returns the
/// `X-Amz-Date` and `Authorization` header values. With temporary credentials the
/// session `token` is signed too (the caller sends it as `X-Amz-Security-Token`, as the
/// SDKs do). Used by `sluiced put` and `tail` and the `kinesis` source.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    host: &str,
    target: &str,
    body: &[u8],
    akid: &str,
    secret: &str,
    token: Option<&str>,
    region: &str,
    unix_secs: i64,
) -> (String, String) {
    let (y, m, d, hh, mm, ss) = crate::spec::civil(unix_secs * 1000);
    let date = format!("{y:04}{m:02}{d:02}");
    let amz_date = format!("{date}T{hh:02}{mm:02}{ss:02}Z");
    let (signed, token_line) = match token {
        Some(t) => (
            "content-type;host;x-amz-date;x-amz-security-token;x-amz-target",
            format!("x-amz-security-token:{}\n", t.trim()),
        ),
        None => ("content-type;host;x-amz-date;x-amz-target", String::new()),
    };
    let canonical = format!(
        "POST\n/\n\ncontent-type:application/x-amz-json-1.1\nhost:{host}\nx-amz-date:{amz_date}\n{token_line}x-amz-target:{target}\n\n{signed}\n{}",
        hex(&Sha256::digest(body))
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/kinesis/aws4_request\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let sig = signature(secret, &date, region, "kinesis", &to_sign);
    let auth = format!("AWS4-HMAC-SHA256 Credential={akid}/{date}/{region}/kinesis/aws4_request, SignedHeaders={signed}, Signature={sig}");
    (amz_date, auth)
}
