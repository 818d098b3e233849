"""Posts CloudEvents to sluice's `http` source with the CloudEvents Python SDK (PyPI
`cloudevents`, its HTTP binding): structured and binary mode through the SDK, batch mode
as the spec's JSON array of the SDK's structured events. Usage: URL ACCESS_KEY PREFIX.
Prints the ids it posted, then `ok`."""
import sys
import urllib.request

from cloudevents.core.bindings import http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

url, key, prefix = sys.argv[1], sys.argv[2], sys.argv[3]


def post(headers, body):
    headers = dict(headers)
    headers["Authorization"] = "Bearer " + key
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200, r.status
        return r.read()


def event(i, data):
    return CloudEvent(
        attributes={
            "id": f"{prefix}-{i}",
            "type": "sdk.test",
            "source": "https://example.com/sdk",
            "subject": f"item {i}",
        },
        data=data,
    )


ids = []
# Structured mode.
for i in range(3):
    ev = event(i, {"n": i, "text": "structured\nwith a line break"})
    msg = http.to_structured_event(ev)
    post(msg.headers, msg.body)
    ids.append(ev.get_id())
# Binary mode: JSON data, then bytes.
for i in range(3, 5):
    ev = event(i, {"n": i, "mode": "binary"})
    msg = http.to_binary_event(ev)
    post(msg.headers, msg.body)
    ids.append(ev.get_id())
ev = CloudEvent(
    attributes={
        "id": f"{prefix}-5",
        "type": "sdk.test",
        "source": "https://example.com/sdk",
        "datacontenttype": "application/octet-stream",
    },
    data=b"\x00\x01binary",
)
msg = http.to_binary_event(ev)
post(msg.headers, msg.body)
ids.append(ev.get_id())
# Batch mode: a JSON array of structured events.
fmt = JSONFormat()
batch = [event(i, {"n": i, "mode": "batch"}) for i in range(6, 9)]
body = b"[" + b",".join(fmt.write(e) for e in batch) + b"]"
post({"Content-Type": "application/cloudevents-batch+json"}, body)
ids.extend(e.get_id() for e in batch)
print("\n".join(ids))
print("ok")
