"""Leave-one-out attributions: phi_i = v(1) - v(1 - e_i), d + 1 game evaluations.

Example:
  >>> import jax.numpy as jnp
  >>> from xattr import loo
  >>> v = lambda m: jnp.all(m, axis=1).astype(jnp.float32)
  >>> loo.leave_one_out(v, 3).tolist()
  [1.0, 1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from xattr import _checks, _loop

__all__ = ["leave_one_out"]


def leave_one_out(game: Callable[[jax.Array], jax.Array], num_players: int) -> jax.Array:
  """Drop in value when each player alone is removed from the grand coalition.

  Args:
    game: bool[n, d] -> float[n] or float[n, k].
    num_players: d (static).

  Returns:
    float[d] or float[d, k].
  """
  d = _checks.positive_int("num_players", num_players)
  phi, ok = _loop.dispatch(_leave_one_out, game, num_players=d)
  _loop.check_result("leave_one_out", phi, ok)
  return phi


def _leave_one_out(game, *, num_players):
  d = num_players
  masks = jnp.concatenate([jnp.ones((1, d), bool), ~jnp.eye(d, dtype=bool)])
  raw = game(masks)
  values = _loop.call_game(lambda _: raw, masks)
  phi = values[0] - values[1:]
  return (phi[:, 0] if jnp.ndim(raw) == 1 else phi), jnp.all(jnp.isfinite(values))
