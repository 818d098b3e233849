//! Account- and capacity-level Kinesis operations: DescribeAccountSettings and
//! UpdateAccountSettings (the minimum throughput billing commitment, kept in
//! `data_dir/account-settings.json`: there is no bill here, but the state machine —
//! 24-hour minimum, ENABLED_UNTIL_EARLIEST_ALLOWED_END — is AWS's, and warm throughput
//! depends on it), UpdateMaxRecordSize (a stream's largest record, data and partition key,
//! 1–10 MiB, enforced by PutRecord(s)) and UpdateStreamWarmThroughput (recorded for an
//! on-demand stream; sluice has no capacity to warm, so the current figure is the target).

use super::error::{ApiError, Violations};
use super::kinesis::{lookup, require_stream, stream_name};
use super::manage::{stream_arn_member, stream_by_arn};
use super::shapes::{
    Shape, UpdateAccountSettingsInput, UpdateMaxRecordSizeInput, UpdateWarmThroughputInput,
};
use super::Call;
use crate::record::now_ms;
use crate::stream::{Stream, StreamOrigin};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A commitment's minimum duration.
const MIN_COMMITMENT_MS: i64 = 24 * 3_600_000;
/// Most warm throughput per on-demand stream, MiB/s (10 GiB/s).
const MAX_WARM_MIBPS: i64 = 10_240;

/// The operations here.
pub const OPERATIONS: &[&str] = &[
    "DescribeAccountSettings",
    "UpdateAccountSettings",
    "UpdateMaxRecordSize",
    "UpdateStreamWarmThroughput",
];

/// The minimum throughput billing commitment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Commitment {
    enabled: bool,
    /// DISABLE asked for inside the minimum duration: ends at `earliest_end_ms`.
    ending: bool,
    started_ms: Option<i64>,
    ended_ms: Option<i64>,
    earliest_end_ms: Option<i64>,
}

impl Commitment {
    /// As of `now` (a pending end that has passed has happened).
    fn at(mut self, now: i64) -> Commitment {
        if self.enabled && self.ending && self.earliest_end_ms.is_some_and(|e| now >= e) {
            self.enabled = false;
            self.ending = false;
            self.ended_ms = self.earliest_end_ms;
        }
        self
    }

    fn json(&self) -> Value {
        let status = match (self.enabled, self.ending) {
            (false, _) => "DISABLED",
            (true, false) => "ENABLED",
            (true, true) => "ENABLED_UNTIL_EARLIEST_ALLOWED_END",
        };
        let mut out = json!({ "Status": status });
        let secs = |ms: i64| json!(ms as f64 / 1000.0);
        if let Some(t) = self.started_ms {
            out["StartedAt"] = secs(t);
        }
        if let Some(t) = self.ended_ms.filter(|_| !self.enabled) {
            out["EndedAt"] = secs(t);
        }
        if let Some(t) = self.earliest_end_ms.filter(|_| self.enabled) {
            out["EarliestAllowedEndAt"] = secs(t);
        }
        out
    }
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("account-settings.json")
}

fn load(data_dir: &Path) -> Commitment {
    std::fs::read_to_string(path(data_dir))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn store(data_dir: &Path, c: &Commitment) -> Result<(), ApiError> {
    use std::io::Write as _;
    let p = path(data_dir);
    let tmp = p.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(c).unwrap_or_default();
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_data()))
        .and_then(|()| std::fs::rename(&tmp, &p))
        .and_then(|()| std::fs::File::open(data_dir)?.sync_all())
        .map_err(|e| ApiError::internal(format!("{}: {e}", p.display())))
}

/// Runs one operation of this module.
pub fn dispatch(call: &Call<'_>, op: &str, req: &Value) -> Result<Value, ApiError> {
    match op {
        "DescribeAccountSettings" => {
            let now = now_ms();
            let c = load(call.state.streams.data_dir()).at(now);
            Ok(json!({ "MinimumThroughputBillingCommitment": c.json() }))
        }
        "UpdateAccountSettings" => update_account(call, req),
        "UpdateMaxRecordSize" => max_record_size(call, req),
        "UpdateStreamWarmThroughput" => warm_throughput(call, req),
        _ => Err(ApiError::unknown_operation(op)),
    }
}

fn update_account(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = UpdateAccountSettingsInput::read_shape(req)?;
    let mut v = Violations::default();
    let status = match &r.commitment {
        None => {
            v.null("minimumThroughputBillingCommitment");
            None
        }
        Some(c) => match c.status.as_deref() {
            None => {
                v.null("minimumThroughputBillingCommitment.status");
                None
            }
            Some(s @ ("ENABLED" | "DISABLED")) => Some(s == "ENABLED"),
            Some(s) => {
                v.add(
                    s,
                    "minimumThroughputBillingCommitment.status",
                    "Member must satisfy enum value set: [ENABLED, DISABLED]",
                );
                None
            }
        },
    };
    v.finish()?;
    let dir = call.state.streams.data_dir();
    let now = now_ms();
    let mut c = load(dir).at(now);
    match (status.unwrap_or(false), c.enabled) {
        (true, false) => {
            c = Commitment {
                enabled: true,
                ending: false,
                started_ms: Some(now),
                ended_ms: None,
                earliest_end_ms: Some(now + MIN_COMMITMENT_MS),
            };
        }
        // ENABLE again cancels a pending end.
        (true, true) => c.ending = false,
        (false, true) => {
            if c.earliest_end_ms.is_some_and(|e| now < e) {
                c.ending = true;
            } else {
                c.enabled = false;
                c.ended_ms = Some(now);
            }
        }
        (false, false) => {}
    }
    store(dir, &c)?;
    Ok(json!({ "MinimumThroughputBillingCommitment": c.json() }))
}

/// `MaxRecordSizeInKiB` (UpdateMaxRecordSize, CreateStream): 1024..=10240.
pub(super) fn check_max_record_kib(v: &mut Violations, k: i64) {
    if k < 1024 {
        v.add(
            &k.to_string(),
            "maxRecordSizeInKiB",
            "Member must have value greater than or equal to 1024",
        );
    } else if k > 10_240 {
        v.add(
            &k.to_string(),
            "maxRecordSizeInKiB",
            "Member must have value less than or equal to 10240",
        );
    }
}

fn max_record_size(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = UpdateMaxRecordSizeInput::read_shape(req)?;
    let mut v = Violations::default();
    // UpdateMaxRecordSize names its stream by ARN only (the model has no StreamName).
    let arn = stream_arn_member(r.stream_arn.as_deref(), &mut v);
    match r.max_record_size_kib {
        None => v.null("maxRecordSizeInKiB"),
        Some(k) => check_max_record_kib(&mut v, k),
    }
    v.finish()?;
    let arn = arn.unwrap_or_default();
    let st = stream_by_arn(call, arn)?;
    if st.origin == StreamOrigin::Config {
        return Err(super::kinesis::defined_in_config(
            call,
            &st,
            "change `max_record_size` in its file",
        ));
    }
    if st.status() != "ACTIVE" {
        return Err(super::reshard::not_active(&st, &call.state.account));
    }
    let kib = r.max_record_size_kib.unwrap_or(1024) as u32;
    st.update_settings(|s| {
        s.max_record_kib = Some(kib);
        Ok::<(), ApiError>(())
    })
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(json!({}))
}

fn warm_throughput(call: &Call<'_>, req: &Value) -> Result<Value, ApiError> {
    let r = UpdateWarmThroughputInput::read_shape(req)?;
    let mut v = Violations::default();
    let name = stream_name(r.stream_name.as_deref(), r.stream_arn.as_deref(), &mut v);
    let mibps = r.warm_throughput_mibps;
    match mibps {
        None => v.null("warmThroughputMiBps"),
        Some(m) if m < 0 => v.add(
            &m.to_string(),
            "warmThroughputMiBps",
            "Member must have value greater than or equal to 0",
        ),
        _ => {}
    }
    v.finish()?;
    let st = lookup(call, &require_stream(name)?)?;
    let m = mibps.unwrap_or(0);
    check_warm(call, st.with_settings(|s| s.on_demand), m)?;
    st.update_settings(|s| {
        s.warm_throughput_mibps = Some(m as u32);
        Ok::<(), ApiError>(())
    })
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(json!({
        "StreamARN": call.stream_arn(&st.name),
        "StreamName": st.name,
        // Nothing to scale here: the stream takes the target at once.
        "WarmThroughput": { "TargetMiBps": m, "CurrentMiBps": m },
    }))
}

/// Whether warm throughput `m` may be set on a stream (of this mode): on-demand only, with
/// the account's commitment enabled, at most 10 GiB/s.
pub fn check_warm(call: &Call<'_>, on_demand: bool, m: i64) -> Result<(), ApiError> {
    let account = &call.state.account;
    if !on_demand {
        return Err(ApiError::new(
            "ValidationException",
            "Warm throughput is only supported for on-demand streams.",
        ));
    }
    if !load(call.state.streams.data_dir()).at(now_ms()).enabled {
        return Err(ApiError::invalid_argument(format!(
            "Warm throughput needs the MinimumThroughputBillingCommitment of account {account} to be enabled (UpdateAccountSettings)."
        )));
    }
    if m > MAX_WARM_MIBPS {
        return Err(ApiError::new(
            "LimitExceededException",
            format!("Warm throughput can be at most {MAX_WARM_MIBPS} MiBps per stream; {m} was requested."),
        ));
    }
    Ok(())
}

/// `MaxRecordSizeInKiB` and `WarmThroughput` of DescribeStreamSummary.
pub fn describe_summary_extras(st: &Stream, out: &mut Value) {
    out["MaxRecordSizeInKiB"] = json!(st.max_record_bytes().div_ceil(1024));
    if let Some(m) = st.with_settings(|s| s.warm_throughput_mibps.filter(|_| s.on_demand)) {
        out["WarmThroughput"] = json!({ "TargetMiBps": m, "CurrentMiBps": m });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commitment_ends_no_sooner_than_a_day_after_it_started() {
        let mut c = Commitment {
            enabled: true,
            started_ms: Some(0),
            earliest_end_ms: Some(MIN_COMMITMENT_MS),
            ..Commitment::default()
        };
        c.ending = true;
        assert_eq!(c.json()["Status"], "ENABLED_UNTIL_EARLIEST_ALLOWED_END");
        let later = c.clone().at(MIN_COMMITMENT_MS - 1);
        assert!(later.enabled);
        let ended = c.at(MIN_COMMITMENT_MS);
        assert_eq!(ended.json()["Status"], "DISABLED");
        assert_eq!(
            ended.json()["EndedAt"],
            json!(MIN_COMMITMENT_MS as f64 / 1000.0)
        );
    }
}
