"""Hard-negative mining: never a known positive; the guard drops near-duplicates of positives;
teacher scores are real cross-encoder logits with the requested normalisation."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from rankwise.errors import InvalidRequest
from rankwise.tune.data import TrainExample
from rankwise.tune.mine import MiningConfig, mine_hard_negatives, parse_range
from rankwise.tune.score import normalize_scores, score_examples

PRODUCTS = [
    "DEWALT 20V MAX cordless drill driver kit",
    "Milwaukee M18 cordless hammer drill",
    "Ryobi 18V cordless impact driver",
    "Behr premium exterior paint white 1 gal",
    "Glidden interior paint eggshell gray",
    "Delta single handle kitchen faucet chrome",
    "Moen bathroom sink faucet brushed nickel",
    "Husky 25 ft tape measure",
    "Stanley 16 oz claw hammer",
    "Rheem 40 gal electric water heater",
    "GE 30 in electric range white",
    "Frigidaire top freezer refrigerator",
    "Scotts turf builder lawn fertilizer",
    "Vigoro mulch red 2 cu ft",
    "Kohler round toilet seat white",
    "Simpson Strong-Tie angle bracket",
]
# Near-duplicates of the positives: the same product in another pack size or colour.
NEAR_DUPLICATES = {
    "cordless drill": ["DEWALT 20V MAX cordless drill driver kit (2-pack)"],
    "kitchen faucet": ["Delta single handle kitchen faucet stainless"],
}
EXAMPLES = [
    TrainExample("cordless drill", ["DEWALT 20V MAX cordless drill driver kit"], related=["Milwaukee M18 cordless hammer drill"]),
    TrainExample("kitchen faucet", ["Delta single handle kitchen faucet chrome"]),
    TrainExample("lawn fertilizer", ["Scotts turf builder lawn fertilizer"]),
]  # fmt: skip
CORPUS = PRODUCTS + [t for dups in NEAR_DUPLICATES.values() for t in dups]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    from rankwise.models import Embedder

    return Embedder(str(minilm_dir))


def test_mining_never_returns_a_known_positive_or_related(minilm):
    cfg = MiningConfig(rank_range=(1, 100), negative_number=50, margin=None, fill_random=False)
    mined, report = mine_hard_negatives(EXAMPLES, CORPUS, minilm, cfg, show_progress=False)
    for ex in mined:
        assert ex.neg, ex.query
        assert not set(ex.neg) & ex.known_texts()
        assert len(ex.neg) == len(set(ex.neg))
    # every positive/related text in the corpus was seen in the range and dropped
    assert report.dropped_known == 4 and 1.0 <= report.positive_rank_mean <= 2.0


def test_guard_drops_planted_near_duplicates(minilm):
    top = dict(rank_range=(1, 5), negative_number=5, sample="top", fill_random=False)
    unguarded, _ = mine_hard_negatives(
        EXAMPLES, CORPUS, minilm, MiningConfig(margin=None, **top), show_progress=False
    )
    guarded, report = mine_hard_negatives(
        EXAMPLES, CORPUS, minilm, MiningConfig(margin=0.05, **top), show_progress=False
    )
    for ex_off, ex_on in zip(unguarded, guarded, strict=True):
        dups = set(NEAR_DUPLICATES.get(ex_on.query, []))
        assert dups <= set(ex_off.neg)  # without the guard they are the hardest "negatives"
        assert not dups & set(ex_on.neg)  # with it they are gone
    assert report.dropped_similarity >= 2


def test_range_sampling_random_fill_and_existing_negatives(minilm):
    ex = [TrainExample("cordless drill", ["DEWALT 20V MAX cordless drill driver kit"], ["Frigidaire top freezer refrigerator"])]  # fmt: skip
    cfg = MiningConfig(rank_range=(3, 6), negative_number=6, margin=None, seed=1)
    mined, report = mine_hard_negatives(ex, PRODUCTS, minilm, cfg, show_progress=False)
    neg = mined[0].neg
    assert neg[0] == "Frigidaire top freezer refrigerator"  # judged negatives are kept first
    assert report.short_queries == 1 and report.filled_random >= 1  # range has 4 slots for 6
    assert len(neg) == len(set(neg)) and "DEWALT 20V MAX cordless drill driver kit" not in neg
    vecs = minilm.encode_documents(PRODUCTS)
    q = minilm.encode_queries(["cordless drill"])[0]
    ranks = {PRODUCTS[i]: r for r, i in enumerate(np.argsort(-(vecs @ q)), 1)}
    mined_from_range = neg[1 : 1 + 4 - report.dropped_known]
    assert all(3 <= ranks[t] <= 6 for t in mined_from_range)


def test_mining_config_errors(minilm):
    with pytest.raises(InvalidRequest, match="rank range"):
        mine_hard_negatives(EXAMPLES, CORPUS, minilm, MiningConfig(rank_range=(5, 2)))
    with pytest.raises(InvalidRequest, match="teacher"):
        mine_hard_negatives(EXAMPLES, CORPUS, minilm, MiningConfig(teacher_max=0.0))
    with pytest.raises(InvalidRequest, match="2-200"):
        parse_range("two-hundred")
    assert parse_range("2-200") == (2, 200)


def test_teacher_scores_and_normalisation(tiny_reranker_dir, caplog):
    from rankwise.models import Reranker

    rr = Reranker(str(tiny_reranker_dir))
    ex = [
        TrainExample("apple phone", ["apple iphone 15 pro"], ["fresh red apples", "running shoes"]),
        TrainExample("drill", ["cordless drill kit"], ["kitchen sink faucet"]),
    ]
    scored = score_examples(ex, rr, show_progress=False, chunk_pairs=3)
    direct = rr.score("apple phone", ["apple iphone 15 pro", "fresh red apples", "running shoes"])
    np.testing.assert_allclose([*scored[0].pos_scores, *scored[0].neg_scores], direct, atol=1e-5)
    assert len(scored[1].neg_scores) == 1
    soft = score_examples(ex, rr, normalization="softmax", temperature=2.0, show_progress=False)
    assert sum(soft[0].pos_scores + soft[0].neg_scores) == pytest.approx(1.0, abs=1e-5)
    with caplog.at_level(logging.WARNING):
        score_examples(ex, rr, normalization="softmax", temperature=1e6, show_progress=False)
    assert "nearly uniform" in caplog.text  # the squashing trap is reported
    np.testing.assert_allclose(normalize_scores(np.array([0.0, 100.0]), "sigmoid"), [0.5, 1.0])
    with pytest.raises(InvalidRequest):
        normalize_scores(np.array([1.0]), "minmax")


def test_teacher_guard_drops_candidates_the_teacher_rates_high(minilm, tiny_reranker_dir):
    from rankwise.models import Reranker

    teacher = Reranker(str(tiny_reranker_dir))
    ex = EXAMPLES[:1]
    scores = teacher.score(ex[0].query, PRODUCTS)
    bound = float(np.median(scores))
    cfg = MiningConfig(rank_range=(1, 16), negative_number=16, margin=None, teacher_max=bound, fill_random=False)  # fmt: skip
    mined, report = mine_hard_negatives(ex, PRODUCTS, minilm, cfg, teacher=teacher, show_progress=False)  # fmt: skip
    assert report.dropped_teacher >= 1
    kept = teacher.score(ex[0].query, mined[0].neg)
    assert (kept <= bound + 1e-6).all()
