"""What is inside the bundle's binaries, archives and image layers: Go build info, dpkg and apk databases.

A `Tap` is handed every byte of a blob as the content store hashes it on the
way in (`BlobStore.partial(..., tap=)`), so the contents are read while the
build downloads, never in a second pass. A layer or archive is inflated
(gzip or plain tar) and walked as a tar stream; only a few things are kept:

- Go build info: the blob `go version -m` reads, found by its magic
  `\\xff Go buildinf:` at a 16-byte aligned offset of an ELF file; since Go
  1.18 it holds the toolchain version and the module list as two varint
  prefixed strings right after its 32-byte header (older ones point into the
  data segment and are only named, not read);
- `var/lib/dpkg/status`, the files of `var/lib/dpkg/status.d/` (distroless)
  and `lib/apk/db/installed`, parsed into packages;
- `etc/os-release` (or `usr/lib/os-release`), for the distribution release;
- whiteouts, so that a file an upper layer deletes is not reported.

What a blob holds never changes, so each result is cached under the blob's
digest (`CACHE/contents/v1/HEX.json`): a warm build, or a blob that another
build already downloaded, costs a small JSON read, not a re-read of the
blob. Only a blob that is in the cache without a result (a cache filled by
an airlock without this scan) is read once from disk; `Contents.reread_bytes`
counts those bytes.
"""

from __future__ import annotations

import json
import re
import struct
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from bundle.atomic import AtomicFile
from bundle.store import BlobStore

try:  # ISA-L inflates gzip about four times as fast as zlib: most of what reading layers costs is inflating them
    from isal import isal_zlib as inflating
except ImportError:  # a build host without its wheel: the same bytes, read slower
    import zlib as inflating

SCHEMA = 1
GO_MAGIC = b"\xff Go buildinf:"
ELF_MAGIC = b"\x7fELF"
GO_ALIGN = 16
GO_HEADER = 32
# A module list of a large program (kubectl: ~100 modules) is a few KiB; more than this is not build info.
MAX_GO_BUILDINFO = 1 << 20
# A Go program holds the magic once, plus once more if it reads build info itself; past this many it is not a Go program.
MAX_GO_CANDIDATES = 64
# A full Debian system's status file is a few MiB.
MAX_DATABASE = 64 << 20
# Inflated bytes handed to the tar walker at a time: a layer's 1 MiB of zeros inflates to ~1 GiB, and a fetch
# thread must not hold that at once.
INFLATE_STEP = 1 << 20
BLOCK = 512
# An ELF file's header and program headers (where its writable data segment starts) sit in its first bytes; a
# header table past this is not one the scan trusts to skip by.
MAX_ELF_HEAD = 64 << 10

DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d/"
APK_INSTALLED = "lib/apk/db/installed"
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")

GZIP_TYPES = ("application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip")
PLAIN_TYPES = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar")
ZSTD_TYPES = ("application/vnd.oci.image.layer.v1.tar+zstd",)


def is_layer(media_type: str) -> bool:
    return media_type in GZIP_TYPES + PLAIN_TYPES + ZSTD_TYPES or ".layer." in media_type


# ---------------------------------------------------------------------------------------------- parsers (pure)


def _uvarint(data: bytes, position: int) -> tuple[int, int]:
    """Go's binary.Uvarint: (value, next position), or (-1, position) when the bytes end first."""
    value = shift = 0
    while position < len(data) and shift < 64:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    return -1, position


def go_blob(blob) -> tuple[str, dict | None]:
    """Decode a candidate build info blob (bytes or a memoryview) that starts with GO_MAGIC: ("ok", info), ("more", None)
    when its strings run past the bytes given, or ("bad", None) when it is not build info (a stray copy of the magic)."""
    if len(blob) < GO_HEADER:
        return "more", None
    if bytes(blob[: len(GO_MAGIC)]) != GO_MAGIC or blob[14] not in (4, 8):
        return "bad", None
    if not blob[15] & 2:
        return "ok", {"go": "", "old_format": True}  # before Go 1.18: pointers into the data segment, not read here
    position = GO_HEADER
    strings = []
    for _ in range(2):
        length, position = _uvarint(blob, position)
        if length < 0 or position + length > len(blob):
            return ("bad" if length > MAX_GO_BUILDINFO or len(blob) >= MAX_GO_BUILDINFO else "more"), None
        strings.append(bytes(blob[position : position + length]).decode("utf-8", "replace"))
        position += length
    version, modinfo = strings
    if not version.startswith("go"):
        return "bad", None
    # The module text is framed by two 16-byte sentinels (cmd/go's infoStart and infoEnd), as debug/buildinfo strips them.
    modinfo = modinfo[16:-16] if len(modinfo) >= 33 and modinfo[-17] == "\n" else ""
    return "ok", {"go": version, **parse_modinfo(modinfo)}


def elf_data_start(head: bytes) -> tuple[int, int]:
    """(bytes of `head` needed, file offset where the search for Go build info starts) for an ELF file's first bytes.

    Go's debug/buildinfo looks in the `.go.buildinfo` section, and without section headers at the start of the first
    PT_LOAD segment that is writable and not executable. The section is always in that writable data (the linker
    writes it there; an external linker can put other writable sections before it, as Debian's Go programs show),
    and the program headers come first in the file (the section headers come last, after the stream has passed), so
    the search starts at that segment and skips the code and read-only data (~98 % of a Go program), where a program
    that reads build info also keeps a stray copy of the magic. (needed, 0) until the header table has arrived; 0 for
    anything that is not a well-formed ELF header (searched whole, as before).
    """
    if len(head) < 64:
        return (64, 0) if head[:4] == ELF_MAGIC else (0, 0)
    if head[:4] != ELF_MAGIC or head[4] not in (1, 2) or head[5] not in (1, 2):
        return 0, 0
    wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
    table, entry_size, entries = (
        (struct.unpack_from(order + "Q", head, 32)[0], *struct.unpack_from(order + "HH", head, 54))
        if wide
        else (struct.unpack_from(order + "I", head, 28)[0], *struct.unpack_from(order + "HH", head, 42))
    )
    end = table + entry_size * entries
    if entry_size < (56 if wide else 32) or end > MAX_ELF_HEAD:
        return 0, 0
    if len(head) < end:
        return end, 0
    for number in range(entries):
        at = table + number * entry_size
        if wide:
            kind, flags, offset = struct.unpack_from(order + "IIQ", head, at)
        else:
            (kind, offset), flags = struct.unpack_from(order + "II", head, at), struct.unpack_from(order + "I", head, at + 24)[0]
        if kind == 1 and flags & 0b11 == 0b10:  # PT_LOAD, PF_W without PF_X
            return 0, offset
    return 0, 0


def parse_modinfo(text: str) -> dict:
    """runtime/debug's module text: `path`, `mod`, `dep` and `=>` (replacement of the line before) lines."""
    found: dict = {"path": "", "main": None, "deps": []}
    last: list | None = None
    for line in text.splitlines():
        words = line.split("\t")
        kind = words[0]
        if kind == "path" and len(words) >= 2:
            found["path"] = words[1]
        elif kind in ("mod", "dep") and len(words) >= 3:
            last = [words[1], words[2]]
            if kind == "mod":
                found["main"] = last
            else:
                found["deps"].append(last)
        elif kind == "=>" and last is not None and len(words) >= 3:
            # A replacement: the module really built is the replacing one; a local directory keeps the
            # module's name but has no version anyone could look up.
            if words[1].startswith((".", "/")):
                last[1] = "(devel)"
            else:
                last[0], last[1] = words[1], words[2]
    return found


def _stanzas(text: str):
    stanza: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, None
        elif line[0] in " \t" and key is not None:
            stanza[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            stanza[key] = value.strip()
    if stanza:
        yield stanza


def parse_dpkg_status(text: str) -> list[dict]:
    """Installed packages of a dpkg status file (or one status.d file): name, version, architecture, source."""
    packages = []
    for stanza in _stanzas(text):
        name, version = stanza.get("Package"), stanza.get("Version")
        status = stanza.get("Status")
        if not name or not version or (status is not None and not status.endswith(" installed")):
            continue
        # `Source: glibc (2.36-9)` when the source version differs from the binary's.
        source, _, source_version = stanza.get("Source", name).partition(" ")
        packages.append(
            {
                "name": name,
                "version": version,
                "arch": stanza.get("Architecture", ""),
                "source": source,
                "source_version": source_version.strip("()") or version,
            }
        )
    return packages


def parse_apk_installed(text: str) -> list[dict]:
    """Installed packages of an apk database: one block per package, `P:` name, `V:` version, `A:` arch, `o:` origin."""
    packages = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":" and line[0] not in fields:
                fields[line[0]] = line[2:]
        if fields.get("P") and fields.get("V"):
            packages.append({"name": fields["P"], "version": fields["V"], "arch": fields.get("A", ""), "source": fields.get("o", fields["P"])})
    return packages


def parse_os_release(text: str) -> dict:
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("ID", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME"):
            found[key.lower()] = value.strip().strip("\"'")
    return found


# ---------------------------------------------------------------------------------------------- streaming taps


class _GoFinder:
    """Looks for the build info blob in one file's bytes as they stream past.

    Candidates (the magic at a 16-byte aligned offset) are judged in place; only one whose strings run
    past the bytes at hand is copied aside until more arrive, so a file full of stray magic costs a
    linear scan, not a copy per candidate.
    """

    def __init__(self, start: int = 0):
        self.start = start  # file offset where the search starts (elf_data_start)
        self.offset = 0  # file offset of the next byte fed
        self._tail = b""
        self._capture: bytearray | None = None
        self._start = 0
        self.found: dict | None = None
        self.candidates = 0

    def feed(self, data) -> None:
        """The file's next bytes (bytes or a memoryview); those before `start` are counted, not searched or copied."""
        if self.offset + len(data) <= self.start:
            self.offset += len(data)
            return
        if self.offset < self.start:
            data, self.offset = data[self.start - self.offset :], self.start
        data = bytes(data)
        while data and self.found is None and self.candidates <= MAX_GO_CANDIDATES:
            data = self._take(data)

    def _take(self, data: bytes) -> bytes:
        """Consume `data`; return the bytes to look at again (after a captured candidate proved stray), else b""."""
        if self._capture is not None:
            self._capture += data
            self.offset += len(data)
            return self._judge(final=False)
        # The magic may straddle the chunk boundary: the few bytes kept from the last chunk are searched with the
        # start of this one; the chunk itself is searched in place (no copy of it).
        start, boundary = self.offset, self._tail + data[: len(GO_MAGIC) - 1]
        straddling = boundary.find(GO_MAGIC) if self._tail else -1
        if straddling >= 0:
            window, base, search = self._tail + data, start - len(self._tail), straddling
        else:
            window, base, search = data, start, 0
        view = memoryview(window)
        self.offset += len(data)
        while True:
            index = window.find(GO_MAGIC, search)
            if index < 0:
                break
            if (base + index) % GO_ALIGN == 0:
                self.candidates += 1
                if self.candidates > MAX_GO_CANDIDATES:
                    return b""
                state, info = go_blob(view[index : index + MAX_GO_BUILDINFO])
                if state == "ok":
                    self.found = info
                    return b""
                if state == "more" and len(window) - index < MAX_GO_BUILDINFO:
                    self._capture, self._start, self._tail = bytearray(view[index:]), base + index, b""
                    return b""
            search = index + 1
        self._tail = window[-(len(GO_MAGIC) - 1) :]
        return b""

    def _judge(self, final: bool) -> bytes:
        state, info = go_blob(memoryview(self._capture)[:MAX_GO_BUILDINFO])
        if state == "more" and not final and len(self._capture) < MAX_GO_BUILDINFO:
            return b""
        if state == "ok":
            self.found, self._capture = info, None
            return b""
        # A stray copy of the magic (a program that reads build info holds it as a string): look on after it.
        rest, self._capture = bytes(self._capture[1:]), None
        self.offset, self._tail = self._start + 1, b""
        return rest

    def finish(self) -> dict | None:
        while self._capture is not None and self.found is None and self.candidates <= MAX_GO_CANDIDATES:
            self.feed(self._judge(final=True))
        return self.found


@dataclass
class BlobContents:
    """What one blob holds, by path (layers and archives) or for the blob itself (a bare binary)."""

    status: str = "scanned"  # or "not-scanned"
    reason: str = ""
    files: dict[str, dict] = field(default_factory=dict)  # path -> {"go": {...}} / {"dpkg": [...]} / {"apk": [...]} / {"os": {...}}
    whiteouts: list[str] = field(default_factory=list)  # paths an upper layer deletes
    opaque: list[str] = field(default_factory=list)  # directories whose lower contents an upper layer hides

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "status": self.status, "reason": self.reason, "files": self.files, "whiteouts": self.whiteouts, "opaque": self.opaque}

    @classmethod
    def from_dict(cls, document: dict) -> BlobContents:
        return cls(document["status"], document.get("reason", ""), dict(document["files"]), list(document["whiteouts"]), list(document["opaque"]))


def _interest(path: str) -> str | None:
    if path == DPKG_STATUS:
        return "dpkg"
    if path.startswith(DPKG_STATUS_D) and not path.endswith(".md5sums") and "/" not in path[len(DPKG_STATUS_D) :]:
        return "dpkg"
    if path == APK_INSTALLED:
        return "apk"
    if path in OS_RELEASE:
        return "os"
    return None


def _clean(path: str) -> str:
    while path.startswith(("./", "/")):
        path = path[2:] if path.startswith("./") else path[1:]
    return path.rstrip("/")


class _Member:
    """The member being read: a database collected whole, or an executable searched for Go build info."""

    def __init__(self, path: str, interest: str | None):
        self.path = path
        self.interest = interest
        self.data = bytearray() if interest else None
        self.go: _GoFinder | None = None
        self.first = bytearray()  # an executable's first bytes: its ELF header and program headers

    @property
    def wanted(self) -> bool:
        """Whether more of this member's bytes could change what is found (most files: not after four bytes)."""
        if self.interest:
            return self.data is not None
        if self.go is not None:
            return self.go.found is None and self.go.candidates <= MAX_GO_CANDIDATES
        return len(self.first) < 4 or self.first[:4] == ELF_MAGIC

    def feed(self, chunk) -> None:
        """The member's next bytes (bytes or a memoryview), in order."""
        if self.interest:
            if self.data is not None and len(self.data) + len(chunk) > MAX_DATABASE:
                self.data = None  # not a real package database; dropped rather than held
            elif self.data is not None:
                self.data += chunk
            return
        if self.go is None:
            if len(self.first) < 4:
                take = 4 - len(self.first)
                self.first += chunk[:take]
                chunk = chunk[take:]
                if len(self.first) < 4 or self.first != ELF_MAGIC:
                    return
            # An ELF file: its header table tells where the search for build info starts.
            take = MAX_ELF_HEAD - len(self.first)
            self.first += chunk[:take]
            chunk = chunk[take:]
            needed, start = elf_data_start(self.first)
            if needed > len(self.first):
                return
            self.go = _GoFinder(start)
            head, self.first = self.first, bytearray()  # the finder has the head now; `wanted` asks the finder
            self.go.feed(head)
        self.go.feed(chunk)

    def result(self) -> dict | None:
        if self.data is not None:
            text = bytes(self.data).decode("utf-8", "replace")
            if self.interest == "dpkg":
                return {"dpkg": parse_dpkg_status(text)}
            if self.interest == "apk":
                return {"apk": parse_apk_installed(text)}
            return {"os": parse_os_release(text)}
        if self.go is not None:
            found = self.go.finish()
            return {"go": found} if found else None
        return None


class _TarWalker:
    """A push parser for a tar stream: headers, pax and GNU long names, member data in chunks."""

    def __init__(self, contents: BlobContents):
        self.contents = contents
        self._buffer = bytearray()
        self._remaining = 0  # data bytes of the current member still to come
        self._padding = 0
        self._member: _Member | None = None
        self._special: bytearray | None = None  # pax or GNU long name data being collected
        self._special_kind = b""
        self._pax: dict[str, str] = {}
        self._long_name: str | None = None
        self.ended = False
        self.broken = ""

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view) and not self.ended and not self.broken:
            if self._remaining:
                take = view[: self._remaining]
                view = view[len(take) :]
                self._remaining -= len(take)
                if self._member is not None and self._member.wanted:
                    self._member.feed(take)
                elif self._special is not None:
                    self._special += take
                if not self._remaining:
                    self._end_member()
                continue
            if self._padding:
                skip = min(self._padding, len(view))
                view = view[skip:]
                self._padding -= skip
                continue
            need = BLOCK - len(self._buffer)
            self._buffer += view[:need]
            view = view[need:]
            if len(self._buffer) == BLOCK:
                block, self._buffer = bytes(self._buffer), bytearray()
                self._header(block)

    def _header(self, block: bytes) -> None:
        if block == b"\x00" * BLOCK:
            self.ended = True
            return
        try:
            size_field = block[124:136]
            size = int(size_field.strip(b"\x00 ") or b"0", 8) if not size_field[0] & 0x80 else int.from_bytes(size_field[1:], "big")
        except ValueError:
            self.broken = "a tar header is corrupt"
            return
        kind = block[156:157]
        name = block[0:100].split(b"\x00", 1)[0]
        prefix = block[345:500].split(b"\x00", 1)[0] if block[257:262] == b"ustar" else b""
        path = (prefix + b"/" + name if prefix else name).decode("utf-8", "replace")
        if "size" in self._pax and kind not in (b"x", b"g"):
            try:
                size = int(self._pax["size"])
            except ValueError:
                self.broken = "a pax size is not a number"
                return
        self._remaining, self._padding = size, -size % BLOCK
        if kind in (b"x", b"L") and size <= 1 << 20:
            self._special, self._special_kind = bytearray(), kind
        elif kind in (b"x", b"L", b"g"):
            self._special = None
        else:
            path = _clean(self._long_name or self._pax.get("path") or path)
            self._pax, self._long_name = {}, None
            self._file(path, kind)
        if not self._remaining:
            self._end_member()

    def _file(self, path: str, kind: bytes) -> None:
        directory, _, base = path.rpartition("/")
        if base == ".wh..wh..opq":
            self.contents.opaque.append(directory)
        elif base.startswith(".wh."):
            self.contents.whiteouts.append(f"{directory}/{base[4:]}" if directory else base[4:])
        elif kind in (b"0", b"\x00", b"7"):
            self._member = _Member(path, _interest(path))

    def _end_member(self) -> None:
        if self._member is not None:
            found = self._member.result()
            if found is not None:
                self.contents.files[self._member.path] = found
            self._member = None
        elif self._special is not None:
            data = bytes(self._special)
            if self._special_kind == b"L":
                self._long_name = data.split(b"\x00", 1)[0].decode("utf-8", "replace")
            else:
                self._pax = _pax_records(data)
            self._special = None


def _pax_records(data: bytes) -> dict[str, str]:
    records = {}
    position = 0
    while position < len(data):
        space = data.find(b" ", position)
        if space < 0:
            break
        try:
            length = int(data[position:space])
        except ValueError:
            break
        if length <= 0:
            break
        key, _, value = data[space + 1 : position + length - 1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        position += length
    return records


class Tap:
    """Receives a blob's bytes in order (`write`), may be told to start over (`reset`), then gives its contents."""

    def __init__(self, kind: str, path: str = ""):
        self.kind = kind  # "gzip", "tar", "zstd" (not read), "file" (a bare binary named `path`)
        self.path = path
        self.fed = 0
        self.reset()

    def reset(self) -> None:
        self.fed = 0
        self.contents = BlobContents()
        if self.kind == "zstd":
            self.contents = BlobContents("not-scanned", "zstd-compressed layer: airlock reads gzip and plain tar layers")
        self._inflate = inflating.decompressobj(31) if self.kind == "gzip" else None
        self._walker = _TarWalker(self.contents) if self.kind in ("gzip", "tar") else None
        self._member = _Member(self.path, None) if self.kind == "file" else None

    def write(self, data: bytes) -> None:
        self.fed += len(data)
        if self._walker is not None and (self._walker.ended or self._walker.broken):
            return
        if self._inflate is not None:
            try:
                while data and not (self._walker.ended or self._walker.broken):
                    out = self._inflate.decompress(data, INFLATE_STEP)
                    if out:
                        self._walker.feed(out)
                    data = self._inflate.unconsumed_tail
                    if self._inflate.eof:  # a concatenated gzip member follows
                        data = self._inflate.unused_data
                        self._inflate = inflating.decompressobj(31)
            except inflating.error as error:
                self._walker.broken = f"not gzip: {error}"
            return
        if self._walker is not None:
            self._walker.feed(data)
        elif self._member is not None:
            self._member.feed(data)

    def finish(self) -> BlobContents:
        if self._walker is not None and self._walker.broken:
            self.contents = BlobContents("not-scanned", self._walker.broken)
        elif self._member is not None:
            found = self._member.result()
            if found is not None:
                self.contents.files[BARE] = found  # the blob itself: the same bytes may be several members
        return self.contents


# Where a bare binary's own build info is kept in its BlobContents (a blob, not a path: identical bytes
# serve as several members, such as one kubectl for two architectures).
BARE = ""


def tap_kind(media_type: str = "", path: str = "") -> str | None:
    """How to read a blob: a layer by its media type, a bundle file by its name; None when nothing is inside."""
    if media_type:
        if media_type in GZIP_TYPES:
            return "gzip"
        if media_type in PLAIN_TYPES:
            return "tar"
        if media_type in ZSTD_TYPES:
            return "zstd"
        return None
    if path.endswith((".tgz", ".tar.gz")):
        return "gzip"
    if path.startswith("bin/") and not path.endswith((".pyz", ".tar", ".zip")):
        return "file"
    return None


# ---------------------------------------------------------------------------------------------- the build's catalogue


class Contents:
    """Scan results of a build's blobs, by digest; cached beside the blobs, read back instead of the blob."""

    def __init__(self, store: BlobStore, cache_dir: Path, enabled: bool = True):
        self.store = store
        self.directory = Path(cache_dir) / "contents" / f"v{SCHEMA}"
        self.enabled = enabled
        self._results: dict[str, BlobContents] = {}
        self._inflight: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.reread_bytes = 0
        self.scanned_bytes = 0

    def _path(self, digest: str) -> Path:
        return self.directory / digest.split(":", 1)[1]

    def known(self, digest: str) -> BlobContents | None:
        with self._lock:
            if digest in self._results:
                return self._results[digest]
        try:
            found = BlobContents.from_dict(json.loads(self._path(digest).read_bytes()))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        with self._lock:
            self._results[digest] = found
        return found

    @contextmanager
    def scanning(self, digest: str, kind: str | None, path: str = ""):
        """Around the download of `digest`: yields the tap to hand it (None when its contents are known or not wanted).

        After the download, what the tap saw is kept. When it saw less than the whole blob (the blob was in the
        cache already, or another build wrote it), the blob is read once from the store. Two downloads of one
        digest at once (identical files for two architectures) scan it once: the second waits for the first.
        """
        if not self.enabled or kind is None or self.known(digest) is not None:
            yield None
            return
        with self._lock:
            first = self._inflight.get(digest)
            if first is None:
                mine = self._inflight[digest] = threading.Event()
        if first is not None:
            yield None
            first.wait()
            if self.known(digest) is None:
                self._read_stored(digest, kind, path)
            return
        tap = Tap(kind, path)
        try:
            yield tap
            if tap.fed != self.store.size(digest):
                self._read_stored(digest, kind, path)
            else:
                with self._lock:
                    self.scanned_bytes += tap.fed
                self._remember(digest, tap.finish())
        finally:
            with self._lock:
                del self._inflight[digest]
            mine.set()

    def _read_stored(self, digest: str, kind: str, path: str) -> None:
        tap = Tap(kind, path)
        with self.store.open(digest) as handle:
            while chunk := handle.read(1 << 20):
                tap.write(chunk)
        with self._lock:
            self.reread_bytes += tap.fed
            self.scanned_bytes += tap.fed
        self._remember(digest, tap.finish())

    def _remember(self, digest: str, found: BlobContents) -> None:
        with self._lock:
            self._results[digest] = found
        # Not synced to disk: a result a crash damaged (empty, NULs, cut short) does not parse, so `known` reads the
        # blob again; a sync per blob would make every layer of a cold build wait for the disk's journal.
        with AtomicFile(self._path(digest), 0o644, durable=False) as handle:
            handle.write(json.dumps(found.to_dict(), sort_keys=True).encode())

    def result(self, digest: str) -> BlobContents:
        found = self.known(digest)
        if found is None:
            return BlobContents("not-scanned", "contents scan turned off" if not self.enabled else "not read")
        return found


# ---------------------------------------------------------------------------------------------- packages


@dataclass(frozen=True)
class Package:
    """One package found: its ecosystem (OSV's name), name, version, PURL, and what OSV is asked about."""

    ecosystem: str  # "Go", "Debian:12", "Alpine:v3.19", or "Debian"/"Alpine" when the release is unknown
    name: str
    version: str
    purl: str
    query_name: str  # OSV's package name: the Go module, Debian's source package, Alpine's origin
    query_version: str

    @property
    def key(self) -> str:
        return self.purl


@dataclass(frozen=True)
class Binary:
    """A Go program found in a file or an image: where, built with which Go, from which main module."""

    path: str
    go: str
    main_path: str  # the main module (k8s.io/kubernetes)
    main_version: str
    modules: tuple[Package, ...]
    note: str = ""
    package: str = ""  # the main package (k8s.io/kubernetes/cmd/kubectl)


@dataclass
class Inventory:
    """What one container (a bundle file, or one platform of an image) holds."""

    container: str  # the bundle member path, or the image reference
    platform: str = ""  # linux/amd64 for an image; "" for a bundle file
    os: dict = field(default_factory=dict)
    packages: list[Package] = field(default_factory=list)
    binaries: list[Binary] = field(default_factory=list)
    unscanned: list[str] = field(default_factory=list)  # why parts of it were not read


def purl_version(text: str) -> str:
    return quote(text, safe=":~._-")


_GO_PSEUDO = re.compile(r"^v?\d")


def go_packages(info: dict) -> tuple[Package, ...]:
    """The toolchain (OSV's Go `stdlib`) and every module of a Go build info."""
    found = []
    version = info.get("go", "")
    if version.startswith("go"):
        bare = version[2:].split(" ", 1)[0].split("-", 1)[0]
        found.append(Package("Go", "stdlib", version, f"pkg:golang/stdlib@{purl_version(version)}", "stdlib", bare))
    main = info.get("main")
    modules = ([main] if main and _GO_PSEUDO.match(main[1] or "") else []) + list(info.get("deps") or [])
    for path, module_version in modules:
        if not _GO_PSEUDO.match(module_version or ""):
            # (devel): a module replaced by a local directory. It is in the program, so it is listed, but it has
            # no version anyone could look up. (A main module built from a checkout is the program itself.)
            found.append(Package("Go", path, module_version or "(devel)", f"pkg:golang/{path.lower()}", path, ""))
            continue
        found.append(
            Package("Go", path, module_version, f"pkg:golang/{path.lower()}@{purl_version(module_version)}", path, module_version.lstrip("v"))
        )
    return tuple(found)


def _release(os_info: dict, family: str) -> str:
    version = os_info.get("version_id", "")
    if family == "Debian" and os_info.get("id") == "debian" and version:
        return f"Debian:{version.split('.', 1)[0]}"
    if family == "Alpine" and os_info.get("id") == "alpine" and version:
        return "Alpine:v" + ".".join(version.split(".")[:2])
    return family


def os_packages(kind: str, found: list[dict], os_info: dict, arch: str) -> list[Package]:
    packages = []
    if kind == "dpkg":
        ecosystem = _release(os_info, "Debian")
        distro = f"&distro=debian-{os_info['version_id']}" if os_info.get("id") == "debian" and os_info.get("version_id") else ""
        for item in found:
            arch_qualifier = item.get("arch") or arch
            purl = f"pkg:deb/debian/{item['name'].lower()}@{purl_version(item['version'])}?arch={arch_qualifier}{distro}"
            packages.append(Package(ecosystem, item["name"], item["version"], purl, item["source"], item["source_version"]))
    else:
        ecosystem = _release(os_info, "Alpine")
        distro = f"&distro={os_info['version_id']}" if os_info.get("id") == "alpine" and os_info.get("version_id") else ""
        for item in found:
            purl = f"pkg:apk/alpine/{item['name'].lower()}@{purl_version(item['version'])}?arch={item.get('arch') or arch}{distro}"
            packages.append(Package(ecosystem, item["name"], item["version"], purl, item["source"], item["version"]))
    return packages


def _binary(path: str, info: dict) -> Binary:
    if info.get("old_format"):
        return Binary(path, "", "", "", (), "Go build info from before Go 1.18: not read")
    main = info.get("main") or ["", ""]
    return Binary(path, info.get("go", ""), main[0], main[1], go_packages(info), package=info.get("path", ""))


def inventory_of_file(member: str, contents: BlobContents) -> Inventory:
    """A bundle file: a bare Go binary, or an archive of them."""
    inventory = Inventory(member)
    if contents.status != "scanned":
        inventory.unscanned.append(f"{member}: {contents.reason}")
    for path, found in sorted(contents.files.items()):
        if "go" in found:
            inventory.binaries.append(_binary(member if path == BARE else path, found["go"]))
    return inventory


def merge_layers(layers: list[BlobContents]) -> dict[str, dict]:
    """The files of interest that the image's final filesystem holds, layers applied in order."""
    files: dict[str, dict] = {}
    for layer in layers:
        for directory in layer.opaque:
            prefix = directory + "/" if directory else ""
            files = {path: found for path, found in files.items() if not path.startswith(prefix)}
        for gone in layer.whiteouts:
            files = {path: found for path, found in files.items() if path != gone and not path.startswith(gone + "/")}
        files.update(layer.files)
    return files


def inventory_of_image(reference: str, platform: str, layers: list[tuple[str, BlobContents]]) -> Inventory:
    inventory = Inventory(reference, platform)
    for digest, layer in layers:
        if layer.status != "scanned":
            inventory.unscanned.append(f"layer {digest[:19]}: {layer.reason}")
    files = merge_layers([layer for _, layer in layers])
    for path in OS_RELEASE:
        if "os" in files.get(path, {}):
            inventory.os = files[path]["os"]
            break
    arch = platform.rsplit("/", 1)[-1]
    for path, found in sorted(files.items()):
        for kind in ("dpkg", "apk"):
            if kind in found:
                inventory.packages += os_packages(kind, found[kind], inventory.os, arch)
        if "go" in found:
            inventory.binaries.append(_binary("/" + path, found["go"]))
    return inventory


def read_go_buildinfo(path: Path) -> dict | None:
    """The build info of one executable on disk (tests and tools; the build reads it while streaming)."""
    member = _Member(str(path), None)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            member.feed(chunk)
    found = member.result()
    return found["go"] if found else None

