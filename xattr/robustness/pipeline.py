"""The robustness study of one config, end to end: models, Lipschitz constants, the three experiments, results.

:func:`run` trains (or restores) every model under ``workdir/models``, computes the study's arrays (or loads them:
one bundle ``workdir/results.npz`` fingerprinted by the config less :data:`study.NOT_RESULTS`, the data and the
library code) and writes the report (:mod:`xattr.robustness.report`).

Example:
  >>> from xattr.robustness import pipeline
  >>> callable(pipeline.run)
  True
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xattr import artifacts
from xattr.robustness import bounds, lipschitz, models, report, study
from xattr.robustness import problem as problem_lib

__all__ = ["train_models", "surrogate_fn", "lipschitz_table", "input_results", "model_results", "pair_results",
           "compute", "run"]


def _accuracy(model: Any, prob: problem_lib.Problem) -> float:
  return float(np.mean(np.asarray(model(jnp.asarray(prob.x_test))).argmax(-1) == prob.y_test))


def train_models(config: Any, prob: problem_lib.Problem, workdir: str | None) -> dict[str, Any]:
  """One classifier per kind of ``config.kinds`` plus ``'retrained'`` (plain, seed + 1, a random
  ``config.retrain_fraction`` of the training rows)."""
  m = config.model
  out = {kind: models.train_classifier(kind, prob.x_train, prob.y_train, prob.num_classes, m, seed=config.seed,
                                       workdir=models.checkpoint_dir(workdir, f"models/{kind}"),
                                       progress=config.progress) for kind in config.kinds}
  rng = np.random.default_rng(config.seed + 1)
  rows = np.sort(rng.choice(len(prob.x_train), int(config.retrain_fraction * len(prob.x_train)), replace=False))
  out["retrained"] = models.train_classifier("plain", prob.x_train[rows], prob.y_train[rows], prob.num_classes, m,
                                             seed=config.seed + 1, progress=config.progress,
                                             workdir=models.checkpoint_dir(workdir, "models/retrained"))
  return out


def surrogate_fn(out: Any, prob: problem_lib.Problem, config: Any, workdir: str | None, name: str
                 ) -> tuple[Any, float]:
  """(surrogate (x batch, mask) -> float[b], its Lipschitz upper bound in x) fitted to ``out`` on the training data."""
  net = models.train_surrogate(np.asarray(out(jnp.asarray(prob.x_train))), prob.x_train, prob.groups, config.model,
                               seed=config.seed + 3, workdir=models.checkpoint_dir(workdir, f"models/{name}"),
                               progress=config.progress)
  upper = lipschitz.mlp_upper(models.surrogate_layers(net), activation=config.model.activation, output=0)
  return (lambda xb, m: net(xb, m)[..., 0]), float(upper)


def lipschitz_table(config: Any, prob: problem_lib.Problem, trained: dict[str, Any]) -> dict[str, np.ndarray]:
  """``lipschitz/<kind>`` float[4]: (certified upper, power-iteration estimate, gradient lower bound, accuracy)."""
  out = {}
  points = jnp.asarray(prob.x_test[:config.lipschitz_points])
  for kind, model in trained.items():
    f = study.output_fn(model, config.output, config.explain_class)
    upper = study.output_lipschitz(model, config.output, config.explain_class, config.model.activation)
    power = study.output_lipschitz(model, config.output, config.explain_class, config.model.activation, "power")
    lower = jax.jit(lambda p, f=f: lipschitz.gradient_lower(f, p, num_steps=config.lipschitz_steps, step_size=0.05))(
        points)
    out[f"lipschitz/{kind}"] = np.array([float(upper), float(power), float(lower), _accuracy(model, prob)])
  return out


def _ball_bounds(consts: np.ndarray, lip: float, eps: np.ndarray, gain: float = 1.0) -> np.ndarray:
  return consts[None, :] * lip * gain * np.asarray(eps)[:, None]                 # [E, t]


def input_results(config: Any, prob: problem_lib.Problem, rem: study.Removals, trained: dict[str, Any],
                  surrogate: tuple[Any, float], mesh: Any = None) -> dict[str, np.ndarray]:
  """``input/<kind>/<removal>/{gaussian,pgd}`` float[n, E, t] and ``.../bound`` float[E, t] (C_t L eps, times
  max_S ||a_S|| for the conditional coupling bound; ``conditional/bound_tv``: the TV form over the eps-ball)."""
  w, consts = study.technique_stack(tuple(config.techniques), rem.d)
  eps = np.asarray(config.eps, np.float32)
  inputs = prob.x_test[:config.num_inputs]
  out = {}
  for kind in config.kinds:
    model = trained[kind]
    f = study.output_fn(model, config.output, config.explain_class)
    lip = float(study.output_lipschitz(model, config.output, config.explain_class, config.model.activation))
    with_surrogate = surrogate[0] if kind == "plain" else None
    tables = rem.tables(f, with_surrogate)
    measured = study.input_study(tables, w, inputs, jax.random.key(config.seed + 11), eps,
                                 num_steps=config.pgd_steps, mesh=mesh, chunk_size=config.chunk_size)
    out.update({f"input/{kind}/{k}": v for k, v in measured.items()})
    for name in tables:
      scale = surrogate[1] if name == "surrogate" else lip
      gain = float(bounds.conditional_gain(rem.cond)) if name == "conditional" else 1.0
      out[f"input/{kind}/{name}/bound"] = _ball_bounds(consts, scale, eps, gain)
    if rem.cond is not None and config.output == "probability":
      tv = np.array([float(_tv_ball(rem.cond, lip, e)) for e in eps])
      out[f"input/{kind}/conditional/bound_tv"] = consts[None, :] * tv[:, None]
  return out


def _tv_ball(cond: bounds.GaussianConditional, lip: float, eps: float) -> jax.Array:
  """max over the eps-ball of the TV-form bound: L eps + TV at the largest Mahalanobis shift (range 1)."""
  kappa = jnp.linalg.svd(jnp.einsum("tfg,tgh->tfh", cond.inv_chol, cond.a), compute_uv=False)[:, 0]
  return (lip * eps + 2.0 * jax.scipy.stats.norm.cdf(eps * kappa / 2.0) - 1.0).max()


def _out_factor(config: Any) -> float:
  return lipschitz.PROBABILITY_FACTOR if config.output == "probability" else 1.0


def _ball_difference(config: Any, rem: study.Removals, f_model: Any, g_model: Any, inputs: np.ndarray
                     ) -> dict[str, np.ndarray]:
  """Certified sup over the ball holding the removal's hybrid points of |f - g| (baseline, marginal) float[n]."""
  ka, ba = models.layers(f_model)
  kb, bb = models.layers(g_model)
  rho = lipschitz.ACTIVATION_LIPSCHITZ[config.model.activation]
  out = {}
  for name, others in (("baseline", rem.reference[None]), ("marginal", rem.background)):
    radius = [bounds.hybrid_radius(x, others) for x in inputs]
    out[f"{name}/sup_ball"] = np.array([_out_factor(config) * float(bounds.mlp_difference_bound(
        ka, ba, kb, bb, r, activation_lipschitz=rho)) for r in radius])
  return out


def model_results(config: Any, prob: problem_lib.Problem, rem: study.Removals, trained: dict[str, Any]
                  ) -> dict[str, np.ndarray]:
  """``model/noise_<s>/<removal>/<field>`` (stacked over ``config.noise_draws``) and ``model/retrained/...``:
  the fields of :func:`study.model_changes` plus ``sup_ball`` (:func:`_ball_difference`). One compilation serves
  every perturbed and the retrained model (their parameters are the jitted function's argument)."""
  w, _ = study.technique_stack(tuple(config.techniques), rem.d)
  plain = trained["plain"]
  f = study.output_fn(plain, config.output, config.explain_class)
  graphdef, state = nnx.split(plain)
  g_of = lambda st: study.output_fn(nnx.merge(graphdef, st), config.output, config.explain_class)
  measure = jax.jit(lambda st, x: study.changes(rem, w, f, g_of(st), x))
  inputs = prob.x_test[:config.num_inputs]

  def case(st: Any) -> dict[str, np.ndarray]:
    got = {k: np.asarray(v) for k, v in measure(st, jnp.asarray(inputs)).items()}
    return {**got, **_ball_difference(config, rem, plain, nnx.merge(graphdef, st), inputs)}

  out = {}
  for s, scale in enumerate(config.noise_scales):
    draws = [case(study.perturbed_state(state, scale, jax.random.key(1000 * s + r + config.seed)))
             for r in range(config.noise_draws)]
    out.update({f"model/noise_{s}/{k}": np.stack([d[k] for d in draws]) for k in draws[0]})
  out.update({f"model/retrained/{k}": v[None] for k, v in case(nnx.split(trained["retrained"])[1]).items()})
  return out


def pair_results(config: Any, prob: problem_lib.Problem, rem: study.Removals, trained: dict[str, Any],
                 surrogate: tuple[Any, float], workdir: str | None) -> dict[str, np.ndarray]:
  """``pair/<removal>/<field>`` for f (plain) and the pair g = f + h (:func:`study.pair_model`); the surrogate of g
  is fitted to g on the training data like f's; ``pair/info``: (i, j, correlation, tau, max |h| on train and test
  rows, max |h| over the baseline hybrid points)."""
  w, _ = study.technique_stack(tuple(config.techniques), rem.d)
  f = study.output_fn(trained["plain"], config.output, config.explain_class)
  g, info = study.pair_model(f, prob.x_train, config.pair_amplitude)
  inputs = prob.x_test[:config.num_inputs]
  out = {f"pair/{k}": v for k, v in study.model_changes(rem, w, f, g, inputs).items()}
  s_g, _ = surrogate_fn(g, prob, config, workdir, "surrogate_pair")
  tf = rem.tables(f, surrogate[0])["surrogate"]
  tg = rem.tables(g, s_g)["surrogate"]
  x = jnp.asarray(inputs)
  diff = jax.jit(jax.vmap(lambda xi: tg(xi) - tf(xi)))(x)
  out["pair/surrogate/change"] = np.asarray(jnp.linalg.norm(jnp.einsum("tdn,bn->btd", w, diff), axis=-1))
  out["pair/surrogate/delta"] = np.asarray(jnp.abs(diff).max(-1))
  on_data = max(float(jnp.abs(g(jnp.asarray(a)) - f(jnp.asarray(a))).max()) for a in (prob.x_train, prob.x_test))
  out["pair/info"] = np.array([info["i"], info["j"], info["correlation"], info["tau"], on_data,
                               float(out["pair/baseline/sup_points"].max())])
  return out


def compute(config: Any, prob: problem_lib.Problem, workdir: str | None, mesh: Any = None) -> dict[str, np.ndarray]:
  """Every array of the study (keys ``lipschitz/``, ``input/``, ``model/``, ``pair/``, ``timing/``)."""
  t0 = time.perf_counter()
  trained = train_models(config, prob, workdir)
  rem = study.removals(config, prob)
  f = study.output_fn(trained["plain"], config.output, config.explain_class)
  surrogate = surrogate_fn(f, prob, config, workdir, "surrogate")
  out = {"timing/train": np.array(time.perf_counter() - t0)}
  stages = (("lipschitz", lambda: lipschitz_table(config, prob, trained)),
            ("input", lambda: input_results(config, prob, rem, trained, surrogate, mesh)),
            ("model", lambda: model_results(config, prob, rem, trained)),
            ("pair", lambda: pair_results(config, prob, rem, trained, surrogate, workdir)))
  for name, stage_fn in stages:
    t = time.perf_counter()
    out.update(stage_fn())
    out[f"timing/{name}"] = np.array(time.perf_counter() - t)
  return out


def _result_config(config: Any) -> dict[str, Any]:
  d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return {k: v for k, v in d.items() if k not in study.NOT_RESULTS}


def run(config: Any, workdir: str, *, mesh: Any = None) -> dict[str, Any]:
  """Computes (or loads) the study's results and writes the report; returns ``{"paths", "summary"}``."""
  os.makedirs(workdir, exist_ok=True)
  prob = problem_lib.load(config)
  fp = artifacts.fingerprint("robustness", _result_config(config), data=(prob.x_train, prob.x_test),
                             modules=study.MODULES)
  results = artifacts.compute_or_load(os.path.join(workdir, "results.npz"), fp,
                                      lambda: compute(config, prob, workdir, mesh))
  return report.write(config, prob, results, workdir)
