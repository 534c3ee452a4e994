"""Ship outbox events to Postgres in batches, exactly once in effect, through every failure.

``shipper`` knows the outbox and Postgres; it never imports discord.

The names below are imported when first used (PEP 562), so that ``import shipper.console``,
the console scripts' first code, costs nothing: it has to take over Ctrl-C before the heavy
imports (asyncio, asyncpg, click) run, or a SIGINT in that time prints a traceback.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType

TYPE_CHECKING = False  # not typing's: importing typing took ~4 ms before the scripts' SIGINT guard
if TYPE_CHECKING:
    from typing import Any

    from .dsn import redact_dsn
    from .errors import ConnectError, SchemaError, ShipperError
    from .loop import Shipper
    from .stats import ShipperStats
    from .migrate import SCHEMA_VERSION, migrate
    from .pgsink import PostgresSink
    from .replay import ReplayResult, VerifyResult, replay, verify
    from .sink import Batch, InMemorySink, SendResult, Sink

_HOME = {
    "redact_dsn": ".dsn",
    "ConnectError": ".errors",
    "SchemaError": ".errors",
    "ShipperError": ".errors",
    "Shipper": ".loop",
    "ShipperStats": ".stats",
    "SCHEMA_VERSION": ".migrate",
    "migrate": ".migrate",
    "PostgresSink": ".pgsink",
    "ReplayResult": ".replay",
    "VerifyResult": ".replay",
    "replay": ".replay",
    "verify": ".replay",
    "Batch": ".sink",
    "InMemorySink": ".sink",
    "SendResult": ".sink",
    "Sink": ".sink",
}

__all__ = [
    "Shipper",
    "ShipperStats",
    "ShipperError",
    "ConnectError",
    "SchemaError",
    "Sink",
    "Batch",
    "SendResult",
    "InMemorySink",
    "PostgresSink",
    "migrate",
    "SCHEMA_VERSION",
    "replay",
    "verify",
    "ReplayResult",
    "VerifyResult",
    "redact_dsn",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(ModuleType):
    """Keep ``shipper.migrate`` and ``shipper.replay`` the functions, as eager imports made them.

    Importing a submodule sets the package's attribute of that name to the module; the
    functions of the same name would then be shadowed by their modules.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, ModuleType) and _HOME.get(name) == f".{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
