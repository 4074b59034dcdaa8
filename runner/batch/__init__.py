"""The batch lane: rows through Bedrock batch inference (half price, no quota) before the on-demand pool.

::

    shards   pure: records -> JSONL shard files + rows files; Bedrock's output lines -> outcomes
    state    _job/batch.json: every shard's journey, saved the moment it changes; ``status``'s view
    lane     plan, submit, poll, collect (through ``bedrock.ControlPlane``, S3 through ``storage``)

``run_job`` calls :func:`runner.batch.lane.run_batch_lane` for a ``mode = "batch"`` job; ``status``
reads :mod:`runner.batch.state`, which knows nothing of the lane or of ``bedrock``.
"""
