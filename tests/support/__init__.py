"""What tests share, by import (fixtures live in tests/conftest.py and use these):

* ``services``: throw-away PostgreSQL clusters, `bagula api` as a subprocess, tenants;
* ``cli``: running the `bagula` command;
* ``sdk``: fault-injecting proxies and silent servers for the client's tests;
* ``ml``: session frames from simulated traffic for the detectors' tests;
* ``superset``: Superset's assets, metadata and a served site.
"""
