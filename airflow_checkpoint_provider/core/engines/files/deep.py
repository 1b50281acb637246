"""Deep check of directory trees: extract each into a scratch directory, entry by entry against its listing.

The extraction (:func:`~._extract.extract`) checks every tar entry against the next listing
entry (path, type, size, link target) and every file's bytes against the listing's sha256,
and refuses hostile entries. The scratch copy is removed afterwards. No server is needed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from airflow_checkpoint_provider.core.engines.contract import DeepCheck
from airflow_checkpoint_provider.core.engines.files._extract import extract
from airflow_checkpoint_provider.core.engines.files.capture import KIND_TREE
from airflow_checkpoint_provider.core.engines.files.restore import select_tree
from airflow_checkpoint_provider.core.errors import CheckpointError
from airflow_checkpoint_provider.core.manifest import Artifact


def deep_check(store: Any, checkpoint_id: str, artifacts: list[Artifact], target: Any = None) -> DeepCheck:
    """Extract every tree of the checkpoint into a scratch directory and compare it with its listing."""
    result = DeepCheck()
    for art in (a for a in artifacts if a.kind == KIND_TREE):
        tree, listing, problems = select_tree(artifacts, "", str(art.meta.get("path")))
        if tree is None or listing is None:
            result.problems += [(art.member, p) for p in problems]
            continue
        work = tempfile.mkdtemp(prefix="ckpt-deep-files-")
        try:
            os.mkdir(os.path.join(work, "tree"), 0o700)
            count = extract(store, checkpoint_id, tree, listing, os.path.join(work, "tree"))
            want = listing.fingerprints.get("entries")
            if isinstance(want, int) and count != want:
                result.problems.append((art.member, f"the tree holds {count} entries, the capture counted {want}"))
            result.evidence[art.name] = {"entries": count}
        except CheckpointError as exc:
            result.problems.append((art.member, exc.message))
        except OSError as exc:
            result.problems.append((art.member, f"extracting the tree failed: {exc}"))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return result
