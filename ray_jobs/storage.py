"""Where a job's outputs go: local paths and storage URIs, and the trap of a submitted job's copy.

Two facts shape this file:

* ``ray job submit --working-dir .`` uploads the directory and runs the entry point inside Ray's
  temporary copy of it (``.../runtime_resources/working_dir_files/...`` under Ray's session
  folder). A relative output path resolves inside that copy and is deleted with it, and the
  submitter's own directory is on another machine, so there is nothing to resolve it against.
  A submitted job therefore refuses relative output paths and says why (``resolve_output``).
* Ray Train and Tune accept storage URIs (``s3://``, ``gs://``, ``file://``) through pyarrow file
  systems. A URI must never pass through ``os.path.abspath``, which turns ``s3://bucket/runs``
  into ``<cwd>/s3:/bucket/runs``. URIs are kept as they are and joined with ``/``.

Ray's job supervisor hands the submitted job's runtime environment to the entry point in the
environment variable ``RAY_JOB_CONFIG_JSON_ENV_VAR`` (JSON with ``runtime_env.working_dir``).
"""

from __future__ import annotations

import json
import os
import shutil

JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for a submitted entry point


class OutputPathError(ValueError):
    """An output path this job cannot use; the message is the one line to show the user."""


def is_uri(path: str) -> bool:
    return "://" in str(path)


def submitted_working_dir(environ=None) -> str | None:
    """The ``working_dir`` of the submitted job this process runs in, or None outside one."""
    raw = (os.environ if environ is None else environ).get(JOB_CONFIG_ENV)
    if not raw:
        return None
    try:
        return (json.loads(raw).get("runtime_env") or {}).get("working_dir") or None
    except (ValueError, AttributeError):
        return None


def resolve_output(path: str, flag: str, job: str, environ=None, cwd: str | None = None) -> str:
    """An output location as the job will use it: a URI unchanged, a local path made absolute.

    Refuses (OutputPathError) a relative local path in a job submitted with a working directory,
    because it would land in Ray's temporary copy of that directory and vanish with the job.
    """
    path = str(path)
    if is_uri(path):
        scheme = path.split("://", 1)[0]
        if not scheme.isidentifier():
            raise OutputPathError(f"{job}: {flag} {path!r} is not a URI (expected scheme://path, e.g. s3://bucket/runs)")
        return path.rstrip("/")
    if os.path.isabs(path):
        return os.path.normpath(path)
    wd = submitted_working_dir(environ)
    if wd:
        raise OutputPathError(
            f"{job}: {flag} {path!r} is relative, and this job runs in Ray's temporary copy of its working directory "
            f"({cwd or os.getcwd()}), which is deleted with the job: give an absolute path on a file system every "
            f"node sees (e.g. /mnt/shared/runs) or a storage URI (e.g. s3://bucket/runs)")
    return os.path.abspath(os.path.join(cwd or os.getcwd(), path))


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local path or a URI (``os.path.join`` would do for both on POSIX, but
    says nothing to a reader about URIs)."""
    return "/".join([str(base).rstrip("/"), *(str(p).strip("/") for p in parts)])


def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path)  # (filesystem, path inside it)


def exists(path: str) -> bool:
    if not is_uri(path):
        return os.path.exists(path)
    import pyarrow.fs

    fs, inner = _fs(path)
    return fs.get_file_info(inner).type != pyarrow.fs.FileType.NotFound


def read_bytes(path: str) -> bytes:
    if not is_uri(path):
        with open(path, "rb") as f:
            return f.read()
    fs, inner = _fs(path)
    with fs.open_input_stream(inner) as f:
        return f.read()


def list_dirs(path: str, prefix: str = "") -> list[str]:
    """Full paths (or URIs) of the folders directly under ``path`` whose names start with ``prefix``."""
    if not is_uri(path):
        if not os.path.isdir(path):
            return []
        return [os.path.join(path, n) for n in os.listdir(path)
                if n.startswith(prefix) and os.path.isdir(os.path.join(path, n))]
    import pyarrow.fs

    fs, inner = _fs(path)
    if fs.get_file_info(inner).type == pyarrow.fs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pyarrow.fs.FileSelector(inner))
    return [join(path, i.base_name) for i in infos
            if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith(prefix)]


def remove_dir(path: str) -> None:
    """Delete a folder (or a URI prefix) and everything in it; a missing one is not an error."""
    if not is_uri(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    fs, inner = _fs(path)
    try:
        fs.delete_dir(inner)
    except (FileNotFoundError, OSError):
        pass


def upload_dir(local_dir: str, dest: str) -> None:
    """Copy a local directory's files to ``dest`` (a URI or a local path); files of the same name are overwritten."""
    if not is_uri(dest):
        shutil.copytree(local_dir, dest, dirs_exist_ok=True)
        return
    import pyarrow.fs

    fs, inner = _fs(dest)
    fs.create_dir(inner, recursive=True)
    pyarrow.fs.copy_files(local_dir, inner, destination_filesystem=fs)
