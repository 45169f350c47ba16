"""A ``docker save`` tar rewritten as an OCI image layout without the layers a store already has.

``ctr images import`` of a ``docker save`` tar reads and writes every layer, even the ones its
content store holds: re-importing the 6.6 GB worker image after a source change copied 6.6 GB to
add a few hundred kB. :func:`write_oci_layout` writes the same image (same config, same layers,
the manifest containerd itself makes of a ``docker save`` tar) as an OCI image layout in which
only the missing layers are present; containerd finds the others in its content store, and
their snapshots are already unpacked.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Container, Sequence
from pathlib import Path
from typing import IO

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"  # uncompressed, as docker save writes it
IMAGE_NAME_ANNOTATION = "io.containerd.image.name"


def normalized_name(ref: str) -> str:
    """``ref`` as containerd and the kubelet name it: ``name:tag`` -> ``docker.io/library/name:tag``."""
    name = ref if "/" in ref.split(":", 1)[0] else f"docker.io/library/{ref}"
    if name.count("/") == 1 and "." not in name.split("/", 1)[0] and ":" not in name.split("/", 1)[0]:
        name = f"docker.io/{name}"
    return name


def write_oci_layout(saved: Path, out: IO[bytes], skip: Container[str] = ()) -> list[str]:
    """Write the single image of the ``docker save`` tar ``saved`` to ``out`` as an OCI layout tar.

    Layers whose digest (``sha256:...``, the uncompressed tar's: the config's ``diff_ids``) is in
    ``skip`` are referenced but not written. The image keeps the save's tags, normalised; they are
    returned. ``out`` may be a pipe: the tar is written as a stream.
    """
    with tarfile.open(saved, mode="r:") as archive:
        (entry,) = json.load(archive.extractfile("manifest.json"))
        config = archive.extractfile(entry["Config"]).read()
        diff_ids: Sequence[str] = json.loads(config)["rootfs"]["diff_ids"]
        if len(diff_ids) != len(entry["Layers"]):
            raise ValueError(f"{saved}: {len(entry['Layers'])} layers but {len(diff_ids)} diff_ids")
        layers = [archive.getmember(name) for name in entry["Layers"]]
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": DOCKER_LAYER, "digest": d, "size": m.size}
                       for d, m in zip(diff_ids, layers, strict=True)],
        }, separators=(",", ":")).encode()
        names = [normalized_name(tag) for tag in entry.get("RepoTags") or []]
        index = json.dumps({"schemaVersion": 2, "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": _digest(manifest), "size": len(manifest),
             "annotations": {IMAGE_NAME_ANNOTATION: name}} for name in names]}).encode()
        with tarfile.open(fileobj=out, mode="w|", copybufsize=1 << 20) as layout:
            _add(layout, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            _add(layout, _blob_path(_digest(config)), config)
            _add(layout, _blob_path(_digest(manifest)), manifest)
            written: set[str] = set()
            for digest, member in zip(diff_ids, layers, strict=True):
                if digest in skip or digest in written:
                    continue
                info = tarfile.TarInfo(_blob_path(digest))
                info.size = member.size
                layout.addfile(info, archive.extractfile(member))
                written.add(digest)
            _add(layout, "index.json", index)
    return names


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob_path(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/", 1)


def _add(layout: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    layout.addfile(info, io.BytesIO(data))
