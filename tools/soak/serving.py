"""What the soak scripts ask of a running server: JSON POSTs and /metrics counters."""
import json, urllib.request


def post(url, path, body, timeout=3600):
    """POSTs `body` as JSON to `url + path`; the JSON reply."""
    req = urllib.request.Request(url + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def metric(url, name):
    """The value of counter `name` on the server's /metrics (0 when absent)."""
    with urllib.request.urlopen(url + "/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.split()[-1])
    return 0.0
