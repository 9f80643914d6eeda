"""mlbook.toml parsing: defaults, every error names file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
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


@given(st.text(max_size=200))
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        parse_config(text)
    except MlbookError as exc:
        assert "\n" not in str(exc).strip()


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
