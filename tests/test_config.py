"""mlbook.toml parsing: defaults, every error names file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlbook.config import Config, load_config, parse_config
from mlbook.errors import ConfigError, MlbookError


def test_empty_config_gives_defaults() -> None:
    config = parse_config("")
    assert config == Config()
    assert config.git.commits == "refs"
    assert config.experiments.test_steps == 2


def test_values_are_read() -> None:
    config = parse_config(
        '[layout]\nmodels = "models"\n[git]\ncommits = "branch"\n[runner]\njobs = 2\n'
    )
    assert config.layout.models == "models"
    assert config.git.commits == "branch"
    assert config.runner.jobs == 2


def test_unknown_key_names_line_section_and_expected_keys() -> None:
    text = '[project]\nname = "x"\n\n[layout]\nmodles = "M"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, "mlbook.toml")
    assert str(info.value) == (
        "mlbook.toml:5: [layout] unknown key 'modles'; "
        "expected one of: datasets, models, deployment, data_processing"
    )
    assert info.value.line == 5


def test_unknown_section_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[projct]\nname = 1\n", "mlbook.toml")
    assert str(info.value).startswith("mlbook.toml:1: unknown section [projct]; expected one of")


def test_wrong_type_names_key_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[runner]\nbackend = "local"\njobs = "two"\n', "mlbook.toml")
    assert str(info.value) == "mlbook.toml:3: runner.jobs: expected int, got str"


def test_bad_enum_value() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[git]\ncommits = "sometimes"\n', "mlbook.toml")
    assert str(info.value).startswith("mlbook.toml:2: git.commits: invalid enum value 'sometimes'")


def test_bad_toml_gives_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[project]\nname = "unterminated\n', "mlbook.toml")
    assert str(info.value).startswith("mlbook.toml:2: not valid TOML:")


def test_values_out_of_range() -> None:
    with pytest.raises(ConfigError, match=r"mlbook.toml:2: runner.jobs: expected a whole number"):
        parse_config("[runner]\njobs = 0\n", "mlbook.toml")
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        parse_config('[experiments]\nid_pattern = "E[0-9"\n', "mlbook.toml")
    with pytest.raises(ConfigError, match="set include or exclude, not both"):
        parse_config('[experiments]\ninclude = ["E1"]\nexclude = ["E2"]\n', "mlbook.toml")


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "mlbook.toml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path / "missing.toml")


@settings(deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        parse_config(text)
    except MlbookError as exc:
        assert "\n" not in str(exc).strip()


@settings(deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["project", "layout", "git", "runner", "bogus"]),
        st.dictionaries(
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
            st.one_of(
                st.integers(), st.text(max_size=5), st.booleans(), st.floats(allow_nan=False)
            ),
            max_size=3,
        ),
        max_size=3,
    )
)
def test_any_structure_validates_or_fails_cleanly(raw: dict[str, dict[str, object]]) -> None:
    lines: list[str] = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                rendered = "true" if value else "false"
            elif isinstance(value, str):
                rendered = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            else:
                rendered = repr(value)
            lines.append(f"{key} = {rendered}")
    try:
        parse_config("\n".join(lines))
    except ConfigError as exc:
        assert str(exc).startswith("mlbook.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[git]\nmax_file_size = -1\n", "mlbook.toml:2: git.max_file_size: expected a size"),
        ("[git]\nmax_file_size = 0\n", "mlbook.toml:2: git.max_file_size: expected a size"),
        ('[git]\nmax_file_size = "lots"\n', "mlbook.toml:2: git.max_file_size: expected a size"),
        ('[git]\nmax_file_size = "2 TB"\n', "mlbook.toml:2: git.max_file_size: expected a size"),
        ("[git]\nmax_file_size = 1.5\n", "mlbook.toml:2: git.max_file_size: expected int | str"),
        ("[git]\nmax_file_mb = 5\n", "mlbook.toml:2: [git] unknown key 'max_file_mb'; it was "),
        (
            '[runner]\nray_address = "h:1"\n',
            "mlbook.toml:2: [runner] unknown key 'ray_address'; it moved to [ray] address",
        ),
        ("[experiments]\nseed = -1\n", "mlbook.toml:2: experiments.seed: expected an int from 0"),
        ("[experiments]\nseed = 4294967296\n", "mlbook.toml:2: experiments.seed: expected an"),
        ('[experiments]\nseed = "x"\n', "mlbook.toml:2: experiments.seed: expected int | null"),
        ("[experiments]\nseed = true\n", "mlbook.toml:2: experiments.seed: expected int | null"),
        ('[experiments]\nmetric = ""\n', "mlbook.toml:2: experiments.metric: expected the name"),
        ('[experiments]\ngoal = "best"\n', "mlbook.toml:2: experiments.goal: invalid enum"),
        ("[runner]\njobs = 0\n", "mlbook.toml:2: runner.jobs: expected a whole number from 1"),
        ("[runner]\njobs = 100000000000\n", "mlbook.toml:2: runner.jobs: expected a whole"),
        ("[runner]\njobs = 2.5\n", "mlbook.toml:2: runner.jobs: expected int, got float"),
        ("[experiments]\ntest_steps = -3\n", "mlbook.toml:2: experiments.test_steps: expected"),
        ("git.max_file_size = -2\n", "mlbook.toml:1: git.max_file_size: expected a size"),
        ("git = {max_file_size = -2}\n", "mlbook.toml:1: git.max_file_size: expected a size"),
        ("[runner]\njobs = " + "9" * 5000 + "\n", "mlbook.toml:2: not valid TOML: a number has"),
    ],
)
def test_numbers_out_of_bounds_are_one_line_with_file_line_and_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "mlbook.toml")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_numbers_within_bounds_and_sizes_with_units() -> None:
    config = parse_config('[git]\nmax_file_size = "2 MiB"\n[runner]\njobs = 1024\n')
    assert config.git.max_file_bytes == 2 * 1024 * 1024 and config.runner.jobs == 1024
    assert parse_config("[git]\nmax_file_size = 5000\n").git.max_file_bytes == 5000
    assert parse_config('[git]\nmax_file_size = "1.5MB"\n').git.max_file_bytes == 1_500_000
    assert parse_config("").git.max_file_bytes == 1_000_000
    seeded = parse_config('[experiments]\nseed = 7\nmetric = "acc"\ngoal = "min"\n').experiments
    assert (seeded.seed, seeded.metric, seeded.goal) == (7, "acc", "min")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[experiments]\noutputs = "../../../escaped_outputs"\n', "experiments.outputs: '../../"),
        ('[experiments]\noutputs = "../.."\n', "leaves the project"),
        ('[experiments]\noutputs = "."\n', "is Models/ itself"),
        ('[layout]\nmodels = "/srv/models"\n', "layout.models: '/srv/models' is absolute"),
        ('[layout]\ndatasets = "~/data"\n', "layout.datasets: '~/data' is absolute"),
        ('[layout]\ndeployment = "a/../../x"\n', "leaves the project"),
        ('[layout]\ndata_processing = "."\n', "is the project root"),
        ('[layout]\nmodels = ".mlbook/m"\n', "inside mlbook's or git's own directory"),
        ('[layout]\nmodels = "a\\u0000b"\n', "contains a NUL character"),
        ('[export]\ndir = "/tmp/exports"\n', "export.dir: '/tmp/exports' is absolute"),
        ('[export]\ndir = "../../x"\n', "leaves the project"),
    ],
)
def test_paths_leaving_the_project_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "mlbook.toml")
    assert "mlbook.toml:2: " in str(info.value)
    assert message in str(info.value)
    assert "use a relative path inside the project" in str(info.value)


def test_paths_inside_the_project_are_accepted() -> None:
    config = parse_config(
        '[layout]\nmodels = "code/models"\n[experiments]\noutputs = "../runs"\n'
        '[export]\ndir = "bundles/v1"\n'
    )
    assert (config.layout.models, config.experiments.outputs) == ("code/models", "../runs")


def test_nesting_and_huge_values_fail_cleanly() -> None:
    for text in [
        "a = " + "[" * 100_000 + "]" * 100_000,
        "a = " + "{b = " * 20_000 + "1" + "}" * 20_000,
        '[experiments]\nid_pattern = "' + "(" * 50_000 + ")" * 50_000 + '"\n',
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config(text, "mlbook.toml")
        assert "\n" not in str(info.value)
    huge = "x" * 1_000_000
    with pytest.raises(ConfigError) as info:
        parse_config(f'[git]\ncommits = "{huge}"\n', "mlbook.toml")
    assert len(str(info.value)) < 400
    with pytest.raises(ConfigError) as info:
        parse_config(f'[layout]\nmodels = "/{huge}"\n', "mlbook.toml")
    assert len(str(info.value)) < 400
    assert parse_config(f'[project]\ndescription = "{huge}"\n').project.description == huge


_SCALARS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(st.characters(codec="utf-8"), max_size=20),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=6), inner, max_size=3),
    ),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    [
        "name", "description", "datasets", "models", "deployment", "data_processing",
        "id_pattern", "include", "exclude", "test_steps", "outputs", "backend", "jobs",
        "ray_address", "commits", "max_file_size", "snapshot_data", "hash_images", "dir",
        "seed", "metric", "goal",
        "onnx", "bogus",
    ]
)  # fmt: skip
_SECTION_NAMES = st.sampled_from(
    ["project", "layout", "experiments", "runner", "git", "data", "export", "bogus"]
)


def _toml_value(value: object) -> str:
    import json
    import math

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"


@settings(deadline=None, max_examples=300)
@given(st.dictionaries(_SECTION_NAMES, st.dictionaries(_KEYS, _VALUES, max_size=4), max_size=4))
def test_fuzzed_configs_give_a_config_or_one_config_error(
    raw: dict[str, dict[str, object]],
) -> None:
    text = "".join(
        f"[{section}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())
        for section, values in raw.items()
    )
    try:
        parse_config(text, "mlbook.toml")
    except ConfigError as exc:
        assert str(exc).startswith("mlbook.toml") and "\n" not in str(exc)


@settings(deadline=None, max_examples=200)
@given(st.binary(max_size=300))
def test_any_bytes_in_the_file_give_a_config_or_one_config_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "mlbook.toml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


@settings(deadline=None, max_examples=200)
@given(st.text(st.characters(), max_size=200))
def test_any_text_with_surrogates_and_controls_fails_cleanly(text: str) -> None:
    try:
        parse_config(text)
    except ConfigError as exc:
        assert "\n" not in str(exc)
