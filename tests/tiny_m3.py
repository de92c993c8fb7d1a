"""A tiny bge-m3-shaped model built on the fly: a random XLM-R encoder, a fixed-vocabulary WordPiece
tokenizer with XLM-R's special ids (<s>=0, <pad>=1, </s>=2, <unk>=3), and random ``colbert_linear.pt`` /
``sparse_linear.pt`` heads saved as FlagEmbedding saves them (``torch.nn.Linear`` state dicts).

Random weights: outputs carry no meaning, so tests check shapes and agreement with a plain-torch
reference computed from the same files.
"""

from __future__ import annotations

from pathlib import Path

from tiny_models import fixed_wordpiece

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def build_m3_tokenizer(out: Path):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = fixed_wordpiece(SPECIALS, "<unk>")  # fixed ids: a trained vocabulary varies by process
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        cls_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=126,
    )
    fast.save_pretrained(out)
    return fast


def build_tiny_m3(out: Path, seed: int = 0, colbert_dim: int = 24, heads: bool = True) -> Path:
    """Save the tiny M3 folder at ``out``; ``heads=False`` leaves the two head files out."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    out.mkdir(parents=True, exist_ok=True)
    tok = build_m3_tokenizer(out)
    torch.manual_seed(seed)
    cfg = XLMRobertaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
    )
    XLMRobertaModel(cfg, add_pooling_layer=False).save_pretrained(out)
    if heads:
        torch.save(torch.nn.Linear(32, colbert_dim).state_dict(), out / "colbert_linear.pt")
        sparse = torch.nn.Linear(32, 1)
        torch.nn.init.normal_(sparse.weight, std=0.1)  # most tokens get a weight > 0, some 0
        torch.nn.init.constant_(sparse.bias, 0.3)
        torch.save(sparse.state_dict(), out / "sparse_linear.pt")
    return out
