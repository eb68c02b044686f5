"""unlearn.config: key=value overrides are typed, validated, and name the key when they fail."""

import dataclasses
import typing
from dataclasses import dataclass

import pytest

from unlearn.config import config_dict, format_value, parse_value, resolve


@dataclass(frozen=True)
class Cfg:
    seed: int = 0
    lr: float = 0.1
    name: str = "x"
    flag: bool = False
    betas: tuple[float, ...] = (0.1, 1.0)
    clip: float | None = None

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def test_values_are_parsed_by_field_type():
    cfg = resolve(Cfg(), {}, ["seed=7", "lr=5e-4", "name=abc", "flag=true", "betas=0.01, 0.5", "clip=2"])
    assert cfg == Cfg(seed=7, lr=5e-4, name="abc", flag=True, betas=(0.01, 0.5), clip=2.0)
    assert resolve(cfg, {}, ["clip=none"]).clip is None
    assert resolve(cfg, {}, ["betas=none"]).betas == ()
    assert config_dict(cfg)["betas"] == [0.01, 0.5]


@pytest.mark.parametrize("override, message", [
    ("sed=1", "--set sed: unknown config key; valid keys: seed, lr"),
    ("seed=1.5", "--set seed='1.5': expected an integer"),
    ("lr=fast", "--set lr='fast': expected a number"),
    ("flag=maybe", "expected true or false"),
    ("betas=", "--set betas: empty list"),
    ("lr", "expected key=value"),
    ("lr=-1", "invalid config: lr must be > 0"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        resolve(Cfg(), {}, [override])


def test_format_value_is_what_parse_value_reads_back():
    cfg = Cfg(flag=True, betas=(0.01, 0.5), clip=None)
    hints = typing.get_type_hints(Cfg)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        assert parse_value(hints[f.name], format_value(value), f.name) == value
    assert (format_value(None), format_value(False), format_value((1, 2)), format_value(())) == (
        "none", "false", "1,2", "none")


def test_resolve_applies_the_defaults_then_the_flags_then_the_overrides():
    assert resolve(Cfg, {}, []) == Cfg()
    assert resolve(Cfg, {"seed": ("--seed", 3)}, ["lr=0.5"]) == Cfg(seed=3, lr=0.5)
    assert resolve(Cfg(name="preset"), {"seed": ("--seed", 3)}, []) == Cfg(seed=3, name="preset")
    assert resolve(Cfg, {"seed": ("--seed", 3)}, ["seed=3"]).seed == 3  # a flag and an override that agree


def test_resolve_builds_the_config_once_so_that_derived_defaults_follow():
    @dataclass(frozen=True)
    class Derived:
        model: str = "small"
        lr: float | None = None  # None: by model

        def __post_init__(self):
            if self.lr is None:
                object.__setattr__(self, "lr", {"small": 1.0, "big": 0.1}[self.model])

    assert resolve(Derived, {}, ["model=big"]).lr == 0.1
    assert resolve(Derived, {"model": ("--model", "big")}, ["lr=0.5"]).lr == 0.5


@pytest.mark.parametrize("flags, overrides, message", [
    ({"seed": ("--seed", 3)}, ["seed=4"], "--seed 3 and --set seed=4 disagree"),
    ({"betas": ("--betas", (0.1,))}, ["betas=0.2,0.3"], "--betas 0.1 and --set betas=0.2,0.3 disagree"),
    ({}, ["sed=1"], "--set sed: unknown config key"),
    ({"lr": ("--lr", -1.0)}, [], "invalid config: lr must be > 0"),
])
def test_resolve_refuses_naming_the_problem(flags, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        resolve(Cfg, flags, overrides)
