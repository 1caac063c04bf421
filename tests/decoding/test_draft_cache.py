"""The EAGLE drafter's cache is preallocated like the target's slab: written in place behind a fill
length, with the same contents as the concatenating cache that training uses."""
import torch

from specviz.models.trained_heads import DraftKVCache


def test_preallocated_cache_equals_concatenation_and_writes_in_place():
    g = torch.Generator().manual_seed(0)
    grown, slab = DraftKVCache(), DraftKVCache(capacity=8)
    buffer = None
    for step, n in enumerate([3, 1, 2, 4, 5, 1]):  # outgrows 8 on the way, so it doubles once
        k, v = torch.randn(1, 2, n, 4, generator=g), torch.randn(1, 2, n, 4, generator=g)
        for cache in (grown, slab):
            out_k, out_v = cache.append(k, v)
            assert out_k.shape[-2] == len(cache)
        torch.testing.assert_close(slab.k, grown.k, rtol=0, atol=0)
        torch.testing.assert_close(slab.v, grown.v, rtol=0, atol=0)
        if step == 1:
            buffer = slab.k.data_ptr()
        if step == 2:
            assert slab.k.data_ptr() == buffer  # still the same allocation: written in place
        if step % 2:
            for cache in (grown, slab):
                cache.truncate(len(cache) - 1)
    keep = torch.tensor([0, 2, 3])
    for cache in (grown, slab):
        cache.keep(keep)
    assert len(slab) == len(grown) == 3
    torch.testing.assert_close(slab.k, grown.k, rtol=0, atol=0)
