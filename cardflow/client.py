"""A client for notebooks: the API's answers as pandas DataFrames (``pip install 'cardflow[notebook]'``).

    from cardflow.client import Client
    cf = Client("http://127.0.0.1:8000", token="…")
    cf.query(kind="trend", event="purchase", aggregation="unique_users", period="week")
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cardflow.errors import CardflowError

if TYPE_CHECKING:
    import pandas as pd


class ClientError(CardflowError):
    """The API refused a request: ``status``, and ``field`` when a query field was wrong."""

    def __init__(self, status: int, body: Any) -> None:
        body = body if isinstance(body, dict) else {"message": str(body)}
        super().__init__(f"{status} {body.get('error', 'error')}: {body.get('message', '')}")
        self.status, self.field, self.body = status, body.get("field"), body


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise CardflowError("the notebook client needs pandas: pip install 'cardflow[notebook]'") from None
    return pandas


class Client:
    def __init__(self, url: str, token: str = "", timeout: float = 120.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload: Any = json.loads(raw)
            except ValueError:
                payload = raw.decode(errors="replace")
            raise ClientError(exc.code, payload) from None

    def post(self, path: str, body: Any) -> Any:
        """``POST path`` with a JSON body; the parsed answer (ClientError when refused)."""
        return self._call("POST", path, body)

    def answer(self, query: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        """The raw answer of ``POST /v1/query`` (a dict), for a query given as a dict or keywords."""
        result: dict[str, Any] = self._call("POST", "/v1/query", {**(query or {}), **fields})
        return result

    def query(self, query: dict[str, Any] | None = None, **fields: Any) -> pd.DataFrame:
        """An insights query as a DataFrame.

        trend: one row per (bucket, breakdown) with ``value``; funnel: one row per (breakdown, step)
        with ``users`` and ``conversion``; retention: one row per cohort with ``size`` and a column
        per period after (0, 1, …; NaN where blank)."""
        pd = _pandas()
        answer = self.answer(query, **fields)
        if answer["kind"] == "trend":
            rows = [(b, s["breakdown"], v) for s in answer["series"]
                    for b, v in zip(answer["buckets"], s["values"], strict=True)]
            frame = pd.DataFrame(rows, columns=["bucket", "breakdown", "value"])
            frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
            return frame
        if answer["kind"] == "funnel":
            return pd.DataFrame([(s["breakdown"], n, st["event"], st["users"], st["conversion"])
                                 for s in answer["series"] for n, st in enumerate(s["steps"])],
                                columns=["breakdown", "step", "event", "users", "conversion"])
        cells = [{"cohort": r["date"], "size": r["size"], **dict(enumerate(r["counts"]))}
                 for r in answer["rows"]]
        return pd.DataFrame(cells).set_index("cohort")

    def sql(self, text: str) -> pd.DataFrame:
        """One read-only SELECT (admin token) as a DataFrame."""
        pd = _pandas()
        got = self._call("POST", "/v1/sql", {"sql": text})
        return pd.DataFrame(got["rows"], columns=got["columns"])

    def profile(self, uid: str) -> dict[str, Any]:
        """A user's profile (a dict: profiles are nested JSON)."""
        result: dict[str, Any] = self._call("GET", f"/v1/profiles/{quote(uid, safe='')}")
        return result

    def cards(self) -> pd.DataFrame:
        """Every card's latest result: id, title, summary, generated_at, error, widgets."""
        pd = _pandas()
        got = self._call("GET", "/v1/cards")
        columns = ["id", "title", "summary", "generated_at", "error", "widgets"]
        frame = pd.DataFrame(got["cards"], columns=columns)
        frame["generated_at"] = pd.to_datetime(frame["generated_at"], unit="ms", utc=True)
        return frame.set_index("id")

