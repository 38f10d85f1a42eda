import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from xattr import masks


def _chi_square_pvalue(sizes, probs):
  counts = np.bincount(np.asarray(sizes), minlength=len(probs))
  support = probs > 0
  assert counts[~support].sum() == 0, "sizes outside the support were drawn"
  return stats.chisquare(counts[support], probs[support] * counts.sum()).pvalue


@pytest.mark.parametrize("paired", [False, True])
def test_shapley_kernel_size_distribution(paired):
  d, n = 12, 20000
  z = masks.shapley_kernel(jax.random.key(1), d, n, paired=paired)
  assert z.shape == (n, d) and z.dtype == jnp.bool_
  sizes = z.sum(1)
  assert int(sizes.min()) >= 1 and int(sizes.max()) <= d - 1   # never empty or full
  assert _chi_square_pvalue(sizes, masks.shapley_kernel_size_probs(d)) > 1e-3


def test_shapley_kernel_at_196_players_has_no_empty_or_full():
  # The pitfall in ViT Shapley's public sampler: ~11% full and ~1.5% empty coalitions at d = 196.
  z = masks.shapley_kernel(jax.random.key(0), 196, 4096)
  sizes = np.asarray(z.sum(1))
  assert sizes.min() >= 1 and sizes.max() <= 195
  # p(k) is tiny mid-range, so test coarse size bins (each expected count >= 5).
  edges = np.array([1, 2, 3, 4, 6, 11, 31, 166, 186, 191, 193, 194, 195, 196])
  probs = masks.shapley_kernel_size_probs(196)
  expected = np.array([probs[a:b].sum() for a, b in zip(edges[:-1], edges[1:])])
  observed = np.array([((sizes >= a) & (sizes < b)).sum() for a, b in zip(edges[:-1], edges[1:])])
  assert stats.chisquare(observed, expected / expected.sum() * observed.sum()).pvalue > 1e-3


def test_uniform_cardinality_sizes_uniform():
  d, n = 9, 20000
  z = masks.uniform_cardinality(jax.random.key(2), d, n)
  assert _chi_square_pvalue(z.sum(1), np.full(d + 1, 1 / (d + 1))) > 1e-3


def test_subsets_are_uniform_given_size():
  # Given the size, each player is equally likely to be in the subset.
  z = masks.subsets_of_size(jax.random.key(3), jnp.full((30000,), 3), 6)
  counts = np.asarray(z.sum(0))
  assert stats.chisquare(counts).pvalue > 1e-3


def test_bernoulli_rate():
  z = masks.bernoulli(jax.random.key(4), 10, 20000, p=0.3)
  rate = float(z.mean())
  assert abs(rate - 0.3) < 4 * np.sqrt(0.3 * 0.7 / z.size)


@pytest.mark.parametrize("sampler", [masks.shapley_kernel, masks.uniform_cardinality, masks.bernoulli])
def test_pairs_are_adjacent_complements(sampler):
  z = sampler(jax.random.key(5), 7, 64, paired=True)
  assert bool((z[0::2] == ~z[1::2]).all())


def test_paired_needs_even_count():
  with pytest.raises(ValueError, match="num_samples must be even"):
    masks.shapley_kernel(jax.random.key(0), 5, 7, paired=True)


@pytest.mark.parametrize("sampler", [masks.shapley_kernel, masks.uniform_cardinality, masks.bernoulli,
                                     masks.permutations])
def test_same_key_same_masks_and_vmappable(sampler):
  key = jax.random.key(7)
  a, b = sampler(key, 8, 16), sampler(key, 8, 16)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, sampler(jax.random.key(8), 8, 16))
  batched = jax.vmap(lambda k: sampler(k, 8, 16))(jax.random.split(key, 3))
  assert batched.shape == (3, 16, 8)
  np.testing.assert_array_equal(batched[1], sampler(jax.random.split(key, 3)[1], 8, 16))


def test_permutations_are_permutations_and_uniform():
  perms = np.asarray(masks.permutations(jax.random.key(9), 4, 24000))
  np.testing.assert_array_equal(np.sort(perms, 1), np.tile(np.arange(4), (24000, 1)))
  # Which player comes first is uniform.
  assert stats.chisquare(np.bincount(perms[:, 0], minlength=4)).pvalue > 1e-3
  anti = masks.permutations(jax.random.key(9), 5, 6, antithetic=True)
  np.testing.assert_array_equal(anti[1::2], anti[0::2, ::-1])


def test_group_matrix_and_expand():
  g = masks.group_matrix([[0, 1], [3], []], 4)
  z = jnp.array([[True, False, True], [False, True, False]])
  np.testing.assert_array_equal(masks.expand_groups(z, g), [[1, 1, 0, 0], [0, 0, 0, 1]])
  with pytest.raises(ValueError, match="groups\\[0\\]"):
    masks.group_matrix([[0, 9]], 4)
  with pytest.raises(ValueError, match="num_players"):
    masks.expand_groups(z, np.ones((2, 4), bool))


def test_patch_groups_match_upsampling():
  z = masks.bernoulli(jax.random.key(10), 6, 5)                    # 2x3 grid of 4x4 patches -> 8x12 pixels
  up = masks.upsample_patches(z, (2, 3), 4)
  assert up.shape == (5, 8, 12)
  via_groups = masks.expand_groups(z, masks.patch_groups((8, 12), 4)).reshape(5, 8, 12)
  np.testing.assert_array_equal(up, via_groups)
  np.testing.assert_array_equal(up[:, 4:, 8:], jnp.broadcast_to(z[:, 5, None, None], (5, 4, 4)))
