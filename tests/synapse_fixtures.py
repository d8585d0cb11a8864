"""The session-wide Synapse fixture, and the Synapse log tail in the report of every failing test that used it.

How to use it in a test module (pytest-asyncio 1.5, asyncio_mode=auto):

    import pytest

    from tests.homeserver import Homeserver

    pytest_plugins = ("tests.synapse_fixtures",)   # only until tests/conftest.py lists it; harmless after
    pytestmark = pytest.mark.asyncio(loop_scope="session")

    async def test_something(homeserver: Homeserver) -> None:
        ana = await homeserver.register("ana-something")   # user names are server-wide: keep them unique
        ...

Why the marker: the fixture runs in pytest-asyncio's session loop (one Synapse for the whole run, ~1.5 s to
start), and the people it hands out hold aiohttp sessions bound to that loop. A test in the default
function-scoped loop that touches them fails with a RuntimeError saying exactly this. Any module-, class- or
function-level fixture that uses ``homeserver`` must also be declared with ``loop_scope="session"``:

    @pytest_asyncio.fixture(loop_scope="session")
    async def ana(homeserver: Homeserver) -> Person: ...

The Synapse is shared: every test must use fresh user names and rooms, and a test that needs rc_message out of
the way says so with ``exempt_from_rate_limits`` (or ``register(..., exempt=True)``).

When a test that used the homeserver fails, its report gets a "Synapse log tail" section (last 80 lines);
the whole log is ``homeserver.log_path`` under pytest's basetemp (kept after the run).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator

import pytest
import pytest_asyncio

from tests.homeserver import Homeserver

LOG_TAIL_LINES = 80


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def homeserver(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Homeserver]:
    """One Synapse for the whole test session, in pytest's tmp dir so its log outlives the run."""
    server = Homeserver(directory=tmp_path_factory.mktemp("synapse"))
    await server.start()
    yield server
    await server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    report = yield
    server = getattr(item, "funcargs", {}).get("homeserver")
    if isinstance(report, pytest.TestReport) and report.failed and isinstance(server, Homeserver):
        # A section, not a print: pytest shows it with the failure, next to captured output.
        report.sections.append(("Synapse log tail", server.log_tail(LOG_TAIL_LINES)))
    return report
