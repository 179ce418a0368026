"""The WSGI entry point: ``gunicorn gateway.wsgi:app``."""

import gc

from gateway import create_app

app = create_app()

# What was imported and built so far lives as long as the process, so the cyclic garbage
# collector need not walk it again: under load, each full collection of a gunicorn process paused
# all its requests, for far less once these objects are frozen (docs/benchmarks.md).  gunicorn
# imports this module in each worker process, after the fork.
gc.freeze()
