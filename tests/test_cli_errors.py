"""Bad input through the real CLI: each mistake is one line naming the key or file, exit status 2,
no traceback, and the output folder untouched (not created, or an earlier finished run in it
unchanged file for file).

Every case stops in validation (or in argparse, or the run folder's checks), before any model is
built; the cases run two at a time. One tiny run (2 SFT steps, 1 GRPO step) is trained once for
the cases that point at a folder holding a run; each such case gets its own copy of a prepared
folder (FOLDERS: the run, the run damaged in one way, a folder of another tool) and the copy must
be unchanged afterwards. The families and their counts are in FAMILIES.

After the table: an error line is one write, whatever the buffering of standard error (the lines
of processes launched together must not run into one another), and a folder that `rlzoo export`
wrote evaluates.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
name: tiny
logging: {progress: false}
model: {tiny: {hidden_size: 32, intermediate_size: 64, num_layers: 1, num_heads: 2}}
task: {name: synthetic, synthetic: {eval_size: 4}}
eval: {samples: 2, ks: [1, 2], max_new_tokens: 6}
stages:
  sft: {algorithm: sft, steps: 2, data: {prompts_per_step: 4}, optim: {lr: 1.0e-3}}
  grpo:
    algorithm: grpo
    steps: 1
    data: {prompts_per_step: 2, samples_per_prompt: 2}
    generation: {max_new_tokens: 6}
    optim: {lr: 1.0e-4}
"""

GSM8K_ROW = {"question": "Ann has 2 pens and buys 3. How many pens?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}

# (id, arguments, what the one line must contain). Placeholders: {tiny} the tiny config, {out} a
# new output folder (must not exist afterwards), {files} a folder of prepared bad files and plugins,
# and each name of FOLDERS ({run}: a copy of the finished tiny run): a fresh copy of that folder,
# which must be unchanged afterwards. A `train` command without output_dir gets output_dir={out}.
CASES: dict[str, list[tuple[str, list[str], str]]] = {
    "unknown key": [
        ("stage key", ["train", "{tiny}", "sft.optim.lerning_rate=1e-3"], "unknown config key 'stages.sft.optim.lerning_rate'"),
        ("top-level key", ["train", "{tiny}", "evl.samples=2"], "unknown config key 'evl'"),
        ("algorithm key", ["train", "{tiny}", "algorithms.grpo.betta=0.1"], "unknown config key 'algorithms.grpo.betta'"),
        ("task key", ["train", "{tiny}", "task.synthetic.max_opps=2"], "task.synthetic.max_opps"),
        ("stage task key", ["train", "{tiny}", "sft.task={synthetic: {max_opps: 1}}"], "unknown config key 'stages.sft.task.synthetic.max_opps'"),
        ("model key", ["train", "{tiny}", "model.tiny.layers=2"], "model.tiny.layers"),
        ("stage algorithm_args key", ["train", "{tiny}", "grpo.algorithm_args={betta: 0.1}"],
         "unknown config key 'stages.grpo.algorithm_args.betta'"),
    ],
    "wrong type": [
        ("int", ["train", "{tiny}", "sft.steps=lots"], "stages.sft.steps"),
        ("list given a scalar", ["train", "{tiny}", "eval.ks=3"], "eval.ks: expected a list"),
        ("plugins a string", ["train", "{tiny}", "plugins=my.py"], "plugins: expected a list"),
        ("float for int", ["train", "{tiny}", "seed=1.5"], "seed"),
        ("section given a list", ["train", "{tiny}", "sft.data=[1]"], "stages.sft.data: expected a mapping"),
        ("hyperparameter", ["train", "{tiny}", "algorithms.grpo.beta=x"], "algorithms.grpo.beta"),
        ("bool", ["train", "{tiny}", "logging.wandb=maybe"], "logging.wandb"),
        ("algorithms a list", ["train", "{tiny}", "algorithms=[grpo]"], "algorithms: expected a mapping"),
    ],
    "out of range": [
        ("prompts_per_step", ["train", "{tiny}", "sft.data.prompts_per_step=0"], "stages.sft.data.prompts_per_step=0"),
        ("samples_per_prompt", ["train", "{tiny}", "grpo.data.samples_per_prompt=0"], "stages.grpo.data.samples_per_prompt=0"),
        ("pool_prompts", ["train", "{tiny}", "grpo.data.pool_prompts=0"], "stages.grpo.data.pool_prompts"),
        ("max_new_tokens", ["train", "{tiny}", "grpo.generation.max_new_tokens=0"], "stages.grpo.generation.max_new_tokens"),
        ("temperature", ["train", "{tiny}", "grpo.generation.temperature=-1"], "stages.grpo.generation.temperature"),
        ("top_p", ["train", "{tiny}", "grpo.generation.top_p=0"], "stages.grpo.generation.top_p"),
        ("tool timeout", ["train", "{tiny}", "grpo.generation.tool_timeout_s=0"], "stages.grpo.generation.tool_timeout_s"),
        ("huge lr", ["train", "{tiny}", "sft.optim.lr=1e30"], "stages.sft.optim.lr=1e+30 is out of range"),
        ("negative lr", ["train", "{tiny}", "sft.optim.lr=-1e-3"], "stages.sft.optim.lr"),
        ("nan lr", ["train", "{tiny}", "sft.optim.lr=nan"], "stages.sft.optim.lr=nan"),
        ("minibatches", ["train", "{tiny}", "grpo.optim.minibatches=0"], "stages.grpo.optim.minibatches"),
        ("micro_batch_size", ["train", "{tiny}", "sft.optim.micro_batch_size=0"], "stages.sft.optim.micro_batch_size"),
        ("betas", ["train", "{tiny}", "sft.optim.betas=[0.9]"], "stages.sft.optim.betas"),
        ("grad_clip", ["train", "{tiny}", "sft.optim.grad_clip=-1"], "stages.sft.optim.grad_clip"),
        ("steps", ["train", "{tiny}", "sft.steps=0"], "stages.sft.steps=0"),
        ("save_every", ["train", "{tiny}", "sft.save_every=-1"], "stages.sft.save_every"),
        ("eval samples", ["train", "{tiny}", "eval.samples=-1"], "eval.samples"),
        ("eval k above samples", ["train", "{tiny}", "eval.ks=[1,4]"], "eval.ks: k=4 is more than samples=2"),
        ("eval temperature", ["train", "{tiny}", "eval.temperature=-0.5"], "eval.temperature"),
        ("eval max_new_tokens", ["train", "{tiny}", "eval.max_new_tokens=0"], "eval.max_new_tokens"),
        ("eval num_examples", ["train", "{tiny}", "eval.num_examples=0"], "eval.num_examples"),
        ("task eval_size", ["train", "{tiny}", "task.synthetic.eval_size=0"], "task.synthetic.eval_size"),
        ("task min_ops above max_ops", ["train", "{tiny}", "task.synthetic.min_ops=3", "task.synthetic.max_ops=2"], "task.synthetic.min_ops"),
        ("task operators", ["train", "{tiny}", "task.synthetic.operators=x"], "task.synthetic.operators"),
        ("task unreachable", ["train", "{tiny}", "task.synthetic.operators=/", "task.synthetic.max_operand=1"], "task.synthetic"),
        ("stage task", ["train", "{tiny}", "sft.task={synthetic: {max_ops: 0}}"], "stages.sft.task.synthetic.max_ops"),
        ("heads divide width", ["train", "{tiny}", "model.tiny.num_heads=3"], "model.tiny.num_heads"),
        ("model width", ["train", "{tiny}", "model.tiny.hidden_size=0"], "model.tiny.hidden_size"),
        ("logprob chunk", ["train", "{tiny}", "model.logprob_chunk_size=-1"], "model.logprob_chunk_size"),
        ("lora rank", ["train", "{tiny}", "model.lora.r=-1"], "model.lora.r"),
        ("log_every", ["train", "{tiny}", "logging.log_every=0"], "logging.log_every"),
        ("seed", ["train", "{tiny}", "seed=-1"], "seed=-1"),
        ("threads", ["train", "{tiny}", "threads=0"], "threads=0"),
        ("reward weight", ["train", "{tiny}", "grpo.reward.functions=[{name: rule, weight: .nan}]"], "stages.grpo.reward.functions[0].weight"),
        ("grpo clip", ["train", "{tiny}", "algorithms.grpo.clip_eps=1.5"], "algorithms.grpo.clip_eps=1.5"),
        ("grpo beta", ["train", "{tiny}", "algorithms.grpo.beta=-0.1"], "algorithms.grpo.beta"),
        ("stage algorithm_args value", ["train", "{tiny}", "grpo.algorithm_args={beta: -0.1}"],
         "stages.grpo.algorithm_args.beta=-0.1 is out of range"),
        ("grpo clip-higher", ["train", "{tiny}", "algorithms.grpo.clip_eps_high=0.1"], "algorithms.grpo.clip_eps_high"),
        ("ppo gamma", ["train", "{tiny}", "grpo.algorithm=ppo", "algorithms.ppo.gamma=1.5"], "algorithms.ppo.gamma"),
        ("dpo beta", ["train", "{tiny}", "grpo.algorithm=dpo", "algorithms.dpo.beta=0"], "algorithms.dpo.beta"),
        ("rft threshold", ["train", "{tiny}", "grpo.algorithm=rft", "algorithms.rft.threshold=nan"], "algorithms.rft.threshold"),
        ("eval option", ["eval", "{run}/sft/final", "--samples", "2", "--k", "1", "4"], "eval.ks: k=4"),
    ],
    "unknown name": [
        ("algorithm", ["train", "{tiny}", "grpo.algorithm=gpro"], "unknown algorithm 'gpro'; known:"),
        ("reward", ["train", "{tiny}", "grpo.reward.name=rulez"], "unknown reward 'rulez'"),
        ("reward function", ["train", "{tiny}", "grpo.reward.functions=[{name: rule}, {name: nope}]"], "unknown reward 'nope'"),
        ("eval reward", ["train", "{tiny}", "eval.reward=rulez"], "unknown reward 'rulez'"),
        ("data source", ["train", "{tiny}", "grpo.data.source=onlin"], "unknown data source 'onlin'"),
        ("schedule", ["train", "{tiny}", "sft.optim.schedule=cosinus"], "stages.sft.optim.schedule: unknown 'cosinus'"),
        ("loss_agg", ["train", "{tiny}", "grpo.optim.loss_agg=mean"], "stages.grpo.optim.loss_agg: unknown mode 'mean'"),
        ("task", ["train", "{tiny}", "task.name=gsm9k"], "task.name: unknown 'gsm9k'"),
        ("dtype", ["train", "{tiny}", "model.dtype=float8"], "model.dtype: unknown 'float8'"),
        ("mixed_precision", ["train", "{tiny}", "mixed_precision=fp8"], "mixed_precision: unknown 'fp8'"),
        ("format", ["train", "{tiny}", "task.synthetic.format=latex"], "task.synthetic.format: unknown 'latex'"),
        ("grpo supervision", ["train", "{tiny}", "algorithms.grpo.supervision=steps"], "algorithms.grpo.supervision"),
    ],
    "bad file": [
        ("missing config", ["train", "{files}/nope.yaml"], "config file not found: {files}/nope.yaml"),
        ("config is a folder", ["train", "{files}"], "is a folder"),
        ("YAML syntax", ["train", "{files}/syntax.yaml"], "syntax.yaml: invalid YAML"),
        ("top level a list", ["train", "{files}/list.yaml"], "the top level: expected a mapping"),
        ("stages a list", ["train", "{files}/stages_list.yaml"], "stages: expected a mapping"),
        ("no stages", ["train", "{files}/empty.yaml"], "config has no stages"),
        ("unfinished list override", ["train", "{tiny}", "eval.ks=[1,2"], "override 'eval.ks=[1,2'"),
        ("override without =", ["train", "{tiny}", "eval.ks"], "override 'eval.ks' is not of the form key=value"),
        ("missing task file", ["train", "{tiny}", "task.name=gsm8k", "task.files.train={files}/none.jsonl",
                               "task.files.eval={files}/gsm8k_eval.jsonl"], "task.files.train: file not found"),
        ("GSM8K without ####", ["train", "{tiny}", "task.name=gsm8k", "task.files.train={files}/no_hash.jsonl",
                                "task.files.eval={files}/gsm8k_eval.jsonl"], "no_hash.jsonl:1: not a GSM8K"),
        ("invalid JSON row", ["train", "{tiny}", "task.name=gsm8k", "task.files.train={files}/bad_row.jsonl",
                              "task.files.eval={files}/gsm8k_eval.jsonl"], "bad_row.jsonl:2: invalid JSON"),
        ("garbage safetensors", ["train", "{tiny}", "model.path={files}/garbage_model"], "garbage_model/model.safetensors"),
        ("truncated init", ["train", "{tiny}", "grpo.init={files}/truncated_model"], "truncated_model/model.safetensors"),
        ("init is a file", ["train", "{tiny}", "grpo.init={files}/syntax.yaml"], "stages.grpo.init"),
        ("init missing", ["train", "{tiny}", "grpo.init={files}/no_model"], "stages.grpo.init: model folder not found"),
        ("model folder without config", ["train", "{tiny}", "model.path={files}"], "model.path"),
        ("gguf without model.path", ["train", "{tiny}", "model.gguf_file=m.gguf"], "model.gguf_file"),
        ("chat template of the tiny model", ["train", "{tiny}", "task.chat_template=true"], "task.chat_template"),
        ("damaged checkpoint for eval", ["eval", "{files}/garbage_model"], "garbage_model/model.safetensors"),
        ("damaged checkpoint for export", ["export", "{files}/truncated_model", "{out}"], "truncated_model/model.safetensors"),
        ("eval of a reward model", ["eval", "{files}/reward_model"], "holds a reward model (LlamaForTokenClassification), not a policy"),
        ("export of a reward model", ["export", "{files}/reward_model", "{out}"], "export: {files}/reward_model holds a reward model"),
        ("init is a reward model", ["train", "{tiny}", "grpo.init={files}/reward_model"], "stages.grpo.init: {files}/reward_model holds a reward model"),
        ("eval data: GSM8K whose first row lacks ####", ["eval", "{run}/sft/final", "--data", "{files}/first_no_hash.jsonl"],
         "first_no_hash.jsonl:1: not a GSM8K (question, answer ending in '#### N') row: the '#### N' line of its answer is missing (line 2 has one"),
        ("GSM8K without an answer field", ["train", "{tiny}", "task.name=gsm8k", "task.files.train={files}/no_answer.jsonl",
                                           "task.files.eval={files}/gsm8k_eval.jsonl"], "no_answer.jsonl:1: not a GSM8K (question, answer ending in '#### N') row: missing field 'answer'"),
        ("a DatasetDict folder", ["train", "{tiny}", "task.name=gsm8k", "task.files.train={files}/gsm8k_splits",
                                  "task.files.eval={files}/gsm8k_eval.jsonl"], "{files}/gsm8k_splits is a DatasetDict with splits train, test: name the folder of one split"),
        ("a folder that is no dataset", ["train", "{tiny}", "task.name=gsm8k", "task.files.train={files}/plugin_folder",
                                         "task.files.eval={files}/gsm8k_eval.jsonl"], "task.files.train: {files}/plugin_folder is a folder, but not a dataset"),
        ("ragged csv", ["train", "{tiny}", "task.name=gsm8k", "task.files.train={files}/ragged.csv",
                        "task.files.eval={files}/gsm8k_eval.jsonl"], "ragged.csv: cannot be read as csv (Error tokenizing data. C error: Expected 2 fields in line 3, saw 3)"),
    ],
    "bad plugin": [
        ("syntax error", ["train", "{tiny}", "plugins=[{files}/syntax_plugin.py]"], "syntax_plugin.py:2"),
        ("import error", ["train", "{tiny}", "plugins=[{files}/import_plugin.py]"], "import_plugin.py"),
        ("missing Config", ["train", "{tiny}", "plugins=[{files}/noconfig_plugin.py]", "grpo.algorithm=noconfig"],
         "algorithm 'noconfig' does not satisfy the interface: its class has no Config"),
        ("unknown name in a plugin", ["train", "{tiny}", "grpo.algorithm={files}/noconfig_plugin.py:nope"], "unknown algorithm 'nope'"),
        ("plugin file missing", ["train", "{tiny}", "plugins=[{files}/nowhere.py]"], "plugin file not found"),
        ("plugin module missing", ["train", "{tiny}", "plugins=[no_such_module_xyz]"], "plugin module not found: no_such_module_xyz"),
    ],
    "learns nothing": [
        ("grpo one sample", ["train", "{tiny}", "grpo.data.samples_per_prompt=1"], "stages.grpo.data.samples_per_prompt=1"),
        ("dpo one sample", ["train", "{tiny}", "grpo.algorithm=dpo", "grpo.data.samples_per_prompt=1"], "stages.grpo.data.samples_per_prompt=1"),
        ("grpo greedy", ["train", "{tiny}", "grpo.generation.temperature=0"], "stages.grpo.generation.temperature=0"),
        ("no updates", ["train", "{tiny}", "grpo.optim.updates_per_batch=0"], "stages.grpo.optim.updates_per_batch"),
    ],
    "command line": [
        ("misspelled subcommand", ["trian", "{tiny}"], "invalid choice: 'trian'"),
        ("no subcommand", [], "the following arguments are required: command"),
        ("train without config", ["train"], "the following arguments are required: config (see 'rlzoo train --help')"),
        ("compare without config", ["compare"], "the following arguments are required: config (see 'rlzoo compare --help')"),
        ("bad flag value", ["eval", "{run}/sft/final", "--samples", "x"], "argument --samples: invalid int value: 'x'"),
        ("unknown flag", ["train", "{tiny}", "--bogus"], "unrecognized arguments: --bogus"),
        ("eval without checkpoint", ["eval"], "rlzoo eval needs a checkpoint folder"),
        ("bad choice", ["eval", "{run}/sft/final", "--format", "latex"], "argument --format: invalid choice: 'latex'"),
    ],
    "run folder": [
        ("output_dir is a file", ["train", "{tiny}", "output_dir={files}/syntax.yaml"], "is a file, not a folder"),
        ("not empty, no run", ["train", "{tiny}", "output_dir={files}/plugin_folder"], "is not empty and holds no rlzoo run"),
        ("holds a run", ["train", "{tiny}", "output_dir={run}"], "holds a run (finished): add --resume"),
        ("nothing to resume", ["train", "{tiny}", "--resume"], "nothing to resume in {out}"),
        ("resume another config", ["train", "{tiny}", "output_dir={run}", "sft.optim.lr=2e-3", "--resume"],
         "'stages.sft.optim.lr' differs from the run's"),
        ("both flags", ["train", "{tiny}", "output_dir={run}", "--resume", "--overwrite"], "give --resume or --overwrite, not both"),
        ("rerun with a typo", ["train", "{tiny}", "output_dir={run}", "sft.optim.lerning_rate=1e-3"], "stages.sft.optim.lerning_rate"),
        ("overwrite with a typo", ["train", "{tiny}", "output_dir={run}", "--overwrite", "grpo.algorithm=gpro"], "unknown algorithm 'gpro'"),
        ("a folder of another tool", ["train", "{tiny}", "output_dir={foreign}"],
         "output_dir {foreign} is not empty and holds no rlzoo run (found config.yaml, data, train.py)"),
        ("overwrite a folder of another tool", ["train", "{tiny}", "output_dir={foreign}", "--overwrite"],
         "is not empty and holds no rlzoo run"),
        ("resume a folder of another tool", ["train", "{tiny}", "output_dir={foreign}", "--resume"],
         "nothing to resume in {foreign}: no rlzoo run was started there"),
        ("a run of an earlier rlzoo", ["train", "{tiny}", "output_dir={unmarked_run}"], "holds a run (finished): add --resume"),
        ("resume with a damaged summary", ["train", "{tiny}", "output_dir={damaged_summary}", "--resume"],
         "{damaged_summary}/summary.json is damaged (Expecting value: line 1 column 13 (char 12)); remove it"),
        ("resume with a damaged config.yaml", ["train", "{tiny}", "output_dir={damaged_config}", "--resume"],
         "its config.yaml does not load (line 3, column 1: did not find expected ',' or '}')"),
        ("resume changing a finished stage's algorithm", ["train", "{tiny}", "output_dir={run}", "algorithms.grpo.beta=0.5", "--resume"],
         "'algorithms.grpo.beta' differs from the run's"),
        ("resume changing the model", ["train", "{tiny}", "output_dir={run}", "model.tiny.intermediate_size=32", "--resume"],
         "'model.tiny.intermediate_size' differs from the run's"),
    ],
}
FAMILIES = {family: len(cases) for family, cases in CASES.items()}
ALL = [(family, *case) for family, cases in CASES.items() for case in cases]


FOLDERS = {  # name -> how to make it in `to`, from the finished run and the files folder
    "run": lambda to, finished, files: shutil.copytree(finished, to),  # copy2: sizes and mtimes kept
    "unmarked_run": lambda to, finished, files: (shutil.copytree(finished, to), (to / ".rlzoo-run").unlink()),
    "damaged_summary": lambda to, finished, files: (shutil.copytree(finished, to), (to / "summary.json").write_text('{"stages": [')),
    "damaged_config": lambda to, finished, files: (shutil.copytree(finished, to),
                                                   (to / "config.yaml").write_text("stages:\n  sft: {algorithm: sft\n")),
    "foreign": lambda to, finished, files: shutil.copytree(files / "foreign", to),
}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, mtime in ns). The lock file is left out: a refused
    second run takes the lock (and writes its pid there) before it can see why it must stop."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "run.lock"}


def fill(text: str, paths: dict[str, Path | None]) -> str:
    """``text`` with each ``{name}`` of ``paths`` replaced (str.format would trip on YAML braces)."""
    for name, path in paths.items():
        text = text.replace("{" + name + "}", str(path))
    return text


def env(home: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**out, "HOME": str(home), "TQDM_DISABLE": "1"}


def make_files(files: Path, finished: Path) -> None:
    (files / "syntax.yaml").write_text("stages:\n  sft: {algorithm: sft\n")
    (files / "list.yaml").write_text("- name: run\n- stages: {}\n")
    (files / "stages_list.yaml").write_text("stages:\n  - algorithm: sft\n    steps: 2\n")
    (files / "empty.yaml").write_text("name: nothing\n")
    (files / "gsm8k_eval.jsonl").write_text(json.dumps(GSM8K_ROW) + "\n")
    (files / "no_hash.jsonl").write_text(json.dumps({"question": "q", "answer": "5"}) + "\n")
    (files / "bad_row.jsonl").write_text(json.dumps({**GSM8K_ROW, "question": "other"}) + "\n{\"question\": \n")
    for name, damage in (("garbage_model", lambda b: b"not a safetensors file" * 10), ("truncated_model", lambda b: b[: len(b) // 2])):
        shutil.copytree(finished / "sft" / "final", files / name)
        weights = files / name / "model.safetensors"
        weights.write_bytes(damage(weights.read_bytes()))
    (files / "syntax_plugin.py").write_text("from rlzoo.registry import register_algorithm\ndef broken(:\n")
    (files / "import_plugin.py").write_text("import math\nimport no_such_package_xyz\n")
    (files / "noconfig_plugin.py").write_text(
        "from rlzoo.registry import register_algorithm\n\n@register_algorithm('noconfig')\nclass NoConfig:\n    data_source = 'online'\n")
    (files / "plugin_folder").mkdir()
    (files / "plugin_folder" / "notes.txt").write_text("not a run\n")
    (files / "first_no_hash.jsonl").write_text(json.dumps({"question": "q", "answer": "5"}) + "\n" + json.dumps(GSM8K_ROW) + "\n")
    (files / "no_answer.jsonl").write_text(json.dumps({"question": "q", "solution": "2 + 3 = 5"}) + "\n")
    (files / "ragged.csv").write_text('question,answer\n"q","2 + 3 = 5 #### 5"\n"q2","#### 6",extra\n')
    foreign = files / "foreign"  # another tool's project: its config.yaml, its script, its data
    (foreign / "data").mkdir(parents=True)
    (foreign / "config.yaml").write_text("model: bert-base\nlr: 3.0e-5\n")
    (foreign / "train.py").write_text("print('training')\n")
    (foreign / "data" / "train.csv").write_text("text,label\nhello,1\n")
    import datasets
    from transformers import AutoModelForCausalLM

    from rlzoo.reward_models.model import reward_model_from_lm

    datasets.disable_progress_bars()
    datasets.DatasetDict({"train": datasets.Dataset.from_list([GSM8K_ROW]),
                          "test": datasets.Dataset.from_list([GSM8K_ROW])}).save_to_disk(str(files / "gsm8k_splits"))
    shutil.copytree(finished / "sft" / "final", files / "reward_model")  # the tokenizer; then the weights and config of a reward model
    reward_model_from_lm(AutoModelForCausalLM.from_pretrained(finished / "sft" / "final")).save_pretrained(files / "reward_model")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """(folder, the tiny config, the finished tiny run, the folder of prepared files)."""
    tmp = tmp_path_factory.mktemp("cli_errors")
    (tmp / "home").mkdir()
    tiny = tmp / "tiny.yaml"
    tiny.write_text(TINY)
    finished = tmp / "finished"
    done = subprocess.run([sys.executable, "-m", "rlzoo", "train", str(tiny), f"output_dir={finished}"], cwd=ROOT,
                          env=env(tmp / "home"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    files = tmp / "files"
    files.mkdir()
    make_files(files, finished)
    return tmp, tiny, finished, files


@pytest.fixture(scope="module")
def results(workspace):
    """Every case run once, two at a time: id -> (completed process, expected text, out folder,
    {prepared folder copy: its snapshot})."""
    tmp, tiny, finished, files = workspace

    def run(i: int, case: tuple) -> tuple:
        family, name, args, expected = case
        out, copies = tmp / f"out{i}", {}
        for folder, make in FOLDERS.items():
            if any("{" + folder + "}" in a for a in args):
                copies[folder] = tmp / f"{folder}{i}"
                make(copies[folder], finished, files)
        paths = {"tiny": tiny, "out": out, "files": files, **copies}
        argv = [fill(a, paths) for a in args]
        if argv[:1] == ["train"] and len(argv) > 1 and not any(a.startswith("output_dir=") for a in argv):
            argv.append(f"output_dir={out}")
        before = {copy: snapshot(copy) for copy in copies.values()}
        proc = subprocess.run([sys.executable, "-m", "rlzoo", *argv], cwd=ROOT, env=env(tmp / "home"),
                              capture_output=True, text=True, timeout=120)
        return proc, fill(expected, paths), out, before

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(run, range(len(ALL)), ALL))
    return {f"{family}: {name}": answer for (family, name, *_), answer in zip(ALL, answers)}


def test_the_table_covers_every_family_with_at_least_60_inputs():
    assert len(ALL) >= 60 and all(n >= 4 for n in FAMILIES.values()), FAMILIES
    assert len({f"{family}: {name}" for family, name, *_ in ALL}) == len(ALL)


@pytest.mark.parametrize("key", [f"{family}: {name}" for family, name, *_ in ALL])
def test_bad_input_is_one_line_exit_2_and_the_output_folder_is_untouched(key, results):
    proc, expected, out, before = results[key]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("rlzoo: error: "), proc.stderr[-3000:]
    assert expected in lines[0], lines[0]
    assert not out.exists(), f"{out} was created"
    for copy, files in before.items():
        assert snapshot(copy) == files, f"{copy} changed"


# -- after the table ----------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["trian"], ["train", "{files}/nope.yaml"], ["train", "{tiny}", "sft.steps=0"]],
                         ids=["argparse", "config file", "config value"])
def test_an_error_line_is_one_write_even_when_standard_error_is_unbuffered(workspace, args):
    """Under torchrun every process prints the same line at once; written in two pieces (the text,
    then its newline, as print does on an unbuffered stream) two processes' lines run into one.
    Standard error here is a packet socket: every write arrives as one packet."""
    tmp, tiny, _, files = workspace
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    argv = [fill(a, {"tiny": tiny, "files": files}) for a in args]
    proc = subprocess.run([sys.executable, "-m", "rlzoo", *argv, f"output_dir={tmp / 'never'}"], cwd=ROOT,
                          env={**env(tmp / "home"), "PYTHONUNBUFFERED": "1"}, stderr=theirs, stdout=subprocess.DEVNULL, timeout=120)
    theirs.close()
    packets = []
    while packet := ours.recv(1 << 16):
        packets.append(packet.decode())
    ours.close()
    assert proc.returncode == 2
    assert len(packets) == 1 and packets[0].startswith("rlzoo: error: ") and packets[0].count("\n") == 1 \
        and packets[0].endswith("\n"), packets


def test_a_folder_written_by_export_evaluates(workspace):
    """An exported folder holds no rlzoo config: eval uses the defaults (no run's stages play a part)."""
    tmp, _, finished, _ = workspace
    exported = tmp / "exported"
    run = lambda *args: subprocess.run([sys.executable, "-m", "rlzoo", *map(str, args)], cwd=ROOT,  # noqa: E731
                                       env=env(tmp / "home"), capture_output=True, text=True, timeout=300)
    done = run("export", finished / "sft" / "final", exported)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (exported / "rlzoo_config.yaml").exists()
    proc = run("eval", exported, "--num-examples", "2", "--max-new-tokens", "4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["num_examples"] == 2
