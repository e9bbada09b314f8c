import pytest
import torch

from cnnbench.errors import ConfigError, ShapeError
from cnnbench.models import MODELS, arch_params, check_model, create_model

SHAPES = {"mnist": (1, 28), "cifar10": (3, 32)}
ARCHS = [name for name in MODELS]
TORCHVISION = ["tv:resnet18", "tv:mobilenet_v3_small", "tv:vgg11_bn"]


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
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


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


def test_kernel_larger_than_the_feature_map_is_a_shape_error():
    with pytest.raises(ShapeError, match="kernel_size"):
        check_model("four_conv", in_channels=1, num_classes=10, input_size=(28, 28), kernel_size=7)


def test_an_architecture_rejects_a_parameter_it_does_not_take():
    with pytest.raises(ConfigError, match="does not take depth"):
        create_model("two_conv", in_channels=1, num_classes=10, input_size=28, depth=3)


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
