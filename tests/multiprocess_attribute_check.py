"""The attribution job as one process of several (started by tests/multiprocess.py; see tests/test_multiprocess.py).

  python tests/multiprocess_attribute_check.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR WORKDIR MODEL_DIR [kill]

Runs ``experiments.attribute`` on the breast-cancer smoke config (12 examples in chunks of 2: 6 chunks). Each
process explains its own share of the chunks on its own devices and writes them into the shared store; process 0
writes the report. With ``kill``, process 1 kills itself with SIGKILL right after writing its first chunk, as a
preempted host would (the harness then kills its peer).
"""

from __future__ import annotations

import os
import signal

from tests import multiprocess


def config(model_dir: str):
  """The job every process (and the 1-process reference) runs."""
  from configs.attribute import breast_cancer
  c = breast_cancer.get_config("smoke")
  c.model.workdir = model_dir
  c.chunk_size = 2
  return c


def main() -> None:
  process_id, _, out_dir, rest = multiprocess.initialize()
  workdir, model_dir, kill = rest[0], rest[1], rest[2:] == ["kill"]
  from experiments import attribute

  def on_chunk(chunk: int) -> None:
    if kill and process_id == 1:
      os.kill(os.getpid(), signal.SIGKILL)

  out = attribute.run(config(model_dir), workdir, on_chunk=on_chunk)
  (out_dir / f"process_{process_id}.done").write_text(str(out["computed_chunks"]))


if __name__ == "__main__":
  main()
