"""A spec file's text: missing, a folder, unreadable, too large or not UTF-8 is a one-line
:class:`~raysweep.spec.reader.SpecError` naming the file and the fix."""

from __future__ import annotations

import stat
from pathlib import Path

from raysweep.spec.reader import SpecError

#: Bytes of a spec file; the largest shipped spec has 3.5 kB. Read no further than this.
MAX_SPEC_BYTES = 1_000_000
EXAMPLE = "give the path of a YAML file such as search_spaces/quickstart.yaml"


def read_spec_bytes(path: Path) -> bytes:
    """The file's bytes, or a one-line SpecError saying why it cannot be read."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise SpecError(f"{path}: is a folder, not a spec file; {EXAMPLE}")
        if not stat.S_ISREG(mode):  # a FIFO or a device would block or never end
            raise SpecError(f"{path}: not a regular file; {EXAMPLE}")
        with path.open("rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        raise SpecError(f"{path}: no such spec file; {EXAMPLE}") from None
    except OSError as error:
        raise SpecError(
            f"{path}: cannot read the spec ({error.strerror or type(error).__name__}); check "
            "the path and that the file and its folders are readable"
        ) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(
            f"{path}: larger than {MAX_SPEC_BYTES:,} bytes; a spec is a few kB of YAML: check "
            "that this is the spec file"
        )
    return data


def read_spec_text(path: Path) -> str:
    """The file's text, decoded as UTF-8."""
    data = read_spec_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
            "save the spec as UTF-8"
        ) from None
