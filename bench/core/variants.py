"""The Florence-2 variant registry: hub ids, native architecture, and reported accuracy.

Add a variant by adding one ``Variant`` to ``VARIANTS``. Architecture numbers are the native
``Florence2Config`` fields (see shared/FLORENCE2.md); ``config()`` builds the exact config offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.core.errors import choice_error

PAPER = "Xiao et al., Florence-2 (CVPR 2024), Tables 1-2, and the microsoft/Florence-2-* model cards"


@dataclass(frozen=True)
class Arch:
    """The fields that differ between Florence-2 sizes."""

    embed_dim: tuple[int, ...]
    num_heads: tuple[int, ...]
    projection_dim: int
    d_model: int
    layers: int
    heads: int
    ffn_dim: int
    max_position_embeddings: int = 1024


BASE = Arch((128, 256, 512, 1024), (4, 8, 16, 32), 768, 768, 6, 12, 3072)
LARGE = Arch((256, 512, 1024, 2048), (8, 16, 32, 64), 1024, 1024, 12, 16, 4096)
LARGE_4K = Arch(LARGE.embed_dim, LARGE.num_heads, 1024, 1024, 12, 16, 4096, max_position_embeddings=4096)

_ZERO_SHOT_KEYS = ("coco_caption_cider", "nocaps_cider", "textcaps_cider", "coco_det_map", "flickr30k_r1",
                   "refcoco_val_acc", "refcoco_testA_acc", "refcoco_testB_acc", "refcocoplus_val_acc",
                   "refcocoplus_testA_acc", "refcocoplus_testB_acc", "refcocog_val_acc", "refcocog_test_acc",
                   "refcoco_res_val_miou")
_FT_KEYS = ("coco_caption_cider", "nocaps_cider", "textcaps_cider", "vqav2_testdev", "textvqa_testdev",
            "vizwiz_testdev", "coco_det_map", "flickr30k_r1", "refcoco_val_acc", "refcoco_testA_acc",
            "refcoco_testB_acc", "refcocoplus_val_acc", "refcocoplus_testA_acc", "refcocoplus_testB_acc",
            "refcocog_val_acc", "refcocog_test_acc", "refcoco_res_val_miou")


def _reported(keys: tuple[str, ...], values: tuple[float, ...]) -> dict[str, float]:
    assert len(keys) == len(values)
    return dict(zip(keys, values, strict=True))


@dataclass(frozen=True)
class Variant:
    """A registry entry. ``params`` counts the native layout (text vocab padded to 51328); the paper's
    231.4 M / 770.2 M count vocab 51289, 29,952 (base) or 39,936 (large) fewer. Tests rebuild and check it."""

    name: str
    hub_id: str
    native_id: str
    arch: Arch
    params: int
    description: str
    reported: dict[str, float] = field(default_factory=dict)
    reported_source: str = PAPER
    revision: str | None = None

    def config(self, vocab_size: int = 51328):
        """The exact native ``Florence2Config`` (random-weights mode); the text vocab is padded to 51328
        as in the native checkpoints, so that ``<image>`` (51289) has an embedding row."""
        from transformers import BartConfig, Florence2Config, Florence2VisionConfig

        a = self.arch
        vision = Florence2VisionConfig(embed_dim=list(a.embed_dim), num_heads=list(a.num_heads),
                                       num_groups=list(a.num_heads), projection_dim=a.projection_dim)
        text = BartConfig(
            vocab_size=vocab_size, d_model=a.d_model, encoder_layers=a.layers, decoder_layers=a.layers,
            encoder_attention_heads=a.heads, decoder_attention_heads=a.heads, encoder_ffn_dim=a.ffn_dim,
            decoder_ffn_dim=a.ffn_dim, max_position_embeddings=a.max_position_embeddings,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
            forced_eos_token_id=2, scale_embedding=False,
        )
        return Florence2Config(vision_config=vision, text_config=text, image_token_id=51289)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("base", "microsoft/Florence-2-base", "florence-community/Florence-2-base", BASE, 231_443_968,
                "0.23B, pretrained on FLD-5B (zero-shot)",
                _reported(_ZERO_SHOT_KEYS, (133.0, 118.7, 70.1, 34.7, 83.6, 53.9, 58.4, 49.7, 51.5, 56.4, 47.9,
                                            66.3, 65.1, 34.6))),
        Variant("large", "microsoft/Florence-2-large", "florence-community/Florence-2-large", LARGE, 770_213_888,
                "0.77B, pretrained on FLD-5B (zero-shot); paper numbers are for the 1024-position model",
                _reported(_ZERO_SHOT_KEYS, (135.6, 120.8, 72.8, 37.5, 84.4, 56.3, 61.6, 51.4, 53.6, 57.9, 49.9,
                                            68.0, 67.0, 35.8))),
        Variant("base-ft", "microsoft/Florence-2-base-ft", "florence-community/Florence-2-base-ft", BASE,
                231_443_968, "0.23B, fine-tuned generalist",
                # RefCOCOg test is printed as 82.2 in the model card; kept as printed, see FLORENCE2.md
                _reported(_FT_KEYS, (140.0, 116.7, 143.9, 79.7, 63.6, 63.6, 41.4, 84.0, 92.6, 94.8, 91.5, 86.8,
                                     91.7, 82.2, 89.8, 82.2, 78.0))),
        Variant("large-ft", "microsoft/Florence-2-large-ft", "florence-community/Florence-2-large-ft", LARGE,
                770_213_888, "0.77B, fine-tuned generalist",
                _reported(_FT_KEYS, (143.3, 124.9, 151.1, 81.7, 73.5, 72.6, 43.4, 85.2, 93.4, 95.3, 92.0, 88.3,
                                     92.9, 83.6, 91.2, 91.7, 80.5))),
        Variant("large-4k", "microsoft/Florence-2-large", "florence-community/Florence-2-large", LARGE_4K,
                776_505_344, "0.78B, the hub's current large revision: continued pretraining, 4096 text positions",
                {"coco_det_map": 39.8}, reported_source="microsoft/Florence-2-large model card (4k revision)"),
    )
}


# A checkpoint the user points at with --model-path: its own config.json gives the architecture.
CUSTOM = Variant("custom", "-", "-", BASE, 0, "any Florence-2 checkpoint given with --model-path")


def get_variant(name: str) -> Variant:
    if name == CUSTOM.name:
        return CUSTOM
    if name not in VARIANTS:
        raise choice_error("variant", name, [*VARIANTS, CUSTOM.name])
    return VARIANTS[name]
