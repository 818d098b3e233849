"""The Firehose control plane through the real boto3 client. Usage:
firehose_control_boto3.py ENDPOINT PHASE

phase `create` (stream `events` and the file pipeline `file-lake` exist): delivery stream `api-lake` reading `events` with
the seed's settings (dynamic partitioning by type and source with a jq query, 64 MiB /
60 s, error output prefix `kdferror/`, GZIP) and a Direct PUT delivery stream `direct-api`;
Describe/List shapes, UpdateDestination, tags, encryption and each error with AWS's
wording; then 300 CloudEvents put on `events` and 40 records put on `direct-api`.
phase `after-restart`: both still described; delete `direct-api` (drains it), make it again
(to bucket `direct2`) and put one record.
"""

import json
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, phase = sys.argv[1], sys.argv[2]
cfg = Config(retries={"max_attempts": 1}, parameter_validation=False)
kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x", config=cfg)
f = boto3.client("firehose", **kw)
k = boto3.client("kinesis", **kw)
A = "000000000000"
ROLE = f"arn:aws:iam::{A}:role/firehose"


def error(fn, **kw):
    try:
        fn(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"].get("Message", "")
    raise AssertionError(f"{fn.__name__}({kw}) succeeded")


def expect(fn, code, message, **kw):
    got = error(fn, **kw)
    assert got == (code, message), f"{fn.__name__}: {got!r} != {(code, message)!r}"


SEED = {
    "RoleARN": ROLE,
    "BucketARN": "arn:aws:s3:::lake",
    "Prefix": "type=!{partitionKeyFromQuery:type}/source=!{partitionKeyFromQuery:source}/",
    "ErrorOutputPrefix": "kdferror/!{firehose:error-output-type}/",
    "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 60},
    "CompressionFormat": "GZIP",
    "DynamicPartitioningConfiguration": {"Enabled": True},
    "ProcessingConfiguration": {"Enabled": True, "Processors": [
        {"Type": "MetadataExtraction", "Parameters": [
            {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{type: .type, source: .source}"},
            {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]},
        {"Type": "AppendDelimiterToRecord", "Parameters": []},
    ]},
}

if phase == "create":
    stream_arn = k.describe_stream_summary(StreamName="events")["StreamDescriptionSummary"]["StreamARN"]
    src = {"KinesisStreamARN": stream_arn, "RoleARN": ROLE}
    r = f.create_delivery_stream(DeliveryStreamName="api-lake", DeliveryStreamType="KinesisStreamAsSource",
                                 KinesisStreamSourceConfiguration=src, ExtendedS3DestinationConfiguration=SEED,
                                 Tags=[{"Key": "team", "Value": "data"}])
    assert r["DeliveryStreamARN"] == f"arn:aws:firehose:us-east-1:{A}:deliverystream/api-lake", r
    d = f.describe_delivery_stream(DeliveryStreamName="api-lake")["DeliveryStreamDescription"]
    assert (d["DeliveryStreamStatus"], d["DeliveryStreamType"], d["VersionId"]) == ("ACTIVE", "KinesisStreamAsSource", "1"), d
    assert "DeliveryStreamEncryptionConfiguration" not in d and "LastUpdateTimestamp" not in d, d
    assert d["Source"]["KinesisStreamSourceDescription"]["KinesisStreamARN"] == stream_arn, d
    dest = d["Destinations"][0]
    assert dest["DestinationId"] == "destinationId-000000000001", dest
    ext = dest["ExtendedS3DestinationDescription"]
    assert ext["Prefix"] == SEED["Prefix"] and ext["CompressionFormat"] == "GZIP", ext
    assert ext["BufferingHints"] == {"SizeInMBs": 64, "IntervalInSeconds": 60}, ext
    assert ext["EncryptionConfiguration"] == {"NoEncryptionConfig": "NoEncryption"}, ext
    assert ext["CloudWatchLoggingOptions"] == {"Enabled": False} and ext["S3BackupMode"] == "Disabled", ext
    assert ext["DynamicPartitioningConfiguration"] == {"Enabled": True, "RetryOptions": {"DurationInSeconds": 300}}, ext
    assert dest["S3DestinationDescription"]["BucketARN"] == "arn:aws:s3:::lake", dest

    # Direct PUT, defaults filled in.
    f.create_delivery_stream(DeliveryStreamName="direct-api",
                             ExtendedS3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::direct",
                                                                 "ProcessingConfiguration": {"Enabled": True, "Processors": [{"Type": "AppendDelimiterToRecord"}]}})
    d = f.describe_delivery_stream(DeliveryStreamName="direct-api")["DeliveryStreamDescription"]
    assert d["DeliveryStreamType"] == "DirectPut" and d["DeliveryStreamEncryptionConfiguration"] == {"Status": "DISABLED"}, d
    ext = d["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert ext["BufferingHints"] == {"SizeInMBs": 5, "IntervalInSeconds": 300} and ext["CompressionFormat"] == "UNCOMPRESSED", ext
    assert "Prefix" not in ext, ext

    names = f.list_delivery_streams()["DeliveryStreamNames"]
    assert names == ["api-lake", "direct-api", "file-lake"], names
    assert f.list_delivery_streams(DeliveryStreamType="DirectPut")["DeliveryStreamNames"] == ["direct-api"]
    page = f.list_delivery_streams(Limit=1, ExclusiveStartDeliveryStreamName="api-lake")
    assert page == {"DeliveryStreamNames": ["direct-api"], "HasMoreDeliveryStreams": True, "ResponseMetadata": page["ResponseMetadata"]}, page
    # The file-declared pipeline in the same shape, read-only.
    fd = f.describe_delivery_stream(DeliveryStreamName="file-lake")["DeliveryStreamDescription"]
    assert fd["DeliveryStreamType"] == "KinesisStreamAsSource", fd
    fext = fd["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert fext["Prefix"] == SEED["Prefix"] and fext["CompressionFormat"] == "GZIP", fext
    expect(f.delete_delivery_stream, "ResourceInUseException",
           f"Firehose file-lake under account {A} is defined in the sluiced configuration; change it in its file.",
           DeliveryStreamName="file-lake")

    # Errors, with AWS's words.
    expect(f.create_delivery_stream, "ResourceInUseException", f"Firehose api-lake under accountId {A} already exists",
           DeliveryStreamName="api-lake", ExtendedS3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::x1"})
    expect(f.describe_delivery_stream, "ResourceNotFoundException", f"Firehose nope under account {A} not found.",
           DeliveryStreamName="nope")
    expect(f.create_delivery_stream, "ValidationException",
           "2 validation errors detected: Value at 'deliveryStreamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; "
           "Value at 'extendedS3DestinationConfiguration.bufferingHints.sizeInMBs' failed to satisfy constraint: Member must have value less than or equal to 128",
           DeliveryStreamName="bad name", ExtendedS3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::x1", "BufferingHints": {"SizeInMBs": 500, "IntervalInSeconds": 60}})
    expect(f.create_delivery_stream, "InvalidArgumentException", "Exactly one destination configuration is supported for a Firehose",
           DeliveryStreamName="none")
    expect(f.create_delivery_stream, "InvalidArgumentException", "KinesisSourceStreamConfig is mandatory for KinesisStreamAsSource stream type.",
           DeliveryStreamName="k1", DeliveryStreamType="KinesisStreamAsSource", ExtendedS3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::x1"})
    small = dict(SEED, BufferingHints={"SizeInMBs": 63, "IntervalInSeconds": 60})
    expect(f.create_delivery_stream, "InvalidArgumentException", "BufferingHints.SizeInMBs must be at least 64 when Dynamic Partitioning is enabled.",
           DeliveryStreamName="small", ExtendedS3DestinationConfiguration=small)
    expect(f.create_delivery_stream, "InvalidArgumentException",
           "The supplied prefix(es) do not satisfy the following constraint: ErrorOutputPrefix cannot be null or empty when Prefix contains expressions",
           DeliveryStreamName="noerr", ExtendedS3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::x1", "Prefix": "!{timestamp:yyyy}/"})
    expect(f.create_delivery_stream, "InvalidArgumentException",
           "Server side encryption from firehose is only allowed for direct put delivery streams and database as a source delivery streams",
           DeliveryStreamName="k2", DeliveryStreamType="KinesisStreamAsSource", KinesisStreamSourceConfiguration=src,
           DeliveryStreamEncryptionConfigurationInput={"KeyType": "AWS_OWNED_CMK"},
           ExtendedS3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::x1"})
    expect(f.create_delivery_stream, "InvalidArgumentException",
           "CompressionFormat ZIP is not supported by sluice (UNCOMPRESSED, GZIP and Snappy are).",
           DeliveryStreamName="zip", ExtendedS3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::x1", "CompressionFormat": "ZIP"})
    # A jq query the daemon cannot compile is refused with its reason; nothing is left.
    badq = json.loads(json.dumps(SEED))
    badq["ProcessingConfiguration"]["Processors"][0]["Parameters"][0]["ParameterValue"] = "{type: .type"
    code, msg = error(f.create_delivery_stream, DeliveryStreamName="badq", ExtendedS3DestinationConfiguration=badq)
    assert code == "InvalidArgumentException" and "badq.toml" in msg, (code, msg)
    assert "badq" not in f.list_delivery_streams()["DeliveryStreamNames"]

    # UpdateDestination: merged, version bumped; a stale version is refused.
    f.update_destination(DeliveryStreamName="api-lake", CurrentDeliveryStreamVersionId="1", DestinationId="destinationId-000000000001",
                         ExtendedS3DestinationUpdate={"BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 90}})
    d = f.describe_delivery_stream(DeliveryStreamName="api-lake")["DeliveryStreamDescription"]
    assert d["VersionId"] == "2" and "LastUpdateTimestamp" in d, d
    ext = d["Destinations"][0]["ExtendedS3DestinationDescription"]
    assert ext["BufferingHints"]["IntervalInSeconds"] == 90 and ext["Prefix"] == SEED["Prefix"], ext
    expect(f.update_destination, "ConcurrentModificationException",
           "Cannot update firehose: api-lake since the current version id: 2 and specified version id: 1 do not match",
           DeliveryStreamName="api-lake", CurrentDeliveryStreamVersionId="1", DestinationId="destinationId-000000000001",
           ExtendedS3DestinationUpdate={"CompressionFormat": "UNCOMPRESSED"})
    expect(f.update_destination, "InvalidArgumentException", "Destination Id destinationId-9 not found",
           DeliveryStreamName="api-lake", CurrentDeliveryStreamVersionId="2", DestinationId="destinationId-9",
           ExtendedS3DestinationUpdate={"CompressionFormat": "UNCOMPRESSED"})

    # Tags.
    f.tag_delivery_stream(DeliveryStreamName="api-lake", Tags=[{"Key": "env", "Value": "dev"}])
    t = f.list_tags_for_delivery_stream(DeliveryStreamName="api-lake")
    assert t["Tags"] == [{"Key": "env", "Value": "dev"}, {"Key": "team", "Value": "data"}] and t["HasMoreTags"] is False, t
    f.untag_delivery_stream(DeliveryStreamName="api-lake", TagKeys=["env"])
    assert f.list_tags_for_delivery_stream(DeliveryStreamName="api-lake", Limit=1)["Tags"] == [{"Key": "team", "Value": "data"}]

    # Encryption settings: Direct PUT only; recorded and reported.
    f.start_delivery_stream_encryption(DeliveryStreamName="direct-api", DeliveryStreamEncryptionConfigurationInput={"KeyType": "AWS_OWNED_CMK"})
    d = f.describe_delivery_stream(DeliveryStreamName="direct-api")["DeliveryStreamDescription"]
    assert d["DeliveryStreamEncryptionConfiguration"] == {"KeyType": "AWS_OWNED_CMK", "Status": "ENABLED"}, d
    expect(f.start_delivery_stream_encryption, "InvalidArgumentException", "KeyARN has to be specified when KeyType is CUSTOMER_MANAGED_CMK",
           DeliveryStreamName="direct-api", DeliveryStreamEncryptionConfigurationInput={"KeyType": "CUSTOMER_MANAGED_CMK"})
    expect(f.start_delivery_stream_encryption, "InvalidArgumentException",
           "Server side encryption from firehose is only allowed for direct put delivery streams and database as a source delivery streams",
           DeliveryStreamName="api-lake", DeliveryStreamEncryptionConfigurationInput={"KeyType": "AWS_OWNED_CMK"})
    f.stop_delivery_stream_encryption(DeliveryStreamName="direct-api")
    d = f.describe_delivery_stream(DeliveryStreamName="direct-api")["DeliveryStreamDescription"]
    assert d["DeliveryStreamEncryptionConfiguration"] == {"Status": "DISABLED"}, d

    # Data: the seed's CloudEvents on the stream, records through Direct PUT.
    types, sources = ["order.created", "order.paid", "user.signup"], ["https://github.com/JoseLuisSR/awsmeter", "shop", "web"]
    for start in range(0, 300, 100):
        recs = [{"Data": json.dumps({"specversion": "1.0", "id": str(i), "type": types[i % 3], "source": sources[i % 3 if i % 7 else 0], "data": {"n": i}}).encode(),
                 "PartitionKey": str(i)} for i in range(start, start + 100)]
        assert k.put_records(StreamName="events", Records=recs)["FailedRecordCount"] == 0
    r = f.put_record_batch(DeliveryStreamName="direct-api", Records=[{"Data": json.dumps({"n": i}).encode()} for i in range(40)])
    assert r["FailedPutCount"] == 0, r
    print("ok")
elif phase == "after-restart":
    names = f.list_delivery_streams()["DeliveryStreamNames"]
    assert names == ["api-lake", "direct-api", "file-lake"], names
    d = f.describe_delivery_stream(DeliveryStreamName="api-lake")["DeliveryStreamDescription"]
    assert d["VersionId"] == "2", d
    f.delete_delivery_stream(DeliveryStreamName="direct-api")
    assert f.list_delivery_streams()["DeliveryStreamNames"] == ["api-lake", "file-lake"]
    # Names with dots are names of their own (not file extensions).
    for n in ["logs.v1", "logs.v2"]:
        f.create_delivery_stream(DeliveryStreamName=n, ExtendedS3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::dots"})
    assert f.list_delivery_streams()["DeliveryStreamNames"] == ["api-lake", "file-lake", "logs.v1", "logs.v2"]
    for n in ["logs.v1", "logs.v2"]:
        f.delete_delivery_stream(DeliveryStreamName=n)
    expect(f.delete_delivery_stream, "ResourceNotFoundException", f"Firehose direct-api under account {A} not found.",
           DeliveryStreamName="direct-api")
    # The same name again starts afresh: only the new record, none of the old stream's.
    f.create_delivery_stream(DeliveryStreamName="direct-api",
                             ExtendedS3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::direct2",
                                                                 "ProcessingConfiguration": {"Enabled": True, "Processors": [{"Type": "AppendDelimiterToRecord"}]}})
    f.put_record(DeliveryStreamName="direct-api", Record={"Data": json.dumps({"n": "new"}).encode()})
    print("ok")
