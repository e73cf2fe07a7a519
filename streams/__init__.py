"""Stream processors (faust-streaming): validate, keep per-device state, score, alert, write the TSDB.

Processors are thin Faust loops around pure functions from ``models`` and ``alerts``
(:mod:`fleetpulse.streams.processing`); see :mod:`fleetpulse.streams.app` for the
delivery guarantee (at-least-once, idempotent effects, effects durable before state).

What other components (and ``fleetpulse demo``) use:

* ``kafka_admin.create_configured_topics(kafka_settings, stream_settings)`` -- create every
  missing topic with ``[streams] partitions``/``replication_factor`` (inventory compacted);
  ``fleetpulse topics create`` on the command line. Topics the principal may not create (ACLs)
  are left to the cluster, unless one it uses is missing: ``TopicCreationError`` names it.
* ``fleetpulse worker`` -- run a worker with the server settings (creates missing topics
  first). ``process.WorkerProcess(kafka, {"web_port": 6066, "store": "rocksdb", ...}, log_path)``
  runs it as a child process (``start``/``wait_ready``/``health``/``stop``/``kill9``).
* ``app.group_id(settings)`` -- the worker's consumer group: ``<topic_prefix><streams.app_id>``
  (default ``fleetpulse``).
* ``await kafka_admin.consumer_lag(kafka_settings, group_id)`` -- records the workers have not
  committed yet on health/mobile/inventory; ``process.wait_caught_up(kafka, group_id)`` blocks
  until it is 0 twice in a row (the demo's "pipeline has caught up").
* HTTP on ``[streams] web_host:web_port`` (default 127.0.0.1:6066): ``/metrics`` (Prometheus)
  and ``/health`` (JSON: assigned partitions, rebalancing, consumer lag, events, last batch age).
* TSDB: ``points.py`` is the schema (device, disk, battery, risk, alert, pipeline, drift).

Operational notes: reports dated more than ``max_clock_skew`` (10 min) ahead of the worker's
clock are dead-lettered, so simulated fleets must not run into the future. Static group
membership (``instance_id``, default ``<hostname>-<web_port>``) needs a stable web port per
instance: Faust's assignor checks the member's URL when a static member rejoins.
"""
