"""The image tier: builds the container image with buildah (``hack/build-image``) and runs its
entry points (``test_image.py``). Needs root, buildah and debootstrap (``make system-deps``) and
a Debian mirror and PyPI for the build; a cold build takes about three minutes, an unchanged
image is found in a fraction of a second. ``make test`` runs it; ``make test-image`` alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TIER = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if TIER in item.path.parents:
            item.add_marker(pytest.mark.image)
