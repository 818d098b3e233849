"""Resharding through the real boto3 client: SplitShard, MergeShards, UpdateShardCount and
ListShards with every ShardFilter type — success shapes, lineage, routing by hash key
after each change, GetRecords' ChildShards at the end of a closed shard, a KCL-style reader
following parents before children, and each error the operations answer with AWS's
wording. Usage: kinesis_reshard_boto3.py ENDPOINT
"""

import hashlib
import sys
import time

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
    config=Config(retries={"max_attempts": 1}, parameter_validation=False),
)
A = "000000000000"
MAX = 2**128 - 1


def error(fn, **kw):
    try:
        fn(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"].get("Message", "")
    raise AssertionError(f"{fn.__name__}({kw}) succeeded")


def expect(fn, code, message, **kw):
    got = error(fn, **kw)
    assert got == (code, message), f"{fn.__name__}: {got!r} != {(code, message)!r}"


def active(name):
    deadline = time.time() + 10
    while time.time() < deadline:
        s = k.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if s["StreamStatus"] == "ACTIVE":
            return s
        time.sleep(0.05)
    raise AssertionError("stream never became ACTIVE again")


def shards(name, **kw):
    out, tok = [], None
    while True:
        page = k.list_shards(NextToken=tok) if tok else k.list_shards(StreamName=name, **kw)
        out += page["Shards"]
        tok = page.get("NextToken")
        if not tok:
            return out


def open_shards(name):
    return [s for s in shards(name) if "EndingSequenceNumber" not in s["SequenceNumberRange"]]


def owner(name, h):
    for s in open_shards(name):
        r = s["HashKeyRange"]
        if int(r["StartingHashKey"]) <= h <= int(r["EndingHashKey"]):
            return s["ShardId"]
    raise AssertionError(f"no open shard owns {h}")


def hkey(pk):
    return int.from_bytes(hashlib.md5(pk.encode()).digest(), "big")


put_log = []  # (key, n) in put order


def put(name, n_keys=8, per=5):
    counts = {}
    for key, _ in put_log:
        counts[key] = counts.get(key, 0) + 1
    recs = []
    for i in range(per):
        for j in range(n_keys):
            key = f"key-{j}"
            n = counts.get(key, 0)
            counts[key] = n + 1
            recs.append({"Data": f"{key}:{n}".encode(), "PartitionKey": key})
            put_log.append((key, n))
    r = k.put_records(StreamName=name, Records=recs)
    assert r["FailedRecordCount"] == 0, r
    for rec, res in zip(recs, r["Records"]):
        # AWS routing: the open shard whose range holds the MD5 of the key.
        assert res["ShardId"] == owner(name, hkey(rec["PartitionKey"])), (rec, res)


k.create_stream(StreamName="r", ShardCount=2)
put("r")
before = shards("r")
assert [s["ShardId"] for s in before] == ["shardId-000000000000", "shardId-000000000001"]
mid = int(before[0]["HashKeyRange"]["EndingHashKey"]) // 2
# A shard's starting number sorts before its first record: AFTER it reads that record.
start = before[0]["SequenceNumberRange"]["StartingSequenceNumber"]
th = k.get_records(ShardIterator=k.get_shard_iterator(StreamName="r", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")["ShardIterator"])["Records"]
after_start = k.get_records(ShardIterator=k.get_shard_iterator(StreamName="r", ShardId="shardId-000000000000", ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=start)["ShardIterator"])["Records"]
assert th and after_start[0]["SequenceNumber"] == th[0]["SequenceNumber"] > start, (start, th[0])

# SplitShard: the parent closes, two children share its range (the upper one starts at
# the new key), the stream is UPDATING for a moment and refuses another resharding.
assert k.split_shard(StreamName="r", ShardToSplit="shardId-000000000000", NewStartingHashKey=str(mid))["ResponseMetadata"]["HTTPStatusCode"] == 200
assert k.describe_stream_summary(StreamName="r")["StreamDescriptionSummary"]["StreamStatus"] == "UPDATING"
expect(k.split_shard, "ResourceInUseException", f"Stream r under account {A} not ACTIVE, instead in state UPDATING",
       StreamName="r", ShardToSplit="shardId-000000000001", NewStartingHashKey=str(MAX - 5))
s = active("r")
assert s["OpenShardCount"] == 3, s
after = {x["ShardId"]: x for x in shards("r")}
assert list(after) == ["shardId-000000000000", "shardId-000000000001", "shardId-000000000002", "shardId-000000000003"], list(after)
p = after["shardId-000000000000"]
assert "EndingSequenceNumber" in p["SequenceNumberRange"], p
c2, c3 = after["shardId-000000000002"], after["shardId-000000000003"]
assert c2["ParentShardId"] == "shardId-000000000000" and "AdjacentParentShardId" not in c2, c2
assert c2["HashKeyRange"] == {"StartingHashKey": "0", "EndingHashKey": str(mid - 1)}, c2
assert c3["HashKeyRange"] == {"StartingHashKey": str(mid), "EndingHashKey": p["HashKeyRange"]["EndingHashKey"]}, c3
assert int(c2["SequenceNumberRange"]["StartingSequenceNumber"]) > int(p["SequenceNumberRange"]["EndingSequenceNumber"])
put("r")

# GetRecords reads a closed parent to its end, then names the children instead of a next
# iterator.
it = k.get_shard_iterator(StreamName="r", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
got, children = [], None
for _ in range(20):
    r = k.get_records(ShardIterator=it, Limit=3)
    got += r["Records"]
    if "NextShardIterator" not in r or r.get("NextShardIterator") is None:
        children = r["ChildShards"]
        break
    assert "ChildShards" not in r, r
    it = r["NextShardIterator"]
assert children == [
    {"ShardId": "shardId-000000000002", "ParentShards": ["shardId-000000000000"], "HashKeyRange": c2["HashKeyRange"]},
    {"ShardId": "shardId-000000000003", "ParentShards": ["shardId-000000000000"], "HashKeyRange": c3["HashKeyRange"]},
], children
assert got and all(hkey(x["PartitionKey"]) <= int(p["HashKeyRange"]["EndingHashKey"]) for x in got)
# LATEST on a closed shard: a valid iterator at its end.
it = k.get_shard_iterator(StreamName="r", ShardId="shardId-000000000000", ShardIteratorType="LATEST")["ShardIterator"]
r = k.get_records(ShardIterator=it)
assert r["Records"] == [] and "NextShardIterator" not in r and len(r["ChildShards"]) == 2, r

# SplitShard errors, in AWS's order.
expect(k.split_shard, "ValidationException",
       "2 validation errors detected: Value null at 'newStartingHashKey' failed to satisfy constraint: Member must not be null; "
       "Value null at 'shardToSplit' failed to satisfy constraint: Member must not be null", StreamName="r")
expect(k.split_shard, "ValidationException",
       "1 validation error detected: Value 'x1' at 'newStartingHashKey' failed to satisfy constraint: Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
       StreamName="r", ShardToSplit="shardId-000000000001", NewStartingHashKey="x1")
expect(k.split_shard, "ResourceNotFoundException", f"Could not find shard shard-x in stream nope under account {A}.",
       StreamName="nope", ShardToSplit="shard-x", NewStartingHashKey="5")
expect(k.split_shard, "ResourceNotFoundException", f"Stream nope under account {A} not found.",
       StreamName="nope", ShardToSplit="shardId-0", NewStartingHashKey="5")
expect(k.split_shard, "ResourceNotFoundException", f"Could not find shard shardId-000000000099 in stream r under account {A}.",
       StreamName="r", ShardToSplit="shard-99", NewStartingHashKey="5")
lo = int(after["shardId-000000000001"]["HashKeyRange"]["StartingHashKey"])
expect(k.split_shard, "InvalidArgumentException",
       f"NewStartingHashKey {lo + 1} used in SplitShard() on shard shardId-000000000001 in stream r under account {A} is not both greater than one plus the shard's StartingHashKey {lo} and less than the shard's EndingHashKey {MAX}.",
       StreamName="r", ShardToSplit="shardId-000000000001", NewStartingHashKey=str(lo + 1))
expect(k.split_shard, "InvalidArgumentException",
       f"Shard shardId-000000000000 in stream r under account {A} has already been merged or split, and thus is not eligible for merging or splitting.",
       StreamName="r", ShardToSplit="shardId-000000000000", NewStartingHashKey=str(mid))

# MergeShards: ShardToMerge's range must end right before AdjacentShardToMerge's.
expect(k.merge_shards, "InvalidArgumentException",
       f"Shards shardId-000000000003 and shardId-000000000002 in stream r under account {A} are not an adjacent pair of shards eligible for merging",
       StreamName="r", ShardToMerge="shardId-000000000003", AdjacentShardToMerge="shardId-000000000002")
expect(k.merge_shards, "ResourceNotFoundException", f"Could not find shard shardId-000000000042 in stream r under account {A}.",
       StreamName="r", ShardToMerge="shardId-000000000042", AdjacentShardToMerge="shardId-000000000002")
expect(k.merge_shards, "ValidationException",
       "2 validation errors detected: Value '' at 'shardToMerge' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; "
       "Value '' at 'shardToMerge' failed to satisfy constraint: Member must have length greater than or equal to 1",
       StreamName="r", ShardToMerge="", AdjacentShardToMerge="shardId-000000000002")
k.merge_shards(StreamName="r", ShardToMerge="shardId-000000000002", AdjacentShardToMerge="shardId-000000000003")
active("r")
m = {x["ShardId"]: x for x in shards("r")}["shardId-000000000004"]
assert (m["ParentShardId"], m["AdjacentParentShardId"]) == ("shardId-000000000002", "shardId-000000000003"), m
assert m["HashKeyRange"] == {"StartingHashKey": "0", "EndingHashKey": p["HashKeyRange"]["EndingHashKey"]}, m
put("r")
expect(k.merge_shards, "InvalidArgumentException",
       f"Shard shardId-000000000002 in stream r under account {A} has already been merged or split, and thus is not eligible for merging or splitting.",
       StreamName="r", ShardToMerge="shardId-000000000002", AdjacentShardToMerge="shardId-000000000003")
# A merged shard's end names one child with both parents.
it = k.get_shard_iterator(StreamName="r", ShardId="shardId-000000000003", ShardIteratorType="LATEST")["ShardIterator"]
assert k.get_records(ShardIterator=it)["ChildShards"] == [
    {"ShardId": "shardId-000000000004", "ParentShards": ["shardId-000000000002", "shardId-000000000003"], "HashKeyRange": m["HashKeyRange"]}
]

# UpdateShardCount: uniform ranges afterwards, reached through splits and merges.
u = k.update_shard_count(StreamName="r", TargetShardCount=3, ScalingType="UNIFORM_SCALING")
assert (u["StreamName"], u["CurrentShardCount"], u["TargetShardCount"]) == ("r", 2, 3), u
assert u["StreamARN"].endswith(":stream/r"), u
active("r")
opened = sorted(open_shards("r"), key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))
bounds = [(i * 2**128) // 3 for i in range(4)]
assert [(int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"])) for s in opened] == [
    (bounds[i], bounds[i + 1] - 1) for i in range(3)
], opened
put("r")
expect(k.update_shard_count, "LimitExceededException", "UpdateShardCount cannot scale up over double your current open shard count. Current open shard count: 3 Target shard count: 7",
       StreamName="r", TargetShardCount=7, ScalingType="UNIFORM_SCALING")
expect(k.update_shard_count, "LimitExceededException", "UpdateShardCount cannot scale down below half your current open shard count. Current open shard count: 3 Target shard count: 1",
       StreamName="r", TargetShardCount=1, ScalingType="UNIFORM_SCALING")
expect(k.update_shard_count, "ValidationException",
       "2 validation errors detected: Value '0' at 'targetShardCount' failed to satisfy constraint: Member must have value greater than or equal to 1; "
       "Value 'FAST' at 'scalingType' failed to satisfy constraint: Member must satisfy enum value set: [UNIFORM_SCALING]",
       StreamName="r", TargetShardCount=0, ScalingType="FAST")
k.create_stream(StreamName="od", StreamModeDetails={"StreamMode": "ON_DEMAND"})
expect(k.update_shard_count, "ValidationException", f"Request is invalid. Stream od under account {A} is in On-Demand mode.",
       StreamName="od", TargetShardCount=5, ScalingType="UNIFORM_SCALING")
k.update_shard_count(StreamName="r", TargetShardCount=5, ScalingType="UNIFORM_SCALING")
active("r")
assert len(open_shards("r")) == 5
put("r")

# ListShards filters.
everything = shards("r")
ids = [s["ShardId"] for s in everything]
assert [s["ShardId"] for s in shards("r", ShardFilter={"Type": "AT_LATEST"})] == [s["ShardId"] for s in open_shards("r")]
assert [s["ShardId"] for s in shards("r", ShardFilter={"Type": "FROM_TRIM_HORIZON"})] == ids
assert [s["ShardId"] for s in shards("r", ShardFilter={"Type": "AT_TRIM_HORIZON"})] == ids[:2], "the shards the stream started with"
assert [s["ShardId"] for s in shards("r", ShardFilter={"Type": "AFTER_SHARD_ID", "ShardId": ids[-3]})] == ids[-2:]
page = k.list_shards(StreamName="r", MaxResults=2, ShardFilter={"Type": "AT_LATEST"})
assert len(page["Shards"]) == 2 and page["NextToken"], page
rest = k.list_shards(NextToken=page["NextToken"])
assert [s["ShardId"] for s in page["Shards"] + rest["Shards"]] == [s["ShardId"] for s in open_shards("r")], "the filter holds across pages"
expect(k.list_shards, "InvalidArgumentException", "NextToken and StreamName cannot be provided together.",
       StreamName="r", NextToken=page["NextToken"])
expect(k.list_shards, "InvalidArgumentException", "Either NextToken or StreamName should be provided.")
expect(k.list_shards, "InvalidArgumentException", "ShardId must be supplied in a ShardFilter with a Type of AFTER_SHARD_ID",
       StreamName="r", ShardFilter={"Type": "AFTER_SHARD_ID"})
expect(k.list_shards, "ValidationException",
       "1 validation error detected: Value 'SOON' at 'shardFilter.type' failed to satisfy constraint: Member must satisfy enum value set: [AFTER_SHARD_ID, AT_TRIM_HORIZON, FROM_TRIM_HORIZON, AT_LATEST, AT_TIMESTAMP, FROM_TIMESTAMP]",
       StreamName="r", ShardFilter={"Type": "SOON"})
expect(k.list_shards, "ValidationException",
       "1 validation error detected: Value '0' at 'maxResults' failed to satisfy constraint: Member must have value greater than or equal to 1",
       StreamName="r", MaxResults=0)
now = time.time()
assert [s["ShardId"] for s in shards("r", ShardFilter={"Type": "AT_TIMESTAMP", "Timestamp": now})] == [s["ShardId"] for s in open_shards("r")]
assert [s["ShardId"] for s in shards("r", ShardFilter={"Type": "FROM_TIMESTAMP", "Timestamp": now})] == [s["ShardId"] for s in open_shards("r")]

# A KCL-style reader: from TRIM_HORIZON of the shards the stream started with, every shard
# read to its end before its children; every record once, in put order per key.
done, seen = set(), []
todo = [s["ShardId"] for s in shards("r", ShardFilter={"Type": "AT_TRIM_HORIZON"})]
parents = {s["ShardId"]: [x for x in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if x] for s in everything}
while todo:
    sid = next((x for x in todo if all(p in done or p not in parents for p in parents.get(x, []))), None)
    assert sid, todo
    todo.remove(sid)
    it = k.get_shard_iterator(StreamName="r", ShardId=sid, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    while True:
        r = k.get_records(ShardIterator=it, Limit=7)
        seen += [x["Data"].decode() for x in r["Records"]]
        if r.get("NextShardIterator") is None:
            for c in r.get("ChildShards", []):
                if c["ShardId"] not in todo and c["ShardId"] not in done:
                    todo.append(c["ShardId"])
            break
        if not r["Records"]:
            break  # an open shard read to its tip
        it = r["NextShardIterator"]
    done.add(sid)
assert sorted(seen) == sorted(f"{key}:{n}" for key, n in put_log), (len(seen), len(put_log))
per_key = {}
for x in seen:
    key, n = x.split(":")
    per_key.setdefault(key, []).append(int(n))
assert all(v == sorted(v) for v in per_key.values()), per_key

print("ok")
