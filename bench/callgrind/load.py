"""Sequential keep-alive requests, as `oha -n N -c 1` would send them."""
import http.client, sys
path, count = sys.argv[1], int(sys.argv[2])
headers = {"apikey": "bench-app-key"} if path.startswith("/key") else {}
conn = http.client.HTTPConnection("127.0.0.1", 18083)
for _ in range(count):
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    assert response.status == 200, (path, response.status)
conn.close()
