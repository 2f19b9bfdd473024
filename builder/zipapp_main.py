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
when they carry the same native files.

Another local user must never get their code loaded in place of these files
(the node installer runs as root). So:

- the cache is opened one directory at a time from `/`, never following a
  link (links above the cache are resolved once, and the directories they
  name are what is checked), and used through the descriptors it was checked
  through: renaming a directory above it afterwards changes nothing;
- every directory above the cache must belong to root or the current user and
  be writable by no one else, unless it is sticky like /tmp (where others
  cannot rename our entries); the cache and what is under it must be the
  user's own and writable by no one else;
- every directory the pyz creates is 0700 whatever the umask, and files 0500;
- the bytes loaded are the bytes hashed: they are copied, hashed on the way,
  into a sealed memfd that `dlopen` reads as /proc/self/fd/N. Where
  memfd_create is missing (Linux before 3.17, or a Python built without it)
  the cache file itself is loaded through the descriptor it was hashed
  through; the checks above keep other users from changing it, only root
  and the user could.
"""

import errno
import fcntl
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import platform
import secrets
import stat
import sys
import zipfile

INDEX = "_native/index.json"
ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
PRIVATE_DIRECTORY = 0o700
NATIVE_FILE = 0o500
CHUNK = 1 << 20
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
ELSEWHERE = "set AIRLOCK_PYZ_CACHE to a directory below ones only root and you can write"


class NativeError(Exception):
    """The native part of the archive cannot be used here; the message says why and what to do."""


READ_ONLY = (("verify",), ("inspect",), ("phases",), ("status",), ("trust", "list"))


def read_only(argv: list) -> bool:
    """Whether the command line runs a command that changes nothing on this machine."""
    return any(tuple(argv[1 : 1 + len(words)]) == words for words in READ_ONLY)


def temporary_cache() -> str:
    import atexit
    import shutil
    import tempfile

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


def _open_or_create(parent, name: str, shown: str) -> int:
    """The directory `name` under the descriptor `parent` (None: `name` is absolute), made (0700 exactly) when missing; never through a link."""
    try:
        return os.open(name, DIRECTORY_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError as error:
        if error.errno in (errno.ENOTDIR, errno.ELOOP):
            raise NativeError(f"{shown} is not a directory; remove it or set AIRLOCK_PYZ_CACHE to another place") from None
        raise
    try:
        os.mkdir(name, PRIVATE_DIRECTORY, dir_fd=parent)
        created = True
    except FileExistsError:
        created = False
    descriptor = os.open(name, DIRECTORY_FLAGS, dir_fd=parent)
    if created:
        os.fchmod(descriptor, PRIVATE_DIRECTORY)  # mkdir's mode passes through the umask: set it exactly
    return descriptor


def _check_ancestor(info: os.stat_result, shown: str) -> None:
    if info.st_uid not in (0, os.geteuid()):
        raise NativeError(f"{shown} belongs to uid {info.st_uid}, who could swap what is under it; {ELSEWHERE}")
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise NativeError(
            f"{shown} is writable by others (mode {stat.S_IMODE(info.st_mode):o}), who could swap what is under it; chmod go-w it or {ELSEWHERE}"
        )


def _check_private(descriptor: int, shown: str) -> None:
    info = os.fstat(descriptor)
    if info.st_uid != os.geteuid():
        raise NativeError(f"{shown} is owned by uid {info.st_uid}, not by this user ({os.geteuid()}); remove it or set AIRLOCK_PYZ_CACHE")
    if info.st_mode & 0o022:
        raise NativeError(f"{shown} is writable by group or others (mode {stat.S_IMODE(info.st_mode):o}); chmod go-w it or remove it")


def private_directory(parent: int, name: str, shown: str) -> int:
    """A descriptor of the directory `name` under `parent` (created 0700 if missing) that is ours and nobody else can write."""
    descriptor = _open_or_create(parent, name, shown)
    try:
        _check_private(descriptor, shown)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def open_cache(path: str) -> int:
    """A descriptor of the cache directory `path`, reached from / one checked directory at a time.

    Missing directories are created 0700. Each directory above the cache must
    belong to root or this user and be writable by no one else (sticky ones
    excepted); links above the cache are resolved first, so the directories
    they lead to are the ones checked, and the cache itself must not be a link.
    """
    absolute = os.path.abspath(path)
    parent_path, name = os.path.split(absolute)
    parent_path = os.path.realpath(parent_path)
    parts = [p for p in parent_path.split("/") if p]
    # "/" is checked by path and its first entry opened by absolute name, from there on everything is relative to a
    # checked descriptor. (Only root can change "/"; and under `qemu-aarch64 -L SYSROOT`, which make check-arm64 uses,
    # "/" itself is the sysroot while /work/... is the host's, as for any other absolute path.)
    _check_ancestor(os.stat("/"), "/")
    descriptor = None if parts else os.open("/", DIRECTORY_FLAGS)
    try:
        shown = ""
        for part in parts:
            shown = f"{shown}/{part}"
            child = _open_or_create(descriptor, part if descriptor is not None else shown, shown)
            if descriptor is not None:
                os.close(descriptor)
            descriptor = child
            _check_ancestor(os.fstat(descriptor), shown)
        return private_directory(descriptor, name, os.path.join(parent_path, name))
    finally:
        if descriptor is not None:
            os.close(descriptor)


def _pour(read, targets: list) -> str:
    """Copy everything `read` returns into every descriptor in `targets`; the sha256 of what was copied."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: read(CHUNK), b""):
        digest.update(chunk)
        for target in targets:
            view = memoryview(chunk)
            while view:
                view = view[os.write(target, view) :]
    return digest.hexdigest()


def _memfd(name: str):
    """A new memfd for `name`, or None where the kernel or this Python has none (Linux before 3.17)."""
    try:
        return os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except (AttributeError, OSError):
        return None


def _seal(descriptor: int) -> None:
    """No more writes, ever, by anyone; where the kernel (or qemu-user) refuses seals, only this process holds it anyway."""
    try:
        fcntl.fcntl(descriptor, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    except (AttributeError, OSError):
        pass


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
        self.directory_path = ""
        # dlopen knows a library by its name: a /proc/self/fd/N it loaded stays open, so N never names another one.
        self.loaded = []

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
        try:
            location = self.load_path(entry)
        except OSError as error:
            raise NativeError(
                f"cannot use {self.directory_path or cache_base()} for native code: {error.strerror}; set AIRLOCK_PYZ_CACHE to a private directory"
            ) from None
        loader = importlib.machinery.ExtensionFileLoader(fullname, location)
        return importlib.util.spec_from_file_location(fullname, location, loader=loader)

    def cache_directory(self) -> int:
        if self.directory is None:
            base = cache_base()
            try:
                cache = open_cache(base)
                try:
                    self.directory_path = os.path.join(os.path.abspath(base), self.cache_id)
                    self.directory = private_directory(cache, self.cache_id, self.directory_path)
                finally:
                    os.close(cache)
            except NativeError as error:
                raise NativeError(f"cannot use {base} for native code: {error}") from None
            except OSError as error:
                raise NativeError(f"cannot use {base} for native code: {error.strerror}; set AIRLOCK_PYZ_CACHE to a private directory") from None
        return self.directory

    def load_path(self, entry: dict) -> str:
        """/proc/self/fd/N of a descriptor holding exactly the bytes of `entry` that hashed to its recorded sha256."""
        parts = entry["path"].split("/")[1:]
        directory = os.dup(self.cache_directory())
        shown = self.directory_path
        try:
            for part in parts[:-1]:
                shown = os.path.join(shown, part)
                child = private_directory(directory, part, shown)
                os.close(directory)
                directory = child
            name = parts[-1]
            cached = self.cached(directory, name)
            if cached is not None:
                location = self.from_cache(cached, entry, name)
                if location is not None:
                    return location
            memory = _memfd(name)
            try:
                written = self.extract(directory, name, entry, memory, os.path.join(shown, name))
            except BaseException:
                if memory is not None:
                    os.close(memory)
                raise
            if memory is None:
                return self.keep(written)
            os.close(written)
            return self.keep(memory, sealed=True)
        finally:
            os.close(directory)

    def from_cache(self, cached: int, entry: dict, name: str):
        """Load what the descriptor `cached` holds if it hashes to the recorded sha256 (through a memfd where there is one); else None."""
        memory = _memfd(name)
        descriptors = [cached] + ([memory] if memory is not None else [])
        try:
            matches = _pour(lambda size: os.read(cached, size), descriptors[1:]) == entry["sha256"]
        except BaseException:
            matches = False
            raise
        finally:
            if not matches:
                for descriptor in descriptors:
                    os.close(descriptor)
        if not matches:
            return None
        if memory is None:
            return self.keep(cached)
        os.close(cached)
        return self.keep(memory, sealed=True)

    def keep(self, descriptor: int, sealed: bool = False) -> str:
        if sealed:
            _seal(descriptor)
        self.loaded.append(descriptor)
        return f"/proc/self/fd/{descriptor}"

    @staticmethod
    def cached(directory: int, name: str):
        """A descriptor of the cached file `name`, or None when there is none that could be ours (it is then replaced)."""
        try:
            descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
        except OSError:
            return None
        info = os.fstat(descriptor)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022:
            return descriptor
        os.close(descriptor)
        return None

    def extract(self, directory: int, name: str, entry: dict, memory, shown: str) -> int:
        """Write the archive's copy of `entry` into the cache (and `memory`), hashed on the way; the new file's descriptor."""
        temporary = f".extract-{secrets.token_hex(8)}"
        descriptor = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=directory)
        try:
            with zipfile.ZipFile(self.archive) as archive, archive.open(entry["path"]) as source:
                actual = _pour(source.read, [descriptor] + ([memory] if memory is not None else []))
            if actual != entry["sha256"]:
                raise NativeError(f"{entry['path']} in {self.archive} does not match its recorded sha256; the archive is damaged, copy it again")
            os.fchmod(descriptor, NATIVE_FILE)
            try:
                os.replace(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
            except OSError as error:
                raise NativeError(f"cannot put {shown} in place: {error.strerror}; remove it and run again") from None
        except BaseException:
            os.close(descriptor)
            try:
                os.unlink(temporary, dir_fd=directory)
            except FileNotFoundError:
                pass
            raise
        return descriptor


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
