"""Firehose record format conversion through the real boto3 client: a Direct PUT delivery
stream with DataFormatConversionConfiguration (OpenX JSON in, Parquet out, GZIP inside)
takes 50 JSON records and one that is not JSON. Usage: firehose_parquet_boto3.py ENDPOINT
(the test then stops the daemon, which drains the objects, and reads them)."""

import json
import sys

import boto3
from botocore.config import Config

endpoint = sys.argv[1]
cfg = Config(retries={"max_attempts": 1})
f = boto3.client("firehose", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="x", aws_secret_access_key="x", config=cfg)
f.create_delivery_stream(
    DeliveryStreamName="to-parquet",
    ExtendedS3DestinationConfiguration={
        "RoleARN": "arn:aws:iam::000000000000:role/firehose",
        "BucketARN": "arn:aws:s3:::parquet-lake",
        "Prefix": "events/",
        "DataFormatConversionConfiguration": {
            "Enabled": True,
            "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
            "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {"Compression": "GZIP"}}},
            "SchemaConfiguration": {"RoleARN": "arn:aws:iam::000000000000:role/firehose",
                                    "DatabaseName": "db", "TableName": "events"},
        },
    })
d = f.describe_delivery_stream(DeliveryStreamName="to-parquet")["DeliveryStreamDescription"]
conv = d["Destinations"][0]["ExtendedS3DestinationDescription"]["DataFormatConversionConfiguration"]
assert conv["OutputFormatConfiguration"]["Serializer"] == {"ParquetSerDe": {"Compression": "GZIP"}}, conv
records = [{"Data": json.dumps({"id": f"e{i}", "n": i, "ok": i % 2 == 0}).encode()} for i in range(50)]
records.append({"Data": b"not json"})
r = f.put_record_batch(DeliveryStreamName="to-parquet", Records=records)
assert r["FailedPutCount"] == 0, r
print("ok")
