"""Round-trips records through sluiced's Kinesis API with boto3, the way an application
would. Usage: kinesis_boto3.py ENDPOINT. Exits non-zero (with a message) on any mismatch."""
import base64
import hashlib
import sys
import time

import boto3
from botocore.exceptions import ClientError

endpoint = sys.argv[1]
k = boto3.client(
    "kinesis",
    endpoint_url=endpoint,
    region_name="eu-west-1",
    aws_access_key_id="AKIDTEST",
    aws_secret_access_key="secret",
)


def check(cond, msg):
    if not cond:
        print("FAIL:", msg, file=sys.stderr)
        sys.exit(1)


def error_code(fn, **kw):
    try:
        fn(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"]["Message"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    return None


# CreateStream through the API; it shows up with ARNs in the request's region.
k.create_stream(StreamName="orders", ShardCount=3)
code = error_code(k.create_stream, StreamName="orders", ShardCount=3)
check(code and code[0] == "ResourceInUseException", f"duplicate create: {code}")
names = k.list_streams()["StreamNames"]
check("orders" in names and "events" in names, f"list_streams: {names}")
summary = k.describe_stream_summary(StreamName="orders")["StreamDescriptionSummary"]
check(summary["StreamARN"] == "arn:aws:kinesis:eu-west-1:000000000000:stream/orders", summary["StreamARN"])
check(summary["OpenShardCount"] == 3 and summary["StreamStatus"] == "ACTIVE", summary)

# ListShards: hash ranges tile [0, 2^128-1].
shards = k.list_shards(StreamName="orders")["Shards"]
check(len(shards) == 3, shards)
nxt = 0
for s in shards:
    lo, hi = int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"])
    check(lo == nxt and hi >= lo, f"gap or overlap at {s}")
    nxt = hi + 1
check(nxt == 2**128, "ranges end at 2^128-1")


def owner(hash_key):
    for s in shards:
        if int(s["HashKeyRange"]["StartingHashKey"]) <= hash_key <= int(s["HashKeyRange"]["EndingHashKey"]):
            return s["ShardId"]


# PutRecords: 500 records; each lands on the shard Kinesis's MD5 rule predicts.
records = [{"Data": f'{{"n":{i}}}'.encode(), "PartitionKey": f"key-{i % 37}"} for i in range(500)]
r = k.put_records(StreamName="orders", Records=records)
check(r["FailedRecordCount"] == 0, r)
put = {}
for i, (rec, res) in enumerate(zip(records, r["Records"])):
    h = int.from_bytes(hashlib.md5(rec["PartitionKey"].encode()).digest(), "big")
    check(res["ShardId"] == owner(h), f"record {i} on {res['ShardId']}, expected {owner(h)}")
    check(len(res["SequenceNumber"]) == 56, res["SequenceNumber"])
    put[res["SequenceNumber"]] = (res["ShardId"], rec["Data"], rec["PartitionKey"])

# ExplicitHashKey 0 and 2^128-1 go to the first and last shard.
for ehk, expect in (("0", shards[0]["ShardId"]), (str(2**128 - 1), shards[-1]["ShardId"])):
    res = k.put_record(StreamName="orders", Data=b"edge", PartitionKey="x", ExplicitHashKey=ehk)
    check(res["ShardId"] == expect, f"ExplicitHashKey {ehk} -> {res['ShardId']}")
    put[res["SequenceNumber"]] = (res["ShardId"], b"edge", "x")

# Read every shard from TRIM_HORIZON: every record exactly once, in per-shard order.
seen = {}
for s in shards:
    it = k.get_shard_iterator(StreamName="orders", ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    last = None
    while True:
        out = k.get_records(ShardIterator=it, Limit=100)
        for rec in out["Records"]:
            sq = rec["SequenceNumber"]
            check(sq not in seen, f"duplicate {sq}")
            check(last is None or int(sq) > int(last), "per-shard order")
            last = sq
            seen[sq] = (s["ShardId"], rec["Data"], rec["PartitionKey"])
            check(isinstance(rec["ApproximateArrivalTimestamp"].timestamp(), float), "arrival timestamp")
        it = out["NextShardIterator"]
        if not out["Records"]:
            check(out["MillisBehindLatest"] == 0, out["MillisBehindLatest"])
            break
check(seen == put, f"read back {len(seen)} records, put {len(put)}")

# AT/AFTER_SEQUENCE_NUMBER, LATEST, AT_TIMESTAMP.
first_shard = shards[0]["ShardId"]
seqs = sorted((sq for sq, v in put.items() if v[0] == first_shard), key=int)
it = k.get_shard_iterator(StreamName="orders", ShardId=first_shard, ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[1])["ShardIterator"]
check(k.get_records(ShardIterator=it, Limit=1)["Records"][0]["SequenceNumber"] == seqs[1], "AT_SEQUENCE_NUMBER")
it = k.get_shard_iterator(StreamName="orders", ShardId=first_shard, ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=seqs[1])["ShardIterator"]
check(k.get_records(ShardIterator=it, Limit=1)["Records"][0]["SequenceNumber"] == seqs[2], "AFTER_SEQUENCE_NUMBER")
latest = k.get_shard_iterator(StreamName="orders", ShardId=first_shard, ShardIteratorType="LATEST")["ShardIterator"]
check(k.get_records(ShardIterator=latest)["Records"] == [], "LATEST starts after the tip")
time.sleep(0.01)
t0 = time.time()
time.sleep(0.01)
res = k.put_record(StreamName="orders", Data=b"late", PartitionKey="x", ExplicitHashKey="0")
check(k.get_records(ShardIterator=latest)["Records"][0]["Data"] == b"late", "LATEST sees new records")
it = k.get_shard_iterator(StreamName="orders", ShardId=first_shard, ShardIteratorType="AT_TIMESTAMP", Timestamp=t0)["ShardIterator"]
check(k.get_records(ShardIterator=it)["Records"][0]["SequenceNumber"] == res["SequenceNumber"], "AT_TIMESTAMP")

# Errors as AWS returns them.
code = error_code(k.put_record, StreamName="orders", Data=b"x", PartitionKey="k" * 257)
check(code and code[0] == "ValidationException" and "at 'partitionKey' failed to satisfy constraint: Member must have length less than or equal to 256" in code[1], code)
code = error_code(k.put_record, StreamName="orders", Data=b"x" * (1024 * 1024 + 1), PartitionKey="k")
check(code and code[0] == "ValidationException" and "at 'data'" in code[1], code)
code = error_code(k.put_record, StreamName="nope", Data=b"x", PartitionKey="k")
check(code == ("ResourceNotFoundException", "Stream nope under account 000000000000 not found.", 400), code)
code = error_code(k.get_records, ShardIterator="AAAAAAAAAAHka4e0dsUi+9sm4ks/X5Pv93MGvo6Unc")
check(code and code[0] == "InvalidArgumentException" and code[2] == 400, code)
code = error_code(k.get_shard_iterator, StreamName="orders", ShardId="shardId-000000000099", ShardIteratorType="LATEST")
check(code and code[0] == "ResourceNotFoundException", code)
code = error_code(k.delete_stream, StreamName="events")
check(code and code[0] == "ResourceInUseException", f"config streams cannot be deleted: {code}")

k.delete_stream(StreamName="orders")
check("orders" not in k.list_streams()["StreamNames"], "deleted")
print("boto3 interop ok")
