"""Images hold the machine: an image's content is a stack of read-only filesystem layers.

CreateImage freezes the instance's writable layer into a new layer, on top of the layers the
instance was launched from; the image is that stack. Copies (to other regions and accounts)
share the same layers: nothing is copied. A layer is freed when the last image using it is
deregistered (running instances keep their own copies, as an instance keeps its volumes on AWS).

    <state>/machines/layers/<layer>/   one frozen layer
    <state>/machines/images.json       image id → [layer, …] (topmost first), for `usage`

`<state>/machines/` is its owner's alone (root's, or the user's of a sandbox without root), as
are its layers: they hold what images hold (setuid files, a world-writable /var/tmp) and the
instances' writable layers (a bake's staging dir), none of which another local user may reach.
A layer is frozen once its image is registered: a read-only, nosuid mount for every process of
the sandbox (frozen.py); it is unmounted there only to be freed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
from pathlib import Path

from sandbox.machines import frozen

_lock = threading.Lock()


def machines_dir(state_dir: str | Path) -> Path:
    """<state>/machines, made if missing, its owner's alone."""
    return private(Path(state_dir).resolve() / "machines")


def private(path: Path) -> Path:
    """`path` (made if missing) with no access for anyone but its owner."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def layers_dir(state_dir: str | Path) -> Path:
    return Path(state_dir).resolve() / "machines" / "layers"


def _index_file(state_dir: str | Path) -> Path:
    return Path(state_dir).resolve() / "machines" / "images.json"


def _read(state_dir) -> dict:
    path = _index_file(state_dir)
    return json.loads(path.read_text()) if path.is_file() else {"images": {}, "instances": {}}


def _write(state_dir, index: dict) -> None:
    path = _index_file(state_dir)
    machines_dir(state_dir)
    path.with_suffix(".tmp").write_text(json.dumps(index, indent=1, sort_keys=True))
    os.replace(path.with_suffix(".tmp"), path)


def capture(state_dir, image_id: str, instance_id: str, upper: Path) -> list[str]:
    """Freeze `upper` (the instance's writable layer) as the top layer of a new image."""
    layer = "layer-" + secrets.token_hex(8)
    machines_dir(state_dir)
    target = private(layers_dir(state_dir)) / layer
    # cp -a keeps owners, modes, links and overlay whiteouts (character devices 0/0).
    subprocess.run(["cp", "-a", "--reflink=auto", f"{upper}/.", str(target)], check=True)
    target.chmod(0o700)  # an instance's root folder takes its mode from its own layer
    frozen.freeze(target)
    with _lock:
        index = _read(state_dir)
        stack = [layer, *index["instances"].get(instance_id, [])]
        index["images"][image_id] = stack
        _write(state_dir, index)
    return stack


def share(state_dir, source_image: str, image_id: str) -> None:
    """A copy of an image holds the same layers."""
    with _lock:
        index = _read(state_dir)
        if source_image in index["images"]:
            index["images"][image_id] = list(index["images"][source_image])
            _write(state_dir, index)


def release(state_dir, image_id: str) -> list[str]:
    """Forget a deregistered image; free the layers no image uses any more. The freed layers."""
    with _lock:
        index = _read(state_dir)
        gone = index["images"].pop(image_id, None) or []
        used = {layer for stack in index["images"].values() for layer in stack}
        freed = [layer for layer in gone if layer not in used]
        _write(state_dir, index)
    for layer in freed:
        frozen.thaw(layers_dir(state_dir) / layer)
        shutil.rmtree(layers_dir(state_dir) / layer, ignore_errors=True)
    return freed


def freeze_all(state_dir) -> None:
    """Freeze the layers of every image (at a server's start: a new namespace has no mounts)."""
    with _lock:
        held = {layer for stack_ in _read(state_dir)["images"].values() for layer in stack_}
    for layer in sorted(held):
        if (layers_dir(state_dir) / layer).is_dir():
            frozen.freeze(layers_dir(state_dir) / layer)


def stack(state_dir, image_id: str) -> list[Path] | None:
    """The layer directories of an image (topmost first), or None when it holds no machine."""
    with _lock:
        found = _read(state_dir)["images"].get(image_id)
    return [layers_dir(state_dir) / layer for layer in found] if found else None


def image_ids(state_dir) -> list[str]:
    """The images that hold layers."""
    with _lock:
        return sorted(_read(state_dir)["images"])


def launched(state_dir, instance_id: str, image_id: str) -> None:
    """Remember which layers an instance runs on, for an image made of it later."""
    with _lock:
        index = _read(state_dir)
        index["instances"][instance_id] = list(index["images"].get(image_id, []))
        _write(state_dir, index)


def usage(state_dir) -> list[dict]:
    """Disk per image: its layers, all their bytes, and the bytes no other image shares."""
    index = _read(state_dir)
    sizes = {layer: _size(layers_dir(state_dir) / layer)
             for stack_ in index["images"].values() for layer in stack_}
    users: dict[str, int] = {}
    for stack_ in index["images"].values():
        for layer in set(stack_):
            users[layer] = users.get(layer, 0) + 1
    return [{"image": image, "layers": stack_, "bytes": sum(sizes[layer] for layer in stack_),
             "own_bytes": sum(sizes[layer] for layer in stack_ if users[layer] == 1)}
            for image, stack_ in sorted(index["images"].items())]


def forget_all(state_dir) -> None:
    with _lock:
        frozen.thaw_under(layers_dir(state_dir))
        shutil.rmtree(layers_dir(state_dir), ignore_errors=True)
        _index_file(state_dir).unlink(missing_ok=True)


def _size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total
