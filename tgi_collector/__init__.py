"""tgi-collector: scrape Hugging Face TGI ``/metrics`` and serve correct, typed snapshots.

The public surface is pinned in ``__all__``; the generated protobuf code lives in
``tgi_collector.v1``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tgi-collector")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = ["__version__"]
