"""Where each character corpus comes from.

* ``shakespeare``: tiny-shakespeare (Karpathy's char-rnn), 1,115,394 characters, fetched from
  its canonical address and verified by md5.
* ``text``: any UTF-8 file the user names.
* ``pystdlib``: the top-level ``*.py`` modules of the running Python's standard library,
  concatenated in file-name order. Every machine with Python has it, so the default run needs
  no network: char-rnn's "Linux source" experiment on a corpus that is always at hand. Its
  size and SHA-256 depend on the Python version and are recorded in the DataSpec.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

from glimpse.errors import DataError

SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_MD5 = "6fb458f1232090904fb40fe944165e91"


class CorpusError(DataError):
    """A corpus file is missing or unreadable."""


def read_text_file(path: Path) -> str:
    """Read a UTF-8 corpus, with one clear sentence if it is missing, empty or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"Corpus file {path} does not exist; set data.path to a UTF-8 text file.")
    try:
        # Decode the bytes as they are: read_text would translate "\r\n" and "\r" to "\n",
        # so the corpus (and its recorded size and SHA-256) would not be the file's.
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorpusError(
            f"Corpus file {path} is not valid UTF-8 (byte {error.start}); re-encode it as UTF-8."
        ) from error
    if not text:
        raise CorpusError(f"Corpus file {path} is empty.")
    return text


def python_stdlib_files() -> list[Path]:
    """The top-level ``*.py`` files of the standard library, sorted by name."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(root.glob("*.py"))


def python_stdlib_text() -> str:
    """The ``pystdlib`` corpus: the files of :func:`python_stdlib_files`, concatenated."""
    return "".join(path.read_text(encoding="utf-8") for path in python_stdlib_files())


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
