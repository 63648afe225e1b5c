"""Downloading one file: a progress bar, resuming a cut download, and checks before the file is
used (not a web page, the expected size and SHA-256 when they are known).

The file grows as ``NAME.part`` beside its target and is renamed into place only when it is
complete and checked, so a half-downloaded file is never mistaken for the real one. A second
call resumes the ``.part`` file where the server supports it (HTTP range requests) and starts
again where it does not.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from mmlib.env import MMLibError
from mmlib.store.checkpoints import is_html

CHUNK = 1 << 20


class DownloadError(MMLibError, OSError):
    """A download failed or gave something other than the expected file."""


def sha256_of(path: str | os.PathLike) -> str:
    """Return the SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(
    url: str,
    target: str | os.PathLike,
    sha256: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download `url` to `target` and return it; resume a previous ``target.part`` when possible.

    Raises DownloadError (naming the URL and what to do) when the server is unreachable or
    answers with an error, when it sends a web page instead of the file, or when the file's
    SHA-256 is not `sha256`: the target is then left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the .part file is already complete
            return _finish(part, target, url, sha256)
        raise DownloadError(f"{url} answered {err.code} {err.reason}: check the address") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"cannot reach {url} ({reason}). Check the network, or download the file elsewhere "
            f"and use the local file instead."
        ) from err
    with resp:
        resumed = have and resp.status == 206
        mode = "ab" if resumed else "wb"  # the server ignored the range: start again
        total = int(resp.headers.get("Content-Length") or 0) + (have if resumed else 0) or None
        with (
            open(part, mode) as out,
            tqdm(
                total=total,
                initial=have if resumed else 0,
                unit="B",
                unit_scale=True,
                desc=target.name,
                disable=not progress,
            ) as bar,
        ):
            got = have if resumed else 0
            try:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
                    got += len(chunk)
            except OSError as err:
                raise DownloadError(
                    f"the download of {url} broke off ({err}); run it again to resume"
                ) from err
            if total is not None and got < total:  # the server closed the connection early
                raise DownloadError(
                    f"the download of {url} broke off after {got:,} of {total:,} bytes; "
                    "run it again to resume"
                )
    return _finish(part, target, url, sha256)


def _finish(part: Path, target: Path, url: str, sha256: str | None) -> Path:
    with open(part, "rb") as fh:
        head = fh.read(2048)
    if is_html(head):
        part.unlink()
        raise DownloadError(f"{url} returned a web page instead of the file (a dead link?)")
    if sha256 is not None:
        got = sha256_of(part)
        if got != sha256:
            part.unlink()
            raise DownloadError(
                f"the file from {url} is not the expected one (SHA-256 {got[:16]}..., expected "
                f"{sha256[:16]}...): it was changed or damaged on the way. Nothing was kept."
            )
    os.replace(part, target)
    return target
