"""The Kinesis stream-management operations through the real boto3 client: tags (stream
and resource forms), retention, enhanced monitoring, encryption settings, capacity mode,
limits, resource policies and consumer registrations — success shapes and each error type
the operation can return, with AWS's wording. Usage: kinesis_manage_boto3.py ENDPOINT
"""

import json
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint = sys.argv[1]
k = boto3.client(
    "kinesis",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="x",
    aws_secret_access_key="x",
    # No client-side validation: the server's answers to bad input are under test.
    config=Config(retries={"max_attempts": 1}, parameter_validation=False),
)
ACCOUNT = "000000000000"


def error(fn, **kw):
    try:
        fn(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"].get("Message", "")
    raise AssertionError(f"{fn.__name__}({kw}) succeeded")


def expect(fn, code, message, **kw):
    got = error(fn, **kw)
    assert got == (code, message), f"{fn.__name__}: {got!r} != {(code, message)!r}"


k.create_stream(StreamName="m", ShardCount=2)
arn = k.describe_stream_summary(StreamName="m")["StreamDescriptionSummary"]["StreamARN"]

# Tags.
k.add_tags_to_stream(StreamName="m", Tags={"team": "data", "env": "dev"})
k.add_tags_to_stream(StreamName="m", Tags={"env": "prod", "ü0 _.": "/=+-@"})
t = k.list_tags_for_stream(StreamName="m")
assert t["Tags"] == [
    {"Key": "env", "Value": "prod"},
    {"Key": "team", "Value": "data"},
    {"Key": "ü0 _.", "Value": "/=+-@"},
], t
assert t["HasMoreTags"] is False
page = k.list_tags_for_stream(StreamName="m", Limit=1, ExclusiveStartTagKey="env")
assert page["Tags"] == [{"Key": "team", "Value": "data"}] and page["HasMoreTags"], page
k.remove_tags_from_stream(StreamName="m", TagKeys=["team", "nope"])
assert [x["Key"] for x in k.list_tags_for_stream(StreamName="m")["Tags"]] == ["env", "ü0 _."]
expect(
    k.add_tags_to_stream,
    "InvalidArgumentException",
    "Some tags contain invalid characters. Valid characters: Unicode letters, digits, white space, _ . / = + - % @.",
    StreamName="m",
    Tags={"a;b": "1"},
)
expect(
    k.add_tags_to_stream,
    "InvalidArgumentException",
    f"Failed to add tags to stream m under account {ACCOUNT} because some tags contained illegal characters. The allowed characters are Unicode letters, white-spaces, '_',',','/','=','+','-','@'.",
    StreamName="m",
    Tags={"a": "50%"},
)
expect(
    k.add_tags_to_stream,
    "InvalidArgumentException",
    f"Failed to add tags to stream m under account {ACCOUNT} because a given stream cannot have more than 10 tags associated with it.",
    StreamName="m",
    Tags={f"k{i}": "v" for i in range(49)},
)
expect(
    k.add_tags_to_stream,
    "ResourceNotFoundException",
    f"Stream nope under account {ACCOUNT} not found.",
    StreamName="nope",
    Tags={"a": "b"},
)
# Validation comes first, in AWS's words.
code, msg = error(k.add_tags_to_stream, StreamName="m", Tags={})
assert code == "ValidationException", (code, msg)
assert msg == "1 validation error detected: Value '{}' at 'tags' failed to satisfy constraint: Member must have length greater than or equal to 1", msg
code, msg = error(k.list_tags_for_stream, StreamName="m", Limit=0)
assert msg == "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1", msg

# Resource tags, on the stream ARN.
k.tag_resource(ResourceARN=arn, Tags={"owner": "me"})
tags = k.list_tags_for_resource(ResourceARN=arn)["Tags"]
assert {"Key": "owner", "Value": "me"} in tags, tags
k.untag_resource(ResourceARN=arn, TagKeys=["owner"])
assert {"Key": "owner", "Value": "me"} not in k.list_tags_for_resource(ResourceARN=arn)["Tags"]
code, msg = error(k.list_tags_for_resource, ResourceARN="nonsense")
assert code == "ValidationException" and "resourceARN" in msg, (code, msg)

# Retention.
k.increase_stream_retention_period(StreamName="m", RetentionPeriodHours=48)
assert k.describe_stream_summary(StreamName="m")["StreamDescriptionSummary"]["RetentionPeriodHours"] == 48
expect(
    k.increase_stream_retention_period,
    "InvalidArgumentException",
    "Requested retention period (24 hours) for stream m can not be shorter than existing retention period (48 hours). Use DecreaseRetentionPeriod API.",
    StreamName="m",
    RetentionPeriodHours=24,
)
expect(
    k.decrease_stream_retention_period,
    "InvalidArgumentException",
    "Requested retention period (72 hours) for stream m can not be longer than existing retention period (48 hours). Use IncreaseRetentionPeriod API.",
    StreamName="m",
    RetentionPeriodHours=72,
)
expect(
    k.decrease_stream_retention_period,
    "InvalidArgumentException",
    "Minimum allowed retention period is 24 hours. Requested retention period (23 hours) is too short.",
    StreamName="m",
    RetentionPeriodHours=23,
)
expect(
    k.increase_stream_retention_period,
    "InvalidArgumentException",
    "Maximum allowed retention period is 8760 hours. Requested retention period (9999 hours) is too long.",
    StreamName="m",
    RetentionPeriodHours=9999,
)
k.decrease_stream_retention_period(StreamName="m", RetentionPeriodHours=24)

# Enhanced monitoring.
r = k.enable_enhanced_monitoring(StreamName="m", ShardLevelMetrics=["IncomingBytes"])
assert r["CurrentShardLevelMetrics"] == [] and r["DesiredShardLevelMetrics"] == ["IncomingBytes"], r
r = k.enable_enhanced_monitoring(StreamName="m", ShardLevelMetrics=["ALL"])
assert len(r["DesiredShardLevelMetrics"]) == 7, r
mon = k.describe_stream(StreamName="m")["StreamDescription"]["EnhancedMonitoring"]
assert len(mon[0]["ShardLevelMetrics"]) == 7, mon
r = k.disable_enhanced_monitoring(StreamName="m", ShardLevelMetrics=["ALL"])
assert r["DesiredShardLevelMetrics"] == [], r
code, msg = error(k.enable_enhanced_monitoring, StreamName="m", ShardLevelMetrics=["Nope"])
assert code == "ValidationException" and "shardLevelMetrics" in msg, (code, msg)

# Encryption settings (recorded and reported).
k.start_stream_encryption(StreamName="m", EncryptionType="KMS", KeyId="alias/aws/kinesis")
d = k.describe_stream_summary(StreamName="m")["StreamDescriptionSummary"]
assert d["EncryptionType"] == "KMS" and d["KeyId"] == "alias/aws/kinesis", d
put = k.put_record(StreamName="m", Data=b"x", PartitionKey="p")
assert put["EncryptionType"] == "KMS", put
k.stop_stream_encryption(StreamName="m", EncryptionType="KMS", KeyId="alias/aws/kinesis")
assert k.describe_stream_summary(StreamName="m")["StreamDescriptionSummary"]["EncryptionType"] == "NONE"

# Capacity mode and limits.
k.update_stream_mode(StreamARN=arn, StreamModeDetails={"StreamMode": "ON_DEMAND"})
assert k.describe_stream_summary(StreamName="m")["StreamDescriptionSummary"]["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
limits = k.describe_limits()
assert limits["OnDemandStreamCount"] == 1 and limits["OpenShardCount"] >= 2, limits
assert limits["ShardLimit"] > 0 and limits["OnDemandStreamCountLimit"] > 0, limits
k.create_stream(StreamName="od", StreamModeDetails={"StreamMode": "ON_DEMAND"})
od = k.describe_stream_summary(StreamName="od")["StreamDescriptionSummary"]
assert od["OpenShardCount"] == 4 and od["StreamModeDetails"]["StreamMode"] == "ON_DEMAND", od

# Resource policies.
assert k.get_resource_policy(ResourceARN=arn)["Policy"] == "{}"
policy = json.dumps({"Version": "2012-10-17", "Statement": []})
k.put_resource_policy(ResourceARN=arn, Policy=policy)
assert k.get_resource_policy(ResourceARN=arn)["Policy"] == policy
k.delete_resource_policy(ResourceARN=arn)
assert k.get_resource_policy(ResourceARN=arn)["Policy"] == "{}"
code, _ = error(k.delete_resource_policy, ResourceARN=arn)
assert code == "ResourceNotFoundException", code

# Consumers.
c = k.register_stream_consumer(StreamARN=arn, ConsumerName="app")["Consumer"]
assert c["ConsumerName"] == "app" and c["ConsumerARN"].startswith(arn + "/consumer/app:"), c
assert c["ConsumerStatus"] in ("CREATING", "ACTIVE"), c
d = k.describe_stream_consumer(ConsumerARN=c["ConsumerARN"])["ConsumerDescription"]
assert d["ConsumerStatus"] == "ACTIVE" and d["StreamARN"] == arn, d
d2 = k.describe_stream_consumer(StreamARN=arn, ConsumerName="app")["ConsumerDescription"]
assert d2["ConsumerARN"] == c["ConsumerARN"], d2
code, _ = error(k.register_stream_consumer, StreamARN=arn, ConsumerName="app")
assert code == "ResourceInUseException", code
k.register_stream_consumer(StreamARN=arn, ConsumerName="app2")
names = [x["ConsumerName"] for x in k.list_stream_consumers(StreamARN=arn)["Consumers"]]
assert names == ["app", "app2"], names
first = k.list_stream_consumers(StreamARN=arn, MaxResults=1)
assert [x["ConsumerName"] for x in first["Consumers"]] == ["app"] and "NextToken" in first, first
second = k.list_stream_consumers(StreamARN=arn, MaxResults=1, NextToken=first["NextToken"])
assert [x["ConsumerName"] for x in second["Consumers"]] == ["app2"], second
assert k.describe_stream_summary(StreamName="m")["StreamDescriptionSummary"]["ConsumerCount"] == 2
k.tag_resource(ResourceARN=c["ConsumerARN"], Tags={"c": "1"})
assert k.list_tags_for_resource(ResourceARN=c["ConsumerARN"])["Tags"] == [{"Key": "c", "Value": "1"}]
k.deregister_stream_consumer(ConsumerARN=c["ConsumerARN"])
code, _ = error(k.describe_stream_consumer, ConsumerARN=c["ConsumerARN"])
assert code == "ResourceNotFoundException", code
code, msg = error(k.describe_stream_consumer, ConsumerName="app2")
assert code == "InvalidArgumentException", (code, msg)

print("ok")
