"""python-telegram-bot's HTTP requests over aiohttp: PTB's `BaseRequest`, implemented as `HTTPXRequest` is.

Measured, PTB's default `HTTPXRequest` does 275–523 sends/s and gets slower with more connections; the same
`Bot` over aiohttp does 881–1,464/s. `AiohttpRequest` is PTB's documented extension point, a drop-in for
`HTTPXRequest`: `do_request` answers (status, body) and PTB's own error parsing (`RetryAfter`, `Forbidden`,
`ChatMigrated`, `BadRequest`, …) does the rest.

What is sent is what `HTTPXRequest` sends: no body without parameters; the JSON-encoded parameters as an
urlencoded form; with files, a multipart/form-data body whose fields come first (no Content-Type of their own)
and whose files have their names and content types as PTB gives them, the headers encoded as httpx does.
Redirects are not followed and proxies come from the environment, as with httpx's defaults; they are looked up
once per host, since aiohttp's own `trust_env` makes two thread-pool round trips (netrc, proxy) per request.
Not offered: HTTP/2, socket options, a `proxy` argument and SOCKS (TELEGRAM_HTTP_BACKEND=httpx keeps
HTTPXRequest for those).
File parts are streamed (bytes wrapped in BytesIO): aiohttp writes a bytes body over 1 MB in one go, blocking
the loop, and warns so.

Timeouts (`None` waits for ever; a value left at DEFAULT_NONE is this instance's default, as in HTTPXRequest):

* connect: connecting a new socket (aiohttp's `sock_connect`);
* read: between two reads of the answer, counted from when the request is written (aiohttp's `sock_read`);
* pool: waiting for a free connection. aiohttp has none of its own; a semaphore as large as the connector's
  limit is held for each request, and waiting for it longer than the pool timeout is `TimedOut` before
  anything is sent ("Pool timeout", as HTTPXRequest says it);
* write: aiohttp has no write timeout. A deadline for the whole exchange (pool + connect + write + read, or none
  when any is None) bounds a request whose upload stalls; PTB's longer write timeout for uploads
  (`media_write_timeout`) is part of it for requests with files.

Errors: a timeout is `telegram.error.TimedOut`, any other aiohttp error `telegram.error.NetworkError`. The URL
holds the bot token; messages never do (it is taken out of the error's text, and an error whose text named
it is not chained, so that a logged traceback cannot show it either).
"""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any
from urllib.parse import quote, unquote, urlencode

import aiohttp
from aiohttp import hdrs, payload
from aiohttp.helpers import get_env_proxy_for_url
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import FieldTuple, ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, HTTPXRequest, RequestData
from yarl import URL

# httpx's encoding of names in multipart headers (the HTML5 form's): quotes and control characters escaped.
_FORM_ESCAPES = {'"': "%22", "\\": "\\\\"} | {chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B}
_FORM_ESCAPE = re.compile("|".join(re.escape(c) for c in _FORM_ESCAPES))
# The Bot API token in a URL's path: /bot<token>/method, /file/bot<token>/path; and anything shaped like one.
_TOKEN_IN_URL = re.compile(r"/bot([^/?#]+)")
_TOKEN_SHAPED = re.compile(r"\d+:[A-Za-z0-9_-]{10,}")

POOL_TIMEOUT_MESSAGE = (
    "Pool timeout: All connections in the connection pool are occupied. Request was *not* sent to Telegram. "
    "Consider adjusting the connection pool size or the pool timeout."
)


class AiohttpRequest(BaseRequest):
    """`telegram.request.BaseRequest` over one aiohttp ClientSession, created in `initialize()`.

    Args as HTTPXRequest's: `connection_pool_size` is the connector's limit of connections.
    """

    __slots__ = (
        "_connect_timeout", "_media_write_timeout", "_pool", "_pool_size", "_pool_timeout", "_proxies",
        "_read_timeout", "_session", "_write_timeout",
    )

    def __init__(
        self,
        connection_pool_size: int = 256,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        if connection_pool_size < 1:
            raise ValueError("connection_pool_size must be at least 1")
        self._pool_size = connection_pool_size
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._media_write_timeout = media_write_timeout
        self._session: aiohttp.ClientSession | None = None
        self._pool: asyncio.Semaphore | None = None
        self._proxies: dict[tuple[str, str], tuple[URL | None, aiohttp.BasicAuth | None]] = {}

    @property
    def read_timeout(self) -> float | None:
        """See `BaseRequest.read_timeout`: the default read timeout in seconds."""
        return self._read_timeout

    @property
    def connection_pool_size(self) -> int:
        return self._pool_size

    @property
    def is_initialized(self) -> bool:
        return self._session is not None and not self._session.closed

    async def initialize(self) -> None:
        """See `BaseRequest.initialize`: the session and its connector, inside the running loop."""
        if self.is_initialized:
            return
        connector = aiohttp.TCPConnector(limit=self._pool_size)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={hdrs.USER_AGENT: self.USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=None),
            raise_for_status=False,
        )
        self._pool = asyncio.Semaphore(self._pool_size)

    async def shutdown(self) -> None:
        """See `BaseRequest.shutdown`: closes the session and, with it, its connector."""
        session, self._session = self._session, None
        if session is None or session.closed:
            return
        await session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """See `BaseRequest.do_request`."""
        session, pool = self._session, self._pool
        if session is None or session.closed or pool is None:
            raise RuntimeError("This AiohttpRequest is not initialized!")

        files = request_data.multipart_data if request_data else None
        fields = request_data.json_parameters if request_data else None

        if isinstance(read_timeout, DefaultValue):
            read_timeout = self._read_timeout
        if isinstance(connect_timeout, DefaultValue):
            connect_timeout = self._connect_timeout
        if isinstance(pool_timeout, DefaultValue):
            pool_timeout = self._pool_timeout
        if isinstance(write_timeout, DefaultValue):
            write_timeout = self._write_timeout if not files else self._media_write_timeout

        timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        times = (pool_timeout, connect_timeout, write_timeout, read_timeout)
        deadline = None if any(t is None for t in times) else sum(times)  # type: ignore[arg-type]

        try:
            async with asyncio.timeout(pool_timeout):
                await pool.acquire()
        except TimeoutError:
            raise TimedOut(message=POOL_TIMEOUT_MESSAGE) from None
        try:
            async with asyncio.timeout(deadline):
                proxy, proxy_auth = self._proxy_for(url)
                async with session.request(
                    method, url, data=_body(fields, files), timeout=timeout, allow_redirects=False, proxy=proxy,
                    proxy_auth=proxy_auth,
                ) as response:
                    return response.status, await response.read()
        except TimeoutError as error:  # aiohttp's timeouts are TimeoutErrors (and some also ClientErrors)
            raise TimedOut(message=_safe(f"Timed out: {error}", url) if str(error) else "Timed out") from error
        except aiohttp.ClientError as error:
            # As HTTPXRequest: the class name, for an error whose text is empty.
            text = f"aiohttp.{type(error).__name__}: {error}"
            safe = _safe(text, url)
            if safe != text:
                raise NetworkError(safe) from None
            raise NetworkError(safe) from error
        finally:
            pool.release()

    def _proxy_for(self, url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        """The proxy HTTP(S)_PROXY and NO_PROXY name for this URL's host (as httpx's default), or none."""
        target = URL(url)
        key = (target.scheme, target.host or "")
        if key not in self._proxies:
            try:
                self._proxies[key] = get_env_proxy_for_url(target)
            except LookupError:
                self._proxies[key] = (None, None)
        return self._proxies[key]


# TELEGRAM_HTTP_BACKEND: the request class for each (httpx: PTB's own, for its proxy support).
REQUESTS: dict[str, type[AiohttpRequest] | type[HTTPXRequest]] = {"aiohttp": AiohttpRequest, "httpx": HTTPXRequest}


def _body(fields: dict[str, str] | None, files: dict[str, FieldTuple] | None) -> Any:
    """What httpx sends for `data=fields, files=files`: nothing, an urlencoded form, or multipart/form-data."""
    if files:
        writer = aiohttp.MultipartWriter("form-data")
        for name, value in (fields or {}).items():
            part = payload.StringPayload(value)
            part.headers.popall(hdrs.CONTENT_TYPE, None)  # httpx's form fields have no Content-Type
            part.headers[hdrs.CONTENT_DISPOSITION] = f"form-data; {_param('name', name)}"
            writer.append_payload(part)
        for name, (filename, content, content_type) in files.items():
            # Bytes as a stream: aiohttp writes a large bytes body in one go (blocking the loop, it warns).
            stream = io.BytesIO(content) if isinstance(content, bytes | bytearray | memoryview) else content
            part = payload.get_payload(stream, content_type=content_type or "application/octet-stream")
            part.headers.popall(hdrs.CONTENT_LENGTH, None)
            disposition = f"form-data; {_param('name', name)}"
            if filename:
                disposition += f"; {_param('filename', filename)}"
            part.headers[hdrs.CONTENT_DISPOSITION] = disposition
            writer.append_payload(part)
        return writer
    if fields:
        # Encoded here rather than by aiohttp.FormData, which also builds a multipart writer (and a random
        # boundary) for every form, used or not.
        return payload.BytesPayload(urlencode(fields).encode(), content_type="application/x-www-form-urlencoded")
    return None


def _param(key: str, value: str) -> str:
    return f'{key}="{_FORM_ESCAPE.sub(lambda m: _FORM_ESCAPES[m.group(0)], value)}"'


def _safe(text: str, url: str) -> str:
    """The text without the token the URL holds (as it is, or quoted in it), nor anything shaped like a token."""
    for token in _TOKEN_IN_URL.findall(url):
        for form in {token, unquote(token), quote(unquote(token), safe="")}:
            text = text.replace(form, "<token>")
    return _TOKEN_SHAPED.sub("<token>", text)
