"""Which cases `bench` runs: runtime specs x precisions, and what cannot run here (and why).

Runtime specs come from `vggdeploy.runtimes.registry` (`NAME[:VARIANT...][@PRECISION]`). A spec
with `@P` runs only that precision; without, it runs every precision of `--precision`, or every
one the bundle has for that runtime (PyTorch: its native ones, ONNX Runtime: every `onnx.*`,
TensorRT: every `engine.*`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vggdeploy import precision as P
from vggdeploy.runtimes import registry
from vggdeploy.runtimes.registry import RuntimeSpec

if TYPE_CHECKING:
    from vggdeploy.bundle import Bundle


@dataclass(frozen=True)
class Skipped:
    """A case that was asked for (or would be run by default) but cannot run here, and why."""

    runtime: str
    precision: str | None
    reason: str
    batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "precision": self.precision,
            "batch": self.batch,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Skipped:
        return cls(data["runtime"], data.get("precision"), data["reason"], data.get("batch"))

    def __str__(self) -> str:
        what = " ".join(x for x in (self.runtime, self.precision) if x)
        if self.batch is not None:
            what += f" b{self.batch}"
        return f"{what}: {self.reason}"


@dataclass(frozen=True)
class Plan:
    """One runtime spec with its precision (`spec.precision` is set), run at `batches`."""

    spec: RuntimeSpec
    batches: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.spec.precision:
            raise ValueError(f"plan {self.spec.text}: the spec needs a precision")

    @property
    def runtime(self) -> str:
        """`name[:variants]`: the result's runtime column."""
        return self.spec.runtime

    @property
    def precision(self) -> str:
        return self.spec.precision or ""


def _no_artifacts(spec: RuntimeSpec) -> str:
    kind = spec.cls.ARTIFACT_KIND
    hint = (
        f" (create one with `{P.make_command(P.engine_key('fp16'))}`)" if kind == P.ENGINE else ""
    )
    return f"the bundle has no {kind}.* artifacts{hint}"


def plan_cases(
    bundle: Bundle,
    specs: Sequence[RuntimeSpec] | None,
    precisions: Sequence[str] | None,
    batches: Sequence[int],
) -> tuple[list[Plan], list[Skipped]]:
    """Expand runtime specs x precisions into plans, listing what cannot run here with the reason.

    `specs` None: `registry.DEFAULT_BENCH_SPECS` (those the host lacks are skipped).
    """
    plans: list[Plan] = []
    skipped: list[Skipped] = []
    seen: set[RuntimeSpec] = set()
    for spec in specs or registry.DEFAULT_BENCH_SPECS:
        reason = registry.unavailable(spec)  # the host: package, device, provider
        if reason:
            skipped.append(Skipped(spec.runtime, spec.precision, reason))
            continue
        if spec.precision:
            wanted = [spec.precision]
        elif precisions:
            wanted = list(precisions)
        else:
            wanted = registry.bundle_precisions(bundle, spec)
            if not wanted:
                skipped.append(Skipped(spec.runtime, None, _no_artifacts(spec)))
                continue
        for name in wanted:
            case = spec.with_precision(name)
            if case in seen:
                continue
            seen.add(case)
            cls = spec.cls
            if name not in cls.PRECISIONS:
                reason = f"{spec.name} runs {', '.join(cls.PRECISIONS)}, not {name}" + (
                    f" ({cls.PRECISION_HINT})" if cls.PRECISION_HINT else ""
                )
            else:
                reason = registry.unavailable(case, bundle)
            if reason:
                skipped.append(Skipped(spec.runtime, name, reason))
            else:
                plans.append(Plan(case, tuple(batches)))
    return plans, skipped
