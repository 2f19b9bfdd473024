"""Records every task result (host, task, changed, failed, the command's start and end) as JSON lines, for the fleet tests."""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: timeline
    type: aggregate
    short_description: every task result as one JSON line in $AIRLOCK_TIMELINE
    description: For airlock's fleet tests and benchmark.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "timeline"
    CALLBACK_NEEDS_ENABLED = True

    def _record(self, result, status: str) -> None:
        values = result._result
        line = {
            "host": result._host.get_name(),
            "task": result._task.get_name(),
            "status": status,
            "changed": bool(values.get("changed")),
            "start": values.get("start"),
            "end": values.get("end"),
            "rc": values.get("rc"),
            "stderr": (values.get("stderr") or values.get("msg") or "")[-400:] if status == "failed" else "",
        }
        with open(os.environ["AIRLOCK_TIMELINE"], "a") as handle:
            handle.write(json.dumps(line) + "\n")

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")
