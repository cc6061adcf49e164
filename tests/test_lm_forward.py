"""Residual hooks against the model's own hidden states."""

import pytest
import torch

from sklearn_hsae._lm.forward import block_hook, head_rows, iter_residuals, residual_of, skip_blocks
from sklearn_hsae._lm.language_model import load_model
from sklearn_hsae._lm.tokens import tokenize


@pytest.mark.slow
@pytest.mark.parametrize("layer", [1, 15])
def test_hook_is_the_hidden_state_of_that_layer(layer):
    lm = load_model()
    texts = ["The cat sat on the mat.", "Hi"]
    ids, _ = tokenize(lm, texts, 512)
    batched = dict(iter_residuals(lm, ids, layer, batch_size=2))  # padded batch
    single = dict(iter_residuals(lm, ids, layer, batch_size=1))
    with torch.inference_mode():
        for i, row in enumerate(ids):
            hidden = lm.model(torch.tensor([row]), output_hidden_states=True).hidden_states
            assert torch.equal(single[i], hidden[layer][0])
            # Padded batches use other kernels: equal up to float32 rounding, per row.
            err = (batched[i] - hidden[layer][0]).norm(dim=1) / hidden[layer][0].norm(dim=1)
            assert err.max() < 1e-4  # measured up to 1.1e-5


@pytest.mark.slow
def test_after_the_last_block_hidden_states_adds_the_final_norm():
    lm = load_model()
    ids, _ = tokenize(lm, ["The cat sat on the mat."], 512)
    with torch.inference_mode():
        hidden = lm.model(torch.tensor(ids), output_hidden_states=True).hidden_states
        last = dict(iter_residuals(lm, ids, lm.n_layers, 1))[0]
        torch.testing.assert_close(lm.model.model.norm(last), hidden[lm.n_layers][0])


@pytest.mark.slow
def test_skipped_blocks_and_head_rows_reproduce_the_full_forward():
    lm = load_model()
    ids, _ = tokenize(lm, ["The cat sat on the mat."], 512)
    input_ids = torch.tensor(ids)  # (1, 8)
    kept = []
    with torch.inference_mode():
        with block_hook(lm, 6, lambda output: kept.append(output)):
            full = lm.model(input_ids=input_ids).logits[0]  # (8, V)
        with skip_blocks(lm, 6, kept[0]):
            skipped = lm.model(input_ids=input_ids).logits[0]
        with head_rows(lm, torch.tensor([1, 5])):
            two = lm.model(input_ids=input_ids).logits
    # Blocks 7-30 ran on block 6's output, as in the full pass: the same kernels, bitwise.
    assert torch.equal(skipped, full)
    assert two.shape == (2, full.shape[1])  # fewer rows into the head: rounding may differ
    torch.testing.assert_close(two, full[[1, 5]], rtol=1e-5, atol=1e-4)
    assert all("forward" not in block.__dict__ for block in lm.blocks)  # put back
    with torch.inference_mode():
        with skip_blocks(lm, lm.n_layers, kept[0]):  # no block runs: norm and head only
            headed = lm.model(input_ids=input_ids).logits[0]
        expected = lm.model.lm_head(lm.model.model.norm(residual_of(kept[0])))[0]
    assert torch.equal(headed, expected)
