"""The price table behind every cost in the report: a GPU priced by its exact name, a CPU by the cores used.

A cost is a *derived* figure, so every price carries its source and the report prints it beside the
cost. GPUs are matched by the exact name the driver reports ("NVIDIA H100 80GB HBM3" and "NVIDIA H100
PCIe" are different products at different prices), case and spacing aside; a CPU run is priced per
vCPU-hour times the cores the run used (torch's thread count), so a 2-core run is never charged for an
8-vCPU instance. The format is documented in ``bench/data/prices.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.errors import UsageError
from bench.core.inputs import parse_toml, read_text
from bench.core.numbers import is_finite
from bench.results import dig

DEFAULT_PRICES = Path(__file__).parent.parent / "data" / "prices.toml"
HOURS_PER_MONTH = 730.0  # 8760 / 12
ACCEPTED = (
    'accepted: [gpu] "exact GPU name" = { usd_per_hour = N, source = "..." }, '
    '[cpu] usd_per_vcpu_hour = N and source = "...", optional [energy] usd_per_kwh = N '
    "(see bench/data/prices.toml)"
)


@dataclass(frozen=True)
class Price:
    """What one device costs per hour, how that was worked out, and where the number comes from."""

    usd_per_hour: float
    basis: str  # e.g. "NVIDIA H100 80GB HBM3 at $3.00/h" or "2 vCPU × $0.045/vCPU-h"
    source: str

    @property
    def text(self) -> str:
        """The price as printed beside a cost."""
        return f"{self.basis} (source: {self.source})"


def _key(name: str) -> str:
    return " ".join(name.lower().split())


@dataclass
class PriceTable:
    """GPU prices by exact name, a CPU price per vCPU-hour, an optional energy price; ``label`` names the file."""

    gpu: dict[str, tuple[float, str]]
    label: str
    cpu_per_vcpu_hour: tuple[float, str] | None = None
    usd_per_kwh: float | None = None
    energy_source: str | None = None

    @property
    def source(self) -> str:
        return self.label

    def gpu_price(self, name: str) -> Price | None:
        """The price of a GPU by its exact name (case and spacing aside), or None."""
        wanted = _key(name)
        for key, (usd, source) in self.gpu.items():
            if _key(key) == wanted:
                return Price(usd, f"{key} at ${usd:,.2f}/h", source)
        return None

    def cpu_price(self, cores: int | None) -> Price | None:
        """usd_per_vcpu_hour × the cores the run used; None without a CPU price or a core count."""
        if self.cpu_per_vcpu_hour is None or not cores or cores < 1:
            return None
        usd, source = self.cpu_per_vcpu_hour
        return Price(usd * cores, f"{cores} vCPU × ${usd:g}/vCPU-h = ${usd * cores:,.3g}/h", source)


def _source(entry: dict[str, Any], where: str, path: Path) -> str:
    source = dig(entry, "source")  # a price table, not a record: the plain-JSON walk
    if source is None:
        return f"{path.name}, no source given"
    if not isinstance(source, str) or not source.strip():
        raise UsageError(f"price table {path}: {where} source is {source!r}; accepted: a non-empty string")
    return source.strip()


def _price(value: Any, where: str, path: Path) -> float:
    if not is_finite(value) or value < 0:
        raise UsageError(f"price table {path}: {where} is {value!r}; accepted: a number >= 0 (USD)")
    return float(value)


GPU_KEYS = ("usd_per_hour", "source")
CPU_KEYS = ("usd_per_vcpu_hour", "source")
ENERGY_KEYS = ("usd_per_kwh", "source")


def load_prices(path: Path | None = None) -> PriceTable:
    """Read a price table; a missing, malformed or old-format file is a UsageError naming it."""
    path = Path(path) if path is not None else DEFAULT_PRICES
    try:
        data = parse_toml(read_text(path, "price table"))
    except ValueError as exc:  # TOML syntax, or nesting deeper than inputs.MAX_NESTING
        raise UsageError(f"price table {path} is not valid TOML: {exc}") from None
    if "prices" in data:
        raise UsageError(
            f"price table {path} is in the old format ([prices] device = USD per hour, matched by substring, "
            f"'cpu' priced per machine whatever its cores); {ACCEPTED}"
        )
    for section in ("gpu", "cpu", "energy"):
        if section in data and not isinstance(data[section], dict):
            raise UsageError(f"price table {path}: {section} is {data[section]!r}, not a [{section}] table; {ACCEPTED}")
    unknown = sorted(set(data) - {"gpu", "cpu", "energy"})
    if unknown or not (data.get("gpu") or data.get("cpu")):
        what = f"unknown section(s) {', '.join(unknown)}" if unknown else "no [gpu] or [cpu] section"
        raise UsageError(f"price table {path} has {what}; {ACCEPTED}")
    for where, table, keys in (("[cpu]", data.get("cpu"), CPU_KEYS), ("[energy]", dig(data, "energy"), ENERGY_KEYS),
                               *((f"[gpu] {n!r}", e, GPU_KEYS) for n, e in (data.get("gpu") or {}).items())):
        extra = sorted(set(table) - set(keys)) if isinstance(table, dict) else []
        if extra:  # a misspelt key (usd_per_hr) would otherwise be silently ignored
            raise UsageError(f"price table {path}: {where} has unknown key(s) {', '.join(extra)}; accepted keys: "
                             f"{', '.join(keys)}")
    gpu: dict[str, tuple[float, str]] = {}
    for name, entry in (data.get("gpu") or {}).items():
        if not isinstance(entry, dict) or "usd_per_hour" not in entry:
            raise UsageError(f"price table {path}: [gpu] {name!r} is {entry!r}; {ACCEPTED}")
        gpu[str(name)] = (_price(entry["usd_per_hour"], f"[gpu] {name!r} usd_per_hour", path),
                          _source(entry, f"[gpu] {name!r}", path))
    cpu = None
    if data.get("cpu") is not None:
        section = data["cpu"]
        if not isinstance(section, dict) or "usd_per_vcpu_hour" not in section:
            raise UsageError(f"price table {path}: [cpu] needs usd_per_vcpu_hour; {ACCEPTED}")
        cpu = (_price(section["usd_per_vcpu_hour"], "[cpu] usd_per_vcpu_hour", path), _source(section, "[cpu]", path))
    energy = dig(data, "energy") or {}
    kwh = energy.get("usd_per_kwh")
    if kwh is not None:
        kwh = _price(kwh, "[energy] usd_per_kwh", path)
    label = "the default example table (bench/data/prices.toml)" if path == DEFAULT_PRICES else str(path)
    return PriceTable(gpu, label, cpu, kwh, _source(energy, "[energy]", path) if kwh is not None else None)
