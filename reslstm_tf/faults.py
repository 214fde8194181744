"""Fault injection: die by a real SIGKILL at a named point, for the reliability tests.

Long jobs mark the places where a crash would hurt most (mid-step, between writing
a checkpoint and recording it, between writing a shard and indexing it) with
`fault_point("name")`. Normally that is a dictionary lookup and nothing else. With
the environment variable `RESLSTM_FAULT=name:N` set, the process kills itself with
SIGKILL (no cleanup, no `finally`, no flush: what a preempted machine or the OOM
killer does) the N-th time it reaches the point `name`; `name` alone means the first
time. Tests run a job under it, restart the job without it, and check nothing was
lost or duplicated.

Example:

    RESLSTM_FAULT=checkpoint_written:2 reslstm-train ...   # killed mid-checkpoint
"""

import os
import signal

ENV_VAR = "RESLSTM_FAULT"

_counts = {}


def _target():
    """Returns (point name, hit number) from RESLSTM_FAULT, or (None, 0) when unset."""
    spec = os.environ.get(ENV_VAR, "").strip()
    if not spec:
        return None, 0
    name, _, count = spec.partition(":")
    try:
        hit = int(count) if count else 1
    except ValueError:
        raise ValueError(
            f"{ENV_VAR} must look like 'point' or 'point:N'. Received: {spec!r}"
        ) from None
    return name, hit


def fault_point(name):
    """Kills this process with SIGKILL if RESLSTM_FAULT names `name` and its hit count is due."""
    target, hit = _target()
    if target != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == hit:
        os.kill(os.getpid(), signal.SIGKILL)
