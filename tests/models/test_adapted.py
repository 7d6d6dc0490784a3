"""relkd.models.adapted: ``adapted:<folder>`` as a model name, its SHA-256 checked."""
import json

import pytest
import torch

from relkd.files import file_sha256
from relkd.models import create_model
from relkd.models.adapted import META_FILE, PREFIX, WEIGHTS_FILE, adapted_file, dynamic_entry, load_adapted, read_meta
from relkd.models.prune import channel_groups, prune_channels, structure


@pytest.fixture
def folder(tmp_path):
    """A cnn_tiny with its first channel group pruned to one channel, as relkd adapt writes it."""
    torch.manual_seed(0)
    model = create_model("cnn_tiny", num_classes=3, in_channels=1, width=4)
    first = channel_groups(model)[0].name
    pruned = prune_channels(model, {first: [0]})
    torch.save(pruned.state_dict(), tmp_path / WEIGHTS_FILE)
    meta = {"structure": structure(pruned), "num_classes": 3, "in_channels": 1, "input_size": [1, 28, 28],
            "params": pruned.num_params(), "ratio_reached": 0.5, "sha256": file_sha256(tmp_path / WEIGHTS_FILE)}
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    return tmp_path, pruned


def test_a_folder_names_its_model_file(folder):
    path, _ = folder
    assert adapted_file(f"{PREFIX}{path}") == path / WEIGHTS_FILE == adapted_file(str(path / WEIGHTS_FILE))


def test_the_adapted_model_loads_with_its_weights(folder):
    path, pruned = folder
    model = load_adapted(f"{PREFIX}{path}", num_classes=3, in_channels=1)
    x = torch.randn(2, 1, 28, 28)
    pruned.eval(), model.eval()
    assert torch.equal(model(x)["logits"], pruned(x)["logits"])
    entry = dynamic_entry(f"{PREFIX}{path}")
    assert entry.property("adapted") and entry.property("family") == "cnn" and entry.property("source_model") \
        == "cnn_tiny"
    assert entry.property("input_size") == (1, 28, 28) and "50% of the original" in entry.doc


def test_other_classes_need_fresh_weights(folder):
    path, pruned = folder
    with pytest.raises(ValueError, match="made for 3 classes and 1 input channels, the data has 10 and 1"):
        load_adapted(str(path), num_classes=10, in_channels=1)
    fresh = load_adapted(str(path), num_classes=10, in_channels=1, weights=False)
    assert fresh.tap_shapes()["logits"] == (10,) and structure(fresh)["widths"] == structure(pruned)["widths"]


def test_a_changed_file_or_missing_metadata_is_refused(folder, tmp_path_factory):
    path, _ = folder
    assert read_meta(str(path))["num_classes"] == 3
    with open(path / WEIGHTS_FILE, "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="does not have the SHA-256 its meta.json records"):
        read_meta(str(path))
    (path / META_FILE).unlink()
    with pytest.raises(ValueError, match="meta.json is missing beside"):
        read_meta(str(path))
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(ValueError, match="no adapted model at .*relkd adapt"):
        read_meta(f"{PREFIX}{empty}")
