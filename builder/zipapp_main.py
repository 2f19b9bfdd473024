"""`__main__` of airlock-node.pyz: runs the node commands from the one file, on Python 3.9 or newer.

Standard library only, and Python 3.9 syntax: this runs before anything else
in the archive can be imported. zipimport loads pure Python straight from the
archive but cannot load a shared library, so the two native modules the node
needs (cryptography's Rust core and cffi's backend) are extracted, when first
imported, into a cache directory of the current user:

    root       /var/lib/airlock/pyz-cache/<id>
    otherwise  $XDG_CACHE_HOME/airlock/pyz-cache/<id>   (~/.cache when unset)
    override   $AIRLOCK_PYZ_CACHE/<id>

A command that only reads (verify, inspect, phases, status, trust list) run
as root uses a private temporary directory instead, removed when it exits: a
reviewer's `verify` leaves no /var/lib/airlock behind.

<id> is the sha256 of `_native/index.json`, the list written at build time of
every native file with its own sha256, so two archives share a cache exactly
when they carry the same native files. A cache directory must be a real
directory owned by the current user and writable by nobody else; every file
taken from it is hashed against the list before it is loaded, on every run.
"""

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import platform
import stat
import sys
import tempfile
import zipfile

INDEX = "_native/index.json"
ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


class NativeError(Exception):
    """The native part of the archive cannot be used here; the message says why and what to do."""


READ_ONLY = (("verify",), ("inspect",), ("phases",), ("status",), ("trust", "list"))


def read_only(argv: list) -> bool:
    """Whether the command line runs a command that changes nothing on this machine."""
    return any(tuple(argv[1 : 1 + len(words)]) == words for words in READ_ONLY)


def temporary_cache() -> str:
    import atexit
    import shutil

    directory = tempfile.mkdtemp(prefix="airlock-pyz-cache-")  # 0700, this user's
    atexit.register(shutil.rmtree, directory, True)
    return directory


def cache_base() -> str:
    override = os.environ.get("AIRLOCK_PYZ_CACHE")
    if override:
        return override
    if os.geteuid() == 0 and read_only(sys.argv):
        return temporary_cache()
    if os.geteuid() == 0:
        return "/var/lib/airlock/pyz-cache"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "airlock", "pyz-cache")


def private_directory(path: str) -> str:
    """Create `path` (mode 0700) if missing; refuse it unless it is a directory of ours that nobody else can write."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise NativeError(f"{path} is not a directory; remove it or set AIRLOCK_PYZ_CACHE to another place")
    if info.st_uid != os.geteuid():
        raise NativeError(f"{path} is owned by uid {info.st_uid}, not by this user ({os.geteuid()}); remove it or set AIRLOCK_PYZ_CACHE")
    if info.st_mode & 0o022:
        raise NativeError(f"{path} is writable by group or others (mode {stat.S_IMODE(info.st_mode):o}); chmod go-w it or remove it")
    return path


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class NativeModules(importlib.abc.MetaPathFinder):
    """Finds the archive's extension modules for this machine and Python, extracted and checked on first import."""

    def __init__(self, archive: str, index_bytes: bytes):
        self.archive = archive
        self.cache_id = hashlib.sha256(index_bytes).hexdigest()
        self.arch = ARCHES.get(platform.machine(), platform.machine())
        self.python = f"cp{sys.version_info[0]}{sys.version_info[1]}"
        index = json.loads(index_bytes)
        self.arches = sorted({entry["arch"] for entry in index["files"]})
        self.modules = {}
        for entry in index["files"]:
            if entry["arch"] == self.arch and self.usable(entry):
                self.modules[entry["module"]] = entry
        self.directory = None

    def usable(self, entry: dict) -> bool:
        if entry["abi"] == "abi3":
            return tuple(sys.version_info[:2]) >= tuple(entry["python"])
        return entry["abi"] == self.python

    def find_spec(self, fullname, path=None, target=None):
        entry = self.modules.get(fullname)
        if entry is None:
            if fullname in {"_cffi_backend", "cryptography.hazmat.bindings._rust"}:
                raise NativeError(
                    f"airlock-node.pyz carries no {fullname} for {self.arch} and Python {sys.version.split()[0]} "
                    f"(it has {', '.join(self.arches)}, Python 3.9 to 3.13)"
                )
            return None
        location = self.extract(entry)
        loader = importlib.machinery.ExtensionFileLoader(fullname, location)
        return importlib.util.spec_from_file_location(fullname, location, loader=loader)

    def extract(self, entry: dict) -> str:
        if self.directory is None:
            base = cache_base()
            try:
                os.makedirs(os.path.dirname(base), exist_ok=True)
                self.directory = private_directory(os.path.join(private_directory(base), self.cache_id))
            except OSError as error:
                raise NativeError(f"cannot use {base} for native code: {error.strerror}; set AIRLOCK_PYZ_CACHE to a private directory") from None
        target = self.directory
        for part in entry["path"].split("/")[1:-1]:
            target = private_directory(os.path.join(target, part))
        target = os.path.join(target, entry["path"].rsplit("/", 1)[1])
        if os.path.isfile(target) and not os.path.islink(target) and file_sha256(target) == entry["sha256"]:
            return target
        descriptor, temporary = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".extract-")
        try:
            digest = hashlib.sha256()
            with os.fdopen(descriptor, "wb") as out, zipfile.ZipFile(self.archive) as archive, archive.open(entry["path"]) as source:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != entry["sha256"]:
                raise NativeError(f"{entry['path']} in {self.archive} does not match its recorded sha256; the archive is damaged, copy it again")
            os.chmod(temporary, 0o500)
            os.replace(temporary, target)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        # Hash what is on disk now, the file that will be loaded.
        if file_sha256(target) != entry["sha256"]:
            raise NativeError(f"{target} changed while it was being extracted; remove {self.directory} and run again")
        return target


def archive_path() -> str:
    loader = globals().get("__loader__")
    archive = getattr(loader, "archive", None)
    return archive if archive else os.path.dirname(os.path.abspath(__file__))


def install_native_finder() -> None:
    archive = archive_path()
    with zipfile.ZipFile(archive) as bundle:
        index_bytes = bundle.read(INDEX)
    sys.meta_path.insert(0, NativeModules(archive, index_bytes))


def main() -> None:
    # RHEL 8's platform-python is 3.6: say so in one line instead of failing somewhere inside.
    if sys.version_info < (3, 9):  # noqa: UP036
        sys.exit(f"airlock: error: airlock-node.pyz needs Python 3.9 or newer; this is {sys.version.split()[0]}")
    install_native_finder()
    # The archive carries no rich: typer formats help and errors with click alone (it reads this once, on import).
    previous = os.environ.get("TYPER_USE_RICH")
    os.environ["TYPER_USE_RICH"] = "0"
    try:
        from installer.cli import main as node_main
    except NativeError as error:
        sys.exit(f"airlock: error: {error}")
    finally:
        if previous is None:
            del os.environ["TYPER_USE_RICH"]
        else:
            os.environ["TYPER_USE_RICH"] = previous
    try:
        node_main()
    except NativeError as error:
        sys.exit(f"airlock: error: {error}")


if __name__ == "__main__":
    main()
