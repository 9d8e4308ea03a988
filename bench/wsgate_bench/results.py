"""results.json, what scripts/bench measured: one entry per scenario, each with the stamp of the
run that measured it (commit and machine, start and end, the command, repeats, scale, load
average). A full run (no --only) replaces the file. A partial run (--only) replaces only the
scenarios it ran and keeps every other one as it was, stamp included, so that --report-only later
renders each part from the run that measured it. The top-level stamp is the last full run's (the
document's "run" block); a file only partial runs wrote has none."""

import json

from .common import BenchError

# What a stamp holds, top level (the run) and in every scenario (the run that measured it).
STAMP_KEYS = ("machine", "started", "finished", "command", "only", "repeats", "scale",
              "load_before", "load_after")


def stamp(res):
    """The run's stamp: its STAMP_KEYS present in res."""
    return {k: res[k] for k in STAMP_KEYS if k in res}


def stamp_of(res, scenario):
    """The stamp of the run that measured scenario: its own, or (a file written before stamps
    were per scenario) the top level's."""
    return (res.get(scenario) or {}).get("stamp") or stamp(res)


def load(path):
    """The saved results ({} without a file); BenchError when it is not a results object."""
    if not path.exists():
        return {}
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BenchError(f"{path}: not readable as JSON ({e}); move it away to start afresh")
    if not isinstance(res, dict):
        raise BenchError(f"{path}: not a JSON object; move it away to start afresh")
    return res


def merge(previous, run, ran):
    """The results to save: run (this run's stamp at its top level, the scenarios it finished,
    named by ran) over previous. A full run keeps nothing of previous; a partial one keeps
    previous's top-level stamp and its other scenarios, each with the stamp it had."""
    partial = bool(run.get("only"))
    out = {}
    if partial:
        for k, v in previous.items():
            if k in STAMP_KEYS:
                out[k] = v
            elif isinstance(v, dict):
                out[k] = dict(v, stamp=stamp_of(previous, k))
            else:
                out[k] = v
    else:
        out.update(stamp(run))
    st = stamp(run)
    for s in ran:
        out[s] = dict(run[s], stamp=st)
    return out


def save(path, res):
    """Writes res whole or not at all: an interrupted write leaves the previous file."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(path)
