"""AWS's validation answers, table-driven: every case of validation_table.json is sent,
signed with SigV4, and its status, error type and message are compared with AWS's.
Usage: validation_table.py ENDPOINT [OP_SUBSTRING]

Each case: {"service": "kinesis"|"firehose", "op", "body", "status", "type", "message" or
"message_prefix", "source"}. A case without "type" only checks the status (unknown members
are ignored, for instance). The placeholders ${STREAM}, ${STREAM_ARN} and ${HOSE} in a body
or message stand for the fixtures made first: a 2-shard stream and a Direct PUT delivery
stream with unique names; ${UNIQ} is this run's unique tag (names a create case must not
find taken). The fixtures, and anything a wrongly accepted create case made, are deleted
at the end. Prints every mismatch, then `ok` as its last
line when all cases match; exits 1 otherwise.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ENDPOINT = sys.argv[1].rstrip("/")
ONLY = sys.argv[2] if len(sys.argv) > 2 else None
ACCOUNT = "000000000000"
TARGETS = {"kinesis": "Kinesis_20131202", "firehose": "Firehose_20150804"}
CREDS = Credentials("x", "x")


def call(service, op, body):
    """One signed JSON 1.1 request: (status, decoded body or raw text)."""
    data = body if isinstance(body, str) else json.dumps(body)
    data = data.encode()
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"{TARGETS[service]}.{op}"}
    req = AWSRequest(method="POST", url=ENDPOINT + "/", data=data, headers=headers)
    SigV4Auth(CREDS, service, "us-east-1").add_auth(req)
    http = urllib.request.Request(ENDPOINT + "/", data=data, headers=dict(req.headers.items()), method="POST")
    try:
        with urllib.request.urlopen(http, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw or b"{}")
    except ValueError:
        return status, raw[:300].decode("utf-8", "replace")


def ok_call(service, op, body):
    status, out = call(service, op, body)
    assert status == 200, f"fixture {op}: {status} {out}"
    return out


def substitute(value, names):
    """The fixtures' names in place of the placeholders, anywhere in a JSON value."""
    if isinstance(value, str):
        for k, v in names.items():
            value = value.replace("${" + k + "}", v)
        return value
    if isinstance(value, list):
        return [substitute(x, names) for x in value]
    if isinstance(value, dict):
        return {substitute(k, names): substitute(v, names) for k, v in value.items()}
    return value


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "validation_table.json")
    with open(path, encoding="utf-8") as fh:
        cases = json.load(fh)
    tag = uuid.uuid4().hex[:8]
    stream, hose = f"vt-{tag}", f"vt-hose-{tag}"
    names = {"UNIQ": tag, "STREAM": stream, "STREAM_ARN": f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{stream}", "HOSE": hose}
    ok_call("kinesis", "CreateStream", {"StreamName": stream, "ShardCount": 2})
    deadline = time.time() + 30
    while ok_call("kinesis", "DescribeStreamSummary", {"StreamName": stream})["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        assert time.time() < deadline, "fixture stream not ACTIVE"
        time.sleep(0.2)
    ok_call("firehose", "CreateDeliveryStream", {
        "DeliveryStreamName": hose, "DeliveryStreamType": "DirectPut",
        "ExtendedS3DestinationConfiguration": {"RoleARN": f"arn:aws:iam::{ACCOUNT}:role/firehose", "BucketARN": f"arn:aws:s3:::{hose}"},
    })
    failures, ran = [], 0
    try:
        for i, case in enumerate(cases):
            if ONLY and ONLY not in case["op"]:
                continue
            ran += 1
            case = substitute(case, names)
            status, out = call(case["service"], case["op"], case["body"])
            problems = []
            if status != case["status"]:
                problems.append(f"status {status} != {case['status']}")
            if "type" in case:
                if not isinstance(out, dict):
                    problems.append(f"not a JSON error: {out!r}")
                else:
                    got_type = str(out.get("__type", "")).rsplit("#", 1)[-1]
                    got_msg = out.get("message", out.get("Message", ""))
                    if got_type != case["type"]:
                        problems.append(f"type {got_type!r} != {case['type']!r}")
                    if "message" in case and got_msg != case["message"]:
                        problems.append(f"message:\n      got:  {got_msg!r}\n      want: {case['message']!r}")
                    if "message_prefix" in case and not str(got_msg).startswith(case["message_prefix"]):
                        problems.append(f"message prefix:\n      got:  {got_msg!r}\n      want: {case['message_prefix']!r}...")
            if problems:
                body = json.dumps(case["body"])
                failures.append(i)
                print(f"MISMATCH #{i} {case['service']} {case['op']} {body[:300]}")
                for p in problems:
                    print("    " + p)
                print(f"    source: {case['source']}")
    finally:
        call("firehose", "DeleteDeliveryStream", {"DeliveryStreamName": hose})
        call("kinesis", "DeleteStream", {"StreamName": stream, "EnforceConsumerDeletion": True})
        for case in cases:
            name = case["body"].get("StreamName") if isinstance(case["body"], dict) else None
            if case["op"] == "CreateStream" and isinstance(name, str) and "${UNIQ}" in name:
                call("kinesis", "DeleteStream", {"StreamName": substitute(name, names)})
            name = case["body"].get("DeliveryStreamName") if isinstance(case["body"], dict) else None
            if case["op"] == "CreateDeliveryStream" and isinstance(name, str) and "${UNIQ}" in name:
                call("firehose", "DeleteDeliveryStream", {"DeliveryStreamName": substitute(name, names)})
    print(f"{ran - len(failures)}/{ran} cases match AWS")
    if failures:
        sys.exit(1)
    print("ok")


main()
