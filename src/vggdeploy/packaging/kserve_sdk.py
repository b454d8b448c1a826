"""Load one manifest (JSON on standard input) into a KServe SDK model and print what the model
serializes back to: `python -m vggdeploy.packaging.kserve_sdk V1beta1InferenceService`.

Run by `packaging.kserve.sdk_check` in a child process (see there why). Exit codes: 0 loaded,
1 the SDK refused it (the reason on standard error), `MISSING` kserve is not installed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

MISSING = 3


def load(doc: Any, klass: str) -> Any:
    """`doc` as the SDK model `klass`, by the SDK's own ApiClient deserializer."""
    import kserve.models
    from kserve import ApiClient
    from kubernetes import client as k8s

    class _Response:
        data = json.dumps(doc)

    class _Client(ApiClient):  # type: ignore[misc]
        """KServe's deserializer looks a type name up in `kserve.models` only
        (kserve/api_client.py `__deserialize`), but its models name Kubernetes types
        (`V1ObjectMeta`, `V1Container`...): those go to the Kubernetes client's own
        deserializer, which has the same private method."""

        _k8s = k8s.ApiClient()

        def _ApiClient__deserialize(self, data: Any, klass: Any) -> Any:
            if (
                isinstance(klass, str)
                and not hasattr(kserve.models, klass)
                and hasattr(k8s.models, klass)
            ):
                return self._k8s._ApiClient__deserialize(data, klass)
            return ApiClient._ApiClient__deserialize(self, data, klass)

    client = _Client()
    obj = client.deserialize(_Response(), klass)
    return obj, client.sanitize_for_serialization(obj)


def main() -> int:
    try:
        import kserve  # noqa: F401
    except ImportError:
        return MISSING
    try:
        _, back = load(json.loads(sys.stdin.read()), sys.argv[1])
    except (ValueError, TypeError, AttributeError) as exc:
        sys.stderr.write(" ".join(str(exc).split())[:400] + "\n")
        return 1
    sys.stdout.write(json.dumps(back))
    return 0


if __name__ == "__main__":  # a child process's entry point: its exit code is its answer
    raise SystemExit(main())
