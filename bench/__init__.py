"""tokenvend's benchmarks: `make bench` (or `python -m bench`) runs them all, prints a table
and writes bench/results.json.

Every figure is a median (and a p99 where it says so) or a ratio of figures measured side by
side in the same run: the machines this runs on are shared and noisy, so absolute timings
move between runs while ratios mostly do not. Nothing leaves loopback.

- `bench.warm`: the vend handler answering GET for a cached token, in-process.
- `bench.cold`: each function module's import time, against `import boto3`; then
  `bench.outsider`: the vend function's cold start as whole processes with only the
  layer's packages installed and Lambda's environment.
- `bench.stampede`: concurrent cold vends on moto's server: token-endpoint and AWS calls.
- `bench.fleet`: one scheduled run over 1,000 and 10,000 connections.
- `bench.client_cost`: `TokenClient` on a cached token beside msal and Authlib, and their
  stampedes.
- `bench.cost`: dollars per million vends for both API types; `bench.plot` draws the key
  figures in bench/results.png.
"""
