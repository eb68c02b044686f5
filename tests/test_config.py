"""unlearn.config: key=value overrides are typed, validated, and name the key when they fail."""

from dataclasses import dataclass

import pytest

from unlearn.config import apply_overrides, config_dict


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
    cfg = apply_overrides(Cfg(), ["seed=7", "lr=5e-4", "name=abc", "flag=true", "betas=0.01, 0.5", "clip=2"])
    assert cfg == Cfg(seed=7, lr=5e-4, name="abc", flag=True, betas=(0.01, 0.5), clip=2.0)
    assert apply_overrides(cfg, ["clip=none"]).clip is None
    assert apply_overrides(cfg, ["betas=none"]).betas == ()
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
        apply_overrides(Cfg(), [override])
