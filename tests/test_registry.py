import pytest

from cnnbench.catalog import registries
from cnnbench.errors import ConfigError, UnknownNameError
from cnnbench.registry import Registry


def test_register_and_get():
    reg = Registry("thing")

    @reg.register("alpha")
    def alpha():
        """First thing."""

    assert reg.get("alpha") is alpha
    assert reg.names() == ["alpha"]
    assert reg.summaries() == [("alpha", "First thing.")]

    @reg.register("beta")
    def beta():
        """Second thing, ``width`` wide.

        More."""

    assert reg.summaries()[1] == ("beta", "Second thing, `width` wide.")  # one line, terminal-plain


def test_registering_twice_is_an_error():
    reg = Registry("thing")
    reg.add("alpha", 1)
    with pytest.raises(ConfigError, match="registered twice"):
        reg.add("alpha", 2)


def test_unknown_name_lists_valid_names_and_suggests_the_closest():
    reg = Registry("optimizer")
    for name in ("adam", "adamw", "sgd"):
        reg.add(name, name)
    with pytest.raises(UnknownNameError) as info:
        reg.get("adma")
    assert "valid: adam, adamw, sgd" in str(info.value)
    assert "did you mean 'adam'" in str(info.value)
    assert info.value.exit_code == 2


def test_namespace_resolves_prefixed_names():
    reg = Registry("model")
    reg.add_namespace("tv", lambda n: f"built {n}", lambda: ["resnet18", "vgg11"], "torchvision")
    assert reg.get("tv:resnet18") == "built resnet18"
    assert "tv:resnet18" in reg and "tv:nope" not in reg
    with pytest.raises(UnknownNameError, match="did you mean 'tv:resnet18'"):
        reg.get("tv:resnet19")


def test_a_namespace_of_many_names_shows_the_nearest_not_a_screenful():
    reg = Registry("architecture")
    names = [f"net{i:02d}" for i in range(60)] + ["resnet18", "resnet34"]
    reg.add_namespace("tv", lambda n: n, lambda: names, "torchvision")
    with pytest.raises(UnknownNameError) as info:
        reg.get("tv:resnet")
    message = str(info.value).splitlines()[0]
    assert message.startswith("unknown architecture 'tv:resnet'; valid: 62 names, the nearest tv:resnet34, tv:resnet18")
    assert message.count("tv:") == 1 + 8 and len(message) < 200


def test_every_registry_is_listed_with_a_summary_per_entry():
    regs = registries()
    assert set(regs) >= {"architectures", "optimizers", "schedulers", "datasets", "augmentations", "presets"}
    for reg in regs.values():
        for name, summary in reg.summaries():
            assert summary, f"{reg.kind} {name} has no one-line summary"
