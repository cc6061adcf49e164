"""The passes behind CE loss recovered: scored positions by hand, the template identity."""

import numpy as np
import pytest
import torch
from lm_texts import FAITH, SPACE
from tqdm import tqdm

from sklearn_hsae._lm import splice
from sklearn_hsae._lm.language_model import load_model
from sklearn_hsae._lm.tokens import tokenize


def test_scored_positions_and_targets_by_hand():
    ids = [[0, 5, 6, 7], [0, 8], [0, 9, 4]]
    first, second = splice.make_batches(ids, batch_size=2, pad_id=0)
    # Length-sorted: texts 1 (2 tokens) and 2 (3 tokens), then text 0 alone.
    assert first.texts == [1, 2] and second.texts == [0]
    assert first.input_ids.tolist() == [[0, 8, 0], [0, 9, 4]]
    assert first.mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    # Text 1 has no scored prediction (p = 1 is its last position); text 2 has p = 1 -> 4.
    assert first.position.tolist() == [1] and first.scored.tolist() == [1 * 3 + 1]
    assert first.targets.tolist() == [4] and first.owner.tolist() == [2]
    assert second.position.tolist() == [1, 2] and second.scored.tolist() == [1, 2]
    assert second.targets.tolist() == [6, 7] and second.owner.tolist() == [0, 0]


@pytest.mark.slow
def test_one_vector_everywhere_reads_the_same_off_the_template():
    """Writing one vector into every position >= 1 makes the forward pass independent of
    the text: the template's losses are those of running every batch from block 6."""
    lm = load_model()
    ids, _ = tokenize(lm, SPACE + FAITH, 512)
    batches = splice.make_batches(ids, batch_size=4, pad_id=lm.bos_id)
    bar = tqdm(disable=True, total=0)
    splice.clean_pass(lm, batches, 6, len(ids), bar)
    where = [np.arange(len(row)) >= 1 for row in ids]
    vector = np.random.default_rng(0).standard_normal(576).astype(np.float32) * 5
    templated = splice.condition_sums(lm, batches, 6, where, vector, len(ids), bar)
    every_row = np.tile(vector, (sum(len(row) - 1 for row in ids), 1))  # as many rows
    batched = splice._spliced_sums(lm, batches, 6, where, every_row, len(ids), bar)
    torch.testing.assert_close(templated, batched, rtol=1e-5, atol=1e-4)  # nats per text
    assert templated.min() > 0  # every text has a scored prediction
