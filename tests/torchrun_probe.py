"""What tests/scripts/test_multinode.py launches with torchrun in place of a script: `python torchrun_probe.py
main.py ARGS` runs main.py's (or main_sample.py's) main(ARGS) as `torchrun main.py ARGS` would, and
records what this process was given to do, which the scripts' own outputs cannot tell apart by
process: the training items it drew per epoch and the sample shards it wrote. The record goes to
$PROBE_DIR/rank<RANK>-<script>.json with the torchrun environment the process saw.
"""
import json
import os
import sys
from pathlib import Path

import main
import main_sample
from sampling import sample_io
from training.data import CropSampler

SCRIPTS = {"main.py": main.main, "main_sample.py": main_sample.main}

record = {name: os.environ.get(name) for name in ("RANK", "LOCAL_RANK", "GROUP_RANK", "WORLD_SIZE")}
record.update(items={}, shards=[])

crop_sampler_iter = CropSampler.__iter__


def recording_iter(self):
    drawn = record["items"].setdefault(str(self.epoch), [])
    for item in crop_sampler_iter(self):
        drawn.append(item[0])
        yield item


write_shard = sample_io.write_shard


def recording_write_shard(shard_dir, start, end, images, labels):
    record["shards"].append([start, end])
    return write_shard(shard_dir, start, end, images, labels)


if __name__ == "__main__":
    script, argv = sys.argv[1], sys.argv[2:]
    CropSampler.__iter__ = recording_iter
    sample_io.write_shard = recording_write_shard
    try:
        SCRIPTS[script](argv)
    finally:
        out = Path(os.environ["PROBE_DIR"]) / f"rank{os.environ['RANK']}-{Path(script).stem}.json"
        out.write_text(json.dumps(record))
