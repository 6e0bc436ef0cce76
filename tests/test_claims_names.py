"""Unknown backend / data / logger names: a config-group name that is not a file lists the
files; a `name` / `source` field that is not known is one validation problem naming the
field and the valid values (issue 20)."""

from __future__ import annotations

import pytest
from hydra.errors import MissingConfigException

from optmodel.checked import config_problems

from conftest import compose_cfg


@pytest.mark.parametrize("group,options", [("backend", ["hf", "megatron"]), ("data", ["bundled", "hf", "text"]),
                                           ("logger", ["none", "wandb"])])
def test_unknown_group_file_lists_the_options(group, options):
    with pytest.raises(MissingConfigException) as info:
        compose_cfg(f"{group}=nope")
    msg = str(info.value)
    assert f"{group}/nope" in msg and all(o in info.value.options for o in options), msg


@pytest.mark.parametrize("override,field,valid", [
    ("backend.name=tensorrt", "backend.name", "hf, megatron"),
    ("data.source=parquet", "data.source", "bundled, text, jsonl, hf"),
    ("logger.name=tensorboard", "logger.name", "none, wandb"),
])
def test_unknown_name_fields_are_one_problem_naming_the_field(override, field, valid):
    problems = config_problems(compose_cfg(override), world_size=1)
    value = override.split("=")[1]
    assert len(problems) == 1 and problems[0].startswith(f"{field}: unknown value '{value}'"), problems
    assert valid in problems[0]
