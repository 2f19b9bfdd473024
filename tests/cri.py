"""The few CRI calls kubelet makes that the tests need, spoken to containerd's CRI socket over gRPC.

crictl is not packaged by Debian, so the tests talk CRI themselves: grpcio
carries the calls and the messages are written and read here in protobuf's wire
format. Field numbers are runtime.v1's (k8s.io/cri-api pkg/apis/runtime/v1/api.proto,
as vendored by containerd v2.1.9): PullImageRequest{image ImageSpec = 1},
ImageSpec{image = 1}, PullImageResponse{image_ref = 1}, ImageStatusRequest{image = 1},
ImageStatusResponse{image Image = 1}, Image{id = 1, repo_tags = 2, pinned = 8}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings and nested messages."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _image_spec(reference: str) -> bytes:
    return _field(1, reference.encode())


def fields(message: bytes) -> list[tuple[int, int | bytes]]:
    """(number, value) of every field: varints as int, length-delimited as bytes; other wire types are refused."""
    found, at = [], 0

    def varint() -> int:
        nonlocal at
        value, shift = 0, 0
        while True:
            byte = message[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while at < len(message):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            found.append((number, varint()))
        elif wire == 2:
            size = varint()
            found.append((number, message[at : at + size]))
            at += size
        else:
            raise ValueError(f"field {number}: wire type {wire} is not one runtime.v1's image messages use")
    return found


@dataclass(frozen=True)
class CriImage:
    id: str
    tags: tuple[str, ...]
    pinned: bool


class Cri:
    def __init__(self, socket: Path):
        import grpc

        self.channel = grpc.insecure_channel(f"unix://{socket}")

    def _call(self, method: str, request: bytes, timeout: float = 120) -> bytes:
        call = self.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        return call(request, timeout=timeout)

    def pull(self, reference: str) -> str:
        """PullImage, as kubelet asks for it: the image reference containerd resolved it to (its ID)."""
        answer = self._call("/runtime.v1.ImageService/PullImage", _field(1, _image_spec(reference)), timeout=300)
        return next(value.decode() for number, value in fields(answer) if number == 1)

    def status(self, reference: str) -> CriImage | None:
        """ImageStatus: what the CRI plugin knows of an image (None when it has none)."""
        answer = self._call("/runtime.v1.ImageService/ImageStatus", _field(1, _image_spec(reference)))
        image = next((value for number, value in fields(answer) if number == 1), None)
        if image is None:
            return None
        parts = fields(image)
        return CriImage(
            id=next((value.decode() for number, value in parts if number == 1), ""),
            tags=tuple(value.decode() for number, value in parts if number == 2),
            pinned=any(number == 8 and value == 1 for number, value in parts),
        )

    def close(self) -> None:
        self.channel.close()
