"""The DupMAE pre-training collator (RetroMAE-2 sections 3.2-3.3, and the authors' pre-training code).

One example = the WordPiece ids of a text *without* specials. The collator truncates to
``max_seq_length - 2``, wraps ``[CLS] x [SEP]`` and produces, per batch (B examples, L = longest
wrapped length):

- ``encoder_input_ids`` (B, L): whole-word masking at ``encoder_mlm_probability`` (0.30), then 80% [MASK] /
  10% random / 10% unchanged; ``encoder_labels`` (B, L): original id where selected, -100 elsewhere;
  ``encoder_attention_mask`` (B, L): 1 = real token.
- ``decoder_input_ids`` (B, L): the uncorrupted sequence; ``decoder_labels`` (B, L): original id at every
  content position, -100 at [CLS], [SEP] and padding (the decoder reconstructs *all* tokens).
- ``decoder_attention_mask`` (B, L, L) bool: ``[b, i, j]`` = query position i may attend to key j
  ("enhanced decoding"). K = min(n, 256) whole-word masks at ``decoder_mlm_probability`` (0.50) are
  drawn per example; row i takes one at random and also hides its own column (row 0 included);
  [CLS] (column 0) and [SEP] are never in a sampled mask; padding rows and columns are invisible.
- ``bag_word_weight`` (B, V) float32: the bag-of-words target of eq. 8, ``1/m`` on every distinct content
  id (m = number of content tokens, repeats counted), 0 elsewhere.

Whole-word selection follows the authors' collator exactly (checked against their code): words = a
piece plus its following ``##`` pieces ([CLS]/[SEP] never candidates); k = min(512, max(1, round(p*n)))
with n counting [CLS] and [SEP] and Python's banker's rounding; words are visited in random order and
taken while the covered count stays <= k (a word that would overshoot is skipped, later ones still
tried). Encoder positions that hold a special id ([UNK] included) are dropped after selection.

Randomness is a pure function of ``(seed, epoch, example index)`` (a NumPy generator per example),
so a run resumed from a checkpoint, or split over several processes, draws exactly the masks of an
uninterrupted run, whatever order the batches are collated in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MAX_PREDICTIONS = 512  # the authors' cap on masked pieces per sequence
MAX_DECODER_MASKS = 256  # K = min(n, 256) sampled decoder masks per example


def whole_word_ids(is_subword: np.ndarray) -> np.ndarray:
    """Word index of every content piece: a ``##`` piece joins the previous word.

    is_subword: (m,) bool for the content pieces (no specials) -> (m,) int, 0..W-1. The first piece
    always starts a word (a sequence truncated inside a word starts with a ``##`` piece).
    """
    starts = ~is_subword
    if starts.size:
        starts[0] = True
    return np.cumsum(starts) - 1  # (m,)


def sample_whole_word_masks(word_ids: np.ndarray, n: int, probability: float, count: int,
                            rng: np.random.Generator) -> np.ndarray:
    """``count`` independent whole-word masks over a wrapped sequence of length ``n``.

    word_ids: (n-2,) word index of each content piece (:func:`whole_word_ids`). Returns (count, n) bool,
    True = selected; columns 0 ([CLS]) and n-1 ([SEP]) are never selected.
    """
    out = np.zeros((count, n), dtype=bool)
    if word_ids.size == 0:
        return out
    k = min(MAX_PREDICTIONS, max(1, round(n * probability)))  # Python round: banker's, as the authors
    lengths = np.bincount(word_ids)  # (W,) pieces per word
    order = rng.random((count, lengths.size)).argsort(axis=1)  # (count, W): a shuffle per mask
    covered = np.zeros(count, dtype=np.int64)
    taken = np.zeros((count, lengths.size), dtype=bool)
    rows = np.arange(count)
    for j in range(lengths.size):  # greedy in shuffled order, skipping words that would overshoot k
        word = order[:, j]  # (count,)
        size = lengths[word]  # (count,)
        take = covered + size <= k
        covered += np.where(take, size, 0)
        taken[rows, word] = take
    out[:, 1:n - 1] = taken[:, word_ids]  # (count, n-2): piece selected iff its word is
    return out


@dataclass
class DupMAECollator:
    """Collate ``[{"input_ids": [...content ids...], "index": int}]`` into a DupMAE pre-training batch.

    ``index`` (the example's position in the dataset) keys the random draws; without it a running
    counter is used (deterministic for a fixed call order only). Set :attr:`epoch` at each epoch so
    the same example gets fresh masks (the pre-training loop does this).
    """

    tokenizer: object
    max_seq_length: int = 128
    encoder_mlm_probability: float = 0.30
    decoder_mlm_probability: float = 0.50
    seed: int = 42
    epoch: int = 0

    def __post_init__(self):
        if self.max_seq_length < 3:
            raise ValueError(f"max_seq_length={self.max_seq_length}: needs room for [CLS], one token and [SEP]")
        for name in ("encoder_mlm_probability", "decoder_mlm_probability"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)}: must lie in (0, 1)")
        tok = self.tokenizer
        self.vocab_size = len(tok)
        pieces = tok.convert_ids_to_tokens(list(range(self.vocab_size)))
        self._is_subword = np.array([p.startswith("##") for p in pieces], dtype=bool)  # (V,)
        self._is_special = np.zeros(self.vocab_size, dtype=bool)  # (V,)
        self._is_special[list(tok.all_special_ids)] = True
        self.cls_id, self.sep_id, self.pad_id = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
        self.mask_id = tok.mask_token_id
        self._counter = 0

    # ------------------------------------------------------------------------------------------
    def _rng(self, feature: dict) -> np.random.Generator:
        index = feature.get("index")
        if index is None:
            index = self._counter
            self._counter += 1
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def wrap(self, content_ids) -> np.ndarray:
        """Truncate to ``max_seq_length - 2`` and wrap ``[CLS] x [SEP]`` -> (n,) int64."""
        body = np.asarray(content_ids, dtype=np.int64)[: self.max_seq_length - 2]
        return np.concatenate([[self.cls_id], body, [self.sep_id]]).astype(np.int64)

    def encoder_mask(self, ids: np.ndarray, word_ids: np.ndarray, rng: np.random.Generator):
        """Whole-word selection at 0.30 + 80/10/10 corruption -> (corrupted ids (n,), labels (n,))."""
        n = ids.size
        selected = sample_whole_word_masks(word_ids, n, self.encoder_mlm_probability, 1, rng)[0]  # (n,)
        selected &= ~self._is_special[ids]  # [UNK] and other specials are never predicted
        labels = np.where(selected, ids, -100)
        corrupted = ids.copy()
        draw = rng.random(n)
        to_mask = selected & (draw < 0.8)
        to_random = selected & (draw >= 0.8) & (rng.random(n) < 0.5)  # half of the remaining 20%
        corrupted[to_mask] = self.mask_id
        corrupted[to_random] = rng.integers(0, self.vocab_size, size=int(to_random.sum()))
        return corrupted, labels

    def decoder_visibility(self, n: int, word_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, n) bool visibility: row i = NOT(one of K sampled masks), own column hidden."""
        count = min(n, MAX_DECODER_MASKS)
        masks = sample_whole_word_masks(word_ids, n, self.decoder_mlm_probability, count, rng)  # (K, n)
        choice = rng.integers(0, count, size=n)  # (n,) which mask each row takes
        visible = ~masks[choice]  # (n, n)
        visible[np.arange(n), np.arange(n)] = False  # a token never sees itself
        return visible

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        wrapped = [self.wrap(f["input_ids"]) for f in features]
        B, L = len(wrapped), max(w.size for w in wrapped)
        enc_ids = np.full((B, L), self.pad_id, dtype=np.int64)
        enc_labels = np.full((B, L), -100, dtype=np.int64)
        attention = np.zeros((B, L), dtype=np.int64)
        dec_ids = np.full((B, L), self.pad_id, dtype=np.int64)
        dec_labels = np.full((B, L), -100, dtype=np.int64)
        dec_mask = np.zeros((B, L, L), dtype=bool)
        bow = torch.zeros(B, self.vocab_size, dtype=torch.float32)
        for b, (feature, ids) in enumerate(zip(features, wrapped)):
            rng = self._rng(feature)
            n = ids.size
            content = ids[1:-1]  # (m,)
            word_ids = whole_word_ids(self._is_subword[content].copy())
            corrupted, labels = self.encoder_mask(ids, word_ids, rng)
            enc_ids[b, :n], enc_labels[b, :n], attention[b, :n], dec_ids[b, :n] = corrupted, labels, 1, ids
            dec_labels[b, 1:n - 1] = content
            dec_mask[b, :n, :n] = self.decoder_visibility(n, word_ids, rng)
            if content.size:  # eq. 8 target: 1/m once per distinct token (assigned, not summed)
                bow[b, torch.from_numpy(np.unique(content))] = 1.0 / content.size
        return {
            "encoder_input_ids": torch.from_numpy(enc_ids),
            "encoder_attention_mask": torch.from_numpy(attention),
            "encoder_labels": torch.from_numpy(enc_labels),
            "decoder_input_ids": torch.from_numpy(dec_ids),
            "decoder_attention_mask": torch.from_numpy(dec_mask),
            "decoder_labels": torch.from_numpy(dec_labels),
            "bag_word_weight": bow,
        }
