import errno
import json
import os
import re
import sys

import pytest
import torch

from cnnbench import data, train
from cnnbench.config import validate
from cnnbench.errors import CheckpointError, ConfigError, DivergedError
from cnnbench.train import check, evaluate, fit, load_checkpoint, resolve_device, resolve_precision, save_checkpoint

FAST = dict(arch="two_conv", width=8, optimizer="adam", lr=3e-3, batch_size=32, epochs=3, device="cpu")


def test_trainer_learns_a_separable_dataset(tiny_data):
    cfg = validate(FAST)
    d = data.load("mnist", tiny_data, val_fraction=0.2)
    seen = []
    result = fit(cfg, d, on_epoch_end=seen.append)
    assert [m.epoch for m in seen] == [1, 2, 3]
    assert seen[-1].train_loss < seen[0].train_loss
    assert result.best.val_acc >= 0.9
    assert evaluate(result.model, d.test, d.spec, cfg).acc >= 0.9
    assert all(m.images_per_sec > 0 and m.epoch_seconds > 0 and m.lr > 0 for m in seen)


def test_cifar_with_augmentation_trains(tiny_data):
    cfg = validate(dict(FAST, dataset="cifar10", arch="cifar_simple", epochs=2, augment="crop_flip"))
    result = fit(cfg, data.load("cifar10", tiny_data))
    assert len(result.history) == 2 and result.params > 0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_seed_gives_the_same_metrics(tiny_data, precision):
    cfg = validate(dict(FAST, epochs=2, precision=precision))
    d = data.load("mnist", tiny_data)
    a, b = fit(cfg, d), fit(cfg, d)
    assert [m.train_loss for m in a.history] == [m.train_loss for m in b.history]
    assert [m.val_acc for m in a.history] == [m.val_acc for m in b.history]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_cpu_trains_in_channels_last_in_every_precision(tiny_data, precision):
    result = fit(validate(dict(FAST, epochs=1, precision=precision)), data.load("mnist", tiny_data))
    conv = [p for p in result.model.parameters() if p.dim() == 4][-1]  # the first has one input channel: both layouts
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_a_diverging_run_stops_with_a_clear_error(tiny_data):
    cfg = validate(dict(FAST, optimizer="sgd", lr=1e6, epochs=5))
    with pytest.raises(DivergedError, match="diverged"):
        fit(cfg, data.load("mnist", tiny_data))


def test_early_stopping_keeps_the_best_weights(tiny_data):
    cfg = validate(dict(FAST, epochs=30, patience=1, lr=1e-2))
    d = data.load("mnist", tiny_data)
    result = fit(cfg, d)
    assert result.stopped_early and len(result.history) < 30
    assert result.best.val_acc == max(m.val_acc for m in result.history)
    assert evaluate(result.model, d.val, d.spec, cfg).acc == pytest.approx(result.best.val_acc)


def test_hook_exception_stops_training(tiny_data):
    class Stop(Exception):
        pass

    def hook(m):
        if m.epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(validate(FAST), data.load("mnist", tiny_data), on_epoch_end=hook)


def test_the_half_epoch_hook_sees_the_validation_split_once_and_changes_no_training(tiny_data):
    cfg = validate(dict(FAST, epochs=2))
    d = data.load("mnist", tiny_data, val_fraction=0.2)
    checks = []
    hooked, plain = fit(cfg, d, on_half_epoch=checks.append), fit(cfg, d)
    assert len(checks) == 1 and len(checks[0].predictions) == len(d.val) and 0 <= checks[0].acc <= 1
    assert [m.train_loss for m in hooked.history] == [m.train_loss for m in plain.history]
    assert [m.val_acc for m in hooked.history] == [m.val_acc for m in plain.history]


@pytest.mark.parametrize("extra", [{}, {"lookahead": True}])
def test_checkpoint_resumes_where_it_stopped(tiny_data, tmp_path, extra):
    cfg = validate(dict(FAST, **extra))
    d = data.load("mnist", tiny_data)
    ckpt = tmp_path / "run.ckpt"

    class Stop(Exception):
        pass

    def stop_after_two(m):
        if m.epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(cfg, d, checkpoint=ckpt, on_epoch_end=stop_after_two)
    state = torch.load(ckpt, weights_only=True)
    assert len(state["history"]) == 2
    resumed = []
    result = fit(cfg, d, checkpoint=ckpt, on_epoch_end=resumed.append)
    assert [m.epoch for m in resumed] == [3] and len(result.history) == 3
    straight = fit(cfg, d)
    assert result.history[-1].train_loss == pytest.approx(straight.history[-1].train_loss, rel=1e-5)
    assert result.history[-1].val_acc == straight.history[-1].val_acc
    for a, b in zip(result.model.parameters(), straight.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_a_checkpoint_of_other_settings_is_refused_not_resumed(tiny_data, tmp_path):
    from cnnbench.train import check_resume

    cfg = validate(FAST)
    d = data.load("mnist", tiny_data)
    ckpt = tmp_path / "run.ckpt"
    assert check_resume(ckpt, cfg) == []
    fit(cfg, d, checkpoint=ckpt)
    assert [m.epoch for m in check_resume(ckpt, cfg)] == list(range(1, cfg.epochs + 1))
    assert len(check_resume(ckpt, validate(dict(FAST, precision="fp32", eval_batch_size=64)))) == cfg.epochs
    other = validate(dict(FAST, batch_size=cfg.batch_size * 2))
    message = f"{ckpt} holds a run with other settings: batch_size {cfg.batch_size} (now {cfg.batch_size * 2})"
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_resume(ckpt, other)
    with pytest.raises(ConfigError, match=re.escape(message)):  # a finished run is not handed back as this one's
        fit(other, d, checkpoint=ckpt)


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "ckpt" / "c.ckpt"
    save_checkpoint(path, {"w": torch.ones(2)})

    synced = os.fsync

    def full(fd):  # the new checkpoint is written, then the disk turns out full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left on device"):
        save_checkpoint(path, {"w": torch.zeros(2)})
    monkeypatch.setattr(os, "fsync", synced)
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["c.ckpt"]


def test_a_pickled_object_in_a_checkpoint_is_refused_and_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match=r"evil.ckpt: it is not a file of tensors and plain values \(\w") as err:
        load_checkpoint(path)
    assert not marker.exists() and "weights_only" not in str(err.value)
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.ckpt: it is empty or cut short"):
        load_checkpoint(tmp_path / "empty.ckpt")


def test_a_file_that_is_no_cnnbench_checkpoint_is_refused_as_bad_input_and_left_as_it_was(tmp_path):
    # A text file said "cannot load checkpoint: 105" and to delete it; a state dict or a tensor of torch.save's
    # reached the trainer as a traceback (KeyError 'model', AttributeError).
    from cnnbench.train import check_resume

    torch.save({"w": torch.zeros(3)}, tmp_path / "weights.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    (tmp_path / "notes.txt").write_text("hi\n")
    for name, says in [("notes.txt", "not a file torch.save wrote"),
                       ("weights.pt", "torch.save wrote a dict without model, optimizer, schedule and 6 more to it"),
                       ("tensor.pt", "torch.save wrote a Tensor to it")]:
        before = (tmp_path / name).read_bytes()
        with pytest.raises(ConfigError, match=f"{name} is not a cnnbench checkpoint: {says}") as err:
            check_resume(tmp_path / name, validate(FAST))
        assert err.value.hint == "give another --checkpoint file: cnnbench leaves this one as it is"
        assert (tmp_path / name).read_bytes() == before


def test_check_rejects_bad_combinations_before_any_work():
    with pytest.raises(ConfigError, match="does not take momentum"):
        check(validate(dict(FAST, optimizer="adam", momentum=0.9)))
    with pytest.raises(ConfigError, match="unknown scheduler"):
        check(validate(dict(FAST, scheduler="cosin")))
    with pytest.raises(ConfigError, match="unknown optimizer 'sgdd'"):  # was met only where momentum was given
        check(validate(dict(FAST, optimizer="sgdd")))
    with pytest.raises(ConfigError, match="kernel"):
        check(validate(dict(FAST, arch="four_conv", kernel_size=7)))


def test_device_and_precision_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) in ("bf16", "fp32")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ConfigError):
        resolve_precision("fp16", torch.device("cpu"))


@pytest.mark.parametrize("count,error", [(1, "this machine has 1 CUDA device"), (2, "this machine has 2 CUDA devices")])
def test_a_cuda_device_beyond_the_machines_is_refused(monkeypatch, count, error):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    assert resolve_device("cuda:1" if count == 2 else "cuda:0") == torch.device("cuda", count - 1)
    with pytest.raises(ConfigError, match=f"'cuda:2' asked for, but {error}"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("hardware", [True, False])
def test_bf16_asked_for_on_a_cpu_without_bf16_hardware_warns_and_is_kept(monkeypatch, recwarn, hardware):
    monkeypatch.setattr(train, "cpu_has_bf16_hardware", lambda: hardware)
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert [str(w.message).split(":")[0] for w in recwarn] == ([] if hardware else
                                                               ["bf16 on a CPU without AMX or AVX512-BF16 is emulated"])


@pytest.mark.parametrize("speedup, chosen", [(2.4, "bf16"), (1.3, "bf16"), (1.1, "fp32"), (0.55, "fp32")])
def test_auto_precision_on_the_cpu_follows_the_bf16_speedup_measured_by_the_first_process(
        monkeypatch, tmp_path, speedup, chosen):
    # AVX512-BF16 alone does not make bf16 faster: on an Intel Xeon without AMX it ran at half fp32's rate
    monkeypatch.setenv("CNNBENCH_CACHE_DIR", str(tmp_path / "unmeasured"))
    monkeypatch.setattr(train, "cpu_has_bf16_hardware", lambda: True)
    measured = []
    monkeypatch.setattr(train, "_measure_bf16_speedup", lambda: measured.append(1) or {"speedup": speedup})
    try:
        for _ in range(train.BF16_MEASUREMENTS + 2):
            train.cpu_bf16_speedup.cache_clear()  # a new process: the cache folder answers
            assert resolve_precision("auto", torch.device("cpu")) == chosen
            assert resolve_precision("auto", torch.device("cpu")) == chosen  # the same process measures once
            assert len(measured) == train.BF16_MEASUREMENTS  # all in the first process, none after it
    finally:
        train.cpu_bf16_speedup.cache_clear()


def test_one_bf16_measurement_far_off_does_not_decide_the_precision(monkeypatch, tmp_path):
    # Machine A, 2026-12-03: one process measured 0.72 where a dozen others measured 1.2-2.0, and that one figure,
    # kept, had every later run train in fp32, its nets up to 1.5x slower than in bf16.
    monkeypatch.setenv("CNNBENCH_CACHE_DIR", str(tmp_path / "far-off"))
    monkeypatch.setattr(train, "cpu_has_bf16_hardware", lambda: True)
    # Machine E (AMX), 2026-12-05: the first process measured 1.24, alone, and ran a benchmark in fp32 at 0.65x
    # the speed bf16 gave, where the next measurements read 1.7-2.3.
    readings = iter([0.72, 1.5, 1.45])
    monkeypatch.setattr(train, "_measure_bf16_speedup", lambda: {"speedup": next(readings)})
    chosen = []
    try:
        for _ in range(4):
            train.cpu_bf16_speedup.cache_clear()
            chosen.append(resolve_precision("auto", torch.device("cpu")))
        # all three in the first process, which already trains in the precision of their median
        assert chosen == ["bf16", "bf16", "bf16", "bf16"]
        assert train.cpu_bf16_speedup() == 1.45
    finally:
        train.cpu_bf16_speedup.cache_clear()


@pytest.mark.parametrize("kept, measured", [({"speedup": 0.72}, 2), ([1, 2], 3), ({"speedups": "x"}, 3),
                                             ({"speedups": [1.4, None, -1, "y", 1.6]}, 1)])
def test_bf16_cache_files_of_another_shape_or_from_before_keep_what_they_can(monkeypatch, tmp_path, kept, measured):
    # {"speedup": x} is how one measurement was kept before there were three; the rest are damaged files
    monkeypatch.setenv("CNNBENCH_CACHE_DIR", str(tmp_path / "odd"))
    monkeypatch.setattr(train, "cpu_has_bf16_hardware", lambda: True)
    taken = []
    monkeypatch.setattr(train, "_measure_bf16_speedup", lambda: taken.append(1) or {"speedup": 2.0})
    (tmp_path / "odd" / "bf16").mkdir(parents=True)
    (tmp_path / "odd" / "bf16" / f"{train._cpu_fingerprint()}.json").write_text(json.dumps(kept))
    try:
        for _ in range(4):
            train.cpu_bf16_speedup.cache_clear()
            assert resolve_precision("auto", torch.device("cpu")) == "bf16"
        assert len(taken) == measured
    finally:
        train.cpu_bf16_speedup.cache_clear()


def test_without_bf16_hardware_nothing_is_measured_and_auto_is_fp32(monkeypatch):
    monkeypatch.setattr(train, "cpu_has_bf16_hardware", lambda: False)
    monkeypatch.setattr(train, "_measure_bf16_speedup", lambda: pytest.fail("measured without bf16 hardware"))
    train.cpu_bf16_speedup.cache_clear()
    try:
        assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    finally:
        train.cpu_bf16_speedup.cache_clear()


def test_measuring_the_bf16_speedup_leaves_the_random_state_alone():
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    assert train._measure_bf16_speedup(rounds=1)["speedup"] > 0
    assert torch.equal(torch.rand(4), expected)


def test_keep_freed_memory_tunes_glibc_malloc_unless_told_not_to(monkeypatch):
    import platform

    from cnnbench.train import keep_freed_memory

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory.__wrapped__() is expected
    monkeypatch.setenv("CNNBENCH_MALLOC", "default")
    assert keep_freed_memory.__wrapped__() is False


X86 = pytest.mark.skipif(__import__("platform").machine().lower() not in ("x86_64", "amd64"),
                         reason="denormals-are-zero is an x86 setting")
#: Multiplies a million denormal floats by one on two threads, the worker thread started by then or not, and
#: with the setting made by ``flush_denormals`` or by torch's own call; prints how many came out zero.
_DENORMALS = ("import sys, torch; torch.set_num_threads(2); from cnnbench.train import flush_denormals; "
              "when, how = sys.argv[1:]; flush = flush_denormals if how == 'cnnbench' else "
              "lambda: torch.set_flush_denormal(True); when == 'early' and flush(); x = torch.full((1 << 20,), 1e-39); "
              "x.mul(1.0); when == 'late' and flush(); print(int((x.mul(1.0) == 0).sum()))")


@X86
def test_fit_on_the_cpu_flushes_denormals(tiny_data):
    torch.set_flush_denormal(False)  # an earlier test's command may have set it; made before the tensor, or
    denormal = torch.tensor([1e-39])  # the float conversion itself flushes it
    try:
        assert (denormal * 1.0).item() != 0
        fit(validate(dict(FAST, epochs=1)), data.load("mnist", tiny_data))
        assert (denormal * 1.0).item() == 0
    finally:
        torch.set_flush_denormal(False)


@X86
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the OpenMP team is reached through /proc/self/maps")
@pytest.mark.parametrize("when, how, zeros", [("early", "cnnbench", 1 << 20), ("late", "cnnbench", 1 << 20),
                                              ("early", "torch", 1 << 20), ("late", "torch", 1 << 19)])
def test_flushing_denormals_reaches_torch_threads_started_before_it(when, how, zeros):
    import subprocess

    out = subprocess.run([sys.executable, "-c", _DENORMALS, when, how], capture_output=True, text=True, check=True)
    assert int(out.stdout) == zeros  # torch's own setting, made late, leaves the started worker thread its half


@X86
def test_flush_denormals_without_an_openmp_team_to_reach_sets_this_thread(monkeypatch):
    monkeypatch.setattr(torch.__config__, "parallel_info", lambda: "ATen parallel backend: native thread pool")
    assert train._openmp_parallel.__wrapped__() is None
    monkeypatch.setattr(train, "_openmp_parallel", lambda: None)
    try:
        assert train.flush_denormals() is True
        assert (torch.tensor([1e-39]) * 1.0).item() == 0
    finally:
        torch.set_flush_denormal(False)


def test_lookahead_averages_every_five_steps_from_thirty_percent_of_the_run():
    model = torch.nn.Linear(2, 1, bias=False)
    lookahead = train.Lookahead(model, total=100)

    def put(value):
        with torch.no_grad():
            model.weight.fill_(value)

    put(1.0)
    lookahead.step(25)
    lookahead.step(31)
    assert lookahead.average is None
    lookahead.step(30)
    assert torch.all(lookahead.average["weight"] == 1.0)
    put(3.0)
    lookahead.step(33)  # not a fifth step: untouched
    assert torch.all(model.weight == 3.0)
    lookahead.step(35)
    keep = 0.95**5 * 0.35**3
    expected = 1.0 + (3.0 - 1.0) * (1 - keep)
    assert torch.allclose(model.weight, torch.full((1, 2), expected))
    put(5.0)
    lookahead.settle()
    assert torch.allclose(model.weight, torch.full((1, 2), expected))


def test_a_run_with_lookahead_ends_on_the_average(tiny_data):
    cfg = validate(dict(FAST, epochs=2, lookahead=True))
    d = data.load("mnist", tiny_data)
    result = fit(cfg, d)
    assert result.history[-1].val_acc >= 0.9
    assert result.history != fit(validate(dict(FAST, epochs=2)), d).history


def test_airbench94_whitening_is_set_from_the_training_images_and_stays_frozen(tiny_data):
    from cnnbench.models.resnet import PatchWhitening

    cfg = validate(dict(FAST, dataset="cifar10", arch="airbench94", width=8, optimizer="sgd", lr=0.2,
                        momentum=0.85, nesterov=True, epochs=1, augment="crop2_flip"))
    d = data.load("cifar10", tiny_data)
    result = fit(cfg, d)
    mean, std = data.normalisation(d.spec, "cpu")
    expected = PatchWhitening(3, 2)
    expected.init_from_data((d.train.x.float() / 255 - mean) / std)
    assert torch.allclose(result.model[0][0].weight, expected.weight, atol=1e-5)


@pytest.mark.parametrize("tta", ["flip", "flip_shift"])
def test_test_time_augmentation_averages_the_logits_of_the_views(tiny_data, tta):
    import torch.nn.functional as F

    cfg = validate(dict(FAST, dataset="cifar10", arch="cifar_simple", precision="fp32", tta=tta))
    d = data.load("cifar10", tiny_data)
    torch.manual_seed(0)
    model = train.build_model(cfg, d.spec).eval()
    mean, std = data.normalisation(d.spec, "cpu")
    x = (d.test.x.float() / 255 - mean) / std
    with torch.no_grad():
        def mirrored(v):
            return 0.5 * model(v) + 0.5 * model(v.flip(3))

        logits = mirrored(x)
        if tta == "flip_shift":
            padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
            logits = 0.5 * logits + 0.25 * (mirrored(padded[:, :, :-2, :-2]) + mirrored(padded[:, :, 2:, 2:]))
    result = evaluate(model, d.test, d.spec, cfg)
    assert torch.equal(result.predictions, logits.argmax(1))
    assert result.loss == pytest.approx(F.cross_entropy(logits, d.test.y).item(), rel=1e-4)
    assert result.loss != pytest.approx(evaluate(model, d.test, d.spec, validate(dict(cfg.params(), tta="none"))).loss)
