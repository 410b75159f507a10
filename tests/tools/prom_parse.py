"""Parses a Prometheus text exposition from stdin with the official Python client's
parser (Debian's python3-prometheus-client) and prints its samples as one JSON line:
{"families":[{"name","type"}],"samples":[{"name","labels","value"}]}. Exits 1 on any
parse error, so a malformed page fails the test that feeds it."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
families, samples = [], []
try:
    for f in text_string_to_metric_families(text):
        families.append({"name": f.name, "type": f.type})
        for s in f.samples:
            samples.append({"name": s.name, "labels": dict(s.labels), "value": s.value})
except Exception as e:  # the parser raises ValueError and friends
    print(f"parse error: {e}", file=sys.stderr)
    sys.exit(1)
print(json.dumps({"families": families, "samples": samples}))
