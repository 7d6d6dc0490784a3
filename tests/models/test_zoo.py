"""relkd.models.zoo: the one model registry every family registers into."""
import pytest

from relkd.models import create_model
from relkd.models.zoo import MODELS
from relkd.registry import Registry


def test_the_registry_builds_factories_and_holds_every_family():
    assert isinstance(MODELS, Registry) and MODELS.kind == "model" and not MODELS.bind
    assert {"cnn_tiny", "resnet8", "wrn_16_2"} <= set(MODELS)
    families = {MODELS.get(name).property("family") for name in MODELS}
    assert {"cnn", "cifar_resnet", "wrn"} <= families


def test_an_entry_is_a_factory_of_tapped_models():
    entry = MODELS.get("cnn_tiny")  # the dataset's classes and channels go beside the declared parameters
    model = entry.obj(num_classes=3, in_channels=1, **entry.resolve_params({"width": 4}))
    assert model.model_name == "cnn_tiny" and model.tap_shapes()["logits"] == (3,)
    assert type(create_model("cnn_tiny", num_classes=3, width=4)) is type(model)
    with pytest.raises(ValueError, match="cnn_tinyy"):
        MODELS.get("cnn_tinyy")
