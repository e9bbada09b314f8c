import pytest
import torch

from cnnbench.errors import ConfigError
from cnnbench.optim import OPTIMIZERS, SCHEDULERS, create_optimizer, create_schedule


def _lrs(name, steps_per_epoch=10, epochs=4, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = create_schedule(name, opt, steps_per_epoch=steps_per_epoch, epochs=epochs, **kw)
    lrs = []
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            lrs.append(sched.lr)
            sched.step_batch()
        sched.step_epoch(1.0)
    return lrs


def test_step_decays_every_step_size_epochs():
    lrs = _lrs("step", step_size=2, gamma=0.5)
    assert lrs[0] == 1.0 and lrs[19] == 1.0 and lrs[20] == 0.5 and lrs[39] == 0.5


def test_multistep_uses_milestones():
    lrs = _lrs("multistep", gamma=0.1, milestones=[1, 3])
    assert lrs[9] == 1.0 and lrs[10] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.01)


def test_cosine_and_onecycle_end_near_zero():
    assert _lrs("cosine")[-1] < 0.01
    one = _lrs("onecycle")
    assert one[0] < 0.1 and max(one) == pytest.approx(1.0, abs=0.05) and one[-1] < 0.05


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("epochs", [1, 2])
def test_every_schedule_takes_a_run_of_one_batch_per_epoch(name, epochs):
    # A batch as large as the training set: onecycle divided by zero after the only step of one epoch.
    lrs = _lrs(name, steps_per_epoch=1, epochs=epochs, step_size=1, gamma=0.5)
    assert len(lrs) == epochs and all(0 <= lr <= 1 for lr in lrs)


def test_warmup_ramps_linearly():
    lrs = _lrs("none", warmup_epochs=1)
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[20] == 1.0


def test_plateau_lowers_the_rate_when_validation_stalls():
    lrs = _lrs("plateau", epochs=6, step_size=1, gamma=0.5)
    assert lrs[0] == 1.0 and lrs[-1] < 1.0


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_takes_a_step(name):
    w = torch.nn.Parameter(torch.ones(3))
    opt = create_optimizer(name, [w], lr=0.1)
    w.sum().backward()
    opt.step()
    assert not torch.equal(w.detach(), torch.ones(3))


def test_optimizer_rejects_a_setting_it_does_not_have():
    with pytest.raises(ConfigError, match="does not take momentum"):
        create_optimizer("adam", [torch.nn.Parameter(torch.ones(1))], lr=0.1, momentum=0.9)


def test_the_report_knows_which_decay_settings_each_schedule_uses():
    import inspect

    from cnnbench.config import SCHEDULE_SETTINGS
    from cnnbench.optim import SCHEDULERS

    for name in SCHEDULERS.names():
        taken = {k for k, p in inspect.signature(SCHEDULERS.get(name)).parameters.items() if p.kind is p.KEYWORD_ONLY}
        assert taken - {"steps_per_epoch", "epochs"} == set(SCHEDULE_SETTINGS.get(name, ())), name
