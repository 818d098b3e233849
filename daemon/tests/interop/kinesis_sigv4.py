"""SigV4 against sluiced with [[api.credentials]]: the right secret works, a wrong secret
or an unknown key id fail with AWS's error types. Usage: kinesis_sigv4.py ENDPOINT."""
import sys

import boto3
from botocore.exceptions import ClientError

endpoint = sys.argv[1]


def client(akid, secret):
    return boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=akid, aws_secret_access_key=secret)


def code_of(fn, **kw):
    try:
        fn(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"]
    return "OK"


good = client("AKIDSLUICE", "s3cr3t")
assert code_of(good.put_record, StreamName="events", Data=b"x", PartitionKey="k") == "OK"
assert "events" in good.list_streams()["StreamNames"]
wrong = code_of(client("AKIDSLUICE", "nope").list_streams)
assert wrong == "InvalidSignatureException", wrong
unknown = code_of(client("AKIDOTHER", "s3cr3t").list_streams)
assert unknown == "UnrecognizedClientException", unknown

# A request signed by botocore, replayed with another body: the payload hash is checked
# against the body (a captured signature cannot carry another payload), with and without
# the x-amz-content-sha256 header; an unsigned payload is refused too.
import hashlib
import json
import urllib.error
import urllib.request

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def send(body, headers):
    req = urllib.request.Request(endpoint + "/", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def signed(body, content_sha=None):
    headers = {"Content-Type": "application/x-amz-json-1.1",
               "X-Amz-Target": "Kinesis_20131202.PutRecord"}
    if content_sha is not None:
        headers["X-Amz-Content-SHA256"] = content_sha
    req = AWSRequest(method="POST", url=endpoint + "/", data=body, headers=headers)
    SigV4Auth(Credentials("AKIDSLUICE", "s3cr3t"), "kinesis", "us-east-1").add_auth(req)
    return dict(req.headers.items())


body = json.dumps({"StreamName": "events", "Data": "eA==", "PartitionKey": "k"}).encode()
evil = json.dumps({"StreamName": "events", "Data": "ZXZpbA==", "PartitionKey": "k"}).encode()
for claim in (None, hashlib.sha256(body).hexdigest()):
    h = signed(body, claim)
    status, _ = send(body, h)
    assert status == 200, (claim, status)
    status, out = send(evil, h)
    assert status == 400 and out["__type"] == "InvalidSignatureException", (claim, status, out)
status, out = send(body, signed(body, "UNSIGNED-PAYLOAD"))
assert status == 400 and out["__type"] == "InvalidSignatureException", out
print("sigv4 ok")
