"""Every Kinesis Data Streams and Firehose operation end to end: first each one through the
real AWS CLI (happy path, the essential fields of its answer checked), then each error type
the AWS API reference lists for it (its "Errors" section, the same list as the `errors` of
the operation in botocore's service model) that a local server can be made to answer,
through boto3, checking `Error.Code`. Error wording is covered by validation_table.py and
the per-area scripts; here only the type is under test.

Usage: every_operation.py ENDPOINT

Fixtures get a random suffix and are deleted at the end. Failures are collected and listed
at the end (exit 1) so one difference does not hide the others.

Side effect that cannot be undone through the API: the CLI pass enables and then disables
the account's MinimumThroughputBillingCommitment, which (as on AWS) stays
ENABLED_UNTIL_EARLIEST_ALLOWED_END for 24 hours in `data_dir/account-settings.json`.
"""

import base64
import json
import os
import random
import string
import subprocess
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint = sys.argv[1]
A = "000000000000"
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{A}:role/firehose"
BUCKET = "arn:aws:s3:::somebucket"
MAX = 2**128 - 1
SUFFIX = "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


def name(base):
    return f"eo-{base}-{SUFFIX}"


cfg = Config(retries={"max_attempts": 1}, parameter_validation=False, read_timeout=30)
kw = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x", config=cfg)
k = boto3.client("kinesis", **kw)
f = boto3.client("firehose", **kw)

# The CLI of the same virtualenv, without any user configuration.
AWS = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "aws")
CLI_ENV = dict(os.environ, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION=REGION,
               AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_PAGER="")

failures = []
cli_calls = 0
error_cases = 0
stream_names = []  # every Kinesis stream made, for the clean-up
delivery_names = []


def cli(service, command, *args):
    """`aws SERVICE COMMAND ARGS`, its JSON answer parsed ({} for an empty answer)."""
    global cli_calls
    cli_calls += 1
    argv = [AWS, "--endpoint-url", endpoint, "--output", "json", service, command, *args]
    p = subprocess.run(argv, env=CLI_ENV, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"aws {service} {command} {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return json.loads(p.stdout) if p.stdout.strip() else {}


class step:
    """A named part of the run: an exception inside is recorded and the run goes on."""

    def __init__(self, label):
        self.label = label

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if exc is None:
            return False
        if isinstance(exc, Exception):
            failures.append(f"{self.label}: {type(exc).__name__}: {exc}")
            return True
        return False


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def soft(cond, what):
    """A check whose failure is recorded without ending its step."""
    if not cond:
        failures.append(what)


def expect(op, code, fn, **kw):
    """`fn(**kw)` must fail with `code`; a mismatch is recorded, not raised."""
    global error_cases
    error_cases += 1
    try:
        fn(**kw)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        if got != code:
            failures.append(f"{op}: expected {code}, got {got}: {e.response['Error'].get('Message', '')}")
        return
    except Exception as e:  # a transport or parsing failure is a failure of the case too
        failures.append(f"{op}: expected {code}, got {type(e).__name__}: {e}")
        return
    failures.append(f"{op}: expected {code}, but the call succeeded")


def summary(stream):
    return k.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]


def active(stream, deadline_s=15):
    """Polls DescribeStreamSummary until the stream is ACTIVE (sluice: 0.5 s after a resharding)."""
    deadline = time.time() + deadline_s
    while True:
        s = summary(stream)
        if s["StreamStatus"] == "ACTIVE":
            return s
        if time.time() > deadline:
            raise AssertionError(f"{stream} still {s['StreamStatus']} after {deadline_s} s")
        time.sleep(0.05)


def gone(fn, deadline_s=15, **kw):
    """Polls a Describe call until it answers ResourceNotFoundException (AWS deletes asynchronously)."""
    deadline = time.time() + deadline_s
    while True:
        try:
            fn(**kw)
        except ClientError as e:
            if e.response["Error"]["Code"] == "ResourceNotFoundException":
                return
            raise
        if time.time() > deadline:
            raise AssertionError(f"{kw} still there after {deadline_s} s")
        time.sleep(0.1)


def open_shards(stream):
    out, tok = [], None
    while True:
        page = k.list_shards(NextToken=tok) if tok else k.list_shards(StreamName=stream)
        out += [s for s in page["Shards"] if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
        tok = page.get("NextToken")
        if not tok:
            return out


def start_updating(stream):
    """Makes `stream` UPDATING (for 0.5 s on sluice): splits its only open shard, or merges
    its two open shards back."""
    active(stream)
    sh = sorted(open_shards(stream), key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))
    if len(sh) == 1:
        lo, hi = int(sh[0]["HashKeyRange"]["StartingHashKey"]), int(sh[0]["HashKeyRange"]["EndingHashKey"])
        k.split_shard(StreamName=stream, ShardToSplit=sh[0]["ShardId"], NewStartingHashKey=str((lo + hi) // 2))
    else:
        k.merge_shards(StreamName=stream, ShardToMerge=sh[0]["ShardId"], AdjacentShardToMerge=sh[1]["ShardId"])


def b64(s):
    return base64.b64decode(s)


# A case that needs the account as it is before the CLI pass commits it (see the module
# docstring): warm throughput without a MinimumThroughputBillingCommitment.
pre_warm_status = k.describe_account_settings()["MinimumThroughputBillingCommitment"]["Status"]
OD_PRE = name("odpre")
stream_names.append(OD_PRE)
k.create_stream(StreamName=OD_PRE, StreamModeDetails={"StreamMode": "ON_DEMAND"})
if pre_warm_status == "DISABLED":
    expect("UpdateStreamWarmThroughput/no-commitment", "InvalidArgumentException",
           k.update_stream_warm_throughput, StreamName=OD_PRE, WarmThroughputMiBps=10)

# ============================================================================================
# 1. CLI pass: every operation through `aws kinesis` / `aws firehose`.
# SubscribeToShard has no CLI command (the CLI cannot read event streams): it goes through
# boto3 here, marked as such.
# ============================================================================================
S = name("cli")
OD = name("clid")
stream_names += [S, OD]
arn = None
seq0 = None

with step("CLI CreateStream"):
    check(cli("kinesis", "create-stream", "--stream-name", S, "--shard-count", "2") == {}, "CreateStream answers an empty body")
    active(S)

with step("CLI DescribeStreamSummary"):
    d = cli("kinesis", "describe-stream-summary", "--stream-name", S)["StreamDescriptionSummary"]
    check(d["StreamName"] == S and d["StreamStatus"] == "ACTIVE", d)
    check(d["OpenShardCount"] == 2 and d["RetentionPeriodHours"] == 24, d)
    check(d["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}, d)
    check(d["StreamARN"] == f"arn:aws:kinesis:{REGION}:{A}:stream/{S}", d)
    check(d["EncryptionType"] == "NONE" and "StreamCreationTimestamp" in d and "ConsumerCount" in d, d)
    check(isinstance(d["EnhancedMonitoring"], list), d)
    arn = d["StreamARN"]

with step("CLI DescribeStream"):
    # --no-paginate: the CLI's paginator would merge pages and drop HasMoreShards.
    d = cli("kinesis", "describe-stream", "--no-paginate", "--stream-name", S)["StreamDescription"]
    check(d["StreamStatus"] == "ACTIVE" and d["HasMoreShards"] is False and d["StreamARN"] == arn, d)
    check([s["ShardId"] for s in d["Shards"]] == ["shardId-000000000000", "shardId-000000000001"], d["Shards"])
    check(d["Shards"][0]["HashKeyRange"]["StartingHashKey"] == "0" and d["Shards"][1]["HashKeyRange"]["EndingHashKey"] == str(MAX), d)

with step("CLI ListStreams"):
    d = cli("kinesis", "list-streams")
    check(S in d["StreamNames"], d)
    summ = [x for x in d["StreamSummaries"] if x["StreamName"] == S]
    check(len(summ) == 1 and summ[0]["StreamARN"] == arn and summ[0]["StreamStatus"] == "ACTIVE", summ)

with step("CLI ListShards"):
    d = cli("kinesis", "list-shards", "--stream-name", S)
    check([s["ShardId"] for s in d["Shards"]] == ["shardId-000000000000", "shardId-000000000001"], d)
    check(all("StartingSequenceNumber" in s["SequenceNumberRange"] for s in d["Shards"]), d)

with step("CLI PutRecord"):
    # AWS CLI v1 sends a blob argument as given (raw), and prints blobs in base64.
    d = cli("kinesis", "put-record", "--stream-name", S, "--partition-key", "p", "--data", "hello-cli", "--explicit-hash-key", "0")
    check(d["ShardId"] == "shardId-000000000000" and d["SequenceNumber"].isdigit(), d)
    check(d.get("EncryptionType") == "NONE", d)
    seq0 = d["SequenceNumber"]

with step("CLI PutRecords"):
    d = cli("kinesis", "put-records", "--stream-name", S, "--records",
            "Data=rec-a,PartitionKey=a,ExplicitHashKey=1", "Data=rec-b,PartitionKey=b,ExplicitHashKey=" + str(MAX))
    check(d["FailedRecordCount"] == 0 and len(d["Records"]) == 2, d)
    check([r["ShardId"] for r in d["Records"]] == ["shardId-000000000000", "shardId-000000000001"], d)
    check(all(r["SequenceNumber"].isdigit() for r in d["Records"]), d)

with step("CLI GetShardIterator + GetRecords"):
    it = cli("kinesis", "get-shard-iterator", "--stream-name", S, "--shard-id", "shardId-000000000000",
             "--shard-iterator-type", "TRIM_HORIZON")["ShardIterator"]
    check(isinstance(it, str) and it, it)
    d = cli("kinesis", "get-records", "--shard-iterator", it)
    check([b64(r["Data"]) for r in d["Records"]] == [b"hello-cli", b"rec-a"], d["Records"])
    check(d["Records"][0]["SequenceNumber"] == seq0 and d["Records"][0]["PartitionKey"] == "p", d["Records"][0])
    check("ApproximateArrivalTimestamp" in d["Records"][0], d["Records"][0])
    check("NextShardIterator" in d and d["MillisBehindLatest"] >= 0, d)
    it = cli("kinesis", "get-shard-iterator", "--stream-name", S, "--shard-id", "shardId-000000000000",
             "--shard-iterator-type", "AFTER_SEQUENCE_NUMBER", "--starting-sequence-number", seq0)["ShardIterator"]
    got = [r["Data"] for r in k.get_records(ShardIterator=it)["Records"]]
    check(got == [b"rec-a"], f"AFTER_SEQUENCE_NUMBER: {got}")

with step("CLI AddTagsToStream / ListTagsForStream / RemoveTagsFromStream"):
    check(cli("kinesis", "add-tags-to-stream", "--stream-name", S, "--tags", "team=data,env=dev") == {}, "empty body")
    d = cli("kinesis", "list-tags-for-stream", "--stream-name", S)
    check(d["Tags"] == [{"Key": "env", "Value": "dev"}, {"Key": "team", "Value": "data"}] and d["HasMoreTags"] is False, d)
    check(cli("kinesis", "remove-tags-from-stream", "--stream-name", S, "--tag-keys", "env") == {}, "empty body")
    check(k.list_tags_for_stream(StreamName=S)["Tags"] == [{"Key": "team", "Value": "data"}], "tag removed")

with step("CLI TagResource / ListTagsForResource / UntagResource"):
    check(cli("kinesis", "tag-resource", "--resource-arn", arn, "--tags", "owner=me") == {}, "empty body")
    d = cli("kinesis", "list-tags-for-resource", "--resource-arn", arn)
    check({"Key": "owner", "Value": "me"} in d["Tags"] and {"Key": "team", "Value": "data"} in d["Tags"], d)
    check(cli("kinesis", "untag-resource", "--resource-arn", arn, "--tag-keys", "owner") == {}, "empty body")
    check({"Key": "owner", "Value": "me"} not in k.list_tags_for_resource(ResourceARN=arn)["Tags"], "tag removed")

with step("CLI IncreaseStreamRetentionPeriod / DecreaseStreamRetentionPeriod"):
    cli("kinesis", "increase-stream-retention-period", "--stream-name", S, "--retention-period-hours", "48")
    check(active(S)["RetentionPeriodHours"] == 48, "retention 48")
    cli("kinesis", "decrease-stream-retention-period", "--stream-name", S, "--retention-period-hours", "24")
    check(active(S)["RetentionPeriodHours"] == 24, "retention 24")

with step("CLI EnableEnhancedMonitoring / DisableEnhancedMonitoring"):
    d = cli("kinesis", "enable-enhanced-monitoring", "--stream-name", S, "--shard-level-metrics", "IncomingBytes", "OutgoingBytes")
    check(d["StreamName"] == S and d["CurrentShardLevelMetrics"] == [], d)
    check(sorted(d["DesiredShardLevelMetrics"]) == ["IncomingBytes", "OutgoingBytes"], d)
    active(S)
    d = cli("kinesis", "disable-enhanced-monitoring", "--stream-name", S, "--shard-level-metrics", "IncomingBytes")
    check(sorted(d["CurrentShardLevelMetrics"]) == ["IncomingBytes", "OutgoingBytes"] and d["DesiredShardLevelMetrics"] == ["OutgoingBytes"], d)
    active(S)

with step("CLI StartStreamEncryption / StopStreamEncryption"):
    cli("kinesis", "start-stream-encryption", "--stream-name", S, "--encryption-type", "KMS", "--key-id", "alias/aws/kinesis")
    d = active(S)
    check(d["EncryptionType"] == "KMS" and d["KeyId"] == "alias/aws/kinesis", d)
    cli("kinesis", "stop-stream-encryption", "--stream-name", S, "--encryption-type", "KMS", "--key-id", "alias/aws/kinesis")
    check(active(S)["EncryptionType"] == "NONE", "encryption stopped")

with step("CLI PutResourcePolicy / GetResourcePolicy / DeleteResourcePolicy"):
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{A}:root"},
                                                                "Action": "kinesis:DescribeStreamSummary", "Resource": arn}]})
    cli("kinesis", "put-resource-policy", "--resource-arn", arn, "--policy", policy)
    d = cli("kinesis", "get-resource-policy", "--resource-arn", arn)
    check(json.loads(d["Policy"]) == json.loads(policy), d)
    cli("kinesis", "delete-resource-policy", "--resource-arn", arn)
    check(k.get_resource_policy(ResourceARN=arn)["Policy"] == "{}", "policy deleted")

with step("CLI RegisterStreamConsumer / DescribeStreamConsumer / ListStreamConsumers / SubscribeToShard / DeregisterStreamConsumer"):
    c = cli("kinesis", "register-stream-consumer", "--stream-arn", arn, "--consumer-name", "app")["Consumer"]
    check(c["ConsumerName"] == "app" and c["ConsumerARN"].startswith(arn + "/consumer/app:"), c)
    check(c["ConsumerStatus"] in ("CREATING", "ACTIVE") and "ConsumerCreationTimestamp" in c, c)
    deadline = time.time() + 15
    while True:  # AWS answers CREATING and turns ACTIVE within seconds
        d = cli("kinesis", "describe-stream-consumer", "--consumer-arn", c["ConsumerARN"])["ConsumerDescription"]
        if d["ConsumerStatus"] == "ACTIVE" or time.time() > deadline:
            break
        time.sleep(0.2)
    check(d["ConsumerStatus"] == "ACTIVE" and d["StreamARN"] == arn and d["ConsumerName"] == "app", d)
    d = cli("kinesis", "list-stream-consumers", "--stream-arn", arn)
    check([x["ConsumerName"] for x in d["Consumers"]] == ["app"] and d["Consumers"][0]["ConsumerARN"] == c["ConsumerARN"], d)
    # SubscribeToShard: boto3 only, the CLI has no command for it (it cannot read event streams).
    ev = k.subscribe_to_shard(ConsumerARN=c["ConsumerARN"], ShardId="shardId-000000000000",
                              StartingPosition={"Type": "TRIM_HORIZON"})["EventStream"]
    got = []
    for e in ev:
        got += [r["Data"] for r in e["SubscribeToShardEvent"]["Records"]]
        if len(got) >= 2:
            break
    ev.close()
    check(got == [b"hello-cli", b"rec-a"], got)
    check(cli("kinesis", "deregister-stream-consumer", "--consumer-arn", c["ConsumerARN"]) == {}, "empty body")
    gone(k.describe_stream_consumer, ConsumerARN=c["ConsumerARN"])

with step("CLI SplitShard"):
    mid = str(MAX // 4)
    cli("kinesis", "split-shard", "--stream-name", S, "--shard-to-split", "shardId-000000000000", "--new-starting-hash-key", mid)
    check(active(S)["OpenShardCount"] == 3, "3 open shards")
    d = cli("kinesis", "list-shards", "--stream-name", S)["Shards"]
    open_ids = [s["ShardId"] for s in d if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
    check(open_ids == ["shardId-000000000001", "shardId-000000000002", "shardId-000000000003"], d)
    kids = {s["ShardId"]: s for s in d}
    check(kids["shardId-000000000002"]["ParentShardId"] == "shardId-000000000000", kids)
    check(kids["shardId-000000000003"]["HashKeyRange"]["StartingHashKey"] == mid, kids)

with step("CLI MergeShards"):
    cli("kinesis", "merge-shards", "--stream-name", S, "--shard-to-merge", "shardId-000000000002",
        "--adjacent-shard-to-merge", "shardId-000000000003")
    check(active(S)["OpenShardCount"] == 2, "2 open shards")
    m = [s for s in cli("kinesis", "list-shards", "--stream-name", S, "--shard-filter", "Type=AT_LATEST")["Shards"]]
    check([s["ShardId"] for s in m] == ["shardId-000000000001", "shardId-000000000004"], m)
    check((m[1]["ParentShardId"], m[1]["AdjacentParentShardId"]) == ("shardId-000000000002", "shardId-000000000003"), m[1])

with step("CLI UpdateShardCount"):
    d = cli("kinesis", "update-shard-count", "--stream-name", S, "--target-shard-count", "4", "--scaling-type", "UNIFORM_SCALING")
    check((d["StreamName"], d["CurrentShardCount"], d["TargetShardCount"]) == (S, 2, 4) and d["StreamARN"] == arn, d)
    check(active(S)["OpenShardCount"] == 4, "4 open shards")
    check(len(open_shards(S)) == 4, "ListShards shows 4 open shards")

with step("CLI UpdateMaxRecordSize"):
    cli("kinesis", "update-max-record-size", "--stream-arn", arn, "--max-record-size-in-ki-b", "2048")
    check(active(S)["MaxRecordSizeInKiB"] == 2048, "max record size")

with step("CLI DescribeLimits"):
    d = cli("kinesis", "describe-limits")
    check(d["ShardLimit"] > 0 and d["OpenShardCount"] >= 4 and d["OnDemandStreamCountLimit"] > 0, d)
    check(d["OnDemandStreamCount"] >= 1, d)  # OD_PRE

with step("CLI UpdateStreamMode"):
    cli("kinesis", "update-stream-mode", "--stream-arn", arn, "--stream-mode-details", "StreamMode=ON_DEMAND")
    check(active(S)["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}, "on-demand")

with step("CLI DescribeAccountSettings / UpdateAccountSettings / UpdateStreamWarmThroughput"):
    d = cli("kinesis", "describe-account-settings")
    check(d["MinimumThroughputBillingCommitment"]["Status"] in ("DISABLED", "ENABLED", "ENABLED_UNTIL_EARLIEST_ALLOWED_END"), d)
    d = cli("kinesis", "update-account-settings", "--minimum-throughput-billing-commitment", "Status=ENABLED")["MinimumThroughputBillingCommitment"]
    check(d["Status"] == "ENABLED" and "StartedAt" in d and "EarliestAllowedEndAt" in d, d)
    cli("kinesis", "create-stream", "--stream-name", OD, "--stream-mode-details", "StreamMode=ON_DEMAND")
    active(OD)
    d = cli("kinesis", "update-stream-warm-throughput", "--stream-name", OD, "--warm-throughput-mi-bps", "100")
    check(d["StreamName"] == OD and d["WarmThroughput"]["TargetMiBps"] == 100 and "CurrentMiBps" in d["WarmThroughput"], d)
    check(active(OD)["WarmThroughput"]["TargetMiBps"] == 100, "warm throughput shown")
    d = cli("kinesis", "update-account-settings", "--minimum-throughput-billing-commitment", "Status=DISABLED")["MinimumThroughputBillingCommitment"]
    check(d["Status"] == "ENABLED_UNTIL_EARLIEST_ALLOWED_END", d)  # the 24-hour minimum

with step("CLI DeleteStream"):
    check(cli("kinesis", "delete-stream", "--stream-name", OD) == {}, "empty body")
    cli("kinesis", "delete-stream", "--stream-name", S, "--enforce-consumer-deletion")
    gone(k.describe_stream_summary, StreamName=OD)
    gone(k.describe_stream_summary, StreamName=S)
    check(S not in k.list_streams()["StreamNames"], "deleted stream not listed")

D = name("cli")
delivery_names.append(D)
with step("CLI CreateDeliveryStream"):
    d = cli("firehose", "create-delivery-stream", "--delivery-stream-name", D, "--delivery-stream-type", "DirectPut",
            "--extended-s3-destination-configuration",
            json.dumps({"RoleARN": ROLE, "BucketARN": BUCKET, "Prefix": "eo/", "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60}}),
            "--tags", "Key=team,Value=data")
    check(d["DeliveryStreamARN"] == f"arn:aws:firehose:{REGION}:{A}:deliverystream/{D}", d)

with step("CLI DescribeDeliveryStream"):
    deadline = time.time() + 15
    while True:  # AWS answers CREATING first
        d = cli("firehose", "describe-delivery-stream", "--delivery-stream-name", D)["DeliveryStreamDescription"]
        if d["DeliveryStreamStatus"] == "ACTIVE" or time.time() > deadline:
            break
        time.sleep(0.2)
    check(d["DeliveryStreamName"] == D and d["DeliveryStreamStatus"] == "ACTIVE" and d["DeliveryStreamType"] == "DirectPut", d)
    check(d["VersionId"] == "1" and d["HasMoreDestinations"] is False and "CreateTimestamp" in d, d)
    dest = d["Destinations"][0]
    check(dest["DestinationId"] == "destinationId-000000000001", dest)
    ext = dest["ExtendedS3DestinationDescription"]
    check(ext["BucketARN"] == BUCKET and ext["Prefix"] == "eo/" and ext["BufferingHints"] == {"SizeInMBs": 1, "IntervalInSeconds": 60}, ext)
    check(ext["CompressionFormat"] == "UNCOMPRESSED" and ext["RoleARN"] == ROLE, ext)

with step("CLI ListDeliveryStreams"):
    d = cli("firehose", "list-delivery-streams")
    check(D in d["DeliveryStreamNames"] and d["HasMoreDeliveryStreams"] is False, d)
    check(D in cli("firehose", "list-delivery-streams", "--delivery-stream-type", "DirectPut")["DeliveryStreamNames"], "type filter")

with step("CLI PutRecord (Firehose)"):
    d = cli("firehose", "put-record", "--delivery-stream-name", D, "--record", "Data=one")
    check(isinstance(d["RecordId"], str) and d["RecordId"] and d["Encrypted"] is False, d)

with step("CLI PutRecordBatch"):
    d = cli("firehose", "put-record-batch", "--delivery-stream-name", D, "--records", "Data=two", "Data=three")
    check(d["FailedPutCount"] == 0 and len(d["RequestResponses"]) == 2, d)
    check(all(r.get("RecordId") for r in d["RequestResponses"]) and d["Encrypted"] is False, d)

with step("CLI TagDeliveryStream / ListTagsForDeliveryStream / UntagDeliveryStream"):
    check(cli("firehose", "tag-delivery-stream", "--delivery-stream-name", D, "--tags", "Key=env,Value=dev") == {}, "empty body")
    d = cli("firehose", "list-tags-for-delivery-stream", "--delivery-stream-name", D)
    check(d["Tags"] == [{"Key": "env", "Value": "dev"}, {"Key": "team", "Value": "data"}] and d["HasMoreTags"] is False, d)
    check(cli("firehose", "untag-delivery-stream", "--delivery-stream-name", D, "--tag-keys", "env") == {}, "empty body")
    check(f.list_tags_for_delivery_stream(DeliveryStreamName=D)["Tags"] == [{"Key": "team", "Value": "data"}], "tag removed")

with step("CLI StartDeliveryStreamEncryption / StopDeliveryStreamEncryption"):
    cli("firehose", "start-delivery-stream-encryption", "--delivery-stream-name", D,
        "--delivery-stream-encryption-configuration-input", "KeyType=AWS_OWNED_CMK")
    e = f.describe_delivery_stream(DeliveryStreamName=D)["DeliveryStreamDescription"]["DeliveryStreamEncryptionConfiguration"]
    check(e["Status"] in ("ENABLING", "ENABLED") and e["KeyType"] == "AWS_OWNED_CMK", e)
    # AWS: `Encrypted` "indicates whether server-side encryption (SSE) was enabled during
    # this operation".
    d = cli("firehose", "put-record", "--delivery-stream-name", D, "--record", "Data=four")
    soft(d["Encrypted"] is True, f"CLI firehose put-record with SSE enabled: Encrypted is not true: {d}")
    d = cli("firehose", "put-record-batch", "--delivery-stream-name", D, "--records", "Data=five")
    check(d["FailedPutCount"] == 0, d)
    soft(d["Encrypted"] is True, f"CLI firehose put-record-batch with SSE enabled: Encrypted is not true: {d}")
    cli("firehose", "stop-delivery-stream-encryption", "--delivery-stream-name", D)
    e = f.describe_delivery_stream(DeliveryStreamName=D)["DeliveryStreamDescription"]["DeliveryStreamEncryptionConfiguration"]
    check(e["Status"] in ("DISABLING", "DISABLED"), e)
    d = cli("firehose", "put-record", "--delivery-stream-name", D, "--record", "Data=six")
    check(d["Encrypted"] is False, f"CLI firehose put-record after SSE stopped: Encrypted is not false: {d}")

with step("CLI UpdateDestination"):
    d = cli("firehose", "update-destination", "--delivery-stream-name", D, "--current-delivery-stream-version-id", "1",
            "--destination-id", "destinationId-000000000001",
            "--extended-s3-destination-update", json.dumps({"BufferingHints": {"SizeInMBs": 2, "IntervalInSeconds": 90}}))
    check(d == {}, d)
    d = f.describe_delivery_stream(DeliveryStreamName=D)["DeliveryStreamDescription"]
    ext = d["Destinations"][0]["ExtendedS3DestinationDescription"]
    check(d["VersionId"] == "2" and ext["BufferingHints"] == {"SizeInMBs": 2, "IntervalInSeconds": 90} and ext["Prefix"] == "eo/", d)

with step("CLI DeleteDeliveryStream"):
    check(cli("firehose", "delete-delivery-stream", "--delivery-stream-name", D) == {}, "empty body")
    gone(f.describe_delivery_stream, DeliveryStreamName=D)
    check(D not in f.list_delivery_streams()["DeliveryStreamNames"], "deleted delivery stream not listed")

# ============================================================================================
# 2. Error pass: each documented error type of each operation that can be provoked locally.
# Not reachable anywhere here (listed once instead of per operation where it applies):
#   AccessDeniedException (no IAM), InternalFailureException, DryRunOperationException,
#   KMS* / InvalidKMSResourceException (no key service), LimitExceededException as a
#   request-rate limit (sluice has no control-plane throttling), ExpiredNextTokenException
#   (tokens would have to age 300 s), Firehose ServiceUnavailableException (throttling),
#   Firehose InvalidSourceException (CloudWatch Logs decompression, not served).
# ============================================================================================
MISSING = name("missing")
MISSING_ARN = f"arn:aws:kinesis:{REGION}:{A}:stream/{MISSING}"
E = name("err")  # 1 shard, resharded back and forth to be UPDATING on demand
E2 = name("err2")  # 4 shards, for the shard-level errors
EOD = name("errod")  # on demand
stream_names += [E, E2, EOD]
k.create_stream(StreamName=E, ShardCount=1)
k.create_stream(StreamName=E2, ShardCount=4)
k.create_stream(StreamName=EOD, StreamModeDetails={"StreamMode": "ON_DEMAND"})
active(E), active(E2), active(EOD)
earn = summary(E)["StreamARN"]
e2arn = summary(E2)["StreamARN"]
e2put = k.put_record(StreamName=E2, Data=b"x", PartitionKey="p", ExplicitHashKey="0")

# --- CreateStream (ResourceInUse, LimitExceeded, InvalidArgument, Validation)
expect("CreateStream/exists", "ResourceInUseException", k.create_stream, StreamName=E, ShardCount=1)
lim = k.describe_limits()
# A stream that would take the account past the ShardLimit DescribeLimits reports is refused
# with LimitExceededException ("This request would exceed the shard limit for the account ...").
over = name("over")
stream_names.append(over)
expect("CreateStream/over-account-shard-limit", "LimitExceededException",
       k.create_stream, StreamName=over, ShardCount=lim["ShardLimit"] - lim["OpenShardCount"] + 1)
expect("CreateStream/bad-tag", "InvalidArgumentException", k.create_stream, StreamName=name("tagged"), ShardCount=1, Tags={"a;b": "1"})
expect("CreateStream/validation", "ValidationException", k.create_stream, StreamName="bad name", ShardCount=1)

# --- DeleteStream (ResourceNotFound, ResourceInUse, Validation; InvalidArgument: not reachable here)
expect("DeleteStream/missing", "ResourceNotFoundException", k.delete_stream, StreamName=MISSING)
withc = name("withc")
stream_names.append(withc)
k.create_stream(StreamName=withc, ShardCount=1)
k.register_stream_consumer(StreamARN=summary(withc)["StreamARN"], ConsumerName="c")
# AWS: "If EnforceConsumerDeletion is unset or false and the stream has registered consumers,
# the call to DeleteStream fails with a ResourceInUseException."
expect("DeleteStream/has-consumers", "ResourceInUseException", k.delete_stream, StreamName=withc)
expect("DeleteStream/validation", "ValidationException", k.delete_stream, StreamName="bad name")

# --- DescribeStream / DescribeStreamSummary (ResourceNotFound, InvalidArgument, Validation)
expect("DescribeStream/missing", "ResourceNotFoundException", k.describe_stream, StreamName=MISSING)
expect("DescribeStream/no-stream", "InvalidArgumentException", k.describe_stream)
expect("DescribeStream/validation", "ValidationException", k.describe_stream, StreamName=E, Limit=0)
expect("DescribeStreamSummary/missing", "ResourceNotFoundException", k.describe_stream_summary, StreamName=MISSING)
expect("DescribeStreamSummary/no-stream", "InvalidArgumentException", k.describe_stream_summary)
expect("DescribeStreamSummary/validation", "ValidationException", k.describe_stream_summary, StreamName="bad name")

# --- DescribeLimits, DescribeAccountSettings: their only documented error is
# LimitExceededException (request rate): not reachable here; they take no input to refuse.

# --- ListStreams (InvalidArgument, Validation)
# A NextToken ListStreams never issued: InvalidArgumentException, as for ListShards and
# ListStreamConsumers.
expect("ListStreams/bad-token", "InvalidArgumentException", k.list_streams, NextToken="not-a-token")
expect("ListStreams/validation", "ValidationException", k.list_streams, Limit=0)

# --- ListShards (ResourceNotFound, InvalidArgument, Validation; ResourceInUse: a CREATING
# stream, not reachable as CreateStream answers once the stream is ACTIVE)
expect("ListShards/missing", "ResourceNotFoundException", k.list_shards, StreamName=MISSING)
expect("ListShards/bad-token", "InvalidArgumentException", k.list_shards, NextToken="not-a-token")
expect("ListShards/no-stream", "InvalidArgumentException", k.list_shards)
expect("ListShards/validation", "ValidationException", k.list_shards, StreamName=E, MaxResults=0)

# --- PutRecord / PutRecords (ResourceNotFound, InvalidArgument, Validation).
# ProvisionedThroughputExceededException: not reachable through the API alone (sluice
# throttles only config streams with a `write_limit`).
expect("PutRecord/missing", "ResourceNotFoundException", k.put_record, StreamName=MISSING, Data=b"x", PartitionKey="p")
expect("PutRecord/hash-key", "InvalidArgumentException", k.put_record, StreamName=E, Data=b"x", PartitionKey="p", ExplicitHashKey=str(MAX + 1))
expect("PutRecord/validation", "ValidationException", k.put_record, StreamName=E, Data=b"x", PartitionKey="")
expect("PutRecords/missing", "ResourceNotFoundException", k.put_records, StreamName=MISSING, Records=[{"Data": b"x", "PartitionKey": "p"}])
expect("PutRecords/hash-key", "InvalidArgumentException", k.put_records, StreamName=E,
       Records=[{"Data": b"x", "PartitionKey": "p", "ExplicitHashKey": str(MAX + 1)}])
expect("PutRecords/validation", "ValidationException", k.put_records, StreamName=E, Records=[{"Data": b"x", "PartitionKey": "p"}] * 501)

# --- GetShardIterator (ResourceNotFound, InvalidArgument, Validation; ProvisionedThroughput-
# Exceeded: sluice does not throttle iterators)
expect("GetShardIterator/missing-stream", "ResourceNotFoundException", k.get_shard_iterator,
       StreamName=MISSING, ShardId="shardId-000000000000", ShardIteratorType="LATEST")
expect("GetShardIterator/missing-shard", "ResourceNotFoundException", k.get_shard_iterator,
       StreamName=E2, ShardId="shardId-000000000099", ShardIteratorType="LATEST")
expect("GetShardIterator/bad-sequence", "InvalidArgumentException", k.get_shard_iterator,
       StreamName=E2, ShardId="shardId-000000000000", ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber="123")
expect("GetShardIterator/no-sequence", "InvalidArgumentException", k.get_shard_iterator,
       StreamName=E2, ShardId="shardId-000000000000", ShardIteratorType="AFTER_SEQUENCE_NUMBER")
expect("GetShardIterator/validation", "ValidationException", k.get_shard_iterator,
       StreamName=E2, ShardId="shardId-000000000000", ShardIteratorType="SOON")

# --- GetRecords (ResourceNotFound, InvalidArgument, Validation).
# ExpiredIteratorException: an iterator must be 5 minutes old (sluice's `[api] iterator_ttl`
# is not documented, and this script cannot set it): not reachable here.
# ProvisionedThroughputExceededException: sluice does not throttle reads: not reachable.
expect("GetRecords/bad-iterator", "InvalidArgumentException", k.get_records, ShardIterator="A" * 40)
expect("GetRecords/validation", "ValidationException", k.get_records, ShardIterator="A" * 40, Limit=0)
gonestream = name("gone")
stream_names.append(gonestream)
k.create_stream(StreamName=gonestream, ShardCount=1)
old_it = k.get_shard_iterator(StreamName=gonestream, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
k.delete_stream(StreamName=gonestream)
with step("wait for the deleted stream"):
    gone(k.describe_stream_summary, StreamName=gonestream)
expect("GetRecords/deleted-stream", "ResourceNotFoundException", k.get_records, ShardIterator=old_it)

# --- Tags on streams: AddTagsToStream, RemoveTagsFromStream, ListTagsForStream
# (ResourceNotFound, InvalidArgument, Validation). More than 50 tags is answered with
# InvalidArgumentException (AWS's message for it); LimitExceededException is the request rate.
# ResourceInUseException: AWS names no condition for tags and sluice accepts them while
# UPDATING: not reachable here.
expect("AddTagsToStream/missing", "ResourceNotFoundException", k.add_tags_to_stream, StreamName=MISSING, Tags={"a": "b"})
expect("AddTagsToStream/bad-chars", "InvalidArgumentException", k.add_tags_to_stream, StreamName=E, Tags={"a;b": "1"})
expect("AddTagsToStream/over-50", "InvalidArgumentException", k.add_tags_to_stream, StreamName=E, Tags={f"k{i}": "v" for i in range(51)})
expect("AddTagsToStream/validation", "ValidationException", k.add_tags_to_stream, StreamName=E, Tags={})
expect("RemoveTagsFromStream/missing", "ResourceNotFoundException", k.remove_tags_from_stream, StreamName=MISSING, TagKeys=["a"])
expect("RemoveTagsFromStream/bad-chars", "InvalidArgumentException", k.remove_tags_from_stream, StreamName=E, TagKeys=["a;b"])
expect("RemoveTagsFromStream/validation", "ValidationException", k.remove_tags_from_stream, StreamName=E, TagKeys=[])
expect("ListTagsForStream/missing", "ResourceNotFoundException", k.list_tags_for_stream, StreamName=MISSING)
expect("ListTagsForStream/validation", "ValidationException", k.list_tags_for_stream, StreamName=E, Limit=0)

# --- Tags on resources: TagResource, UntagResource, ListTagsForResource (same).
expect("TagResource/missing", "ResourceNotFoundException", k.tag_resource, ResourceARN=MISSING_ARN, Tags={"a": "b"})
expect("TagResource/bad-chars", "InvalidArgumentException", k.tag_resource, ResourceARN=earn, Tags={"a;b": "1"})
expect("TagResource/over-50", "InvalidArgumentException", k.tag_resource, ResourceARN=earn, Tags={f"k{i}": "v" for i in range(51)})
expect("TagResource/validation", "ValidationException", k.tag_resource, ResourceARN="nonsense", Tags={"a": "b"})
expect("UntagResource/missing", "ResourceNotFoundException", k.untag_resource, ResourceARN=MISSING_ARN, TagKeys=["a"])
# (Inferred) a key with characters no tag can have: refused as RemoveTagsFromStream refuses it.
expect("UntagResource/bad-chars", "InvalidArgumentException", k.untag_resource, ResourceARN=earn, TagKeys=["a;b"])
expect("UntagResource/validation", "ValidationException", k.untag_resource, ResourceARN="nonsense", TagKeys=["a"])
expect("ListTagsForResource/missing", "ResourceNotFoundException", k.list_tags_for_resource, ResourceARN=MISSING_ARN)
expect("ListTagsForResource/validation", "ValidationException", k.list_tags_for_resource, ResourceARN="nonsense")

# --- Retention (ResourceNotFound, InvalidArgument, ResourceInUse, Validation)
expect("IncreaseStreamRetentionPeriod/missing", "ResourceNotFoundException", k.increase_stream_retention_period, StreamName=MISSING, RetentionPeriodHours=48)
expect("IncreaseStreamRetentionPeriod/shorter", "InvalidArgumentException", k.increase_stream_retention_period, StreamName=E, RetentionPeriodHours=12)
expect("IncreaseStreamRetentionPeriod/validation", "ValidationException", k.increase_stream_retention_period, StreamName="bad name", RetentionPeriodHours=48)
expect("DecreaseStreamRetentionPeriod/missing", "ResourceNotFoundException", k.decrease_stream_retention_period, StreamName=MISSING, RetentionPeriodHours=24)
expect("DecreaseStreamRetentionPeriod/longer", "InvalidArgumentException", k.decrease_stream_retention_period, StreamName=E, RetentionPeriodHours=72)
expect("DecreaseStreamRetentionPeriod/validation", "ValidationException", k.decrease_stream_retention_period, StreamName="bad name", RetentionPeriodHours=24)

# --- Enhanced monitoring (ResourceNotFound, Validation). InvalidArgumentException: every
# metric name outside the enum is a ValidationException first: not reachable. ResourceInUse:
# AWS names no condition and sluice accepts while UPDATING: not reachable here.
expect("EnableEnhancedMonitoring/missing", "ResourceNotFoundException", k.enable_enhanced_monitoring, StreamName=MISSING, ShardLevelMetrics=["ALL"])
expect("EnableEnhancedMonitoring/validation", "ValidationException", k.enable_enhanced_monitoring, StreamName=E, ShardLevelMetrics=["Nope"])
expect("DisableEnhancedMonitoring/missing", "ResourceNotFoundException", k.disable_enhanced_monitoring, StreamName=MISSING, ShardLevelMetrics=["ALL"])
expect("DisableEnhancedMonitoring/validation", "ValidationException", k.disable_enhanced_monitoring, StreamName=E, ShardLevelMetrics=["Nope"])

# --- Encryption (ResourceNotFound, InvalidArgument, ResourceInUse, Validation; KMS*: no key service)
expect("StartStreamEncryption/missing", "ResourceNotFoundException", k.start_stream_encryption, StreamName=MISSING, EncryptionType="KMS", KeyId="alias/aws/kinesis")
expect("StartStreamEncryption/none-type", "InvalidArgumentException", k.start_stream_encryption, StreamName=E, EncryptionType="NONE", KeyId="alias/aws/kinesis")
expect("StartStreamEncryption/validation", "ValidationException", k.start_stream_encryption, StreamName=E, EncryptionType="RSA", KeyId="alias/aws/kinesis")
expect("StopStreamEncryption/missing", "ResourceNotFoundException", k.stop_stream_encryption, StreamName=MISSING, EncryptionType="KMS", KeyId="alias/aws/kinesis")
expect("StopStreamEncryption/validation", "ValidationException", k.stop_stream_encryption, StreamName=E, EncryptionType="RSA", KeyId="alias/aws/kinesis")

# --- Resource policies (ResourceNotFound, InvalidArgument, Validation). ResourceInUse: AWS
# names no condition, sluice accepts while UPDATING: not reachable here.
expect("PutResourcePolicy/missing", "ResourceNotFoundException", k.put_resource_policy, ResourceARN=MISSING_ARN, Policy="{}")
expect("PutResourcePolicy/bad-policy", "InvalidArgumentException", k.put_resource_policy, ResourceARN=earn, Policy="not json")
expect("PutResourcePolicy/validation", "ValidationException", k.put_resource_policy, ResourceARN="nonsense", Policy="{}")
expect("GetResourcePolicy/missing", "ResourceNotFoundException", k.get_resource_policy, ResourceARN=MISSING_ARN)
expect("GetResourcePolicy/validation", "ValidationException", k.get_resource_policy, ResourceARN="nonsense")
expect("DeleteResourcePolicy/missing", "ResourceNotFoundException", k.delete_resource_policy, ResourceARN=MISSING_ARN)
expect("DeleteResourcePolicy/no-policy", "ResourceNotFoundException", k.delete_resource_policy, ResourceARN=earn)
expect("DeleteResourcePolicy/validation", "ValidationException", k.delete_resource_policy, ResourceARN="nonsense")

# --- Consumers (ResourceNotFound, ResourceInUse, LimitExceeded, InvalidArgument, Validation)
cons = k.register_stream_consumer(StreamARN=e2arn, ConsumerName="c0")["Consumer"]["ConsumerARN"]
expect("RegisterStreamConsumer/missing", "ResourceNotFoundException", k.register_stream_consumer, StreamARN=MISSING_ARN, ConsumerName="c")
expect("RegisterStreamConsumer/exists", "ResourceInUseException", k.register_stream_consumer, StreamARN=e2arn, ConsumerName="c0")
for i in range(1, 20):
    k.register_stream_consumer(StreamARN=e2arn, ConsumerName=f"c{i}")
# AWS: at most 20 consumers per stream.
expect("RegisterStreamConsumer/21st", "LimitExceededException", k.register_stream_consumer, StreamARN=e2arn, ConsumerName="c20")
expect("RegisterStreamConsumer/validation", "ValidationException", k.register_stream_consumer, StreamARN=e2arn, ConsumerName="bad name")
expect("DescribeStreamConsumer/missing", "ResourceNotFoundException", k.describe_stream_consumer, StreamARN=e2arn, ConsumerName="nobody")
expect("DescribeStreamConsumer/name-only", "InvalidArgumentException", k.describe_stream_consumer, ConsumerName="c0")
expect("DescribeStreamConsumer/validation", "ValidationException", k.describe_stream_consumer, ConsumerARN="nonsense")
expect("ListStreamConsumers/missing", "ResourceNotFoundException", k.list_stream_consumers, StreamARN=MISSING_ARN)
expect("ListStreamConsumers/bad-token", "InvalidArgumentException", k.list_stream_consumers, StreamARN=e2arn, NextToken="not-a-token")
expect("ListStreamConsumers/validation", "ValidationException", k.list_stream_consumers, StreamARN=e2arn, MaxResults=0)
# ListStreamConsumers' ResourceInUseException is a CREATING stream: not reachable.
expect("DeregisterStreamConsumer/missing", "ResourceNotFoundException", k.deregister_stream_consumer, StreamARN=e2arn, ConsumerName="nobody")
expect("DeregisterStreamConsumer/name-only", "InvalidArgumentException", k.deregister_stream_consumer, ConsumerName="c0")
expect("DeregisterStreamConsumer/validation", "ValidationException", k.deregister_stream_consumer, ConsumerARN="nonsense")

# --- SubscribeToShard (ResourceNotFound, InvalidArgument, ResourceInUse, Validation).
# LimitExceededException (more than one call a second per consumer and shard) is answered
# as ResourceInUseException first (the 5-second takeover rule): not reachable separately.
expect("SubscribeToShard/missing-consumer", "ResourceNotFoundException", k.subscribe_to_shard,
       ConsumerARN=e2arn + "/consumer/nobody:1", ShardId="shardId-000000000000", StartingPosition={"Type": "LATEST"})
expect("SubscribeToShard/missing-shard", "ResourceNotFoundException", k.subscribe_to_shard,
       ConsumerARN=cons, ShardId="shardId-000000000099", StartingPosition={"Type": "LATEST"})
expect("SubscribeToShard/no-sequence", "InvalidArgumentException", k.subscribe_to_shard,
       ConsumerARN=cons, ShardId="shardId-000000000000", StartingPosition={"Type": "AT_SEQUENCE_NUMBER"})
expect("SubscribeToShard/validation", "ValidationException", k.subscribe_to_shard,
       ConsumerARN=cons, ShardId="shardId-000000000000", StartingPosition={"Type": "SOON"})
with step("SubscribeToShard/in-use setup"):
    ev = k.subscribe_to_shard(ConsumerARN=cons, ShardId="shardId-000000000000", StartingPosition={"Type": "TRIM_HORIZON"})["EventStream"]
    for e in ev:
        break
    ev.close()
expect("SubscribeToShard/within-5s", "ResourceInUseException", k.subscribe_to_shard,
       ConsumerARN=cons, ShardId="shardId-000000000000", StartingPosition={"Type": "LATEST"})

# --- Resharding: SplitShard, MergeShards, UpdateShardCount
# (ResourceNotFound, InvalidArgument, ResourceInUse, Validation, LimitExceeded)
e2s = {s["ShardId"]: s for s in k.list_shards(StreamName=E2)["Shards"]}
lo1 = int(e2s["shardId-000000000001"]["HashKeyRange"]["StartingHashKey"])
expect("SplitShard/missing-stream", "ResourceNotFoundException", k.split_shard, StreamName=MISSING, ShardToSplit="shardId-000000000000", NewStartingHashKey="5")
expect("SplitShard/missing-shard", "ResourceNotFoundException", k.split_shard, StreamName=E2, ShardToSplit="shardId-000000000099", NewStartingHashKey="5")
expect("SplitShard/key-outside-shard", "InvalidArgumentException", k.split_shard, StreamName=E2, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(lo1 + 10))
expect("SplitShard/validation", "ValidationException", k.split_shard, StreamName=E2, ShardToSplit="shardId-000000000000", NewStartingHashKey="x1")
expect("MergeShards/missing-stream", "ResourceNotFoundException", k.merge_shards, StreamName=MISSING, ShardToMerge="shardId-000000000000", AdjacentShardToMerge="shardId-000000000001")
expect("MergeShards/missing-shard", "ResourceNotFoundException", k.merge_shards, StreamName=E2, ShardToMerge="shardId-000000000000", AdjacentShardToMerge="shardId-000000000099")
expect("MergeShards/not-adjacent", "InvalidArgumentException", k.merge_shards, StreamName=E2, ShardToMerge="shardId-000000000001", AdjacentShardToMerge="shardId-000000000000")
expect("MergeShards/validation", "ValidationException", k.merge_shards, StreamName=E2, ShardToMerge="", AdjacentShardToMerge="shardId-000000000001")
expect("UpdateShardCount/missing", "ResourceNotFoundException", k.update_shard_count, StreamName=MISSING, TargetShardCount=2, ScalingType="UNIFORM_SCALING")
# AWS documents "scale up to more than double your current shard count" among
# UpdateShardCount's limits (LimitExceededException).
expect("UpdateShardCount/beyond-double", "LimitExceededException", k.update_shard_count, StreamName=E2, TargetShardCount=9, ScalingType="UNIFORM_SCALING")
# The same for "scale down below half your current shard count".
expect("UpdateShardCount/below-half", "LimitExceededException", k.update_shard_count,
       StreamName=E2, TargetShardCount=1, ScalingType="UNIFORM_SCALING")
expect("UpdateShardCount/validation", "ValidationException", k.update_shard_count, StreamName=E2, TargetShardCount=0, ScalingType="FAST")
expect("UpdateShardCount/on-demand", "ValidationException", k.update_shard_count, StreamName=EOD, TargetShardCount=8, ScalingType="UNIFORM_SCALING")
# Its limit of 10 calls per stream a day is not applied by sluice (README, "Resharding"), and
# provoking it would take 10 reshardings: not exercised here.

# ResourceInUseException while the stream is UPDATING (sluice: for 0.5 s after a
# resharding). Each case is run right after a resharding of E.
def while_updating(op, fn, **kw):
    with step(f"{op} setup"):
        start_updating(E)
        expect(op, "ResourceInUseException", fn, **kw)
        return
    global error_cases
    error_cases += 1


while_updating("SplitShard/updating", k.split_shard, StreamName=E, ShardToSplit="shardId-000000000000", NewStartingHashKey="5")
while_updating("MergeShards/updating", k.merge_shards, StreamName=E, ShardToMerge="shardId-000000000001", AdjacentShardToMerge="shardId-000000000002")
while_updating("UpdateShardCount/updating", k.update_shard_count, StreamName=E, TargetShardCount=2, ScalingType="UNIFORM_SCALING")
while_updating("UpdateMaxRecordSize/updating", k.update_max_record_size, StreamARN=earn, MaxRecordSizeInKiB=2048)
# (Inferred) AWS lists ResourceInUseException for these ("the resource must be in the ACTIVE
# state"); they change a stream that is being resharded.
while_updating("IncreaseStreamRetentionPeriod/updating", k.increase_stream_retention_period, StreamName=E, RetentionPeriodHours=25)
while_updating("DecreaseStreamRetentionPeriod/updating", k.decrease_stream_retention_period, StreamName=E, RetentionPeriodHours=24)
while_updating("StartStreamEncryption/updating", k.start_stream_encryption, StreamName=E, EncryptionType="KMS", KeyId="alias/aws/kinesis")
while_updating("StopStreamEncryption/updating", k.stop_stream_encryption, StreamName=E, EncryptionType="KMS", KeyId="alias/aws/kinesis")
while_updating("UpdateStreamMode/updating", k.update_stream_mode, StreamARN=earn, StreamModeDetails={"StreamMode": "PROVISIONED"})
with step("E back to ACTIVE"):
    active(E)
    k.stop_stream_encryption(StreamName=E, EncryptionType="KMS", KeyId="alias/aws/kinesis")
    active(E)

# --- UpdateMaxRecordSize (ResourceNotFound, Validation, ResourceInUse above). InvalidArgument:
# a config stream (its file's setting): not reachable through the API alone.
expect("UpdateMaxRecordSize/missing", "ResourceNotFoundException", k.update_max_record_size, StreamARN=MISSING_ARN, MaxRecordSizeInKiB=1024)
expect("UpdateMaxRecordSize/validation", "ValidationException", k.update_max_record_size, StreamARN=earn, MaxRecordSizeInKiB=20000)

# --- UpdateStreamMode (ResourceNotFound, Validation, LimitExceeded, ResourceInUse above).
expect("UpdateStreamMode/missing", "ResourceNotFoundException", k.update_stream_mode, StreamARN=MISSING_ARN, StreamModeDetails={"StreamMode": "ON_DEMAND"})
expect("UpdateStreamMode/validation", "ValidationException", k.update_stream_mode, StreamARN=earn, StreamModeDetails={"StreamMode": "FAST"})
with step("UpdateStreamMode twice"):
    for mode in ("ON_DEMAND", "PROVISIONED"):
        k.update_stream_mode(StreamARN=e2arn, StreamModeDetails={"StreamMode": mode})
        active(E2)
# AWS: a stream's capacity mode can be switched twice within 24 hours (Kinesis developer
# guide, "Choosing the data stream capacity mode"); the third switch is refused with
# LimitExceededException.
expect("UpdateStreamMode/third-switch", "LimitExceededException", k.update_stream_mode, StreamARN=e2arn, StreamModeDetails={"StreamMode": "ON_DEMAND"})

# --- UpdateStreamWarmThroughput (ResourceNotFound, InvalidArgument [before the CLI pass],
# Validation, LimitExceeded). ResourceInUse: an on-demand stream cannot be resharded, so it is
# never UPDATING here: not reachable.
expect("UpdateStreamWarmThroughput/missing", "ResourceNotFoundException", k.update_stream_warm_throughput, StreamName=MISSING, WarmThroughputMiBps=10)
expect("UpdateStreamWarmThroughput/provisioned", "ValidationException", k.update_stream_warm_throughput, StreamName=E, WarmThroughputMiBps=10)
if k.describe_account_settings()["MinimumThroughputBillingCommitment"]["Status"] != "DISABLED":
    expect("UpdateStreamWarmThroughput/too-much", "LimitExceededException", k.update_stream_warm_throughput, StreamName=EOD, WarmThroughputMiBps=20000)

# --- UpdateAccountSettings (Validation). InvalidArgumentException: no documented condition
# that a local account can meet; LimitExceeded: request rate. Not reachable here.
expect("UpdateAccountSettings/validation", "ValidationException", k.update_account_settings, MinimumThroughputBillingCommitment={"Status": "MAYBE"})

# --- Firehose -------------------------------------------------------------------------------
FD = name("fh")
FK = name("fhk")
FMISSING = name("fhmissing")
delivery_names += [FD, FK]
f.create_delivery_stream(DeliveryStreamName=FD, ExtendedS3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": BUCKET})
f.create_delivery_stream(DeliveryStreamName=FK, DeliveryStreamType="KinesisStreamAsSource",
                         KinesisStreamSourceConfiguration={"KinesisStreamARN": e2arn, "RoleARN": ROLE},
                         ExtendedS3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": BUCKET})

# CreateDeliveryStream (ResourceInUse, InvalidArgument, Validation). LimitExceeded: 5000
# delivery streams per account: not reachable in a test. InvalidKMSResource: no key service.
expect("CreateDeliveryStream/exists", "ResourceInUseException", f.create_delivery_stream,
       DeliveryStreamName=FD, ExtendedS3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": BUCKET})
expect("CreateDeliveryStream/no-destination", "InvalidArgumentException", f.create_delivery_stream, DeliveryStreamName=name("nodest"))
expect("CreateDeliveryStream/validation", "ValidationException", f.create_delivery_stream,
       DeliveryStreamName="bad name", ExtendedS3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": BUCKET})

# DeleteDeliveryStream (ResourceNotFound, Validation). ResourceInUse: a delivery stream being
# created (CreateDeliveryStream answers once it runs) or, on sluice, a file-declared one
# (needs a pipeline file; covered by firehose_control_boto3.py): not reachable through the API alone.
expect("DeleteDeliveryStream/missing", "ResourceNotFoundException", f.delete_delivery_stream, DeliveryStreamName=FMISSING)
expect("DeleteDeliveryStream/validation", "ValidationException", f.delete_delivery_stream, DeliveryStreamName="bad name")

# DescribeDeliveryStream (ResourceNotFound, Validation); ListDeliveryStreams (Validation only).
expect("DescribeDeliveryStream/missing", "ResourceNotFoundException", f.describe_delivery_stream, DeliveryStreamName=FMISSING)
expect("DescribeDeliveryStream/validation", "ValidationException", f.describe_delivery_stream, DeliveryStreamName="bad name")
expect("ListDeliveryStreams/validation", "ValidationException", f.list_delivery_streams, Limit=0)

# PutRecord / PutRecordBatch (ResourceNotFound, InvalidArgument, Validation).
# ServiceUnavailable (throttling), InvalidKMSResource, InvalidSource: not reachable.
expect("Firehose.PutRecord/missing", "ResourceNotFoundException", f.put_record, DeliveryStreamName=FMISSING, Record={"Data": b"x"})
# AWS refuses a direct put to a KinesisStreamAsSource delivery stream with
# InvalidArgumentException ("This operation is not permitted on KinesisStreamAsSource delivery
# stream type.", as in https://github.com/aws/aws-cli/issues/7010).
expect("Firehose.PutRecord/kinesis-source", "InvalidArgumentException", f.put_record, DeliveryStreamName=FK, Record={"Data": b"x"})
expect("Firehose.PutRecord/validation", "ValidationException", f.put_record, DeliveryStreamName=FD, Record={"Data": b"x" * 1024001})
expect("PutRecordBatch/missing", "ResourceNotFoundException", f.put_record_batch, DeliveryStreamName=FMISSING, Records=[{"Data": b"x"}])
expect("PutRecordBatch/over-4MiB", "InvalidArgumentException", f.put_record_batch, DeliveryStreamName=FD, Records=[{"Data": b"x" * 1000000}] * 5)
# As for PutRecord.
expect("PutRecordBatch/kinesis-source", "InvalidArgumentException", f.put_record_batch, DeliveryStreamName=FK, Records=[{"Data": b"x"}])
expect("PutRecordBatch/validation", "ValidationException", f.put_record_batch, DeliveryStreamName=FD, Records=[{"Data": b"x"}] * 501)

# Tags (ResourceNotFound, LimitExceeded, Validation). InvalidArgument: every bad key is a
# ValidationException first; ResourceInUse: a CREATING/DELETING stream: not reachable.
expect("TagDeliveryStream/missing", "ResourceNotFoundException", f.tag_delivery_stream, DeliveryStreamName=FMISSING, Tags=[{"Key": "a", "Value": "b"}])
for j in range(5):
    f.tag_delivery_stream(DeliveryStreamName=FD, Tags=[{"Key": f"k{j}-{i}", "Value": "v"} for i in range(10)])
expect("TagDeliveryStream/over-50", "LimitExceededException", f.tag_delivery_stream, DeliveryStreamName=FD, Tags=[{"Key": "one-more", "Value": "v"}])
expect("TagDeliveryStream/validation", "ValidationException", f.tag_delivery_stream, DeliveryStreamName=FD, Tags=[{"Key": "a;b", "Value": "v"}])
expect("UntagDeliveryStream/missing", "ResourceNotFoundException", f.untag_delivery_stream, DeliveryStreamName=FMISSING, TagKeys=["a"])
expect("UntagDeliveryStream/validation", "ValidationException", f.untag_delivery_stream, DeliveryStreamName=FD, TagKeys=[])
# ListTagsForDeliveryStream (ResourceNotFound, Validation). InvalidArgument / LimitExceeded:
# no documented condition reachable here.
expect("ListTagsForDeliveryStream/missing", "ResourceNotFoundException", f.list_tags_for_delivery_stream, DeliveryStreamName=FMISSING)
expect("ListTagsForDeliveryStream/validation", "ValidationException", f.list_tags_for_delivery_stream, DeliveryStreamName=FD, Limit=0)

# Encryption (ResourceNotFound, InvalidArgument, LimitExceeded, Validation). ResourceInUse:
# a stream that is ENABLING/DISABLING (instant here): not reachable.
expect("StartDeliveryStreamEncryption/missing", "ResourceNotFoundException", f.start_delivery_stream_encryption, DeliveryStreamName=FMISSING)
expect("StartDeliveryStreamEncryption/kinesis-source", "InvalidArgumentException", f.start_delivery_stream_encryption,
       DeliveryStreamName=FK, DeliveryStreamEncryptionConfigurationInput={"KeyType": "AWS_OWNED_CMK"})
expect("StartDeliveryStreamEncryption/no-key-arn", "InvalidArgumentException", f.start_delivery_stream_encryption,
       DeliveryStreamName=FD, DeliveryStreamEncryptionConfigurationInput={"KeyType": "CUSTOMER_MANAGED_CMK"})
expect("StartDeliveryStreamEncryption/validation", "ValidationException", f.start_delivery_stream_encryption,
       DeliveryStreamName=FD, DeliveryStreamEncryptionConfigurationInput={"KeyType": "NOPE"})
expect("StopDeliveryStreamEncryption/missing", "ResourceNotFoundException", f.stop_delivery_stream_encryption, DeliveryStreamName=FMISSING)
expect("StopDeliveryStreamEncryption/kinesis-source", "InvalidArgumentException", f.stop_delivery_stream_encryption, DeliveryStreamName=FK)
expect("StopDeliveryStreamEncryption/validation", "ValidationException", f.stop_delivery_stream_encryption, DeliveryStreamName="bad name")
# AWS: "The StartDeliveryStreamEncryption and StopDeliveryStreamEncryption operations have a
# combined limit of 25 calls per delivery stream per 24 hours."
with step("25 encryption calls"):
    for i in range(25):
        if i % 2 == 0:
            f.start_delivery_stream_encryption(DeliveryStreamName=FD, DeliveryStreamEncryptionConfigurationInput={"KeyType": "AWS_OWNED_CMK"})
        else:
            f.stop_delivery_stream_encryption(DeliveryStreamName=FD)
# The 26th call: LimitExceededException.
expect("StopDeliveryStreamEncryption/26th-call", "LimitExceededException", f.stop_delivery_stream_encryption, DeliveryStreamName=FD)
expect("StartDeliveryStreamEncryption/27th-call", "LimitExceededException", f.start_delivery_stream_encryption,
       DeliveryStreamName=FD, DeliveryStreamEncryptionConfigurationInput={"KeyType": "AWS_OWNED_CMK"})

# UpdateDestination (ResourceNotFound, ConcurrentModification, InvalidArgument, Validation).
# ResourceInUse: an update while the stream is not ACTIVE (never, here): not reachable.
dest = {"DestinationId": "destinationId-000000000001", "ExtendedS3DestinationUpdate": {"CompressionFormat": "GZIP"}}
expect("UpdateDestination/missing", "ResourceNotFoundException", f.update_destination, DeliveryStreamName=FMISSING, CurrentDeliveryStreamVersionId="1", **dest)
with step("UpdateDestination once"):
    f.update_destination(DeliveryStreamName=FD, CurrentDeliveryStreamVersionId="1", **dest)
expect("UpdateDestination/stale-version", "ConcurrentModificationException", f.update_destination, DeliveryStreamName=FD, CurrentDeliveryStreamVersionId="1", **dest)
expect("UpdateDestination/unknown-destination", "InvalidArgumentException", f.update_destination, DeliveryStreamName=FD,
       CurrentDeliveryStreamVersionId="2", DestinationId="destinationId-000000000009", ExtendedS3DestinationUpdate={"CompressionFormat": "GZIP"})
expect("UpdateDestination/validation", "ValidationException", f.update_destination, DeliveryStreamName=FD, CurrentDeliveryStreamVersionId="x", **dest)

# ============================================================================================
# 3. Clean up.
# ============================================================================================
for d in delivery_names:
    try:
        f.delete_delivery_stream(DeliveryStreamName=d)
    except ClientError as e:
        if e.response["Error"]["Code"] != "ResourceNotFoundException":
            failures.append(f"clean-up of delivery stream {d}: {e}")
for s in stream_names:
    try:
        k.delete_stream(StreamName=s, EnforceConsumerDeletion=True)
    except ClientError as e:
        if e.response["Error"]["Code"] != "ResourceNotFoundException":
            failures.append(f"clean-up of stream {s}: {e}")
with step("clean-up check"):
    left = [s for s in k.list_streams()["StreamNames"] if s.endswith(SUFFIX)]
    deadline = time.time() + 15
    while left and time.time() < deadline:
        time.sleep(0.1)
        left = [s for s in k.list_streams()["StreamNames"] if s.endswith(SUFFIX)]
    check(not left, f"streams left: {left}")
    check(not [d for d in f.list_delivery_streams(Limit=10000)["DeliveryStreamNames"] if d.endswith(SUFFIX)], "delivery streams left")

print(f"{cli_calls} CLI calls, {error_cases} error cases")
if failures:
    print(f"{len(failures)} failure(s):", file=sys.stderr)
    for x in failures:
        print(f"  - {x}", file=sys.stderr)
    sys.exit(1)
print("ok")
