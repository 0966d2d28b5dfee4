"""tokenvend's benchmarks: `make bench` (or `python -m bench`) runs them all, prints a table
and writes bench/results.json.

Every figure is a median (and a p99 where it says so) or a ratio of figures measured side by
side in the same run: the machines this runs on are shared and noisy, so absolute timings
move between runs while ratios mostly do not. Nothing leaves loopback.

- `bench.warm`: the vend handler answering GET for a cached token, in-process.
- `bench.cold`: each function module's import time, against `import boto3`.
- `bench.stampede`: concurrent cold vends on moto's server: token-endpoint and AWS calls.
- `bench.fleet`: one scheduled run over 1,000 and 10,000 connections.
- `bench.client_cost`: `TokenClient.get_token` for a cached token.
"""
