"""Account settings, record size and warm throughput through the real boto3 client:
DescribeAccountSettings / UpdateAccountSettings (the commitment's 24-hour minimum),
UpdateMaxRecordSize (the limit counts data and partition key, PutRecord and PutRecords
enforce it) and UpdateStreamWarmThroughput (on-demand streams of a committed account), with
their errors. Usage: kinesis_account_boto3.py ENDPOINT
"""

import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

k = boto3.client("kinesis", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="x", aws_secret_access_key="x",
                 config=Config(retries={"max_attempts": 1}, parameter_validation=False))
A = "000000000000"


def error(fn, **kw):
    try:
        fn(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"].get("Message", "")
    raise AssertionError(f"{fn.__name__}({kw}) succeeded")


assert k.describe_account_settings()["MinimumThroughputBillingCommitment"] == {"Status": "DISABLED"}
k.create_stream(StreamName="od", StreamModeDetails={"StreamMode": "ON_DEMAND"})
k.create_stream(StreamName="prov", ShardCount=1)
od = k.describe_stream_summary(StreamName="od")["StreamDescriptionSummary"]
assert od["MaxRecordSizeInKiB"] == 1024 and "WarmThroughput" not in od, od

# Warm throughput needs an on-demand stream and a committed account.
code, _ = error(k.update_stream_warm_throughput, StreamName="od", WarmThroughputMiBps=100)
assert code == "InvalidArgumentException", code
c = k.update_account_settings(MinimumThroughputBillingCommitment={"Status": "ENABLED"})["MinimumThroughputBillingCommitment"]
assert c["Status"] == "ENABLED" and c["EarliestAllowedEndAt"].timestamp() - c["StartedAt"].timestamp() == 86400, c
w = k.update_stream_warm_throughput(StreamName="od", WarmThroughputMiBps=100)
assert w["WarmThroughput"] == {"TargetMiBps": 100, "CurrentMiBps": 100} and w["StreamName"] == "od", w
assert k.describe_stream_summary(StreamName="od")["StreamDescriptionSummary"]["WarmThroughput"]["TargetMiBps"] == 100
code, _ = error(k.update_stream_warm_throughput, StreamName="prov", WarmThroughputMiBps=100)
assert code == "ValidationException", code
code, _ = error(k.update_stream_warm_throughput, StreamName="od", WarmThroughputMiBps=20000)
assert code == "LimitExceededException", code
# Disabling inside the first day only schedules the end.
c = k.update_account_settings(MinimumThroughputBillingCommitment={"Status": "DISABLED"})["MinimumThroughputBillingCommitment"]
assert c["Status"] == "ENABLED_UNTIL_EARLIEST_ALLOWED_END", c
assert k.describe_account_settings()["MinimumThroughputBillingCommitment"]["Status"] == "ENABLED_UNTIL_EARLIEST_ALLOWED_END"
assert error(k.update_account_settings, MinimumThroughputBillingCommitment={"Status": "MAYBE"}) == (
    "ValidationException",
    "1 validation error detected: Value 'MAYBE' at 'minimumThroughputBillingCommitment.status' failed to satisfy constraint: Member must satisfy enum value set: [ENABLED, DISABLED]")

# The record size limit counts data and partition key.
arn = k.describe_stream_summary(StreamName="prov")["StreamDescriptionSummary"]["StreamARN"]
code, msg = error(k.put_record, StreamName="prov", Data=b"x" * (1 << 20), PartitionKey="key")
assert code == "InvalidArgumentException" and "data and partition key" in msg, (code, msg)
assert error(k.update_max_record_size, StreamARN=arn, MaxRecordSizeInKiB=20000) == (
    "ValidationException",
    "1 validation error detected: Value '20000' at 'maxRecordSizeInKiB' failed to satisfy constraint: Member must have value less than or equal to 10240")
k.update_max_record_size(StreamARN=arn, MaxRecordSizeInKiB=2048)
assert k.describe_stream_summary(StreamName="prov")["StreamDescriptionSummary"]["MaxRecordSizeInKiB"] == 2048
big = b"y" * (1536 * 1024)
assert k.put_record(StreamName="prov", Data=big, PartitionKey="key")["SequenceNumber"]
it = k.get_shard_iterator(StreamName="prov", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
assert k.get_records(ShardIterator=it)["Records"][0]["Data"] == big
code, _ = error(k.put_records, StreamName="prov", Records=[{"Data": b"z" * (2048 * 1024 + 1), "PartitionKey": "k"}])
assert code == "ValidationException", code
print("ok")
