"""Results: the typed record every writer builds and every reader reads (bench.results.record), its
tables (bench.results.tables), and the accessors that replace string-key digging (bench.results.access)."""

from bench.results.access import columns, dig, figure, labels, samples, value
from bench.results.record import (
    EXTRA_TABLES,
    NESTED_TABLES,
    SCALAR_TABLES,
    CellAxes,
    Record,
    is_record,
    jsonable,
    well_formed,
)
from bench.results.tables import (
    CurveStep,
    EarlyStopping,
    Energy,
    Example,
    Extra,
    Flag,
    LoadGen,
    LoadGenEarlyStopping,
    Memory,
    PerToken,
    RayHost,
    ReportedBenchmark,
    Roofline,
    Server,
    ServerRun,
    Settings,
    Stages,
    Stats,
    Table,
    Throughput,
    Timing,
)

__all__ = ["EXTRA_TABLES", "NESTED_TABLES", "SCALAR_TABLES", "CellAxes", "CurveStep", "EarlyStopping", "Energy",
           "Example", "Extra", "Flag", "LoadGen", "LoadGenEarlyStopping", "Memory", "PerToken", "RayHost", "Record",
           "ReportedBenchmark", "Roofline", "Server", "ServerRun", "Settings", "Stages", "Stats", "Table",
           "Throughput", "Timing", "columns", "dig", "figure", "is_record", "jsonable", "labels", "samples", "value",
           "well_formed"]
