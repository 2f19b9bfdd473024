"""systemd units built from values: sections of (key, value) pairs, every value through one quoting function.

A unit file is parsed by systemd, not by a shell: a newline starts a new
setting, `%` starts a specifier, `$` expands a variable on command lines, and
quotes group words. A value pasted in unquoted could add `ExecStartPre=+…`
(run as root despite DynamicUser) or split one argument into several; so
nothing reaches a unit except through `quote`, and keys and bare values are
checked for the characters that would change the file's structure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from installer.errors import NodeError

KEY = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
SECTION = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
ENVIRONMENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "%": "%%"}


@dataclass(frozen=True)
class Variable:
    """`$NAME` on a command line: systemd expands it and splits the value at whitespace (as kubeadm's drop-in expects)."""

    name: str


def quote(text: str, command_line: bool = True) -> str:
    """`text` as one double-quoted word of a unit file (systemd.syntax(7), systemd.service(5) "Command lines").

    Backslash, quote and control characters are C-escaped, `%` doubled (no
    specifier), and on command lines `$` doubled (no variable expansion);
    Environment= does not expand `$`, so there it stays single.
    """
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char == "$" and command_line:
            out.append("$$")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def command(argv: Iterable[str | Variable]) -> str:
    """An ExecStart= value: the program (an absolute path) and its arguments, each one word whatever it holds."""
    words = []
    for index, word in enumerate(argv):
        if isinstance(word, Variable):
            if not ENVIRONMENT_NAME.fullmatch(word.name):
                raise NodeError(f"unit: {word.name!r} is not an environment variable name")
            words.append(f"${word.name}")
        elif index == 0:
            # The program is written bare: a leading quote or prefix (+ - @ ! :) would change how systemd runs it.
            if not os.path.isabs(word) or not re.fullmatch(r"^/[A-Za-z0-9._/+-]*$", word):
                raise NodeError(f"unit: program {word!r} must be an absolute path of letters, digits and . _ / + -")
            words.append(word)
        else:
            words.append(quote(word))
    if not words:
        raise NodeError("unit: empty command line")
    return " ".join(words)


def environment(name: str, value: str) -> str:
    """An Environment= value setting one variable."""
    if not ENVIRONMENT_NAME.fullmatch(name):
        raise NodeError(f"unit: {name!r} is not an environment variable name")
    return quote(f"{name}={value}", command_line=False)


def plain(value: str) -> str:
    """A value systemd takes as is (a description, a path, a number): no line breaks, `%` doubled."""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value) or value.endswith("\\"):
        raise NodeError(f"unit: {value[:60]!r} holds a control character or ends in a backslash")
    return value.replace("%", "%%")


Section = tuple[str, list[tuple[str, str]]]


def render(sections: Iterable[Section], header: str = "") -> str:
    """The unit file text. Values must come from `command`, `environment`, `plain` or `quote`."""
    lines = [f"# {line}" for line in header.splitlines()]
    for name, settings in sections:
        if not SECTION.fullmatch(name):
            raise NodeError(f"unit: {name!r} is not a section name")
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        for key, value in settings:
            if not KEY.fullmatch(key):
                raise NodeError(f"unit: {key!r} is not a setting name")
            if "\n" in value or "\r" in value:
                raise NodeError(f"unit: {key}= would span lines")
            lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def proxy_environment() -> list[tuple[str, str]]:
    """Environment= settings carrying this shell's proxy variables into a unit (none when none are set)."""
    settings = []
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        value = os.environ.get(name) or os.environ.get(name.lower())
        if value:
            settings.append(("Environment", environment(name, value)))
    return settings
