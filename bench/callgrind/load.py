"""Sequential keep-alive requests, as `oha -n N -c 1` would send them: GETs, or with a third
argument POSTs of S4's JSON body of about that many bytes."""
import http.client, os, sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness.scenarios import json_body  # noqa: E402

path, count = sys.argv[1], int(sys.argv[2])
body = json_body(int(sys.argv[3])) if len(sys.argv) > 3 else None
headers = {"apikey": "bench-app-key"} if path.startswith("/key") else {}
if body is not None:
    headers["content-type"] = "application/json"
conn = http.client.HTTPConnection("127.0.0.1", 18083)
for _ in range(count):
    conn.request("POST" if body is not None else "GET", path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    assert response.status == 200, (path, response.status)
conn.close()
