"""Firehose-style delivery end to end: boto3 puts CloudEvents of several types and sources,
one KPL-aggregated record (aws-kinesis-agg) and malformed JSON into stream `events`; the
pipeline writes the lake; DuckDB reads it in place with hive_partitioning=true.
Usage: lake_boto3.py ENDPOINT LAKE_DIR. Exits non-zero on any mismatch."""
import base64
import glob
import gzip
import json
import os
import sys
import time

import boto3
import duckdb
from aws_kinesis_agg.aggregator import RecordAggregator

endpoint, lake = sys.argv[1], sys.argv[2]
k = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="x", aws_secret_access_key="x")

types = ["order.created", "order.shipped"]
sources = ["https://github.com/JoseLuisSR/awsmeter", "/shop/eu-west", "a b=c:d"]
expected = {}


def event(i, t, s):
    e = {"specversion": "1.0", "type": t, "source": s, "id": f"evt-{i}", "subject": "orders",
         "time": "2026-11-25T18:00:00Z", "datacontenttype": "application/json", "data": {"n": i}}
    expected[e["id"]] = (t, s)
    return json.dumps(e).encode()


records = []
for i in range(300):
    records.append({"Data": event(i, types[i % 2], sources[i % 3]), "PartitionKey": f"pk-{i}"})
r = k.put_records(StreamName="events", Records=records)
assert r["FailedRecordCount"] == 0, r

# One KPL aggregate holding three user records.
agg = RecordAggregator()
for i in range(1000, 1003):
    agg.add_user_record(f"kpl-{i}", event(i, "order.kpl", "/kpl"))
pk, ehk, data = agg.clear_and_get().get_contents()
kw = {"ExplicitHashKey": ehk} if ehk else {}
k.put_record(StreamName="events", Data=data, PartitionKey=pk, **kw)

# Malformed JSON: partitioning fails; the records land under the error prefix.
bad = [b"not json {", b'{"type": 5, "source": "x"}']
for b in bad:
    k.put_record(StreamName="events", Data=b, PartitionKey="bad")

data_glob = os.path.join(lake, "type=*", "source=*", "*", "*", "*", "*", "*.gz")
deadline = time.time() + 60
while True:
    try:
        got = duckdb.sql(
            f"select id, type, source from read_json_auto('{data_glob}', hive_partitioning=true)").fetchall()
    except duckdb.IOException:
        got = []
    errs = glob.glob(os.path.join(lake, "kdferror", "partitioning-failed", "**", "*"), recursive=True)
    errs = [e for e in errs if os.path.isfile(e) and not os.path.basename(e).startswith(".")]
    if len(got) >= len(expected) and errs:
        break
    if time.time() > deadline:
        print(f"FAIL: lake has {len(got)} of {len(expected)} records, {len(errs)} error objects", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.2)

ids = sorted(i for (i, _, _) in got)
assert ids == sorted(expected), f"records: {len(ids)} vs {len(expected)}; dup/missing"
for (i, t, s) in got:
    assert expected[i] == (t, s), (i, t, s)
# The hive columns come from the path alone here (each line read as one opaque CSV
# column), and DuckDB decodes the escaped values back.
paths = duckdb.sql(
    f"select distinct type, source from read_csv('{data_glob}', hive_partitioning=true, "
    "columns={'line': 'VARCHAR'}, delim='\x01', quote='', escape='', header=false)").fetchall()
assert sorted(paths) == sorted({v for v in expected.values()}), paths
assert any("source=https%3A%2F%2Fgithub.com%2FJoseLuisSR%2Fawsmeter" in p for p in glob.glob(os.path.join(lake, "type=*", "source=*")))

# Error documents: Firehose format with base64 rawData.
docs = []
for e in errs:
    with open(e, "rb") as f:
        docs += [json.loads(l) for l in f.read().splitlines() if l.strip()]
raw = sorted(base64.b64decode(d["rawData"]) for d in docs)
assert raw == sorted(bad), raw
for d in docs:
    for key in ("attemptsMade", "arrivalTimestamp", "errorCode", "errorMessage", "attemptEndingTimestamp", "rawData", "sequenceNumber", "pipeline"):
        assert key in d, (key, d)
    assert d["errorCode"] == "DynamicPartitioning.MetadataExtractionFailed", d
    assert len(d["sequenceNumber"]) == 56, d
print(f"lake ok: {len(got)} records, {len(docs)} error documents")
