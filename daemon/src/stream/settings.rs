//! What the Kinesis API can set on a stream besides its records — tags, shard-level
//! monitoring, encryption, capacity mode, the resource policy and registered consumers —
//! kept in the stream's `stream.json` with its other metadata. Nothing here changes how
//! records are stored: encryption settings are recorded and reported (there is no key
//! service), monitoring settings name metrics, consumers are registrations.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Most tags a stream holds, as Kinesis.
pub const MAX_TAGS: usize = 50;
/// Most consumers registered on a stream, as Kinesis.
pub const MAX_CONSUMERS: usize = 20;

/// Server-side encryption, as StartStreamEncryption recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// `KMS`.
    pub kind: String,
    /// The key id or ARN or alias given.
    pub key_id: String,
}

/// A registered enhanced fan-out consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    /// Its name, unique on the stream.
    pub name: String,
    /// Its ARN (`<stream ARN>/consumer/<name>:<creation seconds>`).
    pub arn: String,
    /// Registration time, ms since the epoch.
    pub created_ms: i64,
    /// Its tags (TagResource on its ARN).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Its resource policy (PutResourcePolicy on its ARN).
    #[serde(default)]
    pub policy: Option<String>,
}

/// The API-managed settings of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSettings {
    /// Tags (key → value).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Enabled shard-level metrics (`IncomingBytes`, ...).
    #[serde(default)]
    pub shard_level_metrics: BTreeSet<String>,
    /// Server-side encryption, when started.
    #[serde(default)]
    pub encryption: Option<Encryption>,
    /// `ON_DEMAND` capacity mode (else `PROVISIONED`).
    #[serde(default)]
    pub on_demand: bool,
    /// The resource policy document, as given.
    #[serde(default)]
    pub policy: Option<String>,
    /// Registered consumers, in registration order.
    #[serde(default)]
    pub consumers: Vec<Consumer>,
    /// UpdateMaxRecordSize (KiB, 1024..=10240); absent: the stream's configured size.
    #[serde(default)]
    pub max_record_kib: Option<u32>,
    /// UpdateStreamWarmThroughput (MiB/s) of an on-demand stream.
    #[serde(default)]
    pub warm_throughput_mibps: Option<u32>,
    /// When UpdateStreamMode changed the capacity mode (ms), the last 24 hours' worth:
    /// Kinesis allows two switches per stream in 24 hours.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mode_switches: Vec<i64>,
}

impl StreamSettings {
    /// `KMS` or `NONE`, as records and descriptions report it.
    pub fn encryption_type(&self) -> &'static str {
        if self.encryption.is_some() {
            "KMS"
        } else {
            "NONE"
        }
    }

    /// `ON_DEMAND` or `PROVISIONED`.
    pub fn mode(&self) -> &'static str {
        if self.on_demand {
            "ON_DEMAND"
        } else {
            "PROVISIONED"
        }
    }
}
