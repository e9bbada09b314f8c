import subprocess
import sys
import warnings

import pytest
import torch

from cnnbench.errors import ConfigError, ShapeError
from cnnbench.models import MODELS, arch_params, check_model, create_model

SHAPES = {"mnist": (1, 28), "cifar10": (3, 32)}
ARCHS = [name for name in MODELS]
# A linear head, a conv head (squeezenet), auxiliary heads (googlenet), linear layers inside the blocks
# (swin), widths worked out with tensors (regnet), and one too deep for 28 pixels (vgg11_bn).
TORCHVISION = ["tv:resnet18", "tv:mobilenet_v3_small", "tv:vgg11_bn", "tv:squeezenet1_1", "tv:googlenet", "tv:swin_t",
               "tv:regnet_x_400mf"]


def _kernels(name):
    return [None] + ([3, 5, 7] if "kernel_size" in arch_params(name) else [])


def _cases():
    for name in ARCHS:
        for dataset in SHAPES:
            for k in _kernels(name):
                yield name, dataset, k


@pytest.mark.parametrize("name,dataset,kernel", list(_cases()))
def test_every_architecture_builds_or_is_rejected_up_front(name, dataset, kernel):
    channels, size = SHAPES[dataset]
    kwargs = {"kernel_size": kernel} if kernel else {}
    try:
        params = check_model(name, in_channels=channels, num_classes=10, input_size=(size, size), **kwargs)
    except ShapeError:
        with pytest.raises((ShapeError, RuntimeError)):
            model = create_model(name, in_channels=channels, num_classes=10, input_size=size, **kwargs)
            model(torch.randn(2, channels, size, size))
        return
    torch.manual_seed(0)
    model = create_model(name, in_channels=channels, num_classes=10, input_size=size, **kwargs)
    assert sum(p.numel() for p in model.parameters()) == params
    x = torch.randn(3, channels, size, size)
    out = model(x)
    assert out.shape == (3, 10)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


@pytest.mark.parametrize("name", TORCHVISION)
@pytest.mark.parametrize("dataset", list(SHAPES))
def test_torchvision_models_adapt_to_small_inputs(name, dataset):
    channels, size = SHAPES[dataset]
    if (name, dataset) == ("tv:vgg11_bn", "mnist"):  # five 2x2 pools do not fit 28 pixels
        with pytest.raises(ShapeError, match="Output size is too small"):
            check_model(name, in_channels=channels, num_classes=10, input_size=(size, size))
        return
    model = create_model(name, in_channels=channels, num_classes=10, input_size=size)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10)
    out.sum().backward()


@pytest.mark.parametrize("name,expected", [
    ("lenet_dropout", 21_840), ("two_conv", 315_146), ("example_net", 1_199_882),
    ("four_conv", 593_140), ("cifar_simple", 1_059_306),
])
def test_seed_nets_have_their_projects_parameter_counts(name, expected):
    channels, size = (3, 32) if name == "cifar_simple" else (1, 28)
    assert check_model(name, in_channels=channels, num_classes=10, input_size=(size, size)) == expected


def test_seed004_works_out_its_own_flattened_size():
    model = create_model("two_conv", in_channels=1, num_classes=10, input_size=28)
    first_linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert first_linear.in_features == 64 * 6 * 6


def test_a_built_models_feature_shape_comes_from_one_image_and_changes_nothing():
    from cnnbench.models.base import feature_shape

    features = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5),
                                   torch.nn.MaxPool2d(2))
    features[2].eval()
    before = {k: v.clone() for k, v in features.state_dict().items()}
    assert feature_shape(features, 1, (28, 28)) == (4, 13, 13)
    assert [m.training for m in features] == [True, True, False, True] and features.training
    assert all(torch.equal(before[k], v) for k, v in features.state_dict().items())  # no batch statistics taken


def test_building_a_model_on_the_cpu_leaves_torch_dynamo_unimported():
    # Its shapes were worked out on the meta device, whose first operation imports torch._dynamo: a second of
    # every `cnnbench predict`.
    code = ("import sys; from cnnbench.models import create_model; "
            "create_model('vgg', in_channels=1, num_classes=10, input_size=28); "
            "create_model('two_conv', in_channels=3, num_classes=10, input_size=32); "
            "assert 'torch._dynamo' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_checking_cnnbench_s_own_nets_leaves_torch_dynamo_unimported_and_the_random_state_as_it_was():
    # The check built them on the meta device: 1.4-1.8 s of every `cnnbench train` and `sweep` start importing
    # torch._dynamo. Built on the CPU, their initialisation must not draw from a seeded run's random numbers.
    code = ("import sys, torch; from cnnbench.models import check_model; torch.manual_seed(0); "
            "state = torch.random.get_rng_state(); "
            "check_model('resnet', in_channels=3, num_classes=10, input_size=(32, 32), width=64, depth=2); "
            "check_model('airbench94', in_channels=1, num_classes=10, input_size=(28, 28)); "
            "assert torch.equal(state, torch.random.get_rng_state()); "
            "assert 'torch._dynamo' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_kernel_larger_than_the_feature_map_is_a_shape_error():
    with pytest.raises(ShapeError, match="kernel_size"):
        check_model("four_conv", in_channels=1, num_classes=10, input_size=(28, 28), kernel_size=7)


def test_an_architecture_rejects_a_parameter_it_does_not_take():
    with pytest.raises(ConfigError, match="does not take depth"):
        create_model("two_conv", in_channels=1, num_classes=10, input_size=28, depth=3)


def _torchvision_families():
    import re

    from cnnbench.models.tv import _names

    families = {}
    for name in _names():
        families.setdefault(re.match(r"[a-z]+", name).group(), name)
    return sorted(families.values())


@pytest.mark.parametrize("name", _torchvision_families())
def test_every_torchvision_family_builds_or_is_rejected_up_front(name):
    # Every name `cnnbench list` offers is checked before training: it fits, or a ShapeError says why (the
    # ViTs assert a 224-pixel input); no other error reaches the user.
    for channels, size in SHAPES.values():
        try:
            check_model(f"tv:{name}", in_channels=channels, num_classes=10, input_size=(size, size))
        except ShapeError as err:
            assert "kernel_size" not in str(err.hint)  # torchvision models take none


def test_a_torchvision_model_with_auxiliary_heads_builds_without_a_warning():
    # torchvision warned on every build that their default init would change: a FutureWarning in `train`'s output.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = create_model("tv:googlenet", in_channels=1, num_classes=10, input_size=28)
        with pytest.raises(ShapeError):  # too small for inception_v3: rejected with no warning before it
            check_model("tv:inception_v3", in_channels=3, num_classes=10, input_size=(32, 32))
    assert model.aux1 is None and model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_a_torchvision_model_offers_no_setting_it_could_not_be_given():
    # It once took `pretrained`, which no config field could set, yet the errors offered it.
    with pytest.raises(ConfigError, match=r"does not take kernel_size \(it takes no hyper-parameters\)"):
        check_model("tv:resnet18", in_channels=1, num_classes=10, input_size=(28, 28), kernel_size=5)
    assert arch_params("tv:resnet18") == {}
    assert all("pretrained" not in summary for _, summary in MODELS.summaries())


def test_unknown_torchvision_model_suggests_a_name():
    with pytest.raises(ConfigError, match="did you mean 'tv:resnet18'"):
        check_model("tv:resnet81", in_channels=1, num_classes=10, input_size=(28, 28))


def test_vgg_pool_first_normalises_pooled_maps_with_the_same_weights():
    plain = create_model("vgg", in_channels=1, num_classes=10, input_size=28, width=8, depth=2)
    early = create_model("vgg", in_channels=1, num_classes=10, input_size=28, width=8, depth=2, pool_first=True)
    assert [p.shape for p in plain.parameters()] == [p.shape for p in early.parameters()]
    sizes = []
    for bn in (m for m in early.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.register_forward_hook(lambda m, args, out: sizes.append(out.shape[-1]))
    assert early(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert sizes == [14, 14, 7, 7, 3, 3]  # the first conv of each stage pools; the second works at that size


def test_patch_whitening_makes_the_patches_of_its_images_uncorrelated_with_unit_variance():
    from cnnbench.models.resnet import PatchWhitening

    gen = torch.Generator().manual_seed(0)
    base = torch.randn(200, 3, 16, 16, generator=gen)
    images = base + 0.8 * base.roll(1, dims=3) + 0.5 * base[:, :1]  # neighbours and channels correlated
    layer = PatchWhitening(3, 2, eps=0.0)
    layer.init_from_data(images)
    assert layer.out_channels == 24 and not layer.weight.requires_grad and torch.all(layer.bias == 0)
    with torch.no_grad():
        out = layer(images)
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    cov = half.T @ half / len(half)
    assert torch.allclose(cov, torch.eye(12), atol=2e-3)
    assert torch.equal(out[:, 12:], -out[:, :12])


def test_shift_norm_shift_moves_lr_scale_times_as_far_as_a_batch_norm_bias_under_sgd():
    from cnnbench.models.resnet import ShiftNorm

    x = torch.randn(8, 4, 5, 5)
    target = torch.randn(8, 4, 5, 5)
    plain, scaled = torch.nn.BatchNorm2d(4, affine=True), ShiftNorm(4, lr_scale=64.0)
    assert [n for n, _ in scaled.named_parameters()] == ["shift"]
    moved = []
    for norm, bias in ((plain, lambda: plain.bias), (scaled, lambda: scaled.shift * scaled.root)):
        before = bias().detach().clone()
        opt = torch.optim.SGD([p for p in norm.parameters()], lr=1e-3)
        (norm(x) - target).square().mean().backward()
        opt.step()
        moved.append(bias().detach() - before)
    assert torch.allclose(moved[1], 64 * moved[0], rtol=1e-4, atol=1e-9)
    with torch.no_grad():  # the same normalisation otherwise
        scaled.eval(), plain.eval()
        scaled.running_mean.copy_(plain.running_mean), scaled.running_var.copy_(plain.running_var)
        scaled.shift.copy_(plain.bias / scaled.root)
        assert torch.allclose(scaled(x), torch.nn.functional.batch_norm(
            x, plain.running_mean, plain.running_var, None, plain.bias, eps=scaled.eps), atol=1e-5)


def test_airbench94_starts_its_convs_as_identities_and_its_stem_frozen():
    model = create_model("airbench94", in_channels=3, num_classes=10, input_size=32)
    convs = [m for m in model.modules() if type(m) is torch.nn.Conv2d]
    assert len(convs) == 6
    for conv in convs:
        c_in = conv.in_channels
        w = conv.weight[:c_in]
        assert torch.equal(w[:, :, 1, 1], torch.eye(c_in)) and w.abs().sum() == c_in
    stem = model[0][0]
    assert not stem.weight.requires_grad and stem.bias.requires_grad
