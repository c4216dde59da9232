"""Text data: local corpora (Hugging Face ``datasets``), tokenizers from local files,
MDLM's wrap / pad layouts, parallel resumable preparation into memory-mapped token files.

    from mdfast.data.text import prepare_text, TokenFile
    prepare_text("owt/", "data/owt", tokenizer="gpt2", layout="wrap", length=1024,
                 valid_docs=100_000)
    train = TokenFile("data/owt", "train")       # rows gathered per batch from the memory map
"""

from mdfast.data.text.corpus import read_corpus
from mdfast.data.text.layouts import DETOKENIZERS, LAYOUTS, PadPacker, WrapPacker, detokenize
from mdfast.data.text.prepare import prepare_text
from mdfast.data.text.tokenizer import TextTokenizer, load_tokenizer
from mdfast.data.text.tokens import TokenFile, read_header

__all__ = [
    "DETOKENIZERS",
    "LAYOUTS",
    "PadPacker",
    "TextTokenizer",
    "TokenFile",
    "WrapPacker",
    "detokenize",
    "load_tokenizer",
    "prepare_text",
    "read_corpus",
    "read_header",
]
