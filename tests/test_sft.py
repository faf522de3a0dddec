"""SFT: the runtime's surrogate with GC = 1 is the negative log-likelihood Hugging Face computes."""

import pytest
import torch

from rlzoo.algorithms.sft import SFT
from rlzoo.losses import surrogate_loss
from rlzoo.runtime.generation import encode_pairs
from rlzoo.runtime.logprobs import position_ids_from_mask
from rlzoo.runtime.trainer import train_on_batch
from helpers import make_runtime, optim


@pytest.mark.parametrize("micro_batch_size", [8, 3])
def test_sft_step_gradient_equals_hugging_face_cross_entropy_gradient(tiny_model, task, tokenizer, micro_batch_size):
    # the whole path: left-padded batch, the runtime's log-probs, GC = 1, token-mean aggregation,
    # micro-batches -> the gradient of transformers' own loss with labels on the completion tokens
    examples = task.eval_examples()[:8]
    batch = encode_pairs(tokenizer, examples, [ex.solution for ex in examples], "cpu")
    labels = torch.where(batch.loss_mask > 0, batch.input_ids, torch.full_like(batch.input_ids, -100))  # [N, T]
    tiny_model.zero_grad()
    hf = tiny_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    position_ids=position_ids_from_mask(batch.attention_mask), labels=labels).loss
    hf.backward()
    expected = {n: p.grad.clone() for n, p in tiny_model.named_parameters()}

    tiny_model.zero_grad()
    rt = make_runtime(tiny_model, tokenizer, micro_batch_size=micro_batch_size)
    cfg = optim(micro_batch_size=micro_batch_size, grad_clip=0.0)
    _, _, shared = train_on_batch(rt, SFT(SFT.Config()), batch, torch.optim.SGD(tiny_model.parameters(), lr=0.0), cfg,
                                  "token-mean", None, torch.Generator().manual_seed(0))
    assert shared["loss/policy"] == pytest.approx(hf.item(), rel=1e-5)
    for name, p in tiny_model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_sft_loss_by_hand():
    # one sequence, tokens with log-probs -1 and -3: loss = (1 + 3) / 2 = 2
    logp = torch.tensor([[0.0, -1.0, -3.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    assert float(surrogate_loss(torch.ones_like(logp), logp, mask, "seq-mean-token-mean")) == 2.0
    # two sequences of 1 and 3 tokens: seq-mean-token-mean weighs each sequence alike, token-mean each token
    logp = torch.tensor([[-2.0, 0.0, 0.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert float(surrogate_loss(torch.ones_like(logp), logp, mask, "seq-mean-token-mean")) == pytest.approx((2 / 1 + 3 / 3) / 2)
    assert float(surrogate_loss(torch.ones_like(logp), logp, mask, "token-mean")) == pytest.approx((2 + 3) / 4)
