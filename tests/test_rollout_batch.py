"""RolloutBatch carries the step fields (step_ends, step_rewards) through select, to and concat."""

from __future__ import annotations

import torch

from rlzoo.interface import RolloutBatch


def batch_of(width: int, rows: int, offset: float) -> RolloutBatch:
    ends = torch.zeros(rows, width)
    ends[:, -1] = 1.0  # each row's last token ends its one step
    return RolloutBatch(
        input_ids=torch.ones(rows, width, dtype=torch.long), attention_mask=torch.ones(rows, width, dtype=torch.long),
        loss_mask=torch.ones(rows, width), group_ids=torch.arange(rows), rewards=torch.zeros(rows),
        step_ends=ends, step_rewards=ends * (offset + torch.arange(rows, dtype=torch.float))[:, None],
    )


def test_step_fields_default_to_none_and_follow_select_to_and_concat():
    plain = RolloutBatch(torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2),
                         torch.zeros(1, dtype=torch.long), torch.zeros(1))
    assert plain.step_ends is None and plain.step_rewards is None
    assert plain.select([0]).step_ends is None and RolloutBatch.concat([plain, plain], 0).step_rewards is None

    a, b = batch_of(3, 2, 10.0), batch_of(5, 1, 20.0)
    picked = a.select([1])
    assert picked.step_ends.tolist() == [[0, 0, 1]] and picked.step_rewards.tolist() == [[0, 0, 11.0]]
    assert a.to("cpu").step_rewards.tolist() == a.step_rewards.tolist()
    both = RolloutBatch.concat([a, b], pad_token_id=0)
    # rows left-padded to width 5 with 0: a step end stays on its token
    assert both.step_ends.tolist() == [[0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1]]
    assert both.step_rewards[:, -1].tolist() == [10.0, 11.0, 20.0] and both.step_rewards[:, :-1].abs().sum() == 0
