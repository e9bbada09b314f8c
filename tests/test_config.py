import pytest

from cnnbench import config
from cnnbench.errors import ConfigError


def test_yaml_reads_exponent_numbers_as_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nweight_decay: 5E-4\nepochs: 2\n")
    cfg, sources = config.resolve(config.Layer.yaml_file(path))
    assert cfg.lr == 0.001 and cfg.weight_decay == 0.0005 and cfg.epochs == 2
    assert sources["lr"] == f"{path}:1"


def test_unknown_key_names_the_line_and_the_closest_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 2\nlearning_rate: 0.1\nbatch_sise: 4\n")
    with pytest.raises(ConfigError) as info:
        config.resolve(config.Layer.yaml_file(path))
    text = str(info.value)
    assert f"{path}:2" in text or f"{path}:3" in text
    assert "unknown setting" in text
    path.write_text("epochs: 2\nlearning_rate: 0.1\n")  # its name elsewhere, far from its spelling here
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate'") as info:
        config.resolve(config.Layer.yaml_file(path))
    assert str(info.value).endswith("fix: did you mean 'lr'?")


def test_bad_value_names_its_flag():
    with pytest.raises(ConfigError) as info:
        config.resolve(config.Layer.flags({"lr": -1.0}))
    assert "--lr" in str(info.value) and "-1.0" in str(info.value)


def test_precedence_defaults_preset_file_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.5\nepochs: 3\n")
    cfg, sources = config.resolve(config.Layer.preset("seed004"), config.Layer.yaml_file(path),
                                  config.Layer.flags({"epochs": 7, "batch_size": None}))
    assert cfg.arch == "two_conv" and sources["arch"] == "preset seed004"
    assert cfg.lr == 0.5 and cfg.epochs == 7 and cfg.batch_size == 64
    assert cfg.weight_decay == config.TrainConfig().weight_decay


def test_duplicate_yaml_key_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.1\nlr: 0.2\n")
    with pytest.raises(ConfigError, match="appears twice"):
        config.load_yaml(path)


def test_broken_yaml_names_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.1\nepochs: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load_yaml(path)


def test_true_or_false_for_a_number_is_refused_and_a_flag_keeps_them(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lookahead: true\npool_first: false\nepochs: true\n")  # epochs: true was one epoch
    with pytest.raises(ConfigError) as info:
        config.resolve(config.Layer.yaml_file(path))
    assert str(info.value).startswith(f"{path}:3: epochs = True: a number is expected, not true or false")
    path.write_text("lookahead: true\npool_first: false\n")
    cfg, _ = config.resolve(config.Layer.yaml_file(path))
    assert cfg.lookahead is True and cfg.pool_first is False


def test_a_file_with_a_byte_order_mark_reads_and_one_not_in_utf8_is_one_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes("\ufeffepochs: 2\n".encode("utf-8"))  # the mark some editors write first
    assert config.load_yaml(path)[0] == {"epochs": 2}
    path.write_bytes("epochs: 2\n".encode("utf-16"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        config.load_yaml(path)


@pytest.mark.parametrize("name", list(config.PRESETS))
def test_every_preset_is_a_valid_configuration(name):
    from cnnbench.train import check

    cfg, _ = config.resolve(config.Layer.preset(name))
    assert check(cfg) > 0
