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
print("sigv4 ok")
