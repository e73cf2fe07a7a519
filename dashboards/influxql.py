"""InfluxQL queries and annotations for the Grafana Foundation SDK.

The SDK ships no InfluxDB query type, so this module adds one (``InfluxQLQuery``)
and registers it with the SDK runtime: decoding a dashboard with
``Dashboard.from_json`` then yields typed InfluxQL targets, which is how the tests
validate the generated JSON. Queries are raw InfluxQL (``rawQuery``) so the same
text runs on InfluxDB 1.x, on 2.x through a DBRP mapping and on 3.x's InfluxQL API.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as dm

DATASOURCE_TYPE = "influxdb"
ResultFormat = Literal["time_series", "table"]


class InfluxQLQuery(cogvariants.Dataquery):
    """One raw InfluxQL panel target, in the JSON shape Grafana's InfluxDB plugin stores."""

    _KEYS = frozenset({"refId", "datasource", "query", "rawQuery", "resultFormat", "alias", "hide"})

    def __init__(
        self,
        query: str = "",
        ref_id: str = "A",
        datasource: dm.DataSourceRef | None = None,
        result_format: ResultFormat = "time_series",
        alias: str | None = None,
        hide: bool | None = None,
    ) -> None:
        self.query = query
        self.ref_id = ref_id
        self.datasource = datasource
        self.result_format = result_format
        self.alias = alias
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.datasource is not None:
            payload["datasource"] = self.datasource.to_json()
        if self.alias is not None:
            payload["alias"] = self.alias
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Strict decoding: a target that is not a raw InfluxQL query is an error, not a silent pass."""
        if not isinstance(data, dict):
            raise ValueError(f"a target must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - cls._KEYS
        if unknown:
            raise ValueError(f"unknown InfluxQL target keys: {sorted(unknown)}")
        if data.get("rawQuery") is not True or not isinstance(data.get("query"), str) or not data["query"]:
            raise ValueError(f"target {data.get('refId')!r} is not a raw InfluxQL query")
        if not isinstance(data.get("refId"), str):
            raise ValueError("target without a string refId")
        if data.get("resultFormat") not in ("time_series", "table"):
            raise ValueError(f"target {data.get('refId')!r}: bad resultFormat {data.get('resultFormat')!r}")
        ds = data.get("datasource")
        return cls(
            query=data["query"],
            ref_id=data["refId"],
            datasource=dm.DataSourceRef.from_json(ds) if isinstance(ds, dict) else None,
            result_format=data["resultFormat"],
            alias=data.get("alias"),
            hide=data.get("hide"),
        )


class InfluxQL(cogbuilder.Builder[InfluxQLQuery]):
    """Builder used in panel definitions: ``.with_target(InfluxQL('SELECT ...').ref_id('B'))``."""

    def __init__(self, query: str) -> None:
        self._internal = InfluxQLQuery(query=query)

    def build(self) -> InfluxQLQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def table(self) -> Self:
        self._internal.result_format = "table"
        return self

    def alias(self, alias: str) -> Self:
        self._internal.alias = alias
        return self


class InfluxAnnotation(dm.AnnotationQuery):
    """An annotation fed by an InfluxQL query.

    The SDK's ``AnnotationQuery`` only knows Grafana's built-in annotation source,
    so the InfluxDB fields are added here, both in the legacy top-level form and
    in ``target`` form, which current Grafana versions read.
    """

    def __init__(self, name: str, datasource: dm.DataSourceRef, query: str, tags_column: str, text_column: str) -> None:
        super().__init__(name=name, datasource=datasource, enable=True, hide=False, icon_color="red")
        self.query = query
        self.tags_column = tags_column
        self.text_column = text_column

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload["datasource"] = self.datasource.to_json()
        columns = {"tagsColumn": self.tags_column, "textColumn": self.text_column}
        payload.update(query=self.query, **columns)
        payload["target"] = {"refId": "Anno", "query": self.query, "rawQuery": True, "fromAnnotations": True, **columns}
        return payload


class InfluxAnnotationBuilder(cogbuilder.Builder[dm.AnnotationQuery]):
    def __init__(self, annotation: InfluxAnnotation) -> None:
        self._internal = annotation

    def build(self) -> dm.AnnotationQuery:
        return self._internal


def register() -> None:
    """Teach the SDK runtime to decode ``influxdb`` targets (idempotent)."""
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=DATASOURCE_TYPE, from_json_hook=InfluxQLQuery.from_json)
    )
