"""The batch pattern's resource: ``fourfold batch`` as a CronJob.

One run per schedule and never two at once (``concurrencyPolicy: Forbid``: two runs of one partition
would race for its commit). ``fourfold batch``'s exit codes are the Job's outcomes, through a
``podFailurePolicy``:

==========  ===========================================  ===============================================
exit code   ``fourfold batch`` means                     the Job
==========  ===========================================  ===============================================
0           committed                                    succeeds
1           any other error, nothing committed           retried, up to ``backoffLimit`` times
2           a malformed option (a usage error)           fails at once: a retry would fail the same way
3           too many rejected rows, nothing committed    fails at once: the input, not the run, is wrong
==========  ===========================================  ===============================================

A pod that was evicted, preempted or lost with its node (the ``DisruptionTarget`` condition) is retried
without counting against ``backoffLimit``.
"""

from __future__ import annotations

from typing import Any

from fourfold.deploy.k8s import pods
from fourfold.deploy.model_info import ModelInfo
from fourfold.deploy.options import Batch, Common

__all__ = ["EXIT_CODES", "FAIL_AT_ONCE", "resources"]

EXIT_CODES = {0: "committed", 1: "failed, nothing committed (retried)", 2: "a malformed option",
              3: "too many rejected rows, nothing committed"}  # fmt: skip
FAIL_AT_ONCE = (2, 3)


def resources(common: Common, batch: Batch, model: ModelInfo, uri: str) -> dict[str, dict[str, Any]]:
    name = f"{common.name}-batch"
    lbls = pods.labels(name, "batch", model.name)
    threads = max(1, common.resources.cores // batch.workers)
    args = ["batch", pods.model_uri(common, model), "--input", batch.input, "--output", batch.output,
            "--workers", str(batch.workers), "--threads", str(threads)]  # fmt: skip
    if batch.partition is not None:
        args += ["--partition", batch.partition]
    container = {"name": "batch", "args": args, "env": pods.env(common, {})}
    pod = pods.pod_spec(
        common, model, container, common.image_for("batch", model.tag), source_uri=uri, restartPolicy="Never"
    )
    job: dict[str, Any] = {
        "backoffLimit": batch.backoff_limit,
        "podFailurePolicy": {
            "rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "batch", "operator": "In",
                                                      "values": list(FAIL_AT_ONCE)}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {"metadata": {"labels": lbls}, "spec": pod},
    }  # fmt: skip
    if batch.active_deadline_s is not None:
        job["activeDeadlineSeconds"] = batch.active_deadline_s
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": pods.metadata(name, common, lbls),
        "spec": {
            "schedule": batch.schedule,
            "timeZone": batch.time_zone,
            "concurrencyPolicy": "Forbid",
            # a run missed by more than an hour (controller down) is skipped, not started late
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"metadata": {"labels": lbls}, "spec": job},
        },
    }
    return {"cronjob.yaml": cron}
