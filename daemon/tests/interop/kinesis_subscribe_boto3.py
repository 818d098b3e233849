"""SubscribeToShard through the real boto3 client (HTTP/1.1 event stream): every record of
a shard arrives through events, including records put while subscribed; a resharding ends
the parent's subscription with ChildShards, and subscribing to the children with the
continuation numbers reads the rest; errors are AWS's. Usage: kinesis_subscribe_boto3.py ENDPOINT
"""

import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

k = boto3.client("kinesis", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="x", aws_secret_access_key="x",
                 config=Config(retries={"max_attempts": 1}, parameter_validation=False, read_timeout=30))
A = "000000000000"

k.create_stream(StreamName="efo", ShardCount=1)
arn = k.describe_stream_summary(StreamName="efo")["StreamDescriptionSummary"]["StreamARN"]
consumer = k.register_stream_consumer(StreamARN=arn, ConsumerName="app")["Consumer"]["ConsumerARN"]


def put(lo, hi):
    recs = [{"Data": f"r{i}".encode(), "PartitionKey": f"k{i}"} for i in range(lo, hi)]
    assert k.put_records(StreamName="efo", Records=recs)["FailedRecordCount"] == 0


def events(shard, position):
    return k.subscribe_to_shard(ConsumerARN=consumer, ShardId=shard, StartingPosition=position)["EventStream"]


put(0, 50)
got, cont, children = [], None, None
stream = events("shardId-000000000000", {"Type": "TRIM_HORIZON"})
for ev in stream:
    e = ev["SubscribeToShardEvent"]
    got += [r["Data"].decode() for r in e["Records"]]
    cont = e["ContinuationSequenceNumber"]
    assert e["MillisBehindLatest"] >= 0
    if len(got) == 50:
        break
stream.close()
assert got == [f"r{i}" for i in range(50)], got
assert cont == k.get_records(ShardIterator=k.get_shard_iterator(StreamName="efo", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")["ShardIterator"])["Records"][49]["SequenceNumber"]

# A second subscription within 5 s of the last one is refused, as on Kinesis.
try:
    events("shardId-000000000000", {"Type": "LATEST"})
    raise AssertionError("a subscription within 5 s was accepted")
except ClientError as e:
    assert e.response["Error"]["Code"] == "ResourceInUseException", e.response

# Errors before the stream starts are ordinary answers.
try:
    k.subscribe_to_shard(ConsumerARN=arn + "/consumer/nobody:1", ShardId="shardId-000000000000", StartingPosition={"Type": "LATEST"})
    raise AssertionError("an unknown consumer was accepted")
except ClientError as e:
    assert e.response["Error"] == {"Code": "ResourceNotFoundException", "Message": f"Consumer {arn}/consumer/nobody:1, account {A} not found."}, e.response["Error"]
try:
    k.subscribe_to_shard(ConsumerARN=consumer, ShardId="shardId-000000000000", StartingPosition={"Type": "SOON"})
    raise AssertionError("a bad type was accepted")
except ClientError as e:
    assert e.response["Error"]["Code"] == "ValidationException" and "startingPosition.type" in e.response["Error"]["Message"], e.response

# Continue after the last record read (accepted once the takeover window has passed),
# receive records put while subscribed, then a split closes the shard: the last event
# names the children and the stream ends.
deadline = time.time() + 20
while True:
    try:
        stream = events("shardId-000000000000", {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": cont})
        break
    except ClientError as e:
        assert e.response["Error"]["Code"] == "ResourceInUseException" and time.time() < deadline, e.response
        time.sleep(0.2)
more, split = [], False
for ev in stream:
    e = ev["SubscribeToShardEvent"]
    more += [r["Data"].decode() for r in e["Records"]]
    cont = e["ContinuationSequenceNumber"]
    if not split:
        put(50, 80)
        split = True
    elif len(more) >= 30 and "ChildShards" not in e:
        k.split_shard(StreamName="efo", ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**127))
    if "ChildShards" in e:
        children = e["ChildShards"]
assert more == [f"r{i}" for i in range(50, 80)], more
assert [c["ShardId"] for c in children] == ["shardId-000000000001", "shardId-000000000002"], children
assert all(c["ParentShards"] == ["shardId-000000000000"] for c in children), children

# The children, from their start: records put after the split.
while k.describe_stream_summary(StreamName="efo")["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
    time.sleep(0.05)
put(80, 100)
rest = []
for c in children:
    start = [s for s in k.list_shards(StreamName="efo")["Shards"] if s["ShardId"] == c["ShardId"]][0]["SequenceNumberRange"]["StartingSequenceNumber"]
    s = events(c["ShardId"], {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": start})
    n = 0
    for ev in s:
        e = ev["SubscribeToShardEvent"]
        rest += [r["Data"].decode() for r in e["Records"]]
        n += 1
        if n >= 2 and not e["Records"]:
            break
    s.close()
assert sorted(rest, key=lambda x: int(x[1:])) == [f"r{i}" for i in range(80, 100)], rest
print("ok")
