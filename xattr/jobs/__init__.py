"""Batch jobs built on the library: the attribution job that explains every example of a dataset into a store.

Modules: :mod:`~xattr.jobs.tasks` (the model, game and data a config names, restored from finished training runs),
:mod:`~xattr.jobs.attribution` (the per-example function over the method registry, the store's layout and
fingerprint, the resumable chunk loop) and :mod:`~xattr.jobs.report` (statistics streamed over the store,
``report.md`` and figures). ``python -m experiments.attribute`` composes them.

Example:
  >>> from xattr import jobs
  >>> sorted(jobs.MODEL_KINDS)
  ['mlp', 'vit', 'vit_shapley']
"""

from xattr.jobs import attribution, report, tasks
from xattr.jobs.attribution import (EXPLAINER, check_method, explain_function, explain_store, job_identity,
                                    load_amortized_explainer, make_explain_one, method_names, open_store,
                                    output_specs)
from xattr.jobs.report import summarize, write_report
from xattr.jobs.tasks import MODEL_KINDS, Task, build_task, load_config_file, placeholder_module

__all__ = ["EXPLAINER", "MODEL_KINDS", "Task", "attribution", "build_task", "check_method", "explain_function",
           "explain_store", "job_identity", "load_amortized_explainer", "load_config_file", "make_explain_one",
           "method_names", "open_store", "output_specs", "placeholder_module", "report", "summarize", "tasks",
           "write_report"]
