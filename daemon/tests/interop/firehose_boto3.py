"""Firehose Direct PUT with boto3. Usage: firehose_boto3.py ENDPOINT. Puts 250 records
(PutRecordBatch and PutRecord) into delivery stream `direct`, checks List/Describe and
the errors AWS returns."""
import json
import sys

import boto3
from botocore.exceptions import ClientError

f = boto3.client("firehose", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="x", aws_secret_access_key="x")
assert f.list_delivery_streams()["DeliveryStreamNames"] == ["direct"], f.list_delivery_streams()
d = f.describe_delivery_stream(DeliveryStreamName="direct")["DeliveryStreamDescription"]
assert d["DeliveryStreamStatus"] == "ACTIVE" and d["DeliveryStreamType"] == "DirectPut", d
for start in range(0, 200, 100):
    r = f.put_record_batch(DeliveryStreamName="direct", Records=[
        {"Data": json.dumps({"type": "t", "source": "fh", "n": i}).encode()} for i in range(start, start + 100)])
    assert r["FailedPutCount"] == 0 and len(r["RequestResponses"]) == 100, r
for i in range(200, 250):
    assert f.put_record(DeliveryStreamName="direct", Record={"Data": json.dumps({"type": "t", "source": "fh", "n": i}).encode()})["RecordId"]


def code(fn, **kw):
    try:
        fn(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"]["Message"]


c = code(f.put_record, DeliveryStreamName="nope", Record={"Data": b"x"})
assert c == ("ResourceNotFoundException", "Firehose nope under account 000000000000 not found."), c
c = code(f.put_record_batch, DeliveryStreamName="direct", Records=[{"Data": b"x"}] * 501)
assert c[0] == "ValidationException" and "at 'records' failed to satisfy constraint: Member must have length less than or equal to 500" in c[1], c
print("firehose ok")
