"""A small byte-level BPE tokenizer for the embedded task, built locally with ``tokenizers``.

Digits are split one per token (as in Llama/DeepSeek tokenizers), so arithmetic is learnable.
The result is a normal Hugging Face tokenizer (``PreTrainedTokenizerFast``): it saves with
``save_pretrained`` and loads back with ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"


def build_tokenizer(texts: list[str], vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE with single-digit tokens on ``texts``; deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, padding_side="left"
    )
