"""The CBOR form of the Kinesis API (`application/x-amz-cbor-1.1`), as the AWS Java SDK,
the KPL and the KCL send it: blobs as CBOR byte strings, timestamps as integer
milliseconds. PutRecord, PutRecords, GetShardIterator (AT_TIMESTAMP), GetRecords,
DescribeStream and an error, all answered in CBOR. Usage: kinesis_cbor.py ENDPOINT
"""

import sys
import time
import urllib.error
import urllib.request

import cbor2

endpoint = sys.argv[1]


def call(op, body):
    req = urllib.request.Request(
        endpoint,
        data=cbor2.dumps(body),
        headers={
            "Content-Type": "application/x-amz-cbor-1.1",
            "X-Amz-Target": f"Kinesis_20131202.{op}",
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(req) as r:
            assert r.headers["Content-Type"] == "application/x-amz-cbor-1.1", r.headers
            return r.status, cbor2.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Type"] == "application/x-amz-cbor-1.1", e.headers
        return e.code, cbor2.loads(e.read())


status, out = call("CreateStream", {"StreamName": "c", "ShardCount": 1})
assert status == 200, (status, out)
before_ms = int(time.time() * 1000) - 1000

status, out = call("PutRecord", {"StreamName": "c", "Data": b"\x00\x01binary", "PartitionKey": "k"})
assert status == 200 and out["ShardId"] == "shardId-000000000000", (status, out)
status, out = call(
    "PutRecords",
    {"StreamName": "c", "Records": [{"Data": b"two", "PartitionKey": "a"}, {"Data": b"three", "PartitionKey": "b"}]},
)
assert status == 200 and out["FailedRecordCount"] == 0 and len(out["Records"]) == 2, out

# AT_TIMESTAMP with a timestamp in milliseconds, as the Java SDK sends it.
status, out = call(
    "GetShardIterator",
    {"StreamName": "c", "ShardId": "shardId-000000000000", "ShardIteratorType": "AT_TIMESTAMP", "Timestamp": before_ms},
)
assert status == 200, (status, out)
status, out = call("GetRecords", {"ShardIterator": out["ShardIterator"]})
assert status == 200, (status, out)
recs = out["Records"]
assert [r["Data"] for r in recs] == [b"\x00\x01binary", b"two", b"three"], recs
for r in recs:
    ts = r["ApproximateArrivalTimestamp"]
    assert isinstance(ts, int) and abs(ts - time.time() * 1000) < 120_000, ts

status, out = call("DescribeStream", {"StreamName": "c"})
assert status == 200, (status, out)
d = out["StreamDescription"]
assert d["StreamName"] == "c" and isinstance(d["StreamCreationTimestamp"], int), d

# Errors are CBOR too, with AWS's members.
status, out = call("DescribeStream", {"StreamName": "nope"})
assert status == 400 and out["__type"] == "ResourceNotFoundException", (status, out)
assert out["message"] == "Stream nope under account 000000000000 not found.", out
status, out = call("PutRecord", {"StreamName": "c", "Data": b"x"})
assert status == 400 and out["__type"] == "ValidationException", (status, out)
assert "partitionKey" in out["message"], out
# A body that is not CBOR.
req = urllib.request.Request(
    endpoint,
    data=b"\xff\xfe",
    headers={"Content-Type": "application/x-amz-cbor-1.1", "X-Amz-Target": "Kinesis_20131202.ListStreams"},
    method="POST",
)
try:
    urllib.request.urlopen(req)
    raise AssertionError("garbage accepted")
except urllib.error.HTTPError as e:
    assert e.code == 400 and cbor2.loads(e.read()) == {"__type": "SerializationException"}

# Protocol answers come in CBOR too, each with its own type: an empty body is a
# SerializationException for a known operation, an UnknownOperationException otherwise.
for target, want in [("ListStreams", "SerializationException"), ("Nope", "UnknownOperationException")]:
    req = urllib.request.Request(
        endpoint,
        data=b"",
        headers={"Content-Type": "application/x-amz-cbor-1.1", "X-Amz-Target": f"Kinesis_20131202.{target}"},
        method="POST",
    )
    try:
        urllib.request.urlopen(req)
        raise AssertionError("empty body accepted")
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Type"] == "application/x-amz-cbor-1.1", e.headers
        assert e.code == 400 and cbor2.loads(e.read()) == {"__type": want}, target

print("ok")
